// A real wasm sandboxer for tests: the framework's startSandboxer with the wasm kind, driven like containerd drives
// it — the Task API through a ttrpc client on <dir>/task.sock, the Controller through grpc-js, task events received
// by a ttrpc Events server at TTRPC_ADDRESS, stdio through FIFOs opened the way containerd's cio opens them.
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, dateFromTimestamp, eventsTtrpc, packAny, sandboxApi, task, unpackTaskEvent, type DecodedTaskEvent } from '@kuasar/api';
import { createLogger, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { TtrpcClient, TtrpcServer, createClient, type ServiceClient } from '@kuasar/ttrpc';
import { wasmSandboxerSpec, type WasmSandboxerSpec } from '../src/sandboxer-spec';

export const BUILD = path.join(__dirname, '..', 'testdata', 'build');
export const wasm = (name: string): string => path.join(BUILD, `${name}.wasm`);
export const NS = 'k8s.io';

export interface ReceivedEvent {
  namespace: string;
  topic: string;
  timestamp: Date;
  decoded: DecodedTaskEvent;
}

/** containerd's side of task events: a ttrpc Events server. */
export class EventsSink {
  readonly events: ReceivedEvent[] = [];
  readonly server = new TtrpcServer();
  constructor(readonly path: string) {
    this.server.addService(eventsTtrpc.EventsDefinition, {
      forward: async (req) => {
        const env = req.envelope!;
        this.events.push({ namespace: env.namespace, topic: env.topic, timestamp: dateFromTimestamp(env.timestamp!), decoded: unpackTaskEvent(env.event!) });
        return {};
      },
    });
  }
  /** events of one container as "topic[:id]" (exec id, or the id of an exit) */
  of(containerId: string): string[] {
    return this.events
      .filter((e) => (e.decoded.event as { containerId?: string }).containerId === containerId)
      .map((e) => {
        const ev = e.decoded.event as { id?: string; execId?: string };
        return e.topic + (ev.execId ? `:${ev.execId}` : e.topic === '/tasks/exit' ? `:${ev.id}` : '');
      });
  }
  exitStatus(containerId: string, id = containerId): number | undefined {
    const e = this.events.find((x) => x.topic === '/tasks/exit' && (x.decoded.event as { containerId?: string; id?: string }).containerId === containerId
      && (x.decoded.event as { id?: string }).id === id);
    return (e?.decoded.event as { exitStatus?: number } | undefined)?.exitStatus;
  }
}

/** the generated client encodes through fromPartial, so tests may leave proto3 defaults out */
export type PartialClient<C> = {
  [K in keyof C]: C[K] extends (req: infer Req, opts?: infer O) => Promise<infer Res> ? (req: Partial<Req>, opts?: O) => Promise<Res> : never;
};
export type TaskClient = PartialClient<ServiceClient<typeof task.TaskV3Definition>>;

export function tempDir(prefix: string): string {
  // short: unix socket paths must fit in 108 bytes
  return fs.mkdtempSync(path.join(os.tmpdir(), `kw-${prefix}-`));
}

export async function until<T>(fn: () => T | undefined | false, ms = 5000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface WasmHarness {
  root: string;
  dir: string;
  running: RunningSandboxer;
  spec: WasmSandboxerSpec;
  tasks: TaskClient;
  client: TtrpcClient;
  controller: sandboxApi.ControllerClient;
  sink: EventsSink;
  /** stop serving and end the runner, keeping the state dir: what a sandboxer restart leaves behind */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export async function startWasmSandboxer(o: { root?: string; config?: string; sink?: EventsSink } = {}): Promise<WasmHarness> {
  const root = o.root ?? tempDir('sb');
  const dir = path.join(root, 'state');
  let sink = o.sink;
  if (!sink) {
    sink = new EventsSink(path.join(root, `ev-${process.hrtime.bigint() % 100000n}.sock`));
    await sink.server.listen(sink.path);
  }
  process.env['TTRPC_ADDRESS'] = sink.path;
  const configFile = path.join(root, 'config.toml');
  fs.writeFileSync(configFile, o.config ?? '[wasm]\npool_size = 2\n');
  const spec = wasmSandboxerSpec('test');
  const logger = createLogger({ level: (process.env['KUASAR_TEST_LOG'] as 'debug' | undefined) ?? 'fatal', kind: 'wasm' });
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec, { listen, dir, config: configFile }, logger);
  await spec.pool!.warm();
  const client = await TtrpcClient.connect(path.join(dir, 'task.sock'), { metadata: { 'containerd-namespace-ttrpc': NS } });
  const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;
  const controller = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    controller.close();
    await client.close();
    await running.close();
    await spec.pool!.close();
  };
  const s = sink;
  return {
    root, dir, running, spec, tasks, client, controller, sink: s, stop,
    close: async () => {
      await stop();
      if (!o.sink) await s.server.close(500);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

type Method = 'create' | 'start' | 'stop' | 'wait' | 'status' | 'shutdown' | 'metrics';
const REQUEST = {
  create: sandboxApi.ControllerCreateRequest,
  start: sandboxApi.ControllerStartRequest,
  stop: sandboxApi.ControllerStopRequest,
  wait: sandboxApi.ControllerWaitRequest,
  status: sandboxApi.ControllerStatusRequest,
  shutdown: sandboxApi.ControllerShutdownRequest,
  metrics: sandboxApi.ControllerMetricsRequest,
} as const;

/** One Controller call over gRPC, as containerd makes it. */
export function rpc(client: sandboxApi.ControllerClient, method: Method, req: object): Promise<any> {
  return new Promise((resolve, reject) => {
    const fn = client[method].bind(client) as unknown as (r: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
    const md = new grpc.Metadata();
    md.set('containerd-namespace', NS);
    fn((REQUEST[method] as { fromPartial(o: unknown): unknown }).fromPartial(req), md, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Create + Start of a pod through the Controller. */
export async function runPod(h: WasmHarness, id: string): Promise<{ pid: number; address: string }> {
  const options = packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial({ metadata: { name: id, namespace: 'default', uid: id } }));
  await rpc(h.controller, 'create', { sandboxId: id, options });
  return rpc(h.controller, 'start', { sandboxId: id });
}

export interface BundleOptions {
  args: string[];
  env?: string[];
  cwd?: string;
  /** modules to put in the image: guest path → testdata module name */
  modules?: Record<string, string>;
  files?: Record<string, string>;
  mounts?: { destination: string; source: string; type?: string; options?: string[] }[];
  memoryLimit?: number;
  sandboxId?: string;
  terminal?: boolean;
}

/** A bundle as containerd writes one: config.json plus the image's files under rootfs/. */
export function makeBundle(root: string, name: string, o: BundleOptions): string {
  const bundle = path.join(root, 'bundles', name);
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(rootfs, { recursive: true });
  for (const [guest, mod] of Object.entries(o.modules ?? { [o.args[0]!]: 'hello' })) {
    fs.mkdirSync(path.dirname(path.join(rootfs, guest)), { recursive: true });
    fs.copyFileSync(wasm(mod), path.join(rootfs, guest));
  }
  for (const [guest, text] of Object.entries(o.files ?? {})) fs.writeFileSync(path.join(rootfs, guest), text);
  const spec = {
    ociVersion: '1.1.0',
    process: { terminal: o.terminal ?? false, args: o.args, env: o.env ?? ['PATH=/usr/bin:/bin'], cwd: o.cwd ?? '/' },
    root: { path: 'rootfs' },
    mounts: o.mounts ?? [],
    annotations: o.sandboxId ? { 'io.kubernetes.cri.sandbox-id': o.sandboxId } : {},
    linux: { namespaces: [{ type: 'pid' }], resources: o.memoryLimit ? { memory: { limit: o.memoryLimit } } : {} },
  };
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  return bundle;
}

let fifoSeq = 0;

/** Client FIFOs the way containerd's cio makes them: outputs opened O_RDONLY|O_NONBLOCK before Create. */
export class ClientIO {
  readonly stdin: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly out: Promise<Buffer>;
  readonly err: Promise<Buffer>;
  private readonly sockets: net.Socket[] = [];
  private stdinFd: number | undefined;

  constructor(dir: string, o: { stdin?: boolean } = {}) {
    const base = path.join(dir, `io${fifoSeq++}`);
    this.stdin = o.stdin ? `${base}-in` : '';
    this.stdout = `${base}-out`;
    this.stderr = `${base}-err`;
    for (const p of [this.stdin, this.stdout, this.stderr]) if (p) execFileSync('mkfifo', [p]);
    this.out = this.read(this.stdout);
    this.err = this.read(this.stderr);
  }

  private read(p: string): Promise<Buffer> {
    const s = new net.Socket({ fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    this.sockets.push(s);
    const chunks: Buffer[] = [];
    return new Promise((resolve) => {
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve(Buffer.concat(chunks)));
      s.on('error', () => resolve(Buffer.concat(chunks)));
    });
  }

  /** first bytes on stdout (for start latency) */
  firstOutput(): Promise<void> {
    return new Promise((resolve) => this.sockets[0]!.once('data', () => resolve()));
  }

  /** write to stdin (the task holds the read end after Create), optionally closing our writer */
  writeStdin(text: string, close = false): void {
    this.stdinFd ??= fs.openSync(this.stdin, fs.constants.O_WRONLY);
    fs.writeSync(this.stdinFd, text);
    if (close) {
      fs.closeSync(this.stdinFd);
      this.stdinFd = undefined;
    }
  }

  close(): void {
    for (const s of this.sockets) s.destroy();
    if (this.stdinFd !== undefined) fs.closeSync(this.stdinFd);
    for (const p of [this.stdin, this.stdout, this.stderr]) if (p) fs.rmSync(p, { force: true });
  }
}

/** Create + Start of a container; `exited` is its Wait, sent before Start (wrapped: an async function would flatten it). */
export async function runTask(
  h: WasmHarness,
  id: string,
  bundle: string,
  io: ClientIO,
  extra: Partial<task.CreateTaskRequest> = {},
): Promise<{ exited: Promise<task.WaitResponse> }> {
  await h.tasks.create({ id, bundle, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, ...extra });
  const waited = h.tasks.wait({ id });
  waited.catch(() => undefined);
  await h.tasks.start({ id });
  return { exited: waited };
}
