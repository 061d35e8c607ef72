// UNTESTED: QuarkContainer cannot be installed on these machines. This adapter drives the `quark` binary the way
// Kuasar's Rust quark-sandboxer does (quark/src/sandbox.rs): `quark -r <bundle> sandbox --task-socket <sock> --id
// <id> --pid-file <file>` boots the pod's kernel and returns; quark itself then serves containerd's Task API (v2)
// on that socket. Here the task core stays in front (one task endpoint per sandboxer), and this Engine forwards
// each container call to its pod's quark task socket. Stdio goes as /proc/<our pid>/fd/<n> paths, which quark
// bind-mounts like the FIFO paths Kuasar hands it.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packJsonAny, task, types } from '@kuasar/api';
import { ConfigError, type Logger } from '@kuasar/sandbox';
import {
  Code, TtrpcError,
  type ContainerCreate, type ContainerRef, type EngineAny, type EngineExit, type EngineStatus,
  type OciLinuxResources, type OciProcess, type OciSpec, type ProcessStdio,
} from '@kuasar/task';
import { isRunning } from '@kuasar/sys';
import { TtrpcClient, createClient, type ServiceClient } from '@kuasar/ttrpc';
import { POD_ANNOTATION } from './runsc-engine';
import type { SandboxEngine } from './sandbox-engine';

const OCI_SPEC_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';
const OCI_PROCESS_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
const STATUS: Record<number, EngineStatus> = {
  [types.TaskStatus.CREATED]: 'created', [types.TaskStatus.RUNNING]: 'running', [types.TaskStatus.STOPPED]: 'stopped',
  [types.TaskStatus.PAUSED]: 'paused', [types.TaskStatus.PAUSING]: 'pausing',
};

/** `quark` is not installed: a config error (the sandboxer exits 2 naming it), never a crash at the first pod. */
export class QuarkNotInstalledError extends ConfigError {
  constructor(binary: string) {
    super(`[quark] engine = "quark" needs QuarkContainer's ${JSON.stringify(binary)} binary, which is not installed ` +
      '(not found or not executable); install Quark (github.com/QuarkContainer/Quark) or use engine = "runsc"');
  }
}

/** Absolute path of the quark binary (a name is looked up in PATH); QuarkNotInstalledError otherwise. */
export function quarkBinary(name: string, pathEnv = process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin'): string {
  const candidates = name.includes('/') ? [name] : pathEnv.split(path.delimiter).map((d) => path.join(d, name));
  for (const p of candidates) {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return path.resolve(p);
    } catch {
      /* next */
    }
  }
  throw new QuarkNotInstalledError(name);
}

export interface QuarkEngineOptions {
  binary: string;
  /** per-pod dirs: `<root>/<pod>/{quark-task.sock,pid}` */
  root: string;
  logger?: Logger;
  pollMs?: number;
}

type TaskClient = ServiceClient<typeof task.TaskV2Definition>;

export class QuarkEngine implements SandboxEngine {
  readonly name = 'quark';
  private readonly clients = new Map<string, Promise<{ conn: TtrpcClient; tasks: TaskClient }>>();
  private listener: ((e: EngineExit) => void) | undefined;

  constructor(private readonly o: QuarkEngineOptions) {}

  onExit(listener: (exit: EngineExit) => void): void {
    this.listener = listener;
  }

  podStateDir(pod: string): string {
    return path.join(this.o.root, pod);
  }

  async startSandbox(pod: string, bundle: string): Promise<{ pid: number }> {
    const dir = this.podStateDir(pod);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const pidFile = path.join(dir, 'pid');
    const args = ['-r', bundle, 'sandbox', '--task-socket', path.join(dir, 'quark-task.sock'), '--id', pod, '--pid-file', pidFile];
    await new Promise<void>((resolve, reject) => {
      const child = spawn(this.o.binary, args, { cwd: bundle, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err) => reject(new TtrpcError(Code.FAILED_PRECONDITION, `cannot run ${this.o.binary}: ${err.message}`)));
      child.on('close', (code) => (code === 0 ? resolve() : reject(new TtrpcError(Code.UNKNOWN, `quark sandbox failed: ${stderr.trim() || `exit status ${code}`}`))));
    });
    const pid = Number.parseInt(fs.readFileSync(pidFile, 'utf8').trim(), 10);
    if (!(pid > 0)) throw new TtrpcError(Code.INTERNAL, `quark wrote no pid to ${pidFile}`);
    return { pid };
  }

  sandboxExited(pid: number): Promise<number> {
    // quark daemonises: its sandbox is nobody's child of ours, so only its disappearance is observable
    return new Promise((resolve) => {
      const t = setInterval(() => {
        if (isRunning(pid)) return;
        clearInterval(t);
        resolve(255);
      }, this.o.pollMs ?? 500);
      t.unref();
    });
  }

  async killSandbox(pod: string, _bundle: string, signal: number): Promise<void> {
    const pid = this.podPid(pod);
    if (pid) process.kill(pid, signal);
  }

  async destroySandbox(pod: string): Promise<void> {
    const pid = this.podPid(pod);
    if (pid && isRunning(pid)) process.kill(pid, 'SIGKILL');
    const c = this.clients.get(pod);
    this.clients.delete(pod);
    await c?.then((x) => x.conn.close()).catch(() => undefined);
    fs.rmSync(this.podStateDir(pod), { recursive: true, force: true });
  }

  close(): void {
    for (const c of this.clients.values()) void c.then((x) => x.conn.close()).catch(() => undefined);
    this.clients.clear();
  }

