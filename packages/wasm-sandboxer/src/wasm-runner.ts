// Runs WASI preview1 modules in a pool of pre-warmed worker threads: the hot path is a stat, a cache lookup and one
// postMessage to a thread that already has node:wasi loaded and warmed, never a process start.
import * as fs from 'node:fs';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { Worker, type ResourceLimits } from 'node:worker_threads';
import { ModuleCache } from './module-cache';
import { applyV8Flags } from './v8-flags';
import { WasmContextError, WasmPoolClosedError, WasmRunnerError, WasmStartError } from './errors';
import { CONTROL, FD_SLOTS, workerSource, type RunRequest, type WorkerReport } from './wasm-worker';

/** What one container (or exec) runs: runwasi's RuntimeContext + Stdio, with host paths and host fds. */
export interface WasmRunContext {
  /** the module file on the host */
  modulePath: string;
  /** argv; args[0] is the module path as the container sees it */
  args: string[];
  /** "KEY=VALUE" entries; an entry without "=" becomes KEY with an empty value */
  env: string[];
  /**
   * Accepted for symmetry with OCI `process.cwd` but not applied: WASI preview1 has no working directory, and
   * wasi-libc resolves relative paths against "/".
   */
  cwd?: string;
  /** guest path → host directory; "/" (the rootfs) is always handed to the module first, as fd 3 */
  preopens: Record<string, string>;
  /** host fds the caller opened (FIFO ends, files, /dev/null) and keeps owning; they must stay open until exit */
  stdin: number;
  stdout: number;
  stderr: number;
  /** linux.resources.memory.limit: caps linear memory; a module whose minimum is above it is refused */
  memoryLimitBytes?: number;
}

export type WasmExitReason =
  /** the module returned from _start (0) or called proc_exit */
  | 'exit'
  /** the module trapped (unreachable, out-of-bounds access, stack overflow, ...) */
  | 'trap'
  /** kill(): exit code 128 + signal */
  | 'signal'
  /** the worker's JS heap (resourceLimits) ran out */
  | 'oom'
  /** the worker died for another reason */
  | 'crash';

export interface WasmExit {
  /** 0-255, as a process would report it */
  exitCode: number;
  reason: WasmExitReason;
  /** the signal number for reason 'signal' */
  signal?: number;
  /** trap or failure text (also written to the module's stderr) */
  message?: string;
  exitedAt: Date;
}

export interface RunningModule {
  /** the worker thread running the module (there is no pid: the module runs inside the sandboxer process) */
  readonly threadId: number;
  /** sha256 of the module file */
  readonly digest: string;
  readonly exited: Promise<WasmExit>;
  /** stop the module; any signal stops it (a wasm module cannot handle signals); 0 only checks it still runs */
  kill(signal?: number | NodeJS.Signals): void;
  /**
   * The module's linear memory in bytes as of its last host call (a module that grows memory without calling out
   * is seen at its next call); 0 once it has exited.
   */
  memoryBytes(): number;
}

/**
 * A module instantiated in its own worker with its WASI context, waiting to run: a created container. Instantiation
 * (WASI set-up, imports, memory) is the costly part of a start, so it happens before Start is asked for.
 */
export interface PreparedModule {
  readonly threadId: number;
  readonly digest: string;
  /** resolves when the module ended; killed before start(), with 128 + signal */
  readonly exited: Promise<WasmExit>;
  /** run `_start` now (a store and a futex wake, no message); idempotent; after a kill it returns the ended module */
  start(): RunningModule;
  /** stop it, started or not (see RunningModule.kill) */
  kill(signal?: number | NodeJS.Signals): void;
}

/** What the runner logs; pino's Logger fits. */
export interface RunnerLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface WasmRunnerPoolOptions {
  /** workers kept started and idle ahead of demand (default 2) */
  size?: number;
  /** idle workers kept when runs end; more are stopped (default max(size, 8)) */
  maxIdle?: number;
  /** compiled modules kept, least recently used evicted (default 64) */
  moduleCacheSize?: number;
  /** per-worker JS heap limits; they do NOT bound wasm linear memory (see memoryLimitBytes) */
  resourceLimits?: ResourceLimits;
  /** a worker whose module ended with more linear memory than this is replaced, not reused (default 64 MiB) */
  recycleAboveBytes?: number;
  /** after kill(), how long terminate() may take before stdio FIFOs are unblocked (default 20 ms) */
  killGraceMs?: number;
  /** after kill(), when the exit is reported even if the thread has not stopped yet (default 250 ms) */
  killAbandonMs?: number;
  logger?: RunnerLogger;
}

