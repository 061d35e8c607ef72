// gVisor's runsc as the task core's Engine, one application kernel per pod. runsc's multi-container mode does the
// sharing: a pod's root container (the sandbox, started by QuarkSandboxer at Controller.Start) and its app
// containers live in one state dir `<root>/pods/<pod>`, and an app container annotated
// `io.kubernetes.cri.container-type=container` + `io.kubernetes.cri.sandbox-id=<pod>` joins that runsc-sandbox (runsc
// sees every id as runscId(id), see there).
// Containers of no pod of ours (ctr run, containerd 1.x CRI where the pause container is a task) run in
// `<root>/ns/<namespace>` and share sandboxes the same way through their own CRI annotations.
//
// Exits: every container of a gVisor sandbox reports the runsc-sandbox pid, so the task core cannot learn an app
// container's exit by reaping. This engine reports exits itself (onExit): the sandbox pid of a root container and
// the host `runsc exec` waiters of execs through a Reaper; app containers by their gofer's exit (the gofer of a
// subcontainer lives exactly as long as the container) and, as a fallback, one `runsc list` per pod and poll period;
// then `runsc wait` (repeatable) for the status. A `runsc wait` process per container would cost ~6.7 MB PSS.
import type { StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '@kuasar/sandbox';
import { Reaper, isRunning, listPids, setChildSubreaper, zombieChildIdentities } from '@kuasar/sys';
import type { SandboxEngine } from './sandbox-engine';
import {
  Code, OciCliEngine, TtrpcError, readPidFile,
  type ContainerCreate, type ContainerRef, type EngineAny, type EngineExit, type EngineStatus,
  type OciLinuxResources, type OciProcess, type OciSpec, type ProcessStdio,
} from '@kuasar/task';

/** Written by QuarkSandboxer into the config.json of every container of one of its pods (and of the pod's root). */
export const POD_ANNOTATION = 'io.kuasar.quark.pod';
export const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

/**
 * runsc resolves the id of every CLI call as a prefix (a glob `<id>*` over its state files) and fails when more
 * than one container matches, even with an exact match among them: pod `p1` beside container `p1-a`, or `web`
 * beside `web-1`, would be unaddressable. containerd identifiers never contain '+' (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`),
 * which runsc ids may: with it as terminator no runsc id is a proper prefix of another.
 */
const RUNSC_ID_END = '+';

/** The runsc id of a containerd container (or pod) id. */
export function runscId(id: string): string {
  return id.endsWith(RUNSC_ID_END) ? id : `${id}${RUNSC_ID_END}`;
}

/** The containerd id a runsc id (from `runsc list`, state, events) stands for. */
export function containerdId(id: string): string {
  return id.endsWith(RUNSC_ID_END) ? id.slice(0, -RUNSC_ID_END.length) : id;
}

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

type Tracked =
  | { kind: 'exec'; key: string; c: ContainerRef; execId: string }
  | { kind: 'sandbox' }
  | { kind: 'helper' }
  /** an app container's gofer: its exit is the cheapest sign that the container exited */
  | { kind: 'gofer'; key: string };

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

const PIPED: StdioOptions = ['ignore', 'pipe', 'pipe'];
const SWEEP_MS = 2_000;
const KILL_WAIT_MS = 5_000;
/** no timeout: the largest setTimeout delay */
const FOREVER_MS = 2_147_483_647;

/** `runsc wait` prints {"id":…,"exitStatus":N} (128+signal for a killed process). */
function exitStatusOf(out: string): number | undefined {
  try {
    const s = (JSON.parse(out.trim().split('\n').pop() ?? '{}') as { exitStatus?: number }).exitStatus;
    return typeof s === 'number' ? s : undefined;
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Live host processes of runsc working on state dir `dir`: runsc-sandbox, runsc-gofer (`--root=<dir>`) and runsc
 * CLI calls (`--root <dir>`). The whole argument must match: pod `a` must not take pod `ab`'s processes.
 */
export function runscProcesses(dir: string): number[] {
  const out: number[] = [];
  for (const pid of listPids()) {
    if (pid === process.pid) continue;
    const argv = cmdline(pid).split('\0');
    if (!path.basename(argv[0] ?? '').startsWith('runsc')) continue;
    const hit = argv.some((a, i) => a === `--root=${dir}` || (a === '--root' && argv[i + 1] === dir));
    if (hit && isRunning(pid)) out.push(pid);
  }
  return out;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function stdioFor(s: ProcessStdio): StdioOptions {
  if (s.terminal) return ['ignore', 'ignore', 'pipe'];
  return [s.stdin ?? 'ignore', s.stdout ?? 'ignore', s.stderr ?? 'ignore'];
}

export class RunscEngine implements SandboxEngine {
  readonly name = 'runsc';
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
  /** sandbox pid of each pod this process started, so destroySandbox can drop its exit record */
  private readonly sandboxPids = new Map<string, number>();
  /** `runsc start` of each pod's root container (startSandbox returns before it ends) */
  private readonly rootStarts = new Map<string, Promise<void>>();
  /** containers created by this process or already re-adopted (see adoptExecs) */
  private readonly known = new Set<string>();
  /** `runsc exec` waiters of a previous sandboxer process, still running */
  private readonly adoptedWaiters = new Set<number>();
  /** containers with a `runsc wait` in flight */
  private readonly waiting = new Set<string>();
  /** zombie children seen by the previous sweep: pid → start time */
  private zombies = new Map<number, string>();
  private readonly sweepTimer: NodeJS.Timeout;
  private listener: ((e: EngineExit) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(o: RunscEngineOptions) {
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
    this.sweepTimer = setInterval(() => this.sweepOrphans(), SWEEP_MS).unref();
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
    const ref: ContainerRef = { id: runscId(pod), namespace: pod, bundle };
    const spec = readSpec(bundle);
    if (!spec) throw new TtrpcError(Code.INVALID_ARGUMENT, `sandbox bundle ${bundle} has no readable config.json`);
    const { pid, helpers } = await this.pods.create(ref, { spec, stdio: { terminal: false } });
    for (const h of helpers ?? []) this.trackPid(h, { kind: 'helper' });
    this.trackPid(pid, { kind: 'sandbox' });
    this.sandboxPids.set(pod, pid);
    // The kernel is up once `create` returns. Starting its init (~100 ms) overlaps with what comes next (containerd
    // prepares and creates the first container); the pod's containers wait for it in start().
    const started = this.pods.start(ref).then(() => undefined, async (err: Error) => {
      this.logger?.error({ pod, err: err.message }, 'pod sandbox init did not start; destroying the sandbox');
      await this.pods.delete(ref, { force: true }).catch(() => undefined);
      throw new TtrpcError(Code.FAILED_PRECONDITION, `pod sandbox ${pod} did not start: ${err.message}`);
    });
    started.catch(() => undefined); // reported to the pod's containers in start()
    this.rootStarts.set(pod, started);
    return { pid };
  }

  /**
   * Resolves with the exit status of a sandbox process: reaped when it is our child, 255 when it vanished
   * otherwise (after a sandboxer restart it is nobody's child of ours).
   */
  sandboxExited(pid: number): Promise<number> {
    const known = this.sandboxExits.get(pid);
    // a recorded exit was reaped by us, so a live process with that pid is a newer one (pid reuse)
    if (known !== undefined && !fs.existsSync(`/proc/${pid}`)) return Promise.resolve(known);
    this.sandboxExits.delete(pid);
    return new Promise((resolve) => {
      const list = this.sandboxWaiters.get(pid) ?? [];
      list.push(resolve);
      this.sandboxWaiters.set(pid, list);
      if (!this.tracked.has(pid)) this.trackPid(pid, { kind: 'sandbox' });
    });
  }

  /** Signals the pod's root container (the sandbox's init). */
  async killSandbox(pod: string, bundle: string, signal: number): Promise<void> {
    await this.rootStarts.get(pod)?.catch(() => undefined);
    await this.pods.kill({ id: runscId(pod), namespace: pod, bundle }, undefined, signal, false);
  }

  /**
   * Kills the pod's sandbox (every container in it) and removes its runsc state. Idempotent. Whatever runsc no
   * longer knows about — a sandbox whose state file is gone or was taken for exited, a gofer of a half-made
   * container, a runsc call still running against the pod — is found by the pod's state dir in its command line
   * and killed too: `runsc delete --force` only reaches what its state files name.
   */
  async destroySandbox(pod: string, bundle: string): Promise<void> {
    const dir = this.podStateDir(pod);
    // a root `runsc start` in flight holds the container's lock; delete after it (bounded by the call timeout)
    await this.rootStarts.get(pod)?.catch(() => undefined);
    if (fs.existsSync(dir)) {
      await this.pods.delete({ id: runscId(pod), namespace: pod, bundle }, { force: true }).catch((err: Error) =>
        this.logger?.warn({ pod, err: err.message }, 'runsc delete of the pod sandbox failed'));
    }
    const left = runscProcesses(dir);
    if (left.length > 0) {
      this.logger?.warn({ pod, pids: left }, 'runsc processes of the pod outlived runsc delete; killing them');
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      const end = Date.now() + KILL_WAIT_MS;
      while (left.some(isRunning) && Date.now() < end) await delay(20);
      const alive = left.filter(isRunning);
      // zombies among them are reaped by the reaper (tracked ones) or the orphan sweep, never here: some may be
      // runsc calls Node spawned, whose exits belong to libuv
      if (alive.length > 0) this.logger?.error({ pod, pids: alive }, 'runsc processes of the pod survived SIGKILL');
    }
    for (const [k, w] of this.watched) if (w.at.stateDir === dir) this.watched.delete(k);
    this.rootStarts.delete(pod);
    const pid = this.sandboxPids.get(pod);
    this.sandboxPids.delete(pod);
    if (pid !== undefined && !this.tracked.has(pid)) this.sandboxExits.delete(pid);
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
      ? { cli: this.pods, ref: { id: runscId(c.id), namespace: pod, bundle: c.bundle }, stateDir: this.podStateDir(pod), root }
      : { cli: this.standalone, ref: { ...c, id: runscId(c.id) }, stateDir: path.join(this.root, 'ns', c.namespace), root };
    if (s) this.placements.set(k, p);
    return p;
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number; helpers?: number[] }> {
    // a subcontainer's sandbox-id annotation already holds the runsc id (QuarkSandboxer.prepareContainer wrote it)
    const at = this.placement(c, init.spec);
    // a subcontainer's `runsc create` only prepares its gofer; its process gets the stdio of `runsc start`
    const out = await at.cli.create(at.ref, at.root ? init : { ...init, stdio: init.stdio.terminal ? init.stdio : { terminal: false } });
    this.known.add(key(c));
    if (!at.root) this.pendingStdio.set(key(c), init.stdio);
    for (const h of out.helpers ?? []) if (!this.tracked.has(h)) this.trackPid(h, { kind: 'helper' });
    // the helpers are reaped here; the core must not track them (it has no reaper for this engine anyway)
    return { pid: out.pid };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const at = this.placement(c);
    const stdio = this.pendingStdio.get(key(c));
    this.pendingStdio.delete(key(c));
    if (!at.root) await this.rootStarts.get(at.ref.namespace);
    let pid: number;
    if (at.root || !stdio) {
      ({ pid } = await at.cli.start(at.ref));
    } else {
      await at.cli.run(at.ref, ['start', at.ref.id], { stdio: stdioFor(stdio) });
      pid = readPidFile(path.join(c.bundle, 'init.pid'));
    }
    this.watch(c, at, pid);
    this.trackGofer(at, at.root ? undefined : key(c));
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
      await at.cli.run(at.ref, args, { stdio: stdioFor(stdio), timeoutMs: this.timeoutMs * 2 });
    } finally {
      fs.rmSync(processFile, { force: true });
    }
    const pid = readPidFile(pidFile);
    this.trackPid(pid, { kind: 'exec', key: key(c), c, execId });
    return { pid };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const at = this.placement(c);
    if (execId === undefined) {
      await at.cli.kill(at.ref, undefined, signal, all);
      return;
    }
    const waiter = readPidFile(path.join(c.bundle, `${execId}.pid`));
    if (!this.tracked.has(waiter) && !this.adoptedWaiters.has(waiter)) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} already finished`);
    const ipid = readPidFile(path.join(c.bundle, `${execId}.ipid`));
    await at.cli.run(at.ref, ['kill', `--pid=${ipid}`, at.ref.id, String(signal)]);
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
    if (!this.known.has(key(c))) {
      this.known.add(key(c));
      this.adoptExecs(c, at);
    }
    if ((s.status === 'running' || s.status === 'paused') && !this.watched.has(key(c))) {
      if (!isRunning(s.pid)) return { status: 'stopped', pid: s.pid };
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
    clearInterval(this.sweepTimer);
    this.reaper.close();
  }

  // ---- exits -------------------------------------------------------------------------------------------------------

  /**
   * After a sandboxer restart the `runsc exec` waiters of a container's execs are no children of ours, so their
   * exits would go unseen. For each exec whose waiter still runs, a `runsc wait --pid` asks the sandbox for the
   * process's status (one runsc process per such exec, only until it ends); an exec whose waiter is gone is reported
   * as 255, which the task core ignores for execs it already saw end.
   */
  private adoptExecs(c: ContainerRef, at: Placement): void {
    let names: string[];
    try {
      names = fs.readdirSync(c.bundle).filter((n) => n.endsWith('.ipid'));
    } catch {
      return;
    }
    for (const n of names) {
      const execId = n.slice(0, -'.ipid'.length);
      const pidFile = path.join(c.bundle, `${execId}.pid`);
      let waiter: number;
      let ipid: number;
      try {
        waiter = readPidFile(pidFile);
        ipid = readPidFile(path.join(c.bundle, n));
      } catch {
        continue;
      }
      if (!isRunning(waiter) || !cmdline(waiter).includes(pidFile)) {
        this.emit({ id: c.id, execId, status: 255 });
        continue;
      }
      this.adoptedWaiters.add(waiter);
      this.logger?.info({ id: c.id, exec: execId, pid: ipid }, 're-adopted exec: waiting for it in the sandbox');
      void at.cli.run(at.ref, ['wait', `--pid=${ipid}`, at.ref.id], { stdio: PIPED, timeoutMs: FOREVER_MS }).then(
        (out) => exitStatusOf(out) ?? 255,
        (err: Error) => {
          this.logger?.warn({ id: c.id, exec: execId, err: err.message }, 'runsc wait --pid failed; exec exit status unknown');
          return 255;
        },
      ).then((status) => {
        this.adoptedWaiters.delete(waiter);
        this.emit({ id: c.id, execId, status });
      });
    }
  }

  /**
   * runsc leaves each container's gofer to us (subreaper); `runsc delete` waits until it is gone, which a zombie
   * never is. A subcontainer's gofer is born at `runsc start` (where the OCI CLI engine does not look) and may
   * already be a zombie by then, so its pid comes from runsc's state file (`<id>_sandbox:<sandbox>.state`).
   */
  private trackGofer(at: Placement, container?: string): void {
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
        if (typeof pid !== 'number' || pid <= 0) continue;
        if (container !== undefined) this.tracked.delete(pid); // a helper found at create, now known as the gofer
        if (!this.tracked.has(pid)) this.trackPid(pid, container !== undefined ? { kind: 'gofer', key: container } : { kind: 'helper' });
        // a short-lived container's gofer is already a zombie: reap it now, not after the task core's bookkeeping
        if (container !== undefined) this.reaper.check();
      } catch {
        /* being rewritten */
      }
    }
  }

  /**
   * runsc's own intermediate processes (and the waiters of execs of a previous sandboxer process) re-parent to us
   * as subreaper and nobody else reaps them. A zombie child seen by two sweeps in a row is nobody's to reap — Node
   * reaps the runsc calls it spawned itself, at once — so it is reaped here. "The same" means pid AND start time:
   * libuv may have reaped the first and the pid been reused (pid_max wraps) by a runsc call Node just spawned, whose
   * exit is libuv's.
   */
  private sweepOrphans(): void {
    const now = zombieChildIdentities();
    for (const [pid, startTime] of now) {
      if (this.zombies.get(pid) === startTime && !this.tracked.has(pid)) this.trackPid(pid, { kind: 'helper' }, startTime);
    }
    this.zombies = now;
  }

  /** `startTime` when the caller read it with the pid; else the Reaper reads it now, naming whatever holds the pid. */
  private trackPid(pid: number, t: Tracked, startTime?: string): void {
    // pids wrap (pid_max is 32768 on small nodes): a new sandbox may reuse the pid of one that exited earlier, whose
    // recorded status must not be taken for the new one's
    if (t.kind === 'sandbox') this.sandboxExits.delete(pid);
    this.tracked.set(pid, t);
    this.reaper.track(pid, startTime);
  }

  private reaped(pid: number, status: number): void {
    const t = this.tracked.get(pid);
    this.logger?.debug({ pid, status, kind: t?.kind }, 'reaped');
    this.tracked.delete(pid);
    if (!t || t.kind === 'helper') return;
    if (t.kind === 'gofer') {
      const w = this.watched.get(t.key);
      if (w && !w.at.root) void this.settle(w);
      return;
    }
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
      const out = await list[0]!.at.cli.run(list[0]!.at.ref, ['list', '--format=json'], { stdio: PIPED });
      states = new Map(((JSON.parse(out) as { id: string; status: string }[] | null) ?? []).map((e) => [e.id, e.status]));
    } catch (err) {
      this.logger?.debug({ dir, err: (err as Error).message }, 'runsc list failed');
    }
    for (const w of list) {
      const k = key(w.c);
      if (this.watched.get(k) !== w || this.waiting.has(k)) continue;
      const sandboxGone = !isRunning(w.sandboxPid);
      const status = states?.get(w.at.ref.id);
      if (!sandboxGone && (states === undefined || status === 'running' || status === 'paused' || status === 'created')) continue;
      if (w.at.root && this.tracked.has(w.sandboxPid)) {
        // our child: the reaper reports its real status
        this.reaper.check();
        if (this.tracked.has(w.sandboxPid) && !sandboxGone) continue;
      }
      if (this.watched.get(k) !== w) continue;
      if (sandboxGone) {
        this.watched.delete(k);
        this.emit({ id: w.c.id, status: this.sandboxExits.get(w.sandboxPid) ?? 255 });
      } else {
        await this.settle(w, 255);
      }
    }
  }

  /**
   * Reports a container's exit with the status `runsc wait` gives (it blocks while the container runs). When the
   * wait fails, `unknown` is reported, or — without it — the container stays watched for the next poll.
   */
  private async settle(w: Watched, unknown?: number): Promise<void> {
    const k = key(w.c);
    if (this.waiting.has(k)) return;
    this.waiting.add(k);
    let status: number | undefined;
    try {
      status = exitStatusOf(await w.at.cli.run(w.at.ref, ['wait', w.at.ref.id], { stdio: PIPED })) ?? unknown;
    } catch (err) {
      this.logger?.warn({ id: w.c.id, err: (err as Error).message }, 'runsc wait failed; exit status unknown');
      status = unknown;
    } finally {
      this.waiting.delete(k);
    }
    if (status === undefined || this.watched.get(k) !== w) return;
    this.watched.delete(k);
    this.emit({ id: w.c.id, status });
  }
}
