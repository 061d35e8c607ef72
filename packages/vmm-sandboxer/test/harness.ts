// A real vmm sandboxer for tests, driven as containerd drives it: the Controller over gRPC, the Task API over ttrpc
// on <dir>/task.sock, task events received by a ttrpc Events server, stdio through FIFOs opened as containerd's cio
// opens them. VMs are real QEMU (TCG) guests from the cached image.
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, eventsTtrpc, packAny, sandboxApi, task, unpackTaskEvent, type DecodedTaskEvent } from '@kuasar/api';
import { startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { TtrpcClient, TtrpcServer, createClient, type ServiceClient } from '@kuasar/ttrpc';
import { vmmSandboxerSpec } from '../src/sandboxer-spec';
import type { VmmSandboxer } from '../src/vmm-sandboxer';
import { GUEST_DIR, testLogger } from './guest';

export const NS = 'k8s.io';

export class EventsSink {
  readonly events: { topic: string; decoded: DecodedTaskEvent }[] = [];
  readonly server = new TtrpcServer();
  constructor(readonly path: string) {
    this.server.addService(eventsTtrpc.EventsDefinition, {
      forward: async (req) => {
        const env = req.envelope!;
        this.events.push({ topic: env.topic, decoded: unpackTaskEvent(env.event!) });
        return {};
      },
    });
  }
  exitStatus(containerId: string, id = containerId): number | undefined {
    const e = this.events.find((x) => x.topic === '/tasks/exit' && (x.decoded.event as { containerId?: string }).containerId === containerId
      && (x.decoded.event as { id?: string }).id === id);
    return (e?.decoded.event as { exitStatus?: number } | undefined)?.exitStatus;
  }
}

type PartialClient<C> = {
  [K in keyof C]: C[K] extends (req: infer Req, opts?: infer O) => Promise<infer Res> ? (req: Partial<Req>, opts?: O) => Promise<Res> : never;
};
export type TaskClient = PartialClient<ServiceClient<typeof task.TaskV3Definition>>;

export interface Harness {
  root: string;
  dir: string;
  running: RunningSandboxer;
  sandboxer: VmmSandboxer;
  tasks: TaskClient;
  controller: sandboxApi.ControllerClient;
  sink: EventsSink;
  /** stop serving and detach from VMs, keeping them and the state dir: a sandboxer restart */
  stop(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `kv-${prefix}-`));
}

export async function until<T>(fn: () => T | undefined | false, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function startHarness(root: string, sink: EventsSink): Promise<Harness> {
  const dir = path.join(root, 'state');
  process.env['TTRPC_ADDRESS'] = sink.path;
  const configFile = path.join(root, 'config.toml');
  fs.writeFileSync(configFile, [
    '[vmm]',
    `kernel = "${GUEST_DIR}/vmlinux"`,
    `initrd = "${GUEST_DIR}/initramfs.img"`,
    'accel = "tcg"',
    'boot_timeout_ms = 60000', ...(process.env.KV_DEBUG ? ['debug_console = true'] : []),
    '',
  ].join('\n'));
  const spec = vmmSandboxerSpec('test');
  let sandboxer: VmmSandboxer | undefined;
  const create = spec.createSandboxer.bind(spec);
  spec.createSandboxer = async (ctx) => (sandboxer = await create(ctx));
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec, { listen, dir, config: configFile }, testLogger());
  const client = await TtrpcClient.connect(path.join(dir, 'task.sock'), { metadata: { 'containerd-namespace-ttrpc': NS } });
  const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;
  const controller = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
  let stopped = false;
  return {
    root, dir, running, sandboxer: sandboxer!, tasks, controller, sink,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      controller.close();
      await client.close();
      await running.close();
      sandboxer!.close();
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

export async function runPod(h: Harness, id: string, hostname = id): Promise<{ pid: number }> {
  const options = packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial({
    metadata: { name: id, namespace: 'default', uid: id },
    hostname,
    dnsConfig: { servers: ['10.0.0.10'], searches: ['svc.cluster.local'], options: ['ndots:5'] },
  }));
  await rpc(h.controller, 'create', { sandboxId: id, options, netnsPath: '' });
  return rpc(h.controller, 'start', { sandboxId: id });
}

/** A busybox rootfs shared by the tests' bundles (bind-mounted into each VM's share, never written). */
export function busyboxRootfs(root: string): string {
  const rootfs = path.join(root, 'rootfs');
  if (fs.existsSync(rootfs)) return rootfs;
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'cat', 'echo', 'uname', 'head', 'yes', 'sleep', 'hostname', 'printf', 'tr', 'wc', 'ls', 'true']) {
    fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  }
  return rootfs;
}

/** A bundle as containerd 2.x writes it for a pod's container: config.json, rootfs/, and the sandbox file. */
export function makeBundle(root: string, name: string, sandboxId: string, args: string[], o: { mounts?: object[] } = {}): string {
  const bundle = path.join(root, 'bundles', name);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  execFileSync('mount', ['--bind', busyboxRootfs(root), path.join(bundle, 'rootfs')]);
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/' },
    root: { path: 'rootfs', readonly: true },
    hostname: 'ignored-in-pod',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev'] },
      ...(o.mounts ?? []),
    ],
    annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId },
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/proc/1/ns/net' }],
      resources: { memory: { limit: 64 * 1024 * 1024 } },
    },
  };
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  fs.writeFileSync(path.join(bundle, 'sandbox'), sandboxId);
  return bundle;
}

export function removeBundle(bundle: string): void {
  try {
    execFileSync('umount', [path.join(bundle, 'rootfs')], { stdio: 'ignore' });
  } catch {
    // not mounted
  }
  fs.rmSync(bundle, { recursive: true, force: true });
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
  private outChunks: Buffer[] = [];

  constructor(dir: string, o: { stdin?: boolean } = {}) {
    const base = path.join(dir, `io${process.pid}-${fifoSeq++}`);
    this.stdin = o.stdin ? `${base}-in` : '';
    this.stdout = `${base}-out`;
    this.stderr = `${base}-err`;
    for (const p of [this.stdin, this.stdout, this.stderr]) if (p) execFileSync('mkfifo', [p]);
    this.out = this.read(this.stdout, this.outChunks);
    this.err = this.read(this.stderr, []);
  }

  /** stdout so far */
  get outSoFar(): string {
    return Buffer.concat(this.outChunks).toString();
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

/** Create + Start of a container; `exited` is its Wait, sent before Start. */
export async function runTask(h: Harness, id: string, bundle: string, io: ClientIO): Promise<{ exited: Promise<task.WaitResponse> }> {
  await h.tasks.create({ id, bundle, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr });
  const waited = h.tasks.wait({ id });
  waited.catch(() => undefined);
  await h.tasks.start({ id });
  return { exited: waited };
}

/** Test cleanup after a failure: SIGKILL every VM recorded under the state dir (a restart keeps them running). */
export function killVms(dir: string): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    try {
      const { identity } = JSON.parse(fs.readFileSync(path.join(dir, n, 'vm.json'), 'utf8')) as { identity: { pid: number; startTime: string } };
      const stat = fs.readFileSync(`/proc/${identity.pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === identity.startTime) process.kill(identity.pid, 'SIGKILL');
    } catch {
      // no record, or the VM is gone
    }
  }
}

/** Mount points below dir (what a pod must not leave behind). */
export function mountsUnder(dir: string): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p === dir || p.startsWith(`${dir}/`));
}