/** wasmtime's CLI reports a trap as 128+SIGABRT; runwasi reports any engine error as 137, which hides kills. */
export const TRAP_EXIT_CODE = 134;
/** what an out-of-memory kill looks like on a host process (SIGKILL from the OOM killer) */
export const OOM_EXIT_CODE = 137;

const MAX_START_FAILURES = 3;
const DEFAULT_RESOURCE_LIMITS: ResourceLimits = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8, stackSizeMb: 4 };

interface Run {
  exited: Promise<WasmExit>;
  finish(exit: Omit<WasmExit, 'exitedAt'>): void;
  done: boolean;
  started: boolean;
  onStart(err?: Error): void;
  killSignal?: number;
  stdio: [number, number, number];
}

interface PoolWorker {
  worker: Worker;
  /** host fds the worker's module holds (-1 = free), written by the worker; see wasmWorkerMain */
  fds: Int32Array;
  /** see CONTROL */
  control: Int32Array;
  state: 'starting' | 'idle' | 'busy' | 'stopping';
  /** spawned for a waiting run() rather than as a spare: it goes to that run, not to the idle list */
  reserved: boolean;
  ready: Promise<void>;
  /** it reported 'ready' */
  booted: boolean;
  run?: Run;
  lastError?: Error & { code?: string };
}

export class WasmRunnerPool {
  private readonly size: number;
  private readonly maxIdle: number;
  private readonly resourceLimits: ResourceLimits;
  private readonly recycleAboveBytes: number;
  private readonly killGraceMs: number;
  private readonly killAbandonMs: number;
  private readonly logger?: RunnerLogger;
  private readonly cache: ModuleCache;
  private readonly source = workerSource();
  private readonly workers = new Set<PoolWorker>();
  private readonly idle: PoolWorker[] = [];
  /** workers that died before becoming ready, in a row: spares stop being started (no spawn loop) until one works */
  private startFailures = 0;
  private closed = false;

  constructor(opts: WasmRunnerPoolOptions = {}) {
    this.size = opts.size ?? 2;
    this.maxIdle = opts.maxIdle ?? Math.max(this.size, 8);
    if (!Number.isInteger(this.size) || this.size < 0) throw new RangeError(`pool size must be an integer >= 0, got ${opts.size}`);
    if (!Number.isInteger(this.maxIdle) || this.maxIdle < this.size) {
      throw new RangeError(`maxIdle must be an integer >= size (${this.size}), got ${opts.maxIdle}`);
    }
    this.resourceLimits = { ...DEFAULT_RESOURCE_LIMITS, ...opts.resourceLimits };
    // measured: a worker with a stack of a few KiB overflows while booting and takes the whole process down
    if (!(this.resourceLimits.stackSizeMb! >= 1)) throw new RangeError(`resourceLimits.stackSizeMb must be >= 1, got ${this.resourceLimits.stackSizeMb}`);
    this.recycleAboveBytes = opts.recycleAboveBytes ?? 64 * 1048576;
    this.killGraceMs = opts.killGraceMs ?? 20;
    this.killAbandonMs = opts.killAbandonMs ?? 250;
    this.logger = opts.logger;
    this.cache = new ModuleCache(opts.moduleCacheSize ?? 64);
    applyV8Flags(); // before the first worker: it keeps the flags it was created with
    this.replenish();
  }

