// The Task API (containerd.task.v2/v3.Task) with containerd-shim-runc-v2 semantics, over any Engine.
// The service owns the process table, IO, exits (subreaper + Reaper for host processes), events, persistence and
// recovery; the engine only runs and signals processes.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  OCI_LINUX_RESOURCES_TYPE_URL, OCI_PROCESS_TYPE_URL, anyTypeName, packAny, packTaskEvent, runcOptions, timestampFromDate,
  unpackAny, unpackJsonAny, type google, type task, type TaskEventTopic, type TaskEventMessage, types,
} from '@kuasar/api';
import { ConsoleSocket, ProcExitListener, Reaper, setChildSubreaper, setWinsize, zombieChildIdentities } from '@kuasar/sys';
import type { Logger } from 'pino';
import type { ContainerRef, Engine, EngineExit, RuntimeOptions } from './engine';
import { Code, TtrpcError } from './errors';
import type { Publisher } from './events';
import { sharesPidNamespace, type OciProcess, type OciSpec } from './oci';
import { ProcessIO, type StdioPaths } from './process-io';
import { mountRootfs, unmountAll } from './rootfs';
import { TaskStore, processStartTime, type ProcessRecord, type TaskRecord } from './task-store';
import { writeFileAtomic } from './atomic';

/** What the service needs to know about a call (a subset of the ttrpc CallContext). */
export interface TaskCallContext {
  namespace?: string;
  signal?: AbortSignal;
}

export interface TaskHooks {
  /** rewrite the OCI spec (namespaces, cgroup parent, ...) before the engine creates the container */
  prepareContainer?(req: task.CreateTaskRequest, spec: OciSpec, namespace: string): OciSpec | Promise<OciSpec>;
  /**
   * the container was created (its init exists, not yet started); awaited before Create returns. An error is
   * logged, never fails the Create.
   */
  containerCreated?(c: ContainerRef, init: { pid: number; spec: OciSpec }): void | Promise<void>;
  /** the container's init exited; called after TaskExit is published, errors are logged */
  containerExited?(c: ContainerRef, exit: { exitStatus: number; exitedAt: Date }): void | Promise<void>;
  /**
   * the container was deleted (its state is gone), or its Create failed after prepareContainer ran (so whatever
   * that hook set up for it can go)
   */
  containerRemoved?(id: string, namespace: string): void | Promise<void>;
  /** Shutdown arrived while no task is left; a resident sandboxer must NOT exit here */
  onShutdown?(): void | Promise<void>;
}

export interface TaskServiceOptions {
  engine: Engine;
  publisher: Publisher;
  logger: Logger;
  /** persistent state: <stateDir>/tasks/<namespace>/<id>/ */
  stateDir: string;
  /** fsync task records (default false: they only need to survive a sandboxer crash, see TaskStore) */
  fsync?: boolean;
  hooks?: TaskHooks;
  /** namespace when a request carries none (default "default") */
  defaultNamespace?: string;
  /** OOM counter poll period (default 1000 ms; 0 disables) */
  oomPollMs?: number;
  /** how long a re-adopted process's pid is polled (default 200 ms) */
  adoptPollMs?: number;
  /** how long an init exit waits for the container's execs to exit first (default 5 s) */
  execDrainMs?: number;
  /** period of the sweep that reaps orphans re-parented to us that nobody tracks (default 5 s) */
  orphanSweepMs?: number;
}

type ProcessStatus = 'created' | 'running' | 'stopped';

interface Exit {
  status: number;
  at: Date;
}

class TaskProcess {
  pid = 0;
  status: ProcessStatus = 'created';
  exit: Exit | undefined;
  io: ProcessIO | undefined;
  startTime: string | undefined;
  /** set while Start runs: an exit must not be published before TaskStart/TaskExecStarted */
  starting: Promise<void> | undefined;
  /** poll timer of a re-adopted (not our child) process */
  watcher: NodeJS.Timeout | undefined;
  /** the reaper (or its 'lost' report) delivered this process's exit; processExited may still be running */
  exitSeen = false;
  private resolveExit!: (e: Exit) => void;
  readonly exited: Promise<Exit>;

  constructor(
    readonly execId: string,
    readonly stdio: StdioPaths,
    readonly spec?: OciProcess,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  markExited(e: Exit): void {
    this.status = 'stopped';
    this.exit = e;
    if (this.watcher) clearInterval(this.watcher);
    this.watcher = undefined;
    this.resolveExit(e);
  }

  record(): ProcessRecord {
    return {
      execId: this.execId, pid: this.pid, startTime: this.startTime, status: this.status,
      exitStatus: this.exit?.status, exitedAt: this.exit?.at.toISOString(), stdio: this.stdio, spec: this.spec,
    };
  }
}

class Container {
  readonly execs = new Map<string, TaskProcess>();
  paused = false;
  /** a Delete is running or done: no further exits are published */
  deleted = false;
  oomKills: bigint | undefined;
  /** per-container serialisation of mutating calls */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly ref: ContainerRef,
    readonly init: TaskProcess,
    readonly sharedPidNs: boolean,
    readonly mounts: string[],
    readonly createdAt: Date,
  ) {}

  get key(): string {
    return `${this.ref.namespace}/${this.ref.id}`;
  }

  process(execId: string): TaskProcess | undefined {
    return execId === '' ? this.init : this.execs.get(execId);
  }

