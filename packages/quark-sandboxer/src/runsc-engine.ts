// gVisor's runsc as the task core's Engine, one application kernel per pod. runsc's multi-container mode does the
// sharing: a pod's root container (the sandbox, started by QuarkSandboxer at Controller.Start) and its app
// containers live in one state dir `<root>/pods/<pod>`, and an app container annotated
// `io.kubernetes.cri.container-type=container` + `io.kubernetes.cri.sandbox-id=<pod>` joins that runsc-sandbox.
// Containers of no pod of ours (ctr run, containerd 1.x CRI where the pause container is a task) run in
// `<root>/ns/<namespace>` and share sandboxes the same way through their own CRI annotations.
//
// Exits: every container of a gVisor sandbox reports the runsc-sandbox pid, so the task core cannot learn an app
// container's exit by reaping. This engine reports exits itself (onExit): the sandbox pid of a root container and
// the host `runsc exec` waiters of execs through a Reaper; app containers by one `runsc list` per pod and poll
// period, then `runsc wait` (repeatable) for the status. A `runsc wait` process per container would cost ~6.7 MB PSS.
import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '@kuasar/sandbox';
import { Reaper, setChildSubreaper } from '@kuasar/sys';
import type { SandboxEngine } from './sandbox-engine';
import {
  Code, OciCliEngine, TtrpcError,
  type ContainerCreate, type ContainerRef, type EngineAny, type EngineExit, type EngineStatus,
  type OciLinuxResources, type OciProcess, type OciSpec, type ProcessStdio,
} from '@kuasar/task';

/** Written by QuarkSandboxer into the config.json of every container of one of its pods (and of the pod's root). */
export const POD_ANNOTATION = 'io.kuasar.quark.pod';
export const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

export interface RunscEngineOptions {
  binary: string;
  /** --platform, --network and extra flags for every call */
  globalArgs: string[];
  /** state root: `<root>/pods/<pod>` and `<root>/ns/<namespace>` */
  root: string;
  logger?: Logger;
  /** app-container exit poll period; default 500 ms */
  exitPollMs?: number;
  timeoutMs?: number;
}

/** Where a container lives: which CLI instance, under which runsc state dir. */
interface Placement {
  cli: OciCliEngine;
  /** the ref as the CLI sees it (namespace = pod id for pods) */
  ref: ContainerRef;
  stateDir: string;
  /** root container of its sandbox: its init is the runsc-sandbox process */
  root: boolean;
}

interface Watched {
  c: ContainerRef;
  at: Placement;
  sandboxPid: number;
}

type Tracked = { kind: 'exec'; key: string; c: ContainerRef; execId: string } | { kind: 'sandbox' } | { kind: 'helper' };

function key(c: Pick<ContainerRef, 'namespace' | 'id'>): string {
  return `${c.namespace}/${c.id}`;
}

function readSpec(bundle: string): OciSpec | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as OciSpec;
  } catch {
    return undefined;
  }
}

function readPid(file: string): number {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new TtrpcError(Code.NOT_FOUND, `pid file ${file} does not exist`);
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) throw new TtrpcError(Code.INTERNAL, `pid file ${file} holds no pid: "${text.trim()}"`);
  return pid;
}

/** Alive and not a zombie. */
export function processAlive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function stdioFor(s: ProcessStdio): StdioOptions {
  if (s.terminal) return ['ignore', 'ignore', 'pipe'];
  return [s.stdin ?? 'ignore', s.stdout ?? 'ignore', s.stderr ?? 'ignore'];
}

