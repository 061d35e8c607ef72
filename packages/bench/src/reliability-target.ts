// A real runc-sandboxer process with no containerd in front of it: the reliability suites (fuzz, bad input,
// permissions) talk to its Controller (gRPC) and Task (ttrpc) sockets byte for byte, as containerd would.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { cri, packAny, sandboxApi, task, type google } from '@kuasar/api';
import { SANDBOXERS, SandboxerProcess, leftoverMounts } from '@kuasar/e2e';
import { Code, TtrpcClient, TtrpcError } from '@kuasar/ttrpc';

export const NAMESPACE = 'k8s.io';
export const TASK_V2 = 'containerd.task.v2.Task';
export const TASK_V3 = 'containerd.task.v3.Task';

/** What one raw call got back: a status code (0 = OK) and, for OK, the response bytes. */
export interface WireResult {
  code: number;
  message: string;
  body?: Buffer;
}

export interface TargetOptions {
  /** Extra TOML for --config (e.g. a [runc.runtime] table). */
  config?: string;
  /** Start on this state dir (a restart); default a new one. */
  base?: string;
  env?: NodeJS.ProcessEnv;
}

/** gRPC status names by number, for reports. */
export const GRPC_CODES: Record<number, string> = Object.fromEntries(Object.entries(grpc.status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v, k]));

export class SandboxerTarget {
  private grpcClient: grpc.Client | undefined;
  private ttrpc: TtrpcClient | undefined;

  private constructor(readonly base: string, readonly sb: SandboxerProcess) {}

  get dir(): string {
    return path.join(this.base, 'sb');
  }

  get listen(): string {
    return path.join(this.base, 'sb.sock');
  }

  /** Bundles the tree's runc-sandboxer once per process (as the e2e suite runs it). */
  static build(): void {
    if (!built) SANDBOXERS.runc!.build();
    built = true;
  }

  static async start(o: TargetOptions = {}): Promise<SandboxerTarget> {
    SandboxerTarget.build();
    const base = o.base ?? mkdtempSync('/tmp/krel-');
    const config = path.join(base, 'config.toml');
    if (o.config !== undefined) writeFileSync(config, o.config);
    const sb = await SandboxerProcess.start({
      kind: 'runc', command: SANDBOXERS.runc!.command(), listen: path.join(base, 'sb.sock'), dir: path.join(base, 'sb'),
      // nothing listens there: events are dropped after their retries, which is all these suites need
      ttrpcAddress: path.join(base, 'no-containerd.sock'), logPath: path.join(base, 'sandboxer.log'), logLevel: 'info',
      env: { KUASAR_TASK_RELAY: '0', NOTIFY_SOCKET: '', ...o.env }, ...(o.config !== undefined ? { config } : {}),
    });
    return new SandboxerTarget(base, sb);
  }