  serialise<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  record(): TaskRecord {
    return {
      version: 1, id: this.ref.id, namespace: this.ref.namespace, bundle: this.ref.bundle, mounts: this.mounts,
      sharedPidNs: this.sharedPidNs, paused: this.paused, createdAt: this.createdAt.toISOString(),
      processes: [this.init, ...this.execs.values()].map((p) => p.record()),
    };
  }
}

// containerd identifiers: alphanumerics joined by single '.', '_' or '-', at most 76 characters
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const SIGKILL = 9;

/**
 * containerd 1.x sends no namespace metadata on task calls; its bundles are
 * `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`, so the namespace is in the path.
 */
function namespaceOfBundle(bundle: string, id: string): string | undefined {
  const parts = bundle.split('/');
  const n = parts.length;
  if (n < 3 || parts[n - 1] !== id || parts[n - 3] !== 'io.containerd.runtime.v2.task') return undefined;
  const ns = parts[n - 2]!;
  return IDENTIFIER.test(ns) ? ns : undefined;
}

function validId(kind: string, id: string): string {
  if (!id || id.length > 76 || !IDENTIFIER.test(id)) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `invalid ${kind} "${id}": want 1-76 alphanumerics joined by '.', '_' or '-'`);
  }
  return id;
}

const STATUS: Record<ProcessStatus, types.TaskStatus> = {
  created: types.TaskStatus.CREATED,
  running: types.TaskStatus.RUNNING,
  stopped: types.TaskStatus.STOPPED,
};

export class TaskService {
  private readonly engine: Engine;
  private readonly publisher: Publisher;
  private readonly logger: Logger;
  private readonly hooks: TaskHooks;
  private readonly store: TaskStore;
  private readonly defaultNamespace: string;
  private readonly adoptPollMs: number;
  private readonly execDrainMs: number;
  private readonly containers = new Map<string, Container>();
  /** containers being created, so a concurrent duplicate Create gets ALREADY_EXISTS */
  private readonly creating = new Set<string>();
  private readonly byPid = new Map<number, { c: Container; p: TaskProcess }>();
  private readonly reaper: Reaper | undefined;
  /** exits of re-adopted processes (no longer our children), from the kernel's proc connector; open while any is */
  private exitListener: ProcExitListener | undefined;
  private readonly oomTimer: NodeJS.Timeout | undefined;
  private readonly sweepTimer: NodeJS.Timeout | undefined;
  /** zombie children seen by the previous orphan sweep, with their start times */
  private zombies = new Map<number, string>();
  private closed = false;

  constructor(o: TaskServiceOptions) {
    this.engine = o.engine;
    this.publisher = o.publisher;
    this.logger = o.logger.child({ component: 'task' });
    this.hooks = o.hooks ?? {};
    this.store = new TaskStore(o.stateDir, { fsync: o.fsync });
    this.defaultNamespace = o.defaultNamespace ?? 'default';
    this.adoptPollMs = o.adoptPollMs ?? 200;
    this.execDrainMs = o.execDrainMs ?? 5000;
    if (this.engine.onExit) {
      this.engine.onExit((e) => this.onEngineExit(e));
    } else {
      // host processes: become their subreaper so orphaned container inits and detached execs are our children
      setChildSubreaper();
      this.reaper = new Reaper();
      this.reaper.on('exit', (pid, status) => this.onPidExit(pid, status));
      this.reaper.on('lost', (pid) => {
        // not our child (re-adopted after a restart): the kernel's exit event may still have its status
        const seen = this.exitListener?.take(pid);
        if (!seen) this.logger.warn({ pid }, 'tracked process vanished without an exit status; reporting 255');
        this.onPidExit(pid, seen?.status ?? 255);
      });
      this.reaper.on('error', (err) => this.logger.error({ err: err.message }, 'reaper error'));
    }
    if (this.reaper) this.sweepTimer = setInterval(() => this.sweepOrphans(), o.orphanSweepMs ?? 5000).unref();
    const oomPollMs = o.oomPollMs ?? 1000;
    if (oomPollMs > 0 && this.engine.oomKills) {
      this.oomTimer = setInterval(() => void this.pollOom(), oomPollMs).unref();
    }
  }

  /** number of containers the service holds (Shutdown is a no-op while > 0) */
  get size(): number {
    return this.containers.size;
  }

  // ---- lookup -----------------------------------------------------------------------------------------------------

  private namespaceOf(ctx: TaskCallContext | undefined): string {
    return ctx?.namespace || this.defaultNamespace;
  }

  private container(id: string, ctx: TaskCallContext | undefined): Container {
    if (!ctx?.namespace) {
      // containerd 1.x sends no namespace on task calls: the id names the container when only one namespace has it
      const found = [...this.containers.values()].filter((c) => c.ref.id === id && !c.deleted);
      if (found.length === 1) return found[0]!;
    }
    const ns = this.namespaceOf(ctx);
    const c = this.containers.get(`${ns}/${id}`);
    if (!c || c.deleted) throw new TtrpcError(Code.NOT_FOUND, `container ${id} not found in namespace ${ns}`);
    return c;
  }

