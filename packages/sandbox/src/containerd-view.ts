// containerd's own sandbox records, read over its gRPC socket: the one authority on whether containerd will ever call
// the Controller about a sandbox again. containerd 2.x CRI writes the record (Store.Create) before Controller.Create
// and deletes it after a failed Controller.Create/Start without calling Stop or Shutdown; a sandbox it holds no record
// of, in any namespace, is one nobody will ever stop.
import * as grpc from '@grpc/grpc-js';
import { namespaces as nsApi, sandboxApi } from '@kuasar/api';

/** What containerd says about sandbox ids: true = it holds a record, false = it holds none; absent = it could not tell. */
export interface SandboxView {
  lookup(ids: readonly string[]): Promise<Map<string, boolean>>;
}

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
    // One channel for both services: a plain Client driven by the generated method definitions.
    const client = new grpc.Client(`unix:${this.address}`, grpc.credentials.createInsecure());
    try {
      // A malformed answer fails in the generated decoder, which grpc-js reports as INTERNAL: nothing is concluded.
      const listed = await this.call(client, nsApi.NamespacesService.list, undefined, nsApi.ListNamespacesRequest.fromPartial({}));
      if (listed.code !== grpc.status.OK) return out;
      const namespaces = namespaceNames(listed.response!);
      for (const id of ids) {
        let known: boolean | undefined = false;
        for (const ns of namespaces) {
          const got = await this.call(client, sandboxApi.StoreService.get, ns, { sandboxId: id });
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

  private call<Req, Res>(client: grpc.Client, method: UnaryMethod<Req, Res>, namespace: string | undefined, request: Req): Promise<{ code: number; response?: Res }> {
    const md = new grpc.Metadata();
    if (namespace !== undefined) md.set('containerd-namespace', namespace);
    return new Promise((resolve) => {
      client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, md, { deadline: Date.now() + this.timeoutMs },
        (err, res) => resolve(err ? { code: err.code } : { code: grpc.status.OK, response: res }));
    });
  }
}

/** The part of a generated grpc-js method definition a unary call needs. */
interface UnaryMethod<Req, Res> {
  path: string;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}

/** The namespace names in an encoded ListNamespacesResponse. Throws on a malformed message. */
export function decodeNamespaceNames(buf: Uint8Array): string[] {
  return namespaceNames(nsApi.ListNamespacesResponse.decode(buf));
}

// containerd rejects the empty namespace, so an unnamed entry is nothing to search.
function namespaceNames(res: nsApi.ListNamespacesResponse): string[] {
  return res.namespaces.map((n) => n.name).filter((name) => name !== '');
}
