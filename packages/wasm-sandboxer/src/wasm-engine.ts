// The Engine adapter: the task core owns the Task API, IO, events and persistence; this only turns a container
// (an OCI spec plus its mounted rootfs) into runs of WasmRunnerPool and reports their exits.
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { dup, openPty, sendFd } from '@kuasar/sys';
import {
  Code, ExitListeners, TtrpcError, packTaskUsage,
  type ContainerCreate, type ContainerRef, type Engine, type EngineAny, type EngineExit, type EngineStatus,
  type OciLinuxResources, type OciProcess, type ProcessStdio,
} from '@kuasar/task';
import type { Logger } from '@kuasar/sandbox';
import { WasmLoadError, WasmRunnerError } from './errors';
import { RootfsPathError, resolveModule } from './rootfs-path';
import type { PreparedModule, RunningModule, WasmExit, WasmRunContext, WasmRunnerPool } from './wasm-runner';

export interface WasmEngineOptions {
  pool: WasmRunnerPool;
  logger: Logger;
  /** linear-memory cap for containers whose spec sets no memory limit; undefined = none (4 GiB, wasm32's ceiling) */
  defaultMemoryLimitBytes?: number;
}

/** A module run: the container's init or one exec. */
interface WasmProcess {
  /** undefined for CRI 1.x's pause container, which runs no module (see pauseModule) */
  ctx: Omit<WasmRunContext, 'stdin' | 'stdout' | 'stderr'> | undefined;
  /** our own copies of the task IO fds (the core closes its copies after start); closed at exit */
  stdio: number[];
  /**
   * A container's init is instantiated in its worker during Create, while the task core persists and publishes:
   * Start then only wakes it. Rejects (the failure is reported by Start) when instantiation failed.
   */
  prepared?: Promise<PreparedModule>;
  /** a created process that was killed: resolves once its prepared worker is gone and its stdio closed */
  cancelled?: Promise<void>;
  module?: RunningModule;
  status: 'created' | 'running' | 'stopped';
}

interface WasmContainer {
  rootfs: string;
  env: string[];
  preopens: Record<string, string>;
  memoryLimitBytes?: number;
  init: WasmProcess;
  execs: Map<string, WasmProcess>;
}

const SIGKILL = 9;
const KILL_WAIT_MS = 2_000;
/** CRI marks a pod's pause container with container-type "sandbox" (containerd 1.x runs it as a task) */
const CRI_CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';
const CGROUP_V2 = fs.existsSync('/sys/fs/cgroup/cgroup.controllers');

export class WasmEngine implements Engine {
  readonly name = 'wasm';
  private readonly pool: WasmRunnerPool;
  private readonly logger: Logger;
  private readonly defaultLimit: number | undefined;
  private readonly containers = new Map<string, WasmContainer>();
  private readonly exits: ExitListeners;

  constructor(o: WasmEngineOptions) {
    this.pool = o.pool;
    this.logger = o.logger.child({ component: 'wasm-engine' });
    this.exits = new ExitListeners(this.logger);
    this.defaultLimit = o.defaultMemoryLimitBytes;
  }