  /** Resolves once `size` workers are started and idle (or fewer if some are busy). For start-up and benchmarks. */
  async warm(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.ready.catch(() => undefined)));
  }

  stats(): { idle: number; starting: number; busy: number; stopping: number; modules: number } {
    const s = { idle: 0, starting: 0, busy: 0, stopping: 0, modules: this.cache.size };
    for (const w of this.workers) s[w.state]++;
    return s;
  }

  /**
   * Validate and compile a module ahead of run() (e.g. at container create), so a bad module fails create rather
   * than start, and start finds it compiled. Rejects like run() does for an unusable module.
   */
  async preload(modulePath: string, memoryLimitBytes?: number): Promise<{ digest: string }> {
    if (this.closed) throw new WasmPoolClosedError();
    if (typeof modulePath !== 'string' || !path.isAbsolute(modulePath)) {
      throw new WasmContextError(`modulePath must be an absolute path, got '${String(modulePath)}'`);
    }
    const { digest } = await this.cache.load(modulePath, memoryLimitBytes);
    return { digest };
  }

  /**
   * Start a module. Resolves once it is instantiated and `_start` is being called; rejects with WasmLoadError
   * (module unusable), WasmContextError (bad context) or WasmStartError (instantiation / WASI set-up failed).
   */
  async run(ctx: WasmRunContext): Promise<RunningModule> {
    return (await this.prepare(ctx)).start();
  }

  /**
   * Instantiate a module in a worker of its own, ready to start(). Rejects like run(). The worker is the module's
   * from here on: a prepared module that is never started must be killed.
   */
  async prepare(ctx: WasmRunContext): Promise<PreparedModule> {
    if (this.closed) throw new WasmPoolClosedError();
    const request = toRequest(ctx);
    const compiled = await this.cache.load(ctx.modulePath, ctx.memoryLimitBytes);
    const pw = await this.acquire();
    let markStarted!: () => void;
    let failStart!: (err: Error) => void;
    const started = new Promise<void>((resolve, reject) => {
      markStarted = resolve;
      failStart = reject;
    });
    let resolveExit!: (e: WasmExit) => void;
    const run: Run = {
      exited: new Promise<WasmExit>((resolve) => (resolveExit = resolve)),
      done: false,
      started: false,
      stdio: [ctx.stdin, ctx.stdout, ctx.stderr],
      finish: (exit) => {
        if (run.done) return;
        run.done = true;
        resolveExit({ ...exit, exitedAt: new Date() });
      },
      onStart: (err) => {
        run.started = true;
        if (err) failStart(err);
        else markStarted();
      },
    };
    pw.run = run;
    Atomics.store(pw.control, CONTROL.go, 0);
    pw.worker.postMessage({ ...request, module: compiled.module } satisfies RunRequest);
    await started;
    const threadId = pw.worker.threadId;
    const kill = (signal: number | NodeJS.Signals = 'SIGKILL'): void => this.kill(pw, run, signalNumber(signal));
    const running: RunningModule = {
      threadId,
      digest: compiled.digest,
      exited: run.exited,
      kill,
      memoryBytes: () => (run.done || pw.run !== run ? 0 : Atomics.load(pw.control, CONTROL.memPages) * 65536),
    };
    return {
      threadId,
      digest: compiled.digest,
      exited: run.exited,
      kill,
      start: () => {
        // only from "waiting": a kill (goCancel) or an earlier start leaves the word as it is
        if (Atomics.compareExchange(pw.control, CONTROL.go, 0, CONTROL.goRun) === 0) {
          Atomics.notify(pw.control, CONTROL.go);
          this.logger?.debug({ threadId, digest: compiled.digest, module: ctx.modulePath }, 'wasm module started');
        }
        return running;
      },
    };
  }

  /** Kill every running module, stop every worker and wait for them. */
  async close(): Promise<void> {
    this.closed = true;
    const exits: Promise<unknown>[] = [];
    for (const w of [...this.workers]) {
      if (w.run && !w.run.done) {
        this.kill(w, w.run, osConstants.signals.SIGKILL);
        exits.push(w.run.exited);
      } else {
        exits.push(this.stop(w));
      }
    }
    this.idle.length = 0;
    await Promise.all(exits);
    this.cache.clear();
  }

  private spawn(reserved = false): PoolWorker {
    const fdSlots = new SharedArrayBuffer(FD_SLOTS * Int32Array.BYTES_PER_ELEMENT);
    const fds = new Int32Array(fdSlots).fill(-1);
    const controlBuffer = new SharedArrayBuffer(CONTROL.words * Int32Array.BYTES_PER_ELEMENT);
    const worker = new Worker(this.source, {
      eval: true,
      env: {},
      argv: [],
      // a spare collects its boot garbage before it is used; a worker a run waits for does not (see wasmWorkerMain)
      workerData: { fdSlots, control: controlBuffer, collect: !reserved },
      resourceLimits: this.resourceLimits,
    });
    let ready!: () => void;
    let notReady!: (err: Error) => void;
    const pw: PoolWorker = {
      worker,
      fds,
      control: new Int32Array(controlBuffer),
      state: 'starting',
      reserved,
      booted: false,
      ready: new Promise<void>((resolve, reject) => {
        ready = resolve;
        notReady = reject;
      }),
    };
    pw.ready.catch(() => undefined); // observed by acquire(); an unwanted spare dying is logged on exit
    this.workers.add(pw);
    worker.on('message', (msg: WorkerReport) => this.onReport(pw, msg, ready));
    worker.on('error', (err: Error) => {
      pw.lastError = err;
    });
    worker.on('exit', (code: number) => {
      this.workers.delete(pw);
      const i = this.idle.indexOf(pw);
      if (i >= 0) this.idle.splice(i, 1);
      const err = pw.lastError;
      if (!pw.booted) {
        // also when stop() got to it first: an acquire() may be waiting on `ready`
        const reason = err?.message ?? `exit ${code}`;
        notReady(new WasmRunnerError('ERR_WASM_WORKER', `wasm worker failed to start: ${reason}`));
        if (!this.closed && pw.state === 'starting' && ++this.startFailures === MAX_START_FAILURES) {
          this.logger?.warn({ err: reason }, 'wasm workers keep failing to start; no more spares until one starts');
        }
      }
      // a module stopped by kill (or a dying worker) never closed its preopens and files: uvwasi leaves them open
      closeOrphanedFds(pw.fds);
      const run = pw.run;
      pw.state = 'stopping';
      if (run && !run.done) this.onWorkerGone(pw, run, err);
      else if (err) this.logger?.warn({ threadId: worker.threadId, err: err.message }, 'idle wasm worker died');
      if (!this.closed) this.replenish();
    });
    return pw;
  }

  private onReport(pw: PoolWorker, msg: WorkerReport, ready: () => void): void {
    const run = pw.run;
    switch (msg.type) {
      case 'ready':
        pw.booted = true;
        this.startFailures = 0;
        ready();
        if (pw.state === 'starting' && !pw.reserved) this.release(pw);
        return;
      case 'prepared':
        run?.onStart();
        return;
      case 'start-failed':
        pw.run = undefined;
        run?.onStart(new WasmStartError(`cannot start wasm module: ${msg.message}`));
        run?.finish({ exitCode: TRAP_EXIT_CODE, reason: 'crash', message: msg.message });
        this.release(pw);
        return;
      case 'exit':
      case 'trap':
        if (!run || run.killSignal !== undefined) return; // a kill already decided how this run ends
        pw.run = undefined;
        if (msg.type === 'exit') run.finish({ exitCode: (msg.code >>> 0) & 0xff, reason: 'exit' });
        else run.finish({ exitCode: TRAP_EXIT_CODE, reason: 'trap', message: msg.message });
        if (msg.memoryBytes > this.recycleAboveBytes) void this.stop(pw);
        else this.release(pw);
        return;
    }
  }

  private onWorkerGone(pw: PoolWorker, run: Run, err: (Error & { code?: string }) | undefined): void {
    if (run.killSignal !== undefined) {
      // killed between postMessage and 'prepared' (only close() can do that): prepare() must not wait forever
      if (!run.started) run.onStart(this.closed ? new WasmPoolClosedError() : new WasmStartError('killed before it started'));
      run.finish({ exitCode: 128 + run.killSignal, reason: 'signal', signal: run.killSignal });
      return;
    }
    const oom = err?.code === 'ERR_WORKER_OUT_OF_MEMORY';
    const message = oom
      ? `wasm-sandboxer: the module exhausted its worker's host heap (maxOldGenerationSizeMb ${this.resourceLimits.maxOldGenerationSizeMb}) and was stopped`
      : `wasm-sandboxer: the module's worker died: ${err?.message ?? 'unknown reason'}`;
    writeQuietly(run.stdio[2], `${message}\n`);
    if (!run.started) run.onStart(new WasmStartError(message));
    run.finish({ exitCode: oom ? OOM_EXIT_CODE : TRAP_EXIT_CODE, reason: oom ? 'oom' : 'crash', message });
    this.logger?.warn({ threadId: pw.worker.threadId, err: err?.message, oom }, 'wasm worker died while running a module');
  }

  private kill(pw: PoolWorker, run: Run, signal: number): void {
    if (run.done || signal === 0 || run.killSignal !== undefined) return;
    run.killSignal = signal;
    pw.state = 'stopping';
    void pw.worker.terminate();
    // terminate() takes effect when the thread next runs wasm or JS. A module asleep in poll_oneoff is woken
    // through the kill word; one blocked reading stdin gets a byte at once; one in a write to stdout/stderr may
    // just be slow, so that FIFO is drained only after a grace period (see unblockStdio).
    Atomics.store(pw.control, CONTROL.kill, 1);
    Atomics.notify(pw.control, CONTROL.kill);
    // a prepared module that was never started must not start now
    if (Atomics.compareExchange(pw.control, CONTROL.go, 0, CONTROL.goCancel) === 0) Atomics.notify(pw.control, CONTROL.go);
    if (Atomics.load(pw.control, CONTROL.call) === CONTROL.read && Atomics.load(pw.control, CONTROL.callFd) === 0) {
      unblockStdio(run.stdio, 'read');
    }
    const grace = setTimeout(() => {
      if (run.done) return;
      const call = Atomics.load(pw.control, CONTROL.call);
      const fd = Atomics.load(pw.control, CONTROL.callFd);
      // still inside a host call on one of the stdio fds: that is the one it is blocked on
      if (call === CONTROL.read && fd === 0) unblockStdio(run.stdio, 'read');
      else if (call === CONTROL.write && (fd === 1 || fd === 2)) unblockStdio(run.stdio, 'write', fd);
      // otherwise it is pure wasm or JS whose teardown is merely slow: nudging stdio would only lose output
      const abandon = setTimeout(() => {
        if (run.done) return;
        this.logger?.warn({ threadId: pw.worker.threadId, signal }, 'killed wasm worker has not stopped yet; reporting the exit anyway');
        run.finish({ exitCode: 128 + signal, reason: 'signal', signal });
      }, Math.max(0, this.killAbandonMs - this.killGraceMs));
      abandon.unref();
    }, this.killGraceMs);
    grace.unref();
  }

  private async acquire(): Promise<PoolWorker> {
    if (this.closed) throw new WasmPoolClosedError();
    let pw = this.idle.pop();
    if (!pw) {
      // no spare: start one for this run (a cold worker start, tens of ms)
      pw = this.spawn(true);
      await pw.ready.catch((err: unknown) => {
        throw this.closed ? new WasmPoolClosedError() : err;
      });
      if (this.closed) throw new WasmPoolClosedError();
      if (pw.state !== 'starting') throw new WasmRunnerError('ERR_WASM_WORKER', 'wasm worker stopped before it was used');
    }
    pw.state = 'busy';
    pw.worker.ref();
    this.replenish();
    return pw;
  }

  private release(pw: PoolWorker): void {
    if (this.closed || this.idle.length >= this.maxIdle) {
      void this.stop(pw);
      return;
    }
    pw.state = 'idle';
    pw.run = undefined;
    pw.worker.unref(); // an idle pool never keeps the process alive
    this.idle.push(pw);
  }

  private stop(pw: PoolWorker): Promise<number> {
    pw.state = 'stopping';
    return pw.worker.terminate();
  }

  private replenish(): void {
    if (this.closed || this.startFailures >= MAX_START_FAILURES) return;
    let warm = 0;
    for (const w of this.workers) if (w.state === 'idle' || w.state === 'starting') warm++;
    for (; warm < this.size; warm++) this.spawn();
  }
}

