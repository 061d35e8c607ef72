// Fuzzing of every request decoder the sandboxer's servers expose: the ttrpc Task API (v2 and v3, 17 RPCs each),
// the Events Forward request, and the gRPC sandbox Controller (9 RPCs). In process (the exact decode functions the
// servers call) and over real sockets against a real sandboxer process: no crash, no hang, bounded memory, and the
// server still answers a valid call afterwards.
import v8 from 'node:v8';
import vm from 'node:vm';
import { eventsTtrpc, packJsonAny, runcOptions, sandboxApi, task, OCI_PROCESS_TYPE_URL, OCI_LINUX_RESOURCES_TYPE_URL } from '@kuasar/api';
import { fdCount } from '@kuasar/e2e';
import { GRPC_CODES, TASK_V2, TASK_V3, type SandboxerTarget } from './reliability-target';

interface MessageType {
  fromPartial(o: object): unknown;
  encode(m: unknown): { finish(): Uint8Array };
  decode(b: Uint8Array): unknown;
}

/** One request decoder a server runs on bytes from the wire, with well-formed seeds to mutate. */
export interface DecoderTarget {
  /** `<service>/<Method>` */
  name: string;
  service: string;
  method: string;
  decode(b: Uint8Array): unknown;
  encode(m: unknown): Uint8Array;
  seeds: Buffer[];
  /** Calls that may block while their object exists (Wait): a deadline there is not a hang. */
  mayBlock: boolean;
}

/** Deterministic PRNG (mulberry32): a failing run replays with the same seed. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  const bytes = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  return { next, int, bytes, pick };
}
export type Rng = ReturnType<typeof prng>;

// Field values a hostile or confused client would send; ids that must never become paths among them.
const STRINGS = ['', 'fuzz-a', 'fuzz-b.c_d', '../../etc', '..', '/', 'a/b', 'x'.repeat(77), 'é\u0000', '\u202e', ' ', '-', 'tasks', 'task.sock', '.spare'];

/** Well-formed requests of a type: its default fields filled with plausible and hostile values, plus the Anys. */
function seedsFor(t: MessageType, rnd: Rng, n: number): Buffer[] {
  const base = t.fromPartial({}) as Record<string, unknown>;
  const out: Buffer[] = [Buffer.from(t.encode(base).finish())];
  for (let i = 0; i < n; i++) {
    const m: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(base)) {
      if (rnd.int(4) === 0) continue;
      if (typeof v === 'string') m[k] = k === 'bundle' ? rnd.pick(['/nonexistent/bundle', 'relative', '/', '']) : rnd.pick(STRINGS);
      else if (typeof v === 'number') m[k] = rnd.pick([0, 1, 9, 15, 2 ** 31 - 1, -1, 4294967295]);
      else if (typeof v === 'boolean') m[k] = rnd.int(2) === 1;
      else if (typeof v === 'bigint') m[k] = rnd.pick([0n, 1n, 2n ** 63n - 1n]);
      else if (v instanceof Uint8Array) m[k] = rnd.bytes(rnd.int(32));
      else if (Array.isArray(v)) m[k] = k === 'rootfs' ? [{ type: 'bind', source: '/nonexistent', target: '', options: ['rbind'] }] : k === 'fields' ? ['a', ''] : [];
    }
    // the Any fields are undefined by default: give them what containerd puts there, and nonsense
    const any = (typeUrl: string, value: object): unknown => (rnd.int(3) === 0 ? { typeUrl: rnd.pick(STRINGS), value: rnd.bytes(rnd.int(40)) } : packJsonAny(typeUrl, value));
    if ('spec' in base || Object.keys(base).includes('execId')) m['spec'] = any(OCI_PROCESS_TYPE_URL, { args: ['true'], cwd: '/', env: [] });
    if ('resources' in base) m['resources'] = any(OCI_LINUX_RESOURCES_TYPE_URL, { memory: { limit: rnd.pick([0, -1, 1 << 20]) } });
    if ('options' in base) m['options'] = rnd.int(2) ? { typeUrl: 'containerd.runc.v1.Options', value: runcOptions.Options.encode(runcOptions.Options.fromPartial({ binaryName: rnd.pick(['runc', '/nonexistent/runc', '']) })).finish() } : any('x', {});
    try {
      out.push(Buffer.from(t.encode(t.fromPartial(m)).finish()));
    } catch {
      // a value the type refuses to encode is simply not a seed
    }
  }
  return out;
}