  onExit(listener: (e: EngineExit) => void): void {
    this.exits.add(listener);
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    const spec = init.spec;
    const rootfs = path.resolve(c.bundle, spec.root?.path ?? 'rootfs');
    const env = stringArray(spec.process?.env, 'process.env');
    const limit = memoryLimit(spec.linux?.resources) ?? this.defaultLimit;
    const preopens: Record<string, string> = { '/': rootfs };
    for (const m of (spec.mounts ?? []) as OciMount[]) {
      const bind = m.type === 'bind' || (m.options ?? []).some((o) => o === 'bind' || o === 'rbind');
      if (!bind || typeof m.destination !== 'string' || typeof m.source !== 'string' || m.destination === '/') continue;
      if (!path.isAbsolute(m.source)) throw new TtrpcError(Code.INVALID_ARGUMENT, `bind mount source "${m.source}" must be an absolute path`);
      // WASI preopens are directories; CRI's file mounts (/etc/hosts, resolv.conf, termination-log) cannot be one
      if (!isDirectory(m.source)) continue;
      preopens[path.posix.resolve('/', m.destination)] = m.source;
    }
    const wc: WasmContainer = { rootfs, env, preopens, memoryLimitBytes: limit, init: undefined!, execs: new Map() };
    // containerd 1.x runs a CRI pod's pause image (a native binary) as a task: a wasm pod has nothing to hold, so it
    // is a placeholder that runs until it is killed
    const pause = spec.annotations?.[CRI_CONTAINER_TYPE_ANNOTATION] === 'sandbox';
    wc.init = pause ? { ctx: undefined, stdio: ownStdio(init.stdio), status: 'created' } : await this.prepare(wc, spec.process ?? {}, init.stdio);
    const p = wc.init;
    if (p.ctx) {
      const [stdin, stdout, stderr] = p.stdio as [number, number, number];
      p.prepared = this.pool.prepare({ ...p.ctx, stdin, stdout, stderr });
      p.prepared.catch(() => undefined); // Start reports it
    }
    this.containers.set(key(c), wc);
    return { pid: 0 };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const wc = this.container(c);
    if (wc.init.status !== 'created') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} is ${wc.init.status}`);
    await this.run(c, wc, wc.init, undefined);
    return { pid: 0 };
  }

  async exec(c: ContainerRef, execId: string, process: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const wc = this.container(c);
    if (wc.init.status !== 'running') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} is ${wc.init.status}`);
    // an exec is another module of the pod's image: same rootfs and preopens, its own args and env
    const p = await this.prepare(wc, { ...process, env: process.env ?? wc.env }, stdio);
    wc.execs.set(execId, p);
    try {
      await this.run(c, wc, p, execId);
    } catch (err) {
      wc.execs.delete(execId);
      throw err;
    }
    return { pid: 0 };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const wc = this.container(c);
    const p = execId === undefined ? wc.init : wc.execs.get(execId);
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} not found in container ${c.id}`);
    const targets = all && execId === undefined ? [p, ...wc.execs.values()] : [p];
    for (const t of targets) this.signal(c, t, t === wc.init ? undefined : execIdOf(wc, t), signal);
  }

  async delete(c: ContainerRef, opts: { force: boolean }): Promise<void> {
    const wc = this.containers.get(key(c));
    if (!wc) return;
    const procs = [wc.init, ...wc.execs.values()];
    if (!opts.force && procs.some((p) => p.status === 'running')) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} is running`);
    }
    for (const p of procs) this.signal(c, p, p === wc.init ? undefined : execIdOf(wc, p), SIGKILL);
    // the runner reports a killed module within killAbandonMs; bounded anyway so Delete never hangs
    await Promise.race([Promise.all(procs.map((p) => p.module?.exited ?? p.cancelled)), delay(KILL_WAIT_MS)]);
    for (const p of procs) closeAll(p.stdio);
    this.containers.delete(key(c));
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    return { status: this.container(c).init.status, pid: 0 };
  }

  async pids(c: ContainerRef): Promise<number[]> {
    this.container(c);
    return []; // modules run in threads of the sandboxer: there is no process id to give
  }

  async pause(c: ContainerRef): Promise<void> {
    this.container(c);
    throw new TtrpcError(Code.UNIMPLEMENTED, 'wasm containers cannot be paused: a worker thread cannot be frozen');
  }

  async resume(c: ContainerRef): Promise<void> {
    this.container(c);
    throw new TtrpcError(Code.UNIMPLEMENTED, 'wasm containers cannot be paused or resumed');
  }

  /** Only memory.limit, and only for modules started from now on (execs): a running module's cap is compiled in. */
  async update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    const wc = this.container(c);
    const limit = memoryLimit(resources);
    if (limit !== undefined) wc.memoryLimitBytes = limit;
  }

  /** Linear memory of the container's running modules, and their number as "pids"; no CPU figures (see README). */
  async stats(c: ContainerRef): Promise<EngineAny> {
    return packWasmMetrics(usageOf(this.container(c)));
  }

  /** What a container's running modules use now; undefined for a container this process does not run. */
  usage(namespace: string, id: string): WasmUsage | undefined {
    const wc = this.containers.get(`${namespace}/${id}`);
    return wc ? usageOf(wc) : undefined;
  }

  // ---- internals -------------------------------------------------------------------------------------------------

  private container(c: ContainerRef): WasmContainer {
    const wc = this.containers.get(key(c));
    // after a sandboxer restart the core still has the record, but the module died with the old process
    if (!wc) throw new TtrpcError(Code.NOT_FOUND, `wasm container ${c.id} is not running in this sandboxer`);
    return wc;
  }

  /** Resolve and compile the module and take our own copies of its stdio; a bad module fails here, not at start. */
  private async prepare(wc: WasmContainer, proc: OciProcess, stdio: ProcessStdio): Promise<WasmProcess> {
    const args = stringArray(proc.args, 'process.args');
    if (args.length === 0) throw new TtrpcError(Code.INVALID_ARGUMENT, 'process.args is empty: args[0] names the wasm module');
    const env = stringArray(proc.env, 'process.env');
    const cwd = typeof proc.cwd === 'string' && proc.cwd.startsWith('/') ? proc.cwd : '/';
    let hostPath: string;
    try {
      ({ hostPath } = resolveModule(wc.rootfs, args[0]!, env, cwd));
      await this.pool.preload(hostPath, wc.memoryLimitBytes);
    } catch (err) {
      throw toTtrpcError(err);
    }
    const ctx = { modulePath: hostPath, args, env, cwd, preopens: wc.preopens, memoryLimitBytes: wc.memoryLimitBytes };
    return { ctx, stdio: ownStdio(stdio), status: 'created' };
  }

  private async run(c: ContainerRef, wc: WasmContainer, p: WasmProcess, execId: string | undefined): Promise<void> {
    const [stdin, stdout, stderr] = p.stdio as [number, number, number];
    try {
      if (p.prepared) p.module = (await p.prepared).start();
      else p.module = p.ctx ? await this.pool.run({ ...p.ctx, stdin, stdout, stderr }) : pauseModule();
    } catch (err) {
      closeAll(p.stdio);
      p.status = 'stopped';
      // an init that cannot start is over (so Delete need not wait for it); an exec is just not added
      if (execId === undefined) this.exits.emit({ id: c.id, namespace: c.namespace, status: 255, exitedAt: new Date() });
      throw toTtrpcError(err);
    }
    p.status = 'running';
    void p.module.exited.then((exit) => {
      p.status = 'stopped';
      // our write ends must be closed before containerd hears of the exit, or its FIFO readers miss EOF
      closeAll(p.stdio);
      if (execId === undefined) {
        // as when a pid namespace's init dies: the container's execs go with it
        for (const e of wc.execs.values()) e.module?.kill(SIGKILL);
      }
      this.logger.debug({ id: c.id, namespace: c.namespace, exec: execId, status: exit.exitCode, reason: exit.reason }, 'wasm module exited');
      this.exits.emit({ id: c.id, namespace: c.namespace, execId, status: exit.exitCode, exitedAt: exit.exitedAt });
    });
  }

  private signal(c: ContainerRef, p: WasmProcess, execId: string | undefined, signal: number): void {
    if (p.status === 'running') {
      try {
        p.module!.kill(signal);
      } catch (err) {
        throw toTtrpcError(err);
      }
    } else if (p.status === 'created' && signal !== 0) {
      // killing a created container ends it before its program ran, as runc does
      p.status = 'stopped';
      const end = (): void => {
        // only once the prepared worker is gone: it holds these fd numbers until then
        closeAll(p.stdio);
        this.exits.emit({ id: c.id, namespace: c.namespace, execId, status: 128 + signal, exitedAt: new Date() });
      };
      if (!p.prepared) return end();
      p.cancelled = p.prepared.then((m) => {
        m.kill(SIGKILL);
        return m.exited;
      }).then(end, end);
    }
  }

}

