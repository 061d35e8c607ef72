// containerd's own sandbox records, read over its gRPC socket: the one authority on whether containerd will ever call
// the Controller about a sandbox again. containerd 2.x CRI writes the record (Store.Create) before Controller.Create
// and deletes it after a failed Controller.Create/Start without calling Stop or Shutdown; a sandbox it holds no record
// of, in any namespace, is one nobody will ever stop.
import * as grpc from '@grpc/grpc-js';

/** What containerd says about sandbox ids: true = it holds a record, false = it holds none; absent = it could not tell. */
export interface SandboxView {
  lookup(ids: readonly string[]): Promise<Map<string, boolean>>;
}

const NAMESPACES_LIST = '/containerd.services.namespaces.v1.Namespaces/List';
const STORE_GET = '/containerd.services.sandbox.v1.Store/Get';
const TTRPC_SUFFIX = '.ttrpc';

export class ContainerdSandboxView implements SandboxView {
  constructor(
    /** containerd's gRPC socket path. */
    readonly address: string,
    private readonly timeoutMs = 5000,
  ) {}

  /**
   * CONTAINERD_ADDRESS, else TTRPC_ADDRESS without its `.ttrpc` suffix (containerd derives its ttrpc socket from the
   * gRPC one that way). Neither set, or a TTRPC_ADDRESS of another shape: undefined, and nothing is ever looked up.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): ContainerdSandboxView | undefined {
    const strip = (a: string): string => (a.startsWith('unix://') ? a.slice('unix://'.length) : a);
    if (env.CONTAINERD_ADDRESS) return new ContainerdSandboxView(strip(env.CONTAINERD_ADDRESS));
    const ttrpc = env.TTRPC_ADDRESS ? strip(env.TTRPC_ADDRESS) : '';
    if (ttrpc.endsWith(TTRPC_SUFFIX) && ttrpc.length > TTRPC_SUFFIX.length) return new ContainerdSandboxView(ttrpc.slice(0, -TTRPC_SUFFIX.length));
    return undefined;
  }

  /**
   * Every id containerd answered for: true when some namespace holds it, false when every namespace said NOT_FOUND.
   * Ids with any other answer (containerd down, no sandbox store as on 1.6, a timeout) are left out.
   */
  async lookup(ids: readonly string[]): Promise<Map<string, boolean>> {
    const out = new Map<string, boolean>();
    if (ids.length === 0) return out;
    const client = new grpc.Client(`unix:${this.address}`, grpc.credentials.createInsecure());
    try {
      const listed = await this.call(client, NAMESPACES_LIST, undefined, Buffer.alloc(0));
      if (listed.code !== grpc.status.OK) return out;
      let namespaces: string[];
      try {
        namespaces = decodeNamespaceNames(listed.body!);
      } catch {
        return out;
      }
      for (const id of ids) {
        let known: boolean | undefined = false;
        for (const ns of namespaces) {
          const got = await this.call(client, STORE_GET, ns, encodeString(1, id));
          if (got.code === grpc.status.OK) {
            known = true;
            break;
          }
          if (got.code !== grpc.status.NOT_FOUND) known = undefined;
        }
        if (known !== undefined) out.set(id, known);
      }
      return out;
    } finally {
      client.close();
    }
  }

  private call(client: grpc.Client, method: string, namespace: string | undefined, body: Buffer): Promise<{ code: number; body?: Buffer }> {
    const md = new grpc.Metadata();
    if (namespace !== undefined) md.set('containerd-namespace', namespace);
    return new Promise((resolve) => {
      client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, body, md, { deadline: Date.now() + this.timeoutMs },
        (err, res) => resolve(err ? { code: err.code } : { code: grpc.status.OK, body: res }));
    });
  }
}

// Two tiny messages, encoded by hand: the request is one string field, the answer only needs its names.

function encodeString(field: number, value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  return Buffer.concat([encodeVarint((field << 3) | 2), encodeVarint(bytes.length), bytes]);
}

function encodeVarint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** ListNamespacesResponse{repeated Namespace namespaces = 1}, Namespace{string name = 1; ...}: the names. */
export function decodeNamespaceNames(buf: Buffer): string[] {
  const names: string[] = [];
  for (const ns of lengthDelimited(buf, 1)) {
    const name = lengthDelimited(ns, 1)[0];
    if (name !== undefined) names.push(name.toString('utf8'));
  }
  return names;
}

/** The values of every length-delimited `field` of a message, other fields skipped. Throws on a malformed message. */
function lengthDelimited(buf: Buffer, field: number): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (pos >= buf.length) throw new RangeError('truncated varint');
      const b = buf[pos++]!;
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
    }
    throw new RangeError('varint too long');
  };
  while (pos < buf.length) {
    const key = varint();
    const wire = key & 7;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (pos + len > buf.length) throw new RangeError('truncated field');
      if (Math.floor(key / 8) === field) out.push(buf.subarray(pos, pos + len));
      pos += len;
    } else throw new RangeError(`unsupported wire type ${wire}`);
  }
  return out;
}