  private processOf(c: Container, execId: string): TaskProcess {
    const p = c.process(execId);
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} not found in container ${c.ref.id}`);
    return p;
  }

  // ---- RPCs -------------------------------------------------------------------------------------------------------

  async create(req: task.CreateTaskRequest, ctx?: TaskCallContext): Promise<task.CreateTaskResponse> {
    const ns = validId('namespace', ctx?.namespace || namespaceOfBundle(req.bundle, req.id) || this.defaultNamespace);
    const id = validId('container id', req.id);
    const key = `${ns}/${id}`;
    if (this.containers.has(key) || this.creating.has(key)) throw new TtrpcError(Code.ALREADY_EXISTS, `container ${id} already exists`);
    if (req.checkpoint || req.parentCheckpoint) throw new TtrpcError(Code.UNIMPLEMENTED, 'restoring from a checkpoint is not supported');
    this.creating.add(key);
    try {
      return await this.createContainer(ns, id, req);
    } finally {
      this.creating.delete(key);
    }
  }

  private async createContainer(ns: string, id: string, req: task.CreateTaskRequest): Promise<task.CreateTaskResponse> {
    const log = this.logger.child({ namespace: ns, id });
    const bundle = req.bundle;
    if (!bundle || !bundle.startsWith('/')) throw new TtrpcError(Code.INVALID_ARGUMENT, `bundle "${bundle}" must be an absolute path`);
    const configPath = join(bundle, 'config.json');
    let text: string;
    try {
      text = readFileSync(configPath, 'utf8');
    } catch {
      // only now tell a missing bundle from a missing config.json: a Create that succeeds spends no stat(2) on it
      if (!isDirectory(bundle)) throw new TtrpcError(Code.FAILED_PRECONDITION, `bundle ${bundle} does not exist or is not a directory`);
      throw new TtrpcError(Code.FAILED_PRECONDITION, `bundle ${bundle} has no config.json`);
    }
    let spec: OciSpec;
    try {
      spec = JSON.parse(text) as OciSpec;
      if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new Error('not a JSON object');
    } catch (err) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `${configPath} is not a valid OCI spec: ${(err as Error).message}`);
    }
    const options = runtimeOptionsOf(req.options);
    // the runtime only sends a pty master when the spec asks for one; a mismatch would leave Create waiting for it
    if (req.terminal !== (spec.process?.terminal === true)) {
      throw new TtrpcError(Code.INVALID_ARGUMENT,
        `terminal=${req.terminal} but ${configPath} has process.terminal=${spec.process?.terminal === true}`);
    }

    const ref: ContainerRef = { id, namespace: ns, bundle };
    const stateDir = this.store.dir(ns, id);
    const stdio: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const init = new TaskProcess('', stdio);
    let mounts: string[] = [];
    let console: ConsoleSocket | undefined;
    let consoleDir: string | undefined;
    let created = false;
    let prepared = false;
    try {
      // provisional record first: a sandboxer killed from here on leaves what recover() needs to undo this Create
      // (the mount targets are recorded before mounting; unmounting one that is not mounted is a no-op)
      this.store.save({
        version: 1, id, namespace: ns, bundle, status: 'creating', mounts: req.rootfs.map(() => join(bundle, 'rootfs')),
        sharedPidNs: sharesPidNamespace(spec), paused: false, createdAt: new Date().toISOString(), processes: [],
      });
      if (req.rootfs.length > 0) mounts = mountRootfs(req.rootfs, join(bundle, 'rootfs'));
      if (this.hooks.prepareContainer) {
        prepared = true;
        // The hook may edit its argument in place or return a new spec: compare with what is on disk. Nothing
        // else holds the parsed spec, so the hook gets it without a copy; `text` stands for it unchanged.
        const out = await this.hooks.prepareContainer(req, spec, ns);
        const outText = JSON.stringify(out);
        // the text as written (containerd marshals compactly) saves a second stringify; else its canonical form
        if (outText !== text && outText !== JSON.stringify(JSON.parse(text))) writeFileAtomic(configPath, outText);
        spec = out;
      }
      if (req.terminal) ({ console, dir: consoleDir } = openConsoleSocket());
      init.io = await ProcessIO.open(stdio, {
        dir: stateDir, name: 'init', containerId: id, namespace: ns, logger: log, consoleSocket: console?.path,
      });
      const master = console?.receiveFd(30_000);
      master?.catch(() => undefined);
      // our copies of the process's fds stay open until Start: an engine may only use them then (e.g. wasm)
      const { pid, helpers } = await this.engine.create(ref, { spec, stdio: init.io.stdio, options });
      created = true;
      // runtime helpers orphaned to us: reap them (untracked pids are ignored by onPidExit)
      for (const h of helpers ?? []) this.reaper?.track(h);
      if (master) init.io.attachConsole(await master);
      const c = new Container(ref, init, sharesPidNamespace(spec), mounts, new Date());
      init.pid = pid;
      init.startTime = pid > 0 ? processStartTime(pid) : undefined;
      this.containers.set(c.key, c);
      this.track(c, init);
      this.persist(c);
      this.publish(c, '/tasks/create', {
        containerId: id, bundle, rootfs: req.rootfs, checkpoint: req.checkpoint, pid,
        io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
      });
      log.info({ pid }, 'container created');
      await this.callHook('containerCreated', id, () => this.hooks.containerCreated?.(ref, { pid, spec }));
      return { pid };
    } catch (err) {
      init.io?.close();
      if (created) await this.engine.delete(ref, { force: true }).catch(() => undefined);
      unmountAll(mounts);
      this.store.remove(ns, id);
      log.warn({ err: (err as Error).message }, 'create failed');
      if (prepared) await this.callHook('containerRemoved', id, () => this.hooks.containerRemoved?.(id, ns));
      throw err;
    } finally {
      console?.close();
      if (consoleDir) rmSync(consoleDir, { recursive: true, force: true });
    }
  }

  async start(req: task.StartRequest, ctx?: TaskCallContext): Promise<task.StartResponse> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      const p = this.processOf(c, req.execId);
      if (p.status !== 'created' || p.starting) {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `${describe(c, p)} is ${p.status}, not created`);
      }
      if (p !== c.init && c.init.status !== 'running') {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is ${c.init.status}: cannot start exec ${p.execId}`);
      }
      let started!: () => void;
      p.starting = new Promise((r) => (started = r));
      try {
        if (p === c.init) {
          const { pid } = await this.engine.start(c.ref).finally(() => p.io?.handedOver());
          p.pid = pid || p.pid;
          if (p.status === 'created') p.status = 'running';
          // baseline (and cgroup lookup) while the init surely lives; an OOM kill is then noticed even when it
          // ends the container before the next poll (see processExited)
          c.oomKills = await this.engine.oomKills?.(c.ref).catch(() => undefined);
          this.persist(c);
          this.publish(c, '/tasks/start', { containerId: c.ref.id, pid: p.pid });
        } else {
          await this.startExec(c, p);
        }
        return { pid: p.pid };
      } finally {
        p.starting = undefined;
        started();
      }
    });
  }

  private async startExec(c: Container, p: TaskProcess): Promise<void> {
    const log = this.logger.child({ namespace: c.ref.namespace, id: c.ref.id, exec: p.execId });
    let console: ConsoleSocket | undefined;
    let consoleDir: string | undefined;
    try {
      if (p.stdio.terminal) ({ console, dir: consoleDir } = openConsoleSocket());
      p.io = await ProcessIO.open(p.stdio, {
        dir: this.store.dir(c.ref.namespace, c.ref.id), name: p.execId, containerId: c.ref.id,
        namespace: c.ref.namespace, logger: log, consoleSocket: console?.path,
      });
      const master = console?.receiveFd(30_000);
      master?.catch(() => undefined);
      try {
        const { pid } = await this.engine.exec(c.ref, p.execId, { ...p.spec, terminal: p.stdio.terminal }, p.io.stdio);
        p.pid = pid;
      } finally {
        p.io.handedOver();
      }
      if (master) p.io.attachConsole(await master);
    } catch (err) {
      p.io?.close();
      p.io = undefined;
      throw err;
    } finally {
      console?.close();
      if (consoleDir) rmSync(consoleDir, { recursive: true, force: true });
    }
    p.startTime = processStartTime(p.pid);
    if (p.status === 'created') p.status = 'running';
    this.track(c, p);
    this.persist(c);
    this.publish(c, '/tasks/exec-started', { containerId: c.ref.id, execId: p.execId, pid: p.pid });
    log.info({ pid: p.pid }, 'exec started');
  }

  async exec(req: task.ExecProcessRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      const execId = validId('exec id', req.execId);
      if (c.execs.has(execId)) throw new TtrpcError(Code.ALREADY_EXISTS, `exec ${execId} already exists in container ${c.ref.id}`);
      if (c.init.status === 'stopped') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is stopped`);
      if (!req.spec) throw new TtrpcError(Code.INVALID_ARGUMENT, 'exec needs a process spec');
      if (req.spec.typeUrl !== OCI_PROCESS_TYPE_URL && anyTypeName(req.spec) !== 'Process') {
        throw new TtrpcError(Code.INVALID_ARGUMENT, `exec spec must be ${OCI_PROCESS_TYPE_URL}, got ${req.spec.typeUrl}`);
      }
      let spec: OciProcess;
      try {
        spec = unpackJsonAny<OciProcess>(req.spec);
      } catch (err) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, (err as Error).message);
      }
      if (typeof spec !== 'object' || spec === null || !Array.isArray(spec.args) || spec.args.length === 0) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, 'exec process spec needs non-empty args');
      }
      const p = new TaskProcess(execId, { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal }, spec);
      c.execs.set(execId, p);
      this.persist(c);
      this.publish(c, '/tasks/exec-added', { containerId: c.ref.id, execId });
      return {};
    });
  }

  async wait(req: task.WaitRequest, ctx?: TaskCallContext): Promise<task.WaitResponse> {
    const c = this.container(req.id, ctx);
    const p = this.processOf(c, req.execId);
    const signal = ctx?.signal;
    const exit = await (signal
      ? Promise.race([
        p.exited,
        new Promise<never>((_, reject) => {
          const abort = () => reject(new TtrpcError(Code.CANCELLED, 'wait cancelled'));
          if (signal.aborted) abort();
          else signal.addEventListener('abort', abort, { once: true });
        }),
      ])
      : p.exited);
    return { exitStatus: exit.status, exitedAt: timestampFromDate(exit.at) };
  }

  async kill(req: task.KillRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      const p = this.processOf(c, req.execId);
      if (p.status === 'stopped') throw new TtrpcError(Code.NOT_FOUND, `${describe(c, p)}: process already finished`);
      if (p !== c.init && p.status === 'created' && !p.starting) {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `${describe(c, p)} has not been started`);
      }
      await this.engine.kill(c.ref, p === c.init ? undefined : p.execId, req.signal, p === c.init && req.all);
      return {};
    });
  }

  async delete(req: task.DeleteRequest, ctx?: TaskCallContext): Promise<task.DeleteResponse> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      const p = this.processOf(c, req.execId);
      if (p.status === 'running') {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `${describe(c, p)} is running; kill it before delete`);
      }
      if (p !== c.init) {
        c.execs.delete(p.execId);
        p.io?.close();
        // an exec that ended while no sandboxer ran has no IO here, but may still have its stdin holder
        ProcessIO.releaseHolders(this.store.dir(c.ref.namespace, c.ref.id), p.execId);
        if (!p.exit) p.markExited({ status: 255, at: new Date() }); // never started: release its waiters
        this.persist(c);
        return { pid: p.pid, exitStatus: p.exit!.status, exitedAt: timestampFromDate(p.exit!.at) };
      }
      return this.deleteContainer(c);
    });
  }

  private async deleteContainer(c: Container): Promise<task.DeleteResponse> {
    const init = c.init;
    // a created (never started) init is killed by the runtime's delete; its exit arrives through the reaper
    await this.engine.delete(c.ref, { force: init.status !== 'stopped' });
    if (init.status !== 'stopped') {
      await Promise.race([init.exited, delay(2000)]);
      if (!init.exit) init.markExited({ status: 128 + SIGKILL, at: new Date() });
    }
    c.deleted = true;
    for (const p of [init, ...c.execs.values()]) {
      p.io?.close();
      if (p.watcher) clearInterval(p.watcher);
      if (p.pid > 0) this.untrack(p);
    }
    unmountAll(c.mounts);
    this.containers.delete(c.key);
    ProcessIO.releaseHolders(this.store.dir(c.ref.namespace, c.ref.id));
    this.store.remove(c.ref.namespace, c.ref.id);
    const exit = init.exit!;
    this.publish(c, '/tasks/delete', {
      containerId: c.ref.id, pid: init.pid, exitStatus: exit.status, exitedAt: timestampFromDate(exit.at), id: c.ref.id,
    });
    this.logger.info({ namespace: c.ref.namespace, id: c.ref.id }, 'container deleted');
    await this.callHook('containerRemoved', c.ref.id, () => this.hooks.containerRemoved?.(c.ref.id, c.ref.namespace));
    return { pid: init.pid, exitStatus: exit.status, exitedAt: timestampFromDate(exit.at) };
  }

  async state(req: task.StateRequest, ctx?: TaskCallContext): Promise<task.StateResponse> {
    const c = this.container(req.id, ctx);
    const p = this.processOf(c, req.execId);
    let status = STATUS[p.status];
    if (p.status === 'running' && c.paused) status = types.TaskStatus.PAUSED;
    return {
      id: c.ref.id, bundle: c.ref.bundle, pid: p.pid, status, stdin: p.stdio.stdin, stdout: p.stdio.stdout,
      stderr: p.stdio.stderr, terminal: p.stdio.terminal, exitStatus: p.exit?.status ?? 0,
      exitedAt: p.exit ? timestampFromDate(p.exit.at) : undefined, execId: p.execId,
    };
  }

  async pids(req: task.PidsRequest, ctx?: TaskCallContext): Promise<task.PidsResponse> {
    const c = this.container(req.id, ctx);
    const pids = await this.engine.pids(c.ref);
    // running execs only: the pid of one that ended may name another process by now
    const execByPid = new Map([...c.execs.values()].filter((p) => p.pid > 0 && p.status === 'running').map((p) => [p.pid, p.execId]));
    return {
      processes: pids.map((pid) => {
        const execId = execByPid.get(pid);
        return {
          pid,
          info: execId === undefined ? undefined
            : packAny('containerd.runc.v1.ProcessDetails', runcOptions.ProcessDetails, { execId }),
        };
      }),
    };
  }

  async pause(req: task.PauseRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      if (c.init.status !== 'running') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is ${c.init.status}`);
      if (c.paused) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is already paused`);
      await this.engine.pause(c.ref);
      c.paused = true;
      this.persist(c);
      this.publish(c, '/tasks/paused', { containerId: c.ref.id });
      return {};
    });
  }

  async resume(req: task.ResumeRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      if (!c.paused) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is not paused`);
      await this.engine.resume(c.ref);
      c.paused = false;
      this.persist(c);
      this.publish(c, '/tasks/resumed', { containerId: c.ref.id });
      return {};
    });
  }

  async update(req: task.UpdateTaskRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    return c.serialise(async () => {
      if (!req.resources) throw new TtrpcError(Code.INVALID_ARGUMENT, 'update needs resources');
      if (req.resources.typeUrl !== OCI_LINUX_RESOURCES_TYPE_URL && anyTypeName(req.resources) !== 'LinuxResources') {
        throw new TtrpcError(Code.INVALID_ARGUMENT, `resources must be ${OCI_LINUX_RESOURCES_TYPE_URL}, got ${req.resources.typeUrl}`);
      }
      let resources: Record<string, unknown>;
      try {
        resources = unpackJsonAny<Record<string, unknown>>(req.resources);
      } catch (err) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, (err as Error).message);
      }
      if (c.init.status === 'stopped') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is stopped`);
      await this.engine.update(c.ref, resources);
      return {};
    });
  }

  async stats(req: task.StatsRequest, ctx?: TaskCallContext): Promise<task.StatsResponse> {
    const c = this.container(req.id, ctx);
    if (c.init.status === 'stopped') throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.ref.id} is stopped`);
    return { stats: await this.engine.stats(c.ref) };
  }

  async closeIO(req: task.CloseIORequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    const p = this.processOf(c, req.execId);
    if (req.stdin) await p.io?.closeStdin();
    return {};
  }

  async resizePty(req: task.ResizePtyRequest, ctx?: TaskCallContext): Promise<google.Empty> {
    const c = this.container(req.id, ctx);
    const p = this.processOf(c, req.execId);
    if (this.engine.resize) {
      // the terminal is the engine's (e.g. a pty in the VM), not the console fd the core holds
      if (!p.stdio.terminal) throw new TtrpcError(Code.FAILED_PRECONDITION, `${describe(c, p)} has no terminal`);
      await this.engine.resize(c.ref, p.execId || undefined, req.width, req.height);
      return {};
    }
    const fd = p.io?.consoleFd;
    if (fd === undefined) throw new TtrpcError(Code.FAILED_PRECONDITION, `${describe(c, p)} has no terminal`);
    setWinsize(fd, req.height, req.width);
    return {};
  }

  async checkpoint(_req: task.CheckpointTaskRequest, _ctx?: TaskCallContext): Promise<google.Empty> {
    throw new TtrpcError(Code.UNIMPLEMENTED, 'checkpoint is not supported');
  }

  async connect(req: task.ConnectRequest, ctx?: TaskCallContext): Promise<task.ConnectResponse> {
    const c = this.container(req.id, ctx);
    return { shimPid: process.pid, taskPid: c.init.pid, version: `kuasar-task/${this.engine.name}` };
  }

  async shutdown(_req: task.ShutdownRequest, _ctx?: TaskCallContext): Promise<google.Empty> {
    // the sandboxer is resident: with tasks left this is a no-op; otherwise the owner decides (and must not exit)
    if (this.containers.size === 0) await this.hooks.onShutdown?.();
    return {};
  }

  // ---- exits ------------------------------------------------------------------------------------------------------

  private track(c: Container, p: TaskProcess): void {
    if (p.pid <= 0 || !this.reaper) return;
    this.byPid.set(p.pid, { c, p });
    // with its start time: a pid reused after this process vanished is not reaped in its name (pid_max wraps)
    this.reaper.track(p.pid, p.startTime);
  }

  private untrack(p: TaskProcess): void {
    const t = this.byPid.get(p.pid);
    if (t && t.p === p) {
      this.byPid.delete(p.pid);
      this.reaper?.untrack(p.pid);
    }
  }

  private onPidExit(pid: number, status: number): void {
    const t = this.byPid.get(pid);
    if (!t) return;
    this.byPid.delete(pid);
    t.p.exitSeen = true;
    void this.processExited(t.c, t.p, status);
  }

  private onEngineExit(e: EngineExit): void {
    for (const c of this.containers.values()) {
      // an engine that omits the namespace matches the id in every namespace
      if (c.ref.id !== e.id || (e.namespace !== undefined && c.ref.namespace !== e.namespace)) continue;
      const p = c.process(e.execId ?? '');
      if (p && p.status !== 'stopped') void this.processExited(c, p, e.status, e.exitedAt);
    }
  }

  /** Record an exit and publish TaskExit — after TaskStart, and for the init after every exec's exit. */
  private async processExited(c: Container, p: TaskProcess, status: number, at = new Date()): Promise<void> {
    if (this.exitListener && p.pid > 0) {
      this.exitListener.unwatch(p.pid);
      this.closeExitListenerIfIdle();
    }
    if (p.starting) await p.starting;
    if (p.exit) return;
    const log = this.logger.child({ namespace: c.ref.namespace, id: c.ref.id, exec: p.execId || undefined });
    if (p === c.init) {
      if (c.sharedPidNs) {
        // no pid namespace of its own: the kernel will not kill the rest (execs, daemons) when init dies, so do
        // it like runc-v2 does
        await this.engine.kill(c.ref, undefined, SIGKILL, true).catch((err: Error) =>
          log.debug({ err: err.message }, 'kill --all after init exit failed'));
      }
      const running = [...c.execs.values()].filter((e) => e.status === 'running');
      if (running.length > 0) {
        const drained = await Promise.race([Promise.all(running.map((e) => e.exited)).then(() => true), delay(this.execDrainMs).then(() => false)]);
        if (!drained) log.warn('execs still running after init exit; reporting init exit anyway');
      }
    }
    await p.io?.outputFlushed();
    if (p === c.init) await this.checkOom(c);
    if (p.exit) return;
    p.markExited({ status, at });
    if (p.io && p !== c.init) p.io.close();
    if (c.deleted) return;
    this.persist(c);
    this.publish(c, '/tasks/exit', {
      containerId: c.ref.id, id: p === c.init ? c.ref.id : p.execId, pid: p.pid, exitStatus: status, exitedAt: timestampFromDate(at),
    });
    log.info({ pid: p.pid, status }, 'process exited');
    if (p === c.init) await this.callHook('containerExited', c.ref.id, () => this.hooks.containerExited?.(c.ref, { exitStatus: status, exitedAt: at }));
  }

  /**
   * As subreaper we inherit every orphan below us, not only container inits and execs: processes a host-pid
   * container leaves behind, gVisor's stub processes, a runtime's helpers. The Reaper reaps only tracked pids
   * (so libuv keeps its own children), so zombies nobody tracks are reaped here once they have been zombies for
   * a whole sweep period — libuv reaps its children as soon as SIGCHLD arrives, so by then they are not libuv's.
   */
  private sweepOrphans(): void {
    const now = zombieChildIdentities();
    for (const [pid, startTime] of now) {
      // the same zombie (pid AND start time) as a period ago: not libuv's, which reaps its children at once
      if (this.zombies.get(pid) === startTime && !this.byPid.has(pid) && !this.reaper!.has(pid)) this.reaper!.track(pid, startTime);
    }
    this.zombies = now;
  }

  // ---- OOM ----------------------------------------------------------------------------------------------------------

  private async pollOom(): Promise<void> {
    for (const c of this.containers.values()) {
      if (c.init.status === 'running' && !c.deleted) await this.checkOom(c);
    }
  }

  /** Publish TaskOOM when the container's OOM kill counter grew since the last look. */
  private async checkOom(c: Container): Promise<void> {
    if (!this.engine.oomKills) return;
    try {
      const n = await this.engine.oomKills(c.ref);
      if (n === undefined) return;
      if (c.oomKills !== undefined && n > c.oomKills) this.publish(c, '/tasks/oom', { containerId: c.ref.id });
      c.oomKills = n;
    } catch {
      /* the cgroup may be gone already */
    }
  }

  // ---- persistence and recovery -------------------------------------------------------------------------------------

  private persist(c: Container): void {
    if (c.deleted) return;
    try {
      this.store.save(c.record());
    } catch (err) {
      this.logger.error({ id: c.ref.id, err: (err as Error).message }, 'cannot persist task state');
    }
  }

  /**
   * Re-adopt the containers recorded under <stateDir>/tasks after a sandboxer restart. Their processes are no
   * longer our children, so their exits are detected by polling /proc/<pid> (start time must match); the status
   * comes from the kernel's exit event when it happened after this call began, else (it exited while no sandboxer
   * ran, or exit events are unavailable) it is unknowable and reported as 255. Returns the re-adopted container ids.
   */
  async recover(): Promise<string[]> {
    const out: string[] = [];
    const unreadable: { namespace: string; id: string }[] = [];
    const records = this.store.list((path, err, where) => {
      this.logger.error({ path, err: String(err) }, 'unreadable task record; removing its container');
      unreadable.push(where);
    });
    for (const { namespace, id } of unreadable) {
      // nobody can manage this container any more (no bundle, pids or mounts known): remove it rather than leak
      // it. The engine only uses the bundle for its logs, so the task dir stands in for the unknown one.
      await this.removeLeftover({ id, namespace, bundle: this.store.dir(namespace, id) }, []);
    }
    if (this.reaper) {
      // listen BEFORE checking which recorded processes are alive: an exit after that check keeps its real status
      try {
        this.exitListener = ProcExitListener.open();
        for (const r of records) for (const pr of r.processes) if (pr.pid > 0 && pr.status !== 'stopped') this.exitListener.watch(pr.pid);
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'no process exit events; re-adopted processes will report exit 255');
      }
    }
    for (const r of records) {
      const ref: ContainerRef = { id: r.id, namespace: r.namespace, bundle: r.bundle };
      const log = this.logger.child({ namespace: r.namespace, id: r.id });
      if (r.status === 'creating') {
        // killed during Create: containerd already got an error for it, so the container is only a leak
        log.warn('task record of an interrupted Create; removing its container');
        await this.removeLeftover(ref, r.mounts);
        continue;
      }
      const procs = r.processes.map((pr) => {
        const p = new TaskProcess(pr.execId, pr.stdio, pr.spec);
        p.pid = pr.pid;
        p.startTime = pr.startTime;
        p.status = pr.status;
        if (pr.status === 'stopped') p.markExited({ status: pr.exitStatus ?? 255, at: pr.exitedAt ? new Date(pr.exitedAt) : new Date() });
        return p;
      });
      const init = procs.find((p) => p.execId === '');
      if (!init) {
        log.error('task record without an init process; skipped');
        continue;
      }
      const c = new Container(ref, init, r.sharedPidNs, r.mounts, new Date(r.createdAt));
      c.paused = r.paused;
      for (const p of procs) if (p !== init) c.execs.set(p.execId, p);
      this.containers.set(c.key, c);
      const reattach = (p: TaskProcess): void => {
        p.io = ProcessIO.reattach(p.stdio, {
          dir: this.store.dir(r.namespace, r.id), name: p.execId || 'init', containerId: r.id, namespace: r.namespace, logger: log,
        });
      };
      if (this.engine.onExit) {
        // processes of such engines are not host processes: ask the engine whether the container is still there
        const state = await this.engine.state(ref).catch(() => undefined);
        if (!state || state.status === 'stopped' || state.status === 'unknown') {
          for (const p of procs) {
            if (p.status === 'running' || p === init) void this.processExited(c, p, 255);
          }
        } else {
          // Their stdio went through us all the same (the runtime holds the read end of our private stdin pipe,
          // e.g. gVisor's sandbox): resume copying containerd's stdin FIFO into it. An exec that ended while no
          // sandboxer ran is reported by the engine, which closes this IO again.
          for (const p of procs) if (p.status === 'running') reattach(p);
        }
        this.persist(c);
        out.push(r.id);
        log.info('container re-adopted');
        continue;
      }
      for (const p of procs) {
        if (p.status === 'stopped' || (p.status === 'created' && p !== init)) continue;
        const alive = p.pid > 0 && p.startTime !== undefined && processStartTime(p.pid) === p.startTime;
        // gone before this check: its pid may already belong to another process, whose exit must not be taken for it
        if (!alive) this.exitListener?.unwatch(p.pid);
        if (alive && p.status === 'running') reattach(p);
        if (p.pid > 0) {
          // a dead one is noticed on the first poll (and reaped with its real status if it is still our child)
          this.adopt(c, p);
        } else {
          log.warn({ exec: p.execId || undefined }, 'process without a pid in the task record; reporting exit 255');
          void this.processExited(c, p, 255);
        }
      }
      this.persist(c);
      out.push(r.id);
      log.info('container re-adopted');
    }
    if (this.exitListener) {
      for (const r of records) for (const pr of r.processes) if (!this.byPid.has(pr.pid)) this.exitListener.unwatch(pr.pid);
      this.closeExitListenerIfIdle();
    }
    return out;
  }

  /** Force-delete a container nobody reports on (interrupted Create, unreadable record) and drop its state. */
  private async removeLeftover(ref: ContainerRef, mounts: string[]): Promise<void> {
    const log = this.logger.child({ namespace: ref.namespace, id: ref.id });
    try {
      await this.engine.delete(ref, { force: true });
    } catch (err) {
      // keep the task dir so the next recover() tries again
      log.error({ err: (err as Error).message }, 'cannot delete leftover container; its task dir is kept');
      return;
    }
    unmountAll(mounts);
    ProcessIO.releaseHolders(this.store.dir(ref.namespace, ref.id));
    this.store.remove(ref.namespace, ref.id);
    log.info({ mounts }, 'leftover container deleted, rootfs unmounted, task dir removed');
  }

  private adopt(c: Container, p: TaskProcess): void {
    // If the process still happens to be our child (e.g. the service was re-created inside the same subreaper
    // process) the reaper gets its real status; otherwise the start-time poll notices it is gone.
    this.track(c, p);
    p.watcher = setInterval(() => {
      if (processStartTime(p.pid) === p.startTime) return;
      clearInterval(p.watcher);
      p.watcher = undefined;
      this.reaper?.check();
      const seen = this.exitListener?.take(p.pid);
      this.exitListener?.unwatch(p.pid);
      this.closeExitListenerIfIdle();
      // the reaper reported it (not "byPid no longer names it": a new process may have reused the pid since)
      if (p.exitSeen) return;
      this.untrack(p);
      if (seen) {
        this.logger.info({ id: c.ref.id, exec: p.execId || undefined, pid: p.pid, status: seen.status }, 're-adopted process exited');
      } else {
        this.logger.info({ id: c.ref.id, exec: p.execId || undefined, pid: p.pid },
          're-adopted process exited before this sandboxer listened; its exit status is unknown, reporting 255');
      }
      void this.processExited(c, p, seen?.status ?? 255);
    }, this.adoptPollMs);
    p.watcher.unref();
  }

  private closeExitListenerIfIdle(): void {
    if (this.exitListener && this.exitListener.size === 0) {
      this.exitListener.close();
      this.exitListener = undefined;
    }
  }

  /** Stop timers and the reaper and drop every IO handle; containers keep running (this is not a Delete). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.oomTimer) clearInterval(this.oomTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.reaper?.close();
    this.exitListener?.close();
    this.exitListener = undefined;
    for (const c of this.containers.values()) {
      for (const p of [c.init, ...c.execs.values()]) {
        if (p.watcher) clearInterval(p.watcher);
        // the processes keep running: keep what a next sandboxer re-attaches their IO to
        p.io?.detach();
      }
    }
    this.containers.clear();
    this.byPid.clear();
  }

  // ---- helpers ------------------------------------------------------------------------------------------------------

  /** Run an owner's hook: its failure is the owner's problem, never the Task API call's. */
  private async callHook(name: string, id: string, fn: () => void | Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.logger.warn({ id, hook: name, err: (err as Error).message }, 'task hook failed');
    }
  }

  private publish<K extends TaskEventTopic>(c: Container, topic: K, event: TaskEventMessage<K>): void {
    try {
      this.publisher.publish(c.ref.namespace, topic, packTaskEvent(topic, event));
    } catch (err) {
      this.logger.error({ topic, err: (err as Error).message }, 'cannot publish event');
    }
  }
}

function describe(c: Container, p: TaskProcess): string {
  return p.execId ? `exec ${p.execId} of container ${c.ref.id}` : `container ${c.ref.id}`;
}

/** a bounded wait that never keeps the process alive by itself */
function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** Any error (ENOENT, EACCES, ...) means no. */
function isDirectory(path: string): boolean {
  try {
    return statSync(path, { throwIfNoEntry: false })?.isDirectory() === true;
  } catch {
    return false;
  }
}

/** A console socket in a short private dir (sun_path is ~108 bytes; task state paths can be longer). */
function openConsoleSocket(): { console: ConsoleSocket; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-pty-'));
  return { console: ConsoleSocket.listen(join(dir, 'console.sock')), dir };
}

function runtimeOptionsOf(options: google.Any | undefined): RuntimeOptions | undefined {
  if (!options || anyTypeName(options) !== 'containerd.runc.v1.Options') return undefined;
  try {
    const o = unpackAny(options, runcOptions.Options);
    return { noPivotRoot: o.noPivotRoot, noNewKeyring: o.noNewKeyring };
  } catch (err) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, (err as Error).message);
  }
}