/** The pause container's stand-in: no thread, nothing to run; any signal but 0 ends it (128 + signal). */
function pauseModule(): RunningModule {
  let end!: (e: WasmExit) => void;
  const exited = new Promise<WasmExit>((r) => (end = r));
  let done = false;
  return {
    threadId: -1,
    digest: '',
    exited,
    kill(signal = 'SIGKILL') {
      const n = typeof signal === 'number' ? signal : osConstants.signals[signal];
      if (!Number.isInteger(n) || n < 0 || n > 64) throw new WasmRunnerError('ERR_WASM_SIGNAL', `invalid signal ${String(signal)}`);
      if (n === 0 || done) return;
      done = true;
      end({ exitCode: 128 + n, reason: 'signal', signal: n, exitedAt: new Date() });
    },
    memoryBytes: () => 0,
  };
}

/** Resource use of running modules (a container's, or a pod's summed). */
export interface WasmUsage {
  /** linear memory in bytes */
  memoryBytes: number;
  /** the memory cap, 0 = none */
  limitBytes: number;
  /** running modules */
  modules: number;
}

function usageOf(wc: WasmContainer): WasmUsage {
  const running = [wc.init, ...wc.execs.values()].filter((p) => p.status === 'running');
  return {
    memoryBytes: running.reduce((n, p) => n + (p.module?.memoryBytes() ?? 0), 0),
    limitBytes: wc.memoryLimitBytes ?? 0,
    modules: running.length,
  };
}