/** Every request decoder the runc-sandboxer's servers (and its events client's peer) expose. */
export function requestDecoders(seed = 1): DecoderTarget[] {
  const rnd = prng(seed);
  const out: DecoderTarget[] = [];
  for (const [service, def] of [[TASK_V2, task.TaskV2Definition], [TASK_V3, task.TaskV3Definition]] as const) {
    for (const m of Object.values(def.methods) as { name: string; requestType: MessageType }[]) {
      out.push({ name: `${service}/${m.name}`, service, method: m.name, decode: (b) => m.requestType.decode(b), encode: (x) => m.requestType.encode(x).finish(), seeds: seedsFor(m.requestType, rnd, 12), mayBlock: m.name === 'Wait' });
    }
  }
  for (const def of Object.values(sandboxApi.ControllerService) as { path: string; requestDeserialize(b: Buffer): unknown; requestSerialize(m: unknown): Buffer }[]) {
    const method = def.path.slice(def.path.lastIndexOf('/') + 1);
    const t = (sandboxApi as unknown as Record<string, MessageType>)[`Controller${method}Request`]!;
    out.push({ name: `containerd.services.sandbox.v1.Controller/${method}`, service: 'containerd.services.sandbox.v1.Controller', method, decode: (b) => def.requestDeserialize(Buffer.from(b)), encode: (x) => def.requestSerialize(x), seeds: seedsFor(t, rnd, 12), mayBlock: method === 'Wait' });
  }
  const fwd = eventsTtrpc.ForwardRequest as unknown as MessageType;
  out.push({ name: 'containerd.services.events.ttrpc.v1.Events/Forward', service: 'containerd.services.events.ttrpc.v1.Events', method: 'Forward', decode: (b) => fwd.decode(b), encode: (x) => fwd.encode(x).finish(), seeds: [...seedsFor(fwd, rnd, 4), Buffer.from(fwd.encode(fwd.fromPartial({ envelope: { namespace: 'k8s.io', topic: '/tasks/exit', event: { typeUrl: 'containerd.events.TaskExit', value: new Uint8Array([10, 1, 97]) } } })).finish())], mayBlock: false });
  return out;
}

