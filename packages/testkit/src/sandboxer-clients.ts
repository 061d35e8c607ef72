// containerd's side of a served sandboxer, for tests that start one in-process: the Task API through a ttrpc client
// on its task socket, the Controller through grpc-js, task events received by a ttrpc Events server (what
// TTRPC_ADDRESS points at), and stdio through FIFOs opened the way containerd's cio opens them. Starting the sandboxer
// itself stays with each kind's harness: its spec and config are its own.
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, dateFromTimestamp, eventsTtrpc, packAny, sandboxApi, task, unpackTaskEvent, type DecodedTaskEvent, type google } from '@kuasar/api';
import { TtrpcClient, TtrpcServer, createClient, type ServiceClient } from '@kuasar/ttrpc';

export interface ReceivedEvent {
  namespace: string;
  topic: string;
  timestamp: Date;
  decoded: DecodedTaskEvent;
}

/** containerd's Events service: what a sandboxer publishes task events to. `listen()` before the sandboxer starts. */
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

  listen(): Promise<void> {
    return this.server.listen(this.path);
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

  /** the exit status of a container's init (or of exec `id`), once its /tasks/exit arrived */
  exitStatus(containerId: string, id = containerId): number | undefined {
    const e = this.events.find((x) => x.topic === '/tasks/exit' && (x.decoded.event as { containerId?: string }).containerId === containerId
      && (x.decoded.event as { id?: string }).id === id);
    return (e?.decoded.event as { exitStatus?: number } | undefined)?.exitStatus;
  }
}

/** the generated client encodes through fromPartial, so tests may leave proto3 defaults out */
export type PartialClient<C> = {
  [K in keyof C]: C[K] extends (req: infer Req, opts?: infer O) => Promise<infer Res> ? (req: Partial<Req>, opts?: O) => Promise<Res> : never;
};
export type TaskClient = PartialClient<ServiceClient<typeof task.TaskV3Definition>>;

/** The clients containerd holds on a sandboxer. */
export interface SandboxerClients {
  client: TtrpcClient;
  tasks: TaskClient;
  controller: sandboxApi.ControllerClient;
  close(): Promise<void>;
}

/** Connects to a served sandboxer: ttrpc on `taskSocket` (in `namespace`), gRPC on the Controller socket `listen`. */
export async function connectSandboxer(o: { listen: string; taskSocket: string; namespace: string }): Promise<SandboxerClients> {
  const client = await TtrpcClient.connect(o.taskSocket, { metadata: { 'containerd-namespace-ttrpc': o.namespace } });
  const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;
  const controller = new sandboxApi.ControllerClient(`unix:${o.listen}`, grpc.credentials.createInsecure());
  return {
    client, tasks, controller,
    close: async () => {
      controller.close();
      await client.close();
    },
  };
}

export type ControllerMethod = 'create' | 'start' | 'stop' | 'wait' | 'status' | 'shutdown' | 'metrics';
const REQUEST = {
  create: sandboxApi.ControllerCreateRequest,
  start: sandboxApi.ControllerStartRequest,
  stop: sandboxApi.ControllerStopRequest,
  wait: sandboxApi.ControllerWaitRequest,
  status: sandboxApi.ControllerStatusRequest,
  shutdown: sandboxApi.ControllerShutdownRequest,
  metrics: sandboxApi.ControllerMetricsRequest,
} as const;

/** One Controller call over gRPC in `namespace`, as containerd makes it (the request through fromPartial). */
export function controllerCall(client: sandboxApi.ControllerClient, method: ControllerMethod, req: object, namespace: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const fn = client[method].bind(client) as unknown as (r: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
    const md = new grpc.Metadata();
    md.set('containerd-namespace', namespace);
    fn((REQUEST[method] as { fromPartial(o: unknown): unknown }).fromPartial(req), md, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** A Controller Create's `options`: the pod's CRI config (proto3 defaults may be left out), packed as containerd packs it. */
export function podSandboxOptions(config: PodConfigInput): google.Any {
  return packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial(config as cri.PodSandboxConfig));
}

type Partially<T> = T extends (infer U)[] ? Partially<U>[] : T extends object ? { [K in keyof T]?: Partially<T[K]> } : T;
export type PodConfigInput = Partially<cri.PodSandboxConfig>;

/** A new directory under the system temp dir; keep `prefix` short: unix socket paths must fit in 108 bytes. */
export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
}

/** Polls `fn` every `intervalMs` until it returns something truthy, which it resolves with. */
export async function until<T>(fn: () => T | undefined | false, ms: number, what = 'condition', intervalMs = 10): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

let fifoSeq = 0;

/** Client FIFOs the way containerd's cio makes them: outputs opened O_RDONLY|O_NONBLOCK before Create. */
export class ClientIO {
  readonly stdin: string;
  readonly stdout: string;
  readonly stderr: string;
  /** all of stdout / stderr, once the writers are gone */
  readonly out: Promise<Buffer>;
  readonly err: Promise<Buffer>;
  private readonly sockets: net.Socket[] = [];
  private readonly outChunks: Buffer[] = [];
  private stdinFd: number | undefined;

  /** `stderr: false` names no stderr in Create (as `stdin` left out): no FIFO the task must open when nothing reads it. */
  constructor(dir: string, o: { stdin?: boolean; stderr?: boolean } = {}) {
    const base = path.join(dir, `io${process.pid}-${fifoSeq++}`);
    this.stdin = o.stdin ? `${base}-in` : '';
    this.stdout = `${base}-out`;
    this.stderr = o.stderr === false ? '' : `${base}-err`;
    for (const p of [this.stdin, this.stdout, this.stderr]) if (p) execFileSync('mkfifo', [p]);
    this.out = this.read(this.stdout, this.outChunks);
    this.err = this.stderr ? this.read(this.stderr, []) : Promise.resolve(Buffer.alloc(0));
  }

  /** stdout so far */
  get outSoFar(): string {
    return Buffer.concat(this.outChunks).toString();
  }

  /** resolves when the first bytes arrive on stdout (for start latency) */
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
    this.stdinFd = undefined;
    for (const p of [this.stdin, this.stdout, this.stderr]) if (p) fs.rmSync(p, { force: true });
  }

  private read(p: string, chunks: Buffer[]): Promise<Buffer> {
    const s = new net.Socket({ fd: fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    this.sockets.push(s);
    return new Promise((resolve) => {
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve(Buffer.concat(chunks)));
      s.on('error', () => resolve(Buffer.concat(chunks)));
    });
  }
}

/** Create + Start of a container; `exited` is its Wait, sent before Start (wrapped: an async function would flatten it). */
export async function runTask(
  tasks: TaskClient,
  id: string,
  bundle: string,
  io: ClientIO,
  extra: Partial<task.CreateTaskRequest> = {},
): Promise<{ exited: Promise<task.WaitResponse> }> {
  await tasks.create({ id, bundle, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, ...extra });
  const waited = tasks.wait({ id });
  waited.catch(() => undefined);
  await tasks.start({ id });
  return { exited: waited };
}