function toRequest(ctx: WasmRunContext): Omit<RunRequest, 'module'> {
  const noNul = (what: string, s: unknown): string => {
    if (typeof s !== 'string') throw new WasmContextError(`${what} must be a string`);
    if (s.includes('\0')) throw new WasmContextError(`${what} contains a NUL byte`);
    return s;
  };
  const absolute = (what: string, p: unknown): string => {
    const s = noNul(what, p);
    if (!path.isAbsolute(s)) throw new WasmContextError(`${what} must be an absolute path, got '${s}'`);
    return s;
  };
  absolute('modulePath', ctx.modulePath);
  if (!Array.isArray(ctx.args) || ctx.args.length === 0) throw new WasmContextError('args must hold at least args[0]');
  const args = ctx.args.map((a, i) => noNul(`args[${i}]`, a));
  if (!Array.isArray(ctx.env)) throw new WasmContextError('env must be an array of "KEY=VALUE" strings');
  const env: Record<string, string> = {};
  ctx.env.forEach((entry, i) => {
    const s = noNul(`env[${i}]`, entry);
    const eq = s.indexOf('=');
    if (eq === 0) throw new WasmContextError(`env[${i}] has an empty name`);
    if (eq < 0) env[s] = '';
    else env[s.slice(0, eq)] = s.slice(eq + 1);
  });
  if (ctx.cwd !== undefined) absolute('cwd', ctx.cwd);
  const preopens: Record<string, string> = {};
  const entries = Object.entries(ctx.preopens ?? {});
  entries.sort(([a], [b]) => (a === '/' ? -1 : b === '/' ? 1 : 0));
  for (const [guest, host] of entries) {
    preopens[absolute(`preopen guest path '${guest}'`, guest)] = absolute(`preopen host path for '${guest}'`, host);
  }
  const fd = (name: string, v: unknown): number => {
    if (!Number.isInteger(v) || (v as number) < 0) throw new WasmContextError(`${name} must be a file descriptor, got ${String(v)}`);
    try {
      fs.fstatSync(v as number);
    } catch {
      throw new WasmContextError(`${name} fd ${String(v)} is not open`);
    }
    return v as number;
  };
  const mem = ctx.memoryLimitBytes;
  if (mem !== undefined && (!Number.isSafeInteger(mem) || mem <= 0)) {
    throw new WasmContextError(`memoryLimitBytes must be a positive integer, got ${String(mem)}`);
  }
  const req: Omit<RunRequest, 'module'> = {
    type: 'run',
    args,
    env,
    preopens,
    stdin: fd('stdin', ctx.stdin),
    stdout: fd('stdout', ctx.stdout),
    stderr: fd('stderr', ctx.stderr),
  };
  if (mem !== undefined) req.memoryLimitBytes = mem;
  return req;
}

