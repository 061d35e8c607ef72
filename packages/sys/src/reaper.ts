import { EventEmitter } from 'node:events';
import { SysError } from './errors';
import { lazy } from './koffi';
import { readProcessStat } from './proc-stat';

const PR_SET_CHILD_SUBREAPER = 36;
const PR_GET_CHILD_SUBREAPER = 37;
const WNOHANG = 1;
const EINTR = 4;
const ECHILD = 10;

const fns = lazy((k, lib) => ({
  errno: () => k.errno(),
  // prctl is variadic; on x86_64 SysV integer varargs travel exactly like fixed args.
  prctlLong: lib.func('prctl', 'int', ['int', 'unsigned long', 'unsigned long', 'unsigned long', 'unsigned long']),
  prctlPtr: lib.func('prctl', 'int', ['int', 'int *', 'unsigned long', 'unsigned long', 'unsigned long']),
  waitpid: lib.func('int waitpid(int pid, _Out_ int *status, int options)'),
}));

/** Makes orphaned descendants re-parent to this process instead of init (PR_SET_CHILD_SUBREAPER). */
export function setChildSubreaper(on = true): void {
  const f = fns();
  if (f.prctlLong(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) !== 0) throw new SysError('prctl', f.errno());
}

export function isChildSubreaper(): boolean {
  const f = fns();
  const out = new Int32Array(1);
  if (f.prctlPtr(PR_GET_CHILD_SUBREAPER, out, 0, 0, 0) !== 0) throw new SysError('prctl', f.errno());
  return out[0] !== 0;
}

export interface WaitStatus {
  pid: number;
  /** Exit code, or 128 + signal number when killed by a signal (shell convention). */
  status: number;
  /** True when the process exited by itself, false when a signal killed it. */
  exited: boolean;
  /** The killing signal number, or null. */
  signal: number | null;
}

function assertPid(pid: number): void {
  // pid <= 0 would wait for *any* child and could steal libuv's, so only real pids are allowed.
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`pid must be a positive integer, got ${pid}`);
}

function decode(pid: number, raw: number): WaitStatus {
  const sig = raw & 0x7f;
  if (sig === 0) return { pid, status: (raw >> 8) & 0xff, exited: true, signal: null };
  return { pid, status: 128 + sig, exited: false, signal: sig };
}

/**
 * waitpid() on ONE pid. With noHang, returns null while the process is still running.
 * Without noHang the whole event loop blocks until it exits: use only for pids known to be dead.
 * Throws SysError ECHILD when pid is not (or no longer) a child of this process.
 */
export function waitPid(pid: number, opts: { noHang?: boolean } = {}): WaitStatus | null {
  assertPid(pid);
  const f = fns();
  const raw = new Int32Array(1);
  for (;;) {
    const r = f.waitpid(pid, raw, opts.noHang ? WNOHANG : 0);
    if (r === pid) return decode(pid, raw[0]);
    if (r === 0) return null;
    const errno = f.errno();
    if (errno !== EINTR) throw new SysError('waitpid', errno);
  }
}

export interface ReaperOptions {
  /** Safety poll period; SIGCHLDs coalesce, so a signal may stand for several exits. Default 500 ms. */
  pollMs?: number;
}

export interface ReaperEvents {
  exit: [pid: number, status: number, info: WaitStatus];
  /** A tracked pid that is gone without us reaping it (someone else waited for it). */
  lost: [pid: number];
  error: [err: Error];
}

/**
 * Reaps exactly the pids it tracks, never libuv's children: on every SIGCHLD (and a slow poll)
 * it calls waitpid(pid, WNOHANG) for each tracked pid and emits 'exit'.
 *
 * Register before the exit matters: a child (or orphan re-parented to us as subreaper) that dies
 * before track() stays a zombie until tracked, and is reaped on the next check after track().
 * A tracked pid that is not yet our child (a grandchild whose parent still runs) is kept and
 * retried; if it vanishes without being ours, 'lost' is emitted. Never track pids spawned by
 * node:child_process: the reaper would take their exit status from libuv.
 */
export class Reaper extends EventEmitter<ReaperEvents> {
  /** tracked pid → start time of the process it named when tracked (undefined: it was gone already) */
  private readonly pids = new Map<number, string | undefined>();
  private readonly pollMs: number;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;
  private closed = false;
  private readonly onSignal = (): void => this.schedule();

  constructor(opts: ReaperOptions = {}) {
    super();
    this.pollMs = opts.pollMs ?? 500;
    if (!(this.pollMs > 0)) throw new RangeError(`pollMs must be > 0, got ${opts.pollMs}`);
  }

  /**
   * Starts watching pid; an already-dead pid is reaped on the next tick. The process is identified by pid AND start
   * time (`startTime` when the caller knows it, else read now), so a pid that is reused after the tracked process
   * vanished (pid_max wraps) is reported 'lost' instead of being reaped: the new process may be libuv's child.
   */
  track(pid: number, startTime?: string): void {
    assertPid(pid);
    if (this.closed) throw new Error('Reaper is closed');
    fns(); // load koffi now, so a load failure surfaces here and not inside a signal handler
    this.pids.set(pid, startTime ?? readProcessStat(pid)?.startTime);
    if (!this.timer) {
      process.on('SIGCHLD', this.onSignal);
      // unref: the reaper alone must not keep a process alive; the owner's server does.
      this.timer = setInterval(() => this.check(), this.pollMs).unref();
    }
    this.schedule();
  }

  untrack(pid: number): boolean {
    const had = this.pids.delete(pid);
    if (this.pids.size === 0) this.stop();
    return had;
  }

  has(pid: number): boolean {
    return this.pids.has(pid);
  }

  get size(): number {
    return this.pids.size;
  }

  /** Checks every tracked pid now. */
  check(): void {
    for (const [pid, startTime] of [...this.pids]) {
      // A child keeps its pid until it is reaped, so a matching start time here means waitpid() below can only reap
      // the tracked process; anything else is gone or another process that reused its pid, never ours to reap.
      const stat = readProcessStat(pid);
      if (!stat || startTime === undefined || stat.startTime !== startTime) {
        this.untrack(pid);
        this.emit('lost', pid);
        continue;
      }
      let result: WaitStatus | null;
      try {
        result = waitPid(pid, { noHang: true });
      } catch (err) {
        // not (yet) our child: a grandchild whose parent still runs, or a process re-adopted after a restart
        if (err instanceof SysError && err.errno === ECHILD) continue;
        this.emit('error', err as Error);
        continue;
      }
      if (result) {
        this.untrack(pid);
        this.emit('exit', pid, result.status, result);
      }
    }
  }

  close(): void {
    this.closed = true;
    this.pids.clear();
    this.stop();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.check();
    });
  }

  private stop(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    process.removeListener('SIGCHLD', this.onSignal);
  }
}