/** A mutated, truncated, spliced or random request body. */
export function mutate(rnd: Rng, seeds: Buffer[], all: DecoderTarget[]): Buffer {
  const b = Buffer.from(rnd.pick(seeds));
  switch (rnd.int(10)) {
    case 0: // bit flips
      for (let k = 1 + rnd.int(6); k > 0 && b.length > 0; k--) b[rnd.int(b.length)]! ^= 1 << rnd.int(8);
      return b;
    case 1: // truncation
      return b.subarray(0, rnd.int(b.length + 1));
    case 2: // random bytes
      return rnd.bytes(rnd.int(64));
    case 3: // a length/varint blown up to the largest values
      return Buffer.concat([b.subarray(0, rnd.int(b.length + 1)), Buffer.from([rnd.int(16) << 3 | 2, 0xff, 0xff, 0xff, 0xff, 0x0f]), rnd.bytes(rnd.int(8))]);
    case 4: // another decoder's message (wrong type on the right method)
      return Buffer.from(rnd.pick(rnd.pick(all).seeds));
    case 5: // a field repeated many times (repeated fields, last-one-wins scalars)
      return Buffer.concat(Array.from({ length: 1 + rnd.int(200) }, () => b));
    case 6: // deep nesting: a length-delimited field holding itself
      {
        let x: Buffer = b;
        for (let d = 0; d < 1 + rnd.int(60); d++) x = Buffer.concat([Buffer.from([(1 + rnd.int(15)) << 3 | 2]), varint(x.length), x]);
        return x;
      }
    case 7: // a big string field
      return Buffer.concat([b, Buffer.from([1 << 3 | 2]), varint(1 << (10 + rnd.int(8))), Buffer.alloc(1 << (10 + rnd.int(8)), rnd.pick([0x2f, 0x2e, 0x61, 0]))]);
    case 8: // unknown field numbers and wire types (incl. groups 3/4)
      return Buffer.concat([b, Buffer.from([rnd.int(256), rnd.int(256), rnd.int(256)]), rnd.bytes(rnd.int(8))]);
    default: // byte overwrites
      for (let k = 1 + rnd.int(4); k > 0 && b.length > 0; k--) b[rnd.int(b.length)] = rnd.int(256);
      return b;
  }
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A real gc() even without --expose-gc, so heap growth measures what is retained. */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

export interface DecoderFuzzReport {
  cases: number;
  seed: number;
  decoders: number;
  /** decoded (and re-encoded) / rejected with an Error, per decoder */
  accepted: number;
  rejected: number;
  /** anything that is not "decoded" or "threw an Error": a non-Error throw, a failed re-encode, a slow case */
  crashes: string[];
  slowestMs: number;
  heapGrowthBytes: number;
}

/** In-process: `cases` mutated bodies through every decoder (round robin), each re-encoded when it decodes. */
export function fuzzDecoders(o: { cases: number; seed: number; slowMs?: number }): DecoderFuzzReport {
  const rnd = prng(o.seed);
  const all = requestDecoders(o.seed);
  const gc = collector();
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 10; // jest's 100 makes each expected decode error costly
  const r: DecoderFuzzReport = { cases: 0, seed: o.seed, decoders: all.length, accepted: 0, rejected: 0, crashes: [], slowestMs: 0, heapGrowthBytes: 0 };
  try {
    gc();
    const heap0 = process.memoryUsage().heapUsed;
    for (let i = 0; i < o.cases; i++) {
      const d = all[i % all.length]!;
      const body = mutate(rnd, d.seeds, all);
      const t0 = performance.now();
      try {
        const msg = d.decode(body);
        d.encode(msg);
        r.accepted++;
      } catch (err) {
        if (err instanceof Error) r.rejected++;
        else if (r.crashes.length < 20) r.crashes.push(`${d.name}: non-Error thrown (${String(err)}) for ${body.subarray(0, 64).toString('hex')}`);
      }
      const ms = performance.now() - t0;
      r.slowestMs = Math.max(r.slowestMs, ms);
      if (ms > (o.slowMs ?? 1000) && r.crashes.length < 20) r.crashes.push(`${d.name}: ${ms.toFixed(0)} ms for ${body.length} bytes`);
      r.cases++;
    }
    gc();
    r.heapGrowthBytes = process.memoryUsage().heapUsed - heap0;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
  return r;
}

export interface WireFuzzReport {
  cases: number;
  seed: number;
  /** answers by status name (OK, INVALID_ARGUMENT, NOT_FOUND, …) */
  statuses: Record<string, number>;
  /** calls with no answer before the deadline (Wait on an existing object excepted) */
  hangs: string[];
  /**
   * Bodies the decoder refuses get what the Go servers answer: UNKNOWN over ttrpc (containerd/ttrpc), INTERNAL
   * "Error deserializing request" over gRPC (grpc-go says the same). Counted here, per status.
   */
  undecodable: Record<string, number>;
  /** transport failures (connection dropped by the server), and UNKNOWN/INTERNAL for a body that decodes: samples */
  unclear: string[];
  /** sandboxes / task dirs the fuzzed calls created, removed afterwards through the API */
  createdSandboxes: number;
  leftoverTaskDirs: string[];
  sandboxerAlive: boolean;
  /** the valid calls made afterwards answered as they should */
  answersAfter: boolean;
  rssKiB: { start: number; end: number };
  fds: { start: number; end: number };
}

function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(require('node:fs').readFileSync(`/proc/${pid}/status`, 'utf8') as string);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Over the real sockets: `cases` mutated calls spread over every Task (v2, v3) and Controller method. */
export async function fuzzWire(target: SandboxerTarget, o: { cases: number; seed: number; concurrency?: number; progress?: (m: string) => void }): Promise<WireFuzzReport> {
  const rnd = prng(o.seed);
  const all = requestDecoders(o.seed).filter((d) => !d.service.includes('events'));
  const pid = target.sb.pid!;
  // both connections up before the baseline: the fds counted are then the calls' own
  await target.taskCall('state', { id: 'never-created' });
  await target.controllerCall('status', { sandboxId: 'never-created' });
  const r: WireFuzzReport = {
    cases: 0, seed: o.seed, statuses: {}, undecodable: {}, hangs: [], unclear: [], createdSandboxes: 0, leftoverTaskDirs: [], sandboxerAlive: false, answersAfter: false,
    rssKiB: { start: rssKiB(pid), end: 0 }, fds: { start: fdCount(pid), end: 0 },
  };
  let next = 0;
  const one = async (): Promise<void> => {
    for (let i = next++; i < o.cases; i = next++) {
      const d = rnd.pick(all);
      const body = mutate(rnd, d.seeds, all);
      const timeoutMs = d.mayBlock ? 2000 : 20_000;
      const res = d.service.includes('Controller') ? await target.controllerRaw(d.method, body, timeoutMs) : await target.taskRaw(d.service, d.method, body, timeoutMs);
      const name = res.code === -1 ? 'TRANSPORT' : GRPC_CODES[res.code] ?? String(res.code);
      r.statuses[name] = (r.statuses[name] ?? 0) + 1;
      if (name === 'DEADLINE_EXCEEDED' && !d.mayBlock && r.hangs.length < 20) r.hangs.push(`${d.name} (${body.length} bytes): ${body.subarray(0, 48).toString('hex')}`);
      if (name === 'TRANSPORT' || name === 'UNKNOWN' || name === 'INTERNAL') {
        let decodes = true;
        try {
          d.decode(body);
        } catch {
          decodes = false;
        }
        const decodeError = d.service.includes('Controller') ? name === 'INTERNAL' && /deserializ/i.test(res.message) : name === 'UNKNOWN';
        if (!decodes && decodeError) r.undecodable[name] = (r.undecodable[name] ?? 0) + 1;
        else if (r.unclear.length < 30) r.unclear.push(`${d.name} → ${name}: ${res.message.slice(0, 160)} (${body.length} bytes: ${body.subarray(0, 48).toString('hex')})`);
      }
      r.cases++;
      if (r.cases % 5000 === 0) o.progress?.(`wire fuzz: ${r.cases}/${o.cases}`);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 8 }, one));
  r.sandboxerAlive = target.sb.running;
  // the servers still answer a valid call as they should
  const st = await target.taskCall('state', { id: 'never-created' });
  const cs = await target.controllerCall('status', { sandboxId: 'never-created' });
  r.answersAfter = st.code === 5 && cs.code === 5;
  r.createdSandboxes = (await target.shutdownAll()).length;
  r.leftoverTaskDirs = target.taskDirs();
  r.rssKiB.end = rssKiB(pid);
  r.fds.end = fdCount(pid);
  return r;
}

/** Sizes: quick runs in CI's `pnpm test`; full is what `pnpm reliability --full` runs. */
export const FUZZ_SIZES: Record<'quick' | 'full', { decoderCases: number; wireCases: number }> = {
  quick: { decoderCases: 30_000, wireCases: 3_000 },
  full: { decoderCases: 300_000, wireCases: 100_000 },
};