/** cgroups v1 Metrics on v1 and hybrid hosts, v2 on unified ones, as CRI's stats code expects from a runc shim. */
export function packWasmMetrics(u: WasmUsage): EngineAny {
  // linear memory is all anonymous, so all of it is RSS
  return packTaskUsage(CGROUP_V2 ? 'v2' : 'v1', {
    pids: u.modules, memoryUsage: u.memoryBytes, memoryLimit: u.limitBytes, memoryRss: u.memoryBytes,
  });
}

interface OciMount {
  destination?: string;
  source?: string;
  type?: string;
  options?: string[];
}

function key(c: ContainerRef): string {
  return `${c.namespace}/${c.id}`;
}

function execIdOf(wc: WasmContainer, p: WasmProcess): string | undefined {
  for (const [id, e] of wc.execs) if (e === p) return id;
  return undefined;
}

function stringArray(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new TtrpcError(Code.INVALID_ARGUMENT, `${what} must be an array of strings`);
  return v as string[];
}

/** linux.resources.memory.limit; absent, 0 or negative (-1 = unlimited) means no limit */
function memoryLimit(resources: OciLinuxResources | undefined): number | undefined {
  const limit = (resources?.memory as { limit?: unknown } | undefined)?.limit;
  return typeof limit === 'number' && Number.isSafeInteger(limit) && limit > 0 ? limit : undefined;
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Our own fds for the module's stdin/stdout/stderr, valid until we close them: dup'ed task IO, /dev/null for
 * what is absent, or the slave side of a new pty whose master goes to containerd's console socket.
 */
function ownStdio(stdio: ProcessStdio): number[] {
  const out: number[] = [];
  try {
    if (stdio.terminal) {
      const pty = openPty();
      try {
        sendFd(stdio.consoleSocket, pty.master);
      } finally {
        fs.closeSync(pty.master);
      }
      out.push(fs.openSync(pty.slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY));
      out.push(dup(out[0]!), dup(out[0]!));
      return out;
    }
    for (const fd of [stdio.stdin, stdio.stdout, stdio.stderr]) {
      out.push(fd === undefined ? fs.openSync('/dev/null', fs.constants.O_RDWR) : dup(fd));
    }
    return out;
  } catch (err) {
    closeAll(out);
    throw new TtrpcError(Code.INTERNAL, `cannot set up the process's stdio: ${(err as Error).message}`);
  }
}

function closeAll(fds: number[]): void {
  for (const fd of fds.splice(0)) {
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  }
}

function toTtrpcError(err: unknown): unknown {
  if (err instanceof TtrpcError) return err;
  if (err instanceof RootfsPathError) return new TtrpcError(Code.FAILED_PRECONDITION, err.message);
  if (err instanceof WasmLoadError) {
    const code = err.code === 'ERR_WASM_NOT_FOUND' ? Code.FAILED_PRECONDITION : err.code === 'ERR_WASM_MEMORY_LIMIT' ? Code.RESOURCE_EXHAUSTED : Code.INVALID_ARGUMENT;
    return new TtrpcError(code, err.message);
  }
  if (err instanceof WasmRunnerError) {
    const code = { ERR_WASM_CONTEXT: Code.INVALID_ARGUMENT, ERR_WASM_START: Code.FAILED_PRECONDITION, ERR_WASM_POOL_CLOSED: Code.UNAVAILABLE,
      ERR_WASM_SIGNAL: Code.INVALID_ARGUMENT }[err.code] ?? Code.INTERNAL;
    return new TtrpcError(code, err.message);
  }
  return err;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