export class RunscEngine implements SandboxEngine {
  readonly name = 'runsc';
  private readonly binary: string;
  private readonly globalArgs: string[];
  private readonly root: string;
  private readonly logger: Logger | undefined;
  private readonly exitPollMs: number;
  private readonly timeoutMs: number;
  private readonly pods: OciCliEngine;
  private readonly standalone: OciCliEngine;
  private readonly reaper = new Reaper();
  private readonly tracked = new Map<number, Tracked>();
  private readonly placements = new Map<string, Placement>();
  private readonly watched = new Map<string, Watched>();
  /** stdio of app containers between create and start: runsc hands a subcontainer the stdio of `runsc start` */
  private readonly pendingStdio = new Map<string, ProcessStdio>();
  /** reaped exit statuses of sandbox processes, for the containers they took down */
  private readonly sandboxExits = new Map<number, number>();
  private readonly sandboxWaiters = new Map<number, Array<(status: number) => void>>();
  private listener: ((e: EngineExit) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(o: RunscEngineOptions) {
    this.binary = o.binary;
    this.globalArgs = o.globalArgs;
    this.root = o.root;
    this.logger = o.logger?.child({ engine: 'runsc' });
    this.exitPollMs = o.exitPollMs ?? 500;
    this.timeoutMs = o.timeoutMs ?? 30_000;
    const common = { binary: o.binary, globalArgs: o.globalArgs, timeoutMs: this.timeoutMs, ...(o.logger ? { logger: o.logger } : {}) };
    this.pods = new OciCliEngine({ ...common, root: path.join(o.root, 'pods') });
    this.standalone = new OciCliEngine({ ...common, root: path.join(o.root, 'ns') });
    // The task core does not become a subreaper for an engine that reports its own exits; sandboxes, gofers and
    // detached `runsc exec` waiters must re-parent to us to be reaped.
    setChildSubreaper();
    this.reaper.on('exit', (pid, status) => this.reaped(pid, status));
    this.reaper.on('lost', (pid) => this.reaped(pid, 255));
    this.reaper.on('error', (err) => this.logger?.error({ err: err.message }, 'reaper error'));
  }

  onExit(listener: (exit: EngineExit) => void): void {
    this.listener = listener;
  }

  /** runsc state dir of a pod (its root container and app containers). */
  podStateDir(pod: string): string {
    return path.join(this.root, 'pods', pod);
  }

  // ---- the pod's sandbox (QuarkSandboxer) ------------------------------------------------------------------------

  /**
   * Creates and starts a pod's root container from `bundle` (config.json written by the caller, annotated with
   * POD_ANNOTATION): this boots the pod's application kernel. Returns the runsc-sandbox pid.
   */
  async startSandbox(pod: string, bundle: string): Promise<{ pid: number }> {
    const ref: ContainerRef = { id: pod, namespace: pod, bundle };
    const spec = readSpec(bundle);
    if (!spec) throw new TtrpcError(Code.INVALID_ARGUMENT, `sandbox bundle ${bundle} has no readable config.json`);
    const { pid, helpers } = await this.pods.create(ref, { spec, stdio: { terminal: false } });
    for (const h of helpers ?? []) this.trackPid(h, { kind: 'helper' });
    this.trackPid(pid, { kind: 'sandbox' });
    try {
      await this.pods.start(ref);
    } catch (err) {
      await this.pods.delete(ref, { force: true }).catch(() => undefined);
      throw err;
    }
    return { pid };
  }

  /**
   * Resolves with the exit status of a sandbox process: reaped when it is our child, 255 when it vanished
   * otherwise (after a sandboxer restart it is nobody's child of ours).
   */
  sandboxExited(pid: number): Promise<number> {
    const known = this.sandboxExits.get(pid);
    if (known !== undefined) return Promise.resolve(known);
    return new Promise((resolve) => {
      const list = this.sandboxWaiters.get(pid) ?? [];
      list.push(resolve);
      this.sandboxWaiters.set(pid, list);
      if (!this.tracked.has(pid)) this.trackPid(pid, { kind: 'sandbox' });
    });
  }

  /** Signals the pod's root container (the sandbox's init). */
  async killSandbox(pod: string, bundle: string, signal: number): Promise<void> {
    await this.pods.kill({ id: pod, namespace: pod, bundle }, undefined, signal, false);
  }

  /** Kills the pod's sandbox (every container in it) and removes its runsc state. Idempotent. */
  async destroySandbox(pod: string, bundle: string): Promise<void> {
    const dir = this.podStateDir(pod);
    if (fs.existsSync(dir)) {
      await this.pods.delete({ id: pod, namespace: pod, bundle }, { force: true }).catch((err: Error) =>
        this.logger?.warn({ pod, err: err.message }, 'runsc delete of the pod sandbox failed'));
    }
    for (const [k, w] of this.watched) if (w.at.stateDir === dir) this.watched.delete(k);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // ---- Engine ----------------------------------------------------------------------------------------------------

  private placement(c: ContainerRef, spec?: OciSpec): Placement {
    const k = key(c);
    const cached = this.placements.get(k);
    if (cached && cached.ref.bundle === c.bundle) return cached;
    const s = spec ?? readSpec(c.bundle);
    const pod = s?.annotations?.[POD_ANNOTATION];
    // no CRI container type = a container of its own: runsc makes it a sandbox (its own kernel)
    const root = (s?.annotations?.[CRI_CONTAINER_TYPE] ?? 'sandbox') === 'sandbox';
    const p: Placement = pod
      ? { cli: this.pods, ref: { id: c.id, namespace: pod, bundle: c.bundle }, stateDir: this.podStateDir(pod), root }
      : { cli: this.standalone, ref: c, stateDir: path.join(this.root, 'ns', c.namespace), root };
    if (s) this.placements.set(k, p);
    return p;
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number; helpers?: number[] }> {
    const at = this.placement(c, init.spec);
    // a subcontainer's `runsc create` only prepares its gofer; its process gets the stdio of `runsc start`
    const out = await at.cli.create(at.ref, at.root ? init : { ...init, stdio: init.stdio.terminal ? init.stdio : { terminal: false } });
    if (!at.root) this.pendingStdio.set(key(c), init.stdio);
    for (const h of out.helpers ?? []) if (!this.tracked.has(h)) this.trackPid(h, { kind: 'helper' });
    // the helpers are reaped here; the core must not track them (it has no reaper for this engine anyway)
    return { pid: out.pid };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const at = this.placement(c);
    const stdio = this.pendingStdio.get(key(c));
    this.pendingStdio.delete(key(c));
    if (at.root || !stdio) {
      const { pid } = await at.cli.start(at.ref);
      this.trackGofer(at);
      this.watch(c, at, pid);
      return { pid };
    }
    await this.run(at, c.bundle, ['start', at.ref.id], stdioFor(stdio));
    this.trackGofer(at);
    const pid = readPid(path.join(c.bundle, 'init.pid'));
    this.watch(c, at, pid);
    return { pid };
  }

  async exec(c: ContainerRef, execId: string, proc: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const at = this.placement(c);
    const pidFile = path.join(c.bundle, `${execId}.pid`);
    const ipidFile = path.join(c.bundle, `${execId}.ipid`);
    const processFile = path.join(c.bundle, `.${execId}.process.json`);
    fs.writeFileSync(processFile, JSON.stringify(proc), { mode: 0o600 });
    for (const f of [pidFile, ipidFile]) fs.rmSync(f, { force: true });
    // --internal-pid-file: signals must go to the process inside the sandbox (`runsc kill --pid`); the host
    // `runsc exec` waiter does not forward them
    const args = ['exec', '--process', processFile, '--detach', '--pid-file', pidFile, '--internal-pid-file', ipidFile];
    if (stdio.terminal) args.push('--console-socket', stdio.consoleSocket);
    args.push(at.ref.id);
    try {
      await this.run(at, c.bundle, args, stdioFor(stdio), this.timeoutMs * 2);
    } finally {
      fs.rmSync(processFile, { force: true });
    }
    const pid = readPid(pidFile);
    this.trackPid(pid, { kind: 'exec', key: key(c), c, execId });
    return { pid };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const at = this.placement(c);
    if (execId === undefined) {
      await at.cli.kill(at.ref, undefined, signal, all);
      return;
    }
    const waiter = readPid(path.join(c.bundle, `${execId}.pid`));
    if (!this.tracked.has(waiter)) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} already finished`);
    const ipid = readPid(path.join(c.bundle, `${execId}.ipid`));
    await this.run(at, c.bundle, ['kill', `--pid=${ipid}`, at.ref.id, String(signal)], ['ignore', 'ignore', 'pipe']);
  }

  async delete(c: ContainerRef, opts: { force: boolean }): Promise<void> {
    const at = this.placement(c);
    // Not watched = its init has exited (or never started). A polite `runsc delete` then waits ~5 s for the
    // container's gofer and fails once the sandbox is gone; --force only destroys this container's leftovers.
    const force = opts.force || !this.watched.has(key(c));
    this.watched.delete(key(c));
    this.pendingStdio.delete(key(c));
    try {
      await at.cli.delete(at.ref, { force });
    } finally {
      this.placements.delete(key(c));
    }
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    const at = this.placement(c);
    const s = await at.cli.state(at.ref);
    // After a sandboxer restart the core asks the state of every container it re-adopts: watch the live ones again.
    if ((s.status === 'running' || s.status === 'paused') && !this.watched.has(key(c))) {
      if (!processAlive(s.pid)) return { status: 'stopped', pid: s.pid };
      this.watch(c, at, s.pid);
    }
    return s;
  }

  async pids(c: ContainerRef): Promise<number[]> {
    const at = this.placement(c);
    return at.cli.pids(at.ref);
  }

  async pause(c: ContainerRef): Promise<void> {
    const at = this.placement(c);
    await at.cli.pause(at.ref);
  }

  async resume(c: ContainerRef): Promise<void> {
    const at = this.placement(c);
    await at.cli.resume(at.ref);
  }

  async update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    const at = this.placement(c);
    await at.cli.update(at.ref, resources);
  }

  async stats(c: ContainerRef): Promise<EngineAny> {
    const at = this.placement(c);
    return at.cli.stats(at.ref);
  }

  /** `runsc --version` first line. */
  version(): Promise<string> {
    return this.pods.version();
  }

  /** Stops timers and the reaper; containers keep running. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.reaper.close();
  }

  // ---- exits -------------------------------------------------------------------------------------------------------

  /**
   * runsc leaves each container's gofer to us (subreaper); `runsc delete` waits until it is gone, which a zombie
   * never is. A subcontainer's gofer is born at `runsc start` (where the OCI CLI engine does not look) and may
   * already be a zombie by then, so its pid comes from runsc's state file (`<id>_sandbox:<sandbox>.state`).
   */
  private trackGofer(at: Placement): void {
    const prefix = `${at.ref.id}_sandbox:`;
    let names: string[] = [];
    try {
      names = fs.readdirSync(at.stateDir).filter((n) => n.startsWith(prefix) && n.endsWith('.state'));
    } catch {
      return;
    }
    for (const n of names) {
      try {
        const pid = (JSON.parse(fs.readFileSync(path.join(at.stateDir, n), 'utf8')) as { goferPid?: number }).goferPid;
        if (typeof pid === 'number' && pid > 0 && !this.tracked.has(pid)) this.trackPid(pid, { kind: 'helper' });
      } catch {
        /* being rewritten */
      }
    }
  }

  private trackPid(pid: number, t: Tracked): void {
    this.tracked.set(pid, t);
    this.reaper.track(pid);
  }

  private reaped(pid: number, status: number): void {
    const t = this.tracked.get(pid);
    this.logger?.debug({ pid, status, kind: t?.kind }, 'reaped');
    this.tracked.delete(pid);
    if (!t || t.kind === 'helper') return;
    if (t.kind === 'exec') {
      this.emit({ id: t.c.id, execId: t.execId, status });
      return;
    }
    this.sandboxExits.set(pid, status);
    for (const resolve of this.sandboxWaiters.get(pid) ?? []) resolve(status);
    this.sandboxWaiters.delete(pid);
    // a root container's init is the sandbox itself
    for (const [k, w] of this.watched) {
      if (w.sandboxPid === pid && w.at.root) {
        this.watched.delete(k);
        this.emit({ id: w.c.id, status });
      }
    }
    this.schedulePoll(0);
  }

  private emit(e: EngineExit): void {
    this.logger?.debug({ id: e.id, exec: e.execId, status: e.status }, 'process exited');
    this.listener?.({ ...e, exitedAt: new Date() });
  }

  private watch(c: ContainerRef, at: Placement, sandboxPid: number): void {
    this.watched.set(key(c), { c, at, sandboxPid });
    if (at.root && !this.tracked.has(sandboxPid)) this.trackPid(sandboxPid, { kind: 'sandbox' });
    if (!this.timer) {
      this.timer = setInterval(() => void this.poll(), this.exitPollMs);
      this.timer.unref();
    }
  }

  private schedulePoll(ms: number): void {
    setTimeout(() => void this.poll(), ms).unref();
  }

  /** One `runsc list` per state dir that has watched containers; `runsc wait` for each that stopped. */
  private async poll(): Promise<void> {
    if (this.polling) return;
    if (this.watched.size === 0) {
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    this.polling = true;
    try {
      const byDir = new Map<string, Watched[]>();
      for (const w of this.watched.values()) {
        const l = byDir.get(w.at.stateDir) ?? [];
        l.push(w);
        byDir.set(w.at.stateDir, l);
      }
      await Promise.all([...byDir].map(([dir, list]) => this.pollDir(dir, list)));
    } finally {
      this.polling = false;
    }
  }

  private async pollDir(dir: string, list: Watched[]): Promise<void> {
    let states: Map<string, string> | undefined;
    try {
      const out = await this.call(['--root', dir, 'list', '--format=json'], this.timeoutMs);
      states = new Map(((JSON.parse(out) as { id: string; status: string }[] | null) ?? []).map((e) => [e.id, e.status]));
    } catch (err) {
      this.logger?.debug({ dir, err: (err as Error).message }, 'runsc list failed');
    }
    for (const w of list) {
      const k = key(w.c);
      if (this.watched.get(k) !== w) continue;
      const sandboxGone = !processAlive(w.sandboxPid);
      const status = states?.get(w.at.ref.id);
      if (!sandboxGone && (states === undefined || status === 'running' || status === 'paused' || status === 'created')) continue;
      if (w.at.root && this.tracked.has(w.sandboxPid)) {
        // our child: the reaper reports its real status
        this.reaper.check();
        if (this.tracked.has(w.sandboxPid) && !sandboxGone) continue;
      }
      if (this.watched.get(k) !== w) continue;
      this.watched.delete(k);
      this.emit({ id: w.c.id, status: sandboxGone ? (this.sandboxExits.get(w.sandboxPid) ?? 255) : await this.waitStatus(w) });
    }
  }

  private async waitStatus(w: Watched): Promise<number> {
    try {
      const out = await this.call(['--root', w.at.stateDir, 'wait', w.at.ref.id], this.timeoutMs);
      const s = (JSON.parse(out.trim().split('\n').pop() ?? '{}') as { exitStatus?: number }).exitStatus;
      return typeof s === 'number' ? s : 255;
    } catch (err) {
      this.logger?.warn({ id: w.c.id, err: (err as Error).message }, 'runsc wait failed; exit status unknown');
      return 255;
    }
  }

  /** runsc with the engine's flags, like the OCI CLI engine calls it (state root, log.json in the bundle). */
  private run(at: Placement, bundle: string, args: string[], stdio: StdioOptions, timeoutMs = this.timeoutMs): Promise<string> {
    const log = path.join(bundle, 'log.json');
    return this.call(['--root', at.stateDir, '--log', log, '--log-format', 'json', ...args], timeoutMs, stdio, { file: log, offset: fileSize(log) });
  }

  private call(args: string[], timeoutMs: number, stdio: StdioOptions = ['ignore', 'pipe', 'pipe'], log?: { file: string; offset: number }): Promise<string> {
    const argv = [...this.globalArgs, ...args];
    const cmd = args.find((a, i) => !a.startsWith('-') && !(i > 0 && /^--(root|log|log-format)$/.test(args[i - 1]!))) ?? '';
    return new Promise((resolve, reject) => {
      const child = spawn(this.binary, argv, { stdio });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new TtrpcError(Code.FAILED_PRECONDITION, `cannot run ${this.binary}: ${err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve(stdout);
        const reason = (log && lastError(log.file, log.offset)) || stderr.trim() || `exit status ${code ?? signal}`;
        reject(new TtrpcError(/not running|already finished|no such process|not found|does not exist/i.test(reason) ? Code.NOT_FOUND : Code.UNKNOWN,
          `runsc ${cmd} failed: ${reason}`));
      });
    });
  }
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** The last level=error message runsc wrote to log.json since `offset` (at most 64 KiB of it). */
function lastError(file: string, offset: number): string | undefined {
  let text: string;
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(0, Math.min(size - offset, 64 * 1024)));
      fs.readSync(fd, buf, 0, buf.length, size - buf.length);
      text = buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (!line.includes('"error"')) continue;
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string };
      if (e.level === 'error' && e.msg) last = e.msg;
    } catch {
      /* partial line */
    }
  }
  return last;
}