  // ---- Engine: forwarded to the pod's quark task service -----------------------------------------------------------

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    const [tasks, ns] = await this.client(c, init.spec);
    const io = this.stdioPaths(init.stdio);
    const r = await tasks.create(task.CreateTaskRequest.fromPartial({ id: c.id, bundle: c.bundle, ...io }), { namespace: ns });
    return { pid: r.pid };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const [tasks, ns] = await this.client(c);
    const r = await tasks.start(task.StartRequest.fromPartial({ id: c.id }), { namespace: ns });
    this.waitFor(tasks, ns, c.id, '');
    return { pid: r.pid };
  }

  async exec(c: ContainerRef, execId: string, proc: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const [tasks, ns] = await this.client(c);
    await tasks.exec(task.ExecProcessRequest.fromPartial({
      id: c.id, execId, ...this.stdioPaths(stdio), spec: packJsonAny(OCI_PROCESS_TYPE, proc),
    }), { namespace: ns });
    const r = await tasks.start(task.StartRequest.fromPartial({ id: c.id, execId }), { namespace: ns });
    this.waitFor(tasks, ns, c.id, execId);
    return { pid: r.pid };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const [tasks, ns] = await this.client(c);
    await tasks.kill(task.KillRequest.fromPartial({ id: c.id, execId: execId ?? '', signal, all }), { namespace: ns });
  }

  async delete(c: ContainerRef): Promise<void> {
    const [tasks, ns] = await this.client(c);
    try {
      await tasks.delete(task.DeleteRequest.fromPartial({ id: c.id }), { namespace: ns });
    } catch (err) {
      if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
    }
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    const [tasks, ns] = await this.client(c);
    const r = await tasks.state(task.StateRequest.fromPartial({ id: c.id }), { namespace: ns });
    return { status: STATUS[r.status] ?? 'unknown', pid: r.pid };
  }

  async pids(c: ContainerRef): Promise<number[]> {
    const [tasks, ns] = await this.client(c);
    return (await tasks.pids(task.PidsRequest.fromPartial({ id: c.id }), { namespace: ns })).processes.map((p) => p.pid);
  }

  async pause(c: ContainerRef): Promise<void> {
    const [tasks, ns] = await this.client(c);
    await tasks.pause(task.PauseRequest.fromPartial({ id: c.id }), { namespace: ns });
  }

  async resume(c: ContainerRef): Promise<void> {
    const [tasks, ns] = await this.client(c);
    await tasks.resume(task.ResumeRequest.fromPartial({ id: c.id }), { namespace: ns });
  }

  async update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    const [tasks, ns] = await this.client(c);
    await tasks.update(task.UpdateTaskRequest.fromPartial({ id: c.id, resources: packJsonAny(OCI_SPEC_TYPE, resources) }), { namespace: ns });
  }

  async stats(c: ContainerRef): Promise<EngineAny> {
    const [tasks, ns] = await this.client(c);
    const r = await tasks.stats(task.StatsRequest.fromPartial({ id: c.id }), { namespace: ns });
    if (!r.stats) throw new TtrpcError(Code.UNAVAILABLE, `quark returned no stats for ${c.id}`);
    return r.stats;
  }

  // ---- internals ---------------------------------------------------------------------------------------------------

  private podPid(pod: string): number | undefined {
    try {
      const pid = Number.parseInt(fs.readFileSync(path.join(this.podStateDir(pod), 'pid'), 'utf8').trim(), 10);
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The pod's task client and the containerd namespace, from the container's POD_ANNOTATION. */
  private async client(c: ContainerRef, spec?: OciSpec): Promise<[TaskClient, string]> {
    let s = spec;
    if (!s) {
      try {
        s = JSON.parse(fs.readFileSync(path.join(c.bundle, 'config.json'), 'utf8')) as OciSpec;
      } catch {
        s = undefined;
      }
    }
    const pod = s?.annotations?.[POD_ANNOTATION];
    if (!pod) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} belongs to no quark pod (quark runs containers only inside a pod)`);
    let conn = this.clients.get(pod);
    if (!conn) {
      conn = TtrpcClient.connect(path.join(this.podStateDir(pod), 'quark-task.sock')).then((x) => ({ conn: x, tasks: createClient(task.TaskV2Definition, x) }));
      conn.catch(() => this.clients.delete(pod));
      this.clients.set(pod, conn);
    }
    return [(await conn).tasks, c.namespace];
  }

  private stdioPaths(s: ProcessStdio): { stdin: string; stdout: string; stderr: string; terminal: boolean } {
    if (s.terminal) throw new TtrpcError(Code.UNIMPLEMENTED, 'terminals are not supported by the quark adapter');
    const p = (fd: number | undefined) => (fd === undefined ? '' : `/proc/${process.pid}/fd/${fd}`);
    return { stdin: p(s.stdin), stdout: p(s.stdout), stderr: p(s.stderr), terminal: false };
  }

  /** quark reports exits through its Task API's Wait, one parked call per process. */
  private waitFor(tasks: TaskClient, ns: string, id: string, execId: string): void {
    tasks.wait(task.WaitRequest.fromPartial({ id, execId }), { namespace: ns }).then(
      (r) => this.listener?.({ id, ...(execId ? { execId } : {}), status: r.exitStatus }),
      (err: Error) => {
        this.o.logger?.warn({ id, execId, err: err.message }, 'quark wait failed; exit status unknown');
        this.listener?.({ id, ...(execId ? { execId } : {}), status: 255 });
      },
    );
  }
}