  private controller(): grpc.Client {
    this.grpcClient ??= new grpc.Client(`unix:${this.listen}`, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': 64 << 20,
    });
    return this.grpcClient;
  }

  /** One Controller call with raw request bytes (method: 'Create', 'Status', …). */
  controllerRaw(method: string, body: Buffer, timeoutMs = 10_000): Promise<WireResult> {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', NAMESPACE);
    return new Promise((resolve) => {
      this.controller().makeUnaryRequest(`/containerd.services.sandbox.v1.Controller/${method}`, (b: Buffer) => b, (b: Buffer) => b, body, md,
        { deadline: Date.now() + timeoutMs },
        (err, res) => resolve(err ? { code: err.code, message: err.details } : { code: 0, message: '', body: res }));
    });
  }

  controllerCall<K extends keyof typeof sandboxApi.ControllerService>(method: K, req: object, timeoutMs?: number): Promise<WireResult> {
    const def = sandboxApi.ControllerService[method] as unknown as { path: string; requestSerialize(r: unknown): Buffer };
    const name = def.path.slice(def.path.lastIndexOf('/') + 1);
    const msgType = (sandboxApi as unknown as Record<string, { fromPartial(o: object): unknown }>)[`Controller${name}Request`]!;
    return this.controllerRaw(name, def.requestSerialize(msgType.fromPartial(req)), timeoutMs);
  }

  async taskConn(): Promise<TtrpcClient> {
    this.ttrpc ??= await TtrpcClient.connect(this.sb.taskSocket, { metadata: { 'containerd-namespace-ttrpc': NAMESPACE }, maxMessageSize: 64 << 20 });
    return this.ttrpc;
  }

  /** One Task call with raw request bytes over ttrpc. A broken connection is reopened for the next call. */
  async taskRaw(service: string, method: string, body: Buffer, timeoutMs = 10_000): Promise<WireResult> {
    const conn = await this.taskConn();
    try {
      return { code: 0, message: '', body: Buffer.from(await conn.call(service, method, body, { timeoutMs })) };
    } catch (err) {
      if (err instanceof TtrpcError) {
        if (err.code === Code.UNAVAILABLE) this.dropTaskConn();
        return { code: err.code, message: err.message };
      }
      this.dropTaskConn();
      return { code: -1, message: (err as Error).message };
    }
  }

  taskCall<K extends keyof typeof task.TaskV3Definition.methods>(method: K, req: object, service = TASK_V3, timeoutMs?: number): Promise<WireResult> {
    const m = task.TaskV3Definition.methods[method] as unknown as { name: string; requestType: { fromPartial(o: object): unknown; encode(m: unknown): { finish(): Uint8Array } } };
    return this.taskRaw(service, m.name, Buffer.from(m.requestType.encode(m.requestType.fromPartial(req)).finish()), timeoutMs);
  }

  dropTaskConn(): void {
    this.ttrpc?.close();
    this.ttrpc = undefined;
  }

  /** A pod as containerd would make it (host network: no CNI). Returns its id. */
  async runPod(id: string): Promise<void> {
    const created = await this.controllerCall('create', { sandboxId: id, options: podOptions(id), netnsPath: '' });
    if (created.code !== 0) throw new Error(`Create ${id}: ${GRPC_CODES[created.code]} ${created.message}`);
    const started = await this.controllerCall('start', { sandboxId: id });
    if (started.code !== 0) throw new Error(`Start ${id}: ${GRPC_CODES[started.code]} ${started.message}`);
  }

  /** Ids of the sandboxes the state dir holds (entries that could be sandbox dirs). */
  sandboxDirs(): string[] {
    if (!existsSync(this.dir)) return [];
    return readdirSync(this.dir, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'tasks' && !e.name.startsWith('.')).map((e) => e.name);
  }

  /** Task dirs the task core keeps (`<dir>/tasks/<ns>/<id>`). */
  taskDirs(): string[] {
    const root = path.join(this.dir, 'tasks');
    if (!existsSync(root)) return [];
    return readdirSync(root).flatMap((ns) => (ns.startsWith('.') ? [] : readdirSync(path.join(root, ns)).map((id) => `${ns}/${id}`)));
  }

  /** Stops and shuts down every sandbox left in the state dir (what a fuzz run may have created). */
  async shutdownAll(): Promise<string[]> {
    const ids = this.sandboxDirs();
    for (const id of ids) {
      await this.controllerCall('stop', { sandboxId: id, timeoutSecs: 1 });
      await this.controllerCall('shutdown', { sandboxId: id });
    }
    return ids;
  }

  rawLog(): string {
    return readFileSync(path.join(this.base, 'sandboxer.log'), 'utf8');
  }

  /** Ends the sandboxer (SIGKILL: pods stay), keeping the state dir for a restart. */
  async crash(): Promise<void> {
    this.close();
    await this.sb.kill('SIGKILL');
  }

  close(): void {
    this.dropTaskConn();
    this.grpcClient?.close();
    this.grpcClient = undefined;
  }

  /** Stops the sandboxer and removes the state dir unless something is still mounted under it. */
  async stop(): Promise<void> {
    this.close();
    await this.sb.stopAll();
    if (leftoverMounts([this.base], []).length === 0) rmSync(this.base, { recursive: true, force: true });
  }
}
let built = false;

export function podOptions(name: string): google.Any {
  return packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'default', uid: `uid-${name}` },
    linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
  }));
}

/**
 * A busybox bundle for a container of `pod` as containerd 2.x CRI writes it (pod annotations, host network).
 * The sandboxer joins the pod's namespaces itself.
 */
export function podContainerBundle(parent: string, pod: string | undefined, args: string[]): string {
  const dir = mkdtempSync(path.join(parent, 'bundle-'));
  const rootfs = path.join(dir, 'rootfs');
  mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'etc']) mkdirSync(path.join(rootfs, d));
  copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  for (const a of execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n')) if (a && a !== 'busybox') symlinkSync('busybox', path.join(rootfs, 'bin', a));
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/', noNewPrivileges: true },
    root: { path: rootfs, readonly: false },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: { namespaces: [{ type: 'pid' }, { type: 'mount' }, { type: 'ipc' }, { type: 'uts' }] },
    annotations: pod ? { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': pod } : {},
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(spec));
  return dir;
}