function signalNumber(signal: number | NodeJS.Signals): number {
  if (typeof signal === 'number') {
    if (Number.isInteger(signal) && signal >= 0 && signal <= 64) return signal;
  } else {
    const n = (osConstants.signals as Record<string, number | undefined>)[signal];
    if (n !== undefined) return n;
  }
  throw new WasmRunnerError('ERR_WASM_SIGNAL', `invalid signal ${String(signal)}`);
}

function closeOrphanedFds(fds: Int32Array): void {
  for (let i = 0; i < fds.length; i++) {
    const fd = Atomics.exchange(fds, i, -1);
    if (fd < 0) continue;
    try {
      fs.closeSync(fd);
    } catch {
      // already gone
    }
  }
}

function writeQuietly(fd: number, text: string): void {
  try {
    fs.writeSync(fd, text);
  } catch {
    // the stderr reader is gone; the exit still carries the message
  }
}

/**
 * A killed module can be stuck in a blocking host call on a FIFO: reading an empty stdin or writing a full stdout
 * or stderr. Reopening the FIFO through /proc/self/fd gives a second end: one byte into stdin, or draining the
 * output FIFO, lets the call return so the pending termination takes effect. The module never sees the byte (it
 * stops at its next check), but output the reader had not consumed yet is dropped.
 */
function unblockStdio([stdin, stdout, stderr]: [number, number, number], what: 'read' | 'write', wasiFd?: number): void {
  const fifo = (fd: number): boolean => {
    try {
      return fs.fstatSync(fd).isFIFO();
    } catch {
      return false;
    }
  };
  if (what === 'read' && fifo(stdin)) {
    try {
      const w = fs.openSync(`/proc/self/fd/${stdin}`, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      try {
        fs.writeSync(w, '\n');
      } finally {
        fs.closeSync(w);
      }
    } catch {
      // full (the module is not waiting for input) or no reader: nothing to unblock
    }
  }
  const fd = wasiFd === 2 ? stderr : stdout;
  if (what === 'write' && fifo(fd)) {
    try {
      const r = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      try {
        const buf = Buffer.allocUnsafe(65536);
        for (let i = 0; i < 64 && fs.readSync(r, buf) > 0; i++);
      } finally {
        fs.closeSync(r);
      }
    } catch {
      // EAGAIN: drained
    }
  }
}
