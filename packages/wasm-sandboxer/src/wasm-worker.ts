// The code every pool worker runs. It is shipped to the Worker as source text (`new Worker(src, { eval: true })`)
// because the sandboxer is a single bundled executable (Node SEA) with no worker file on disk. So this function
// must be self-contained: it may use only its parameters, globals and `require` of node: builtins.

/** main thread → worker */
export interface RunRequest {
  type: 'run';
  module: WebAssembly.Module;
  args: string[];
  env: Record<string, string>;
  preopens: Record<string, string>;
  stdin: number;
  stdout: number;
  stderr: number;
  memoryLimitBytes?: number;
}

/** worker → main thread */
export type WorkerReport =
  | { type: 'ready' }
  /** instantiated and waiting on CONTROL.go: _start runs once the main thread sets it to 1 */
  | { type: 'prepared' }
  | { type: 'start-failed'; message: string }
  | { type: 'exit'; code: number; memoryBytes: number }
  | { type: 'trap'; message: string; memoryBytes: number };

/** `(module (memory (export "memory") 0) (func (export "_start")))`, run once so a worker's first real run is warm */
export const WARM_UP_MODULE = [
  0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 5, 3, 1, 0, 0, 7, 19, 2, 6, 109, 101, 109, 111, 114, 121,
  2, 0, 6, 95, 115, 116, 97, 114, 116, 0, 0, 10, 4, 1, 2, 0, 11,
];

/** Size of the table (a SharedArrayBuffer per worker) of host fds a module holds, for cleanup after a kill. */
export const FD_SLOTS = 256;

/**
 * The per-worker control words (an Int32Array over a SharedArrayBuffer) the main thread reads and writes while the
 * worker is inside wasm or a host call.
 */
export const CONTROL = {
  words: 6,
  /** set to 1 and notified by kill(): wakes a module sleeping in poll_oneoff */
  kill: 0,
  /** the host call in progress: 0 none, 1 fd_read, 2 fd_write */
  call: 1,
  /** the wasi fd of that call */
  callFd: 2,
  read: 1,
  write: 2,
  /** linear memory of the running module in 64 KiB pages, as of its last host call (for Stats) */
  memPages: 4,
  /**
   * 0 while a prepared module waits; the main thread sets 1 to run _start, or 2 (kill) to never run it. A futex
   * wake rather than a message: Start then costs the main thread a store and the worker no event-loop turn.
   */
  go: 5,
  goRun: 1,
  goCancel: 2,
} as const;

export function wasmWorkerMain(warmUpModule: number[], C: typeof CONTROL): void {
  const { parentPort, workerData } = require('node:worker_threads') as typeof import('node:worker_threads');
  const fs = require('node:fs') as typeof import('node:fs');

  // node:wasi warns once per thread that it is experimental; the sandboxer's stderr is for its JSON logs.
  const emitWarning = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
    if (type === 'ExperimentalWarning' && String(warning).includes('WASI')) return;
    (emitWarning as (...a: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
  const { WASI } = require('node:wasi') as typeof import('node:wasi');

  const port = parentPort!;
  const report = (r: WorkerReport): void => port.postMessage(r);
  const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;
  const EBADF = 8;

  // Host fds that uvwasi opened for the running module (preopens, files from path_open), shared with the main
  // thread: uvwasi never closes them when its WASI object dies, so if the module is killed (the thread terminated)
  // the main thread closes what is listed here. A clean end closes them through WASI itself.
  const shared = workerData as { fdSlots: SharedArrayBuffer; control: SharedArrayBuffer; collect: boolean };
  const slots = new Int32Array(shared.fdSlots);
  const control = new Int32Array(shared.control);
  /** wasi fd -> its slot and the host path the fd refers to (the base for path_open checks under it) */
  const hostFds = new Map<number, { slot: number; link: string }>();

  function track(wasiFd: number, hostFd: number, link: string): void {
    const slot = slots.indexOf(-1);
    if (slot < 0) return; // table full: only a kill would leak this one
    Atomics.store(slots, slot, hostFd);
    hostFds.set(wasiFd, { slot, link });
  }
  function linkOf(hostFd: number): string | undefined {
    try {
      return fs.readlinkSync(`/proc/self/fd/${hostFd}`);
    } catch {
      return undefined;
    }
  }
  /**
   * Called BEFORE the fd is closed, so a termination in between leaks the fd rather than letting the main thread
   * close a number that may already belong to someone else. Returns a function that re-tracks it if the close fails.
   */
  function untrack(wasiFd: number): () => void {
    const entry = hostFds.get(wasiFd);
    if (entry === undefined) return () => undefined;
    const hostFd = slots[entry.slot]!;
    Atomics.store(slots, entry.slot, -1);
    hostFds.delete(wasiFd);
    return () => {
      Atomics.store(slots, entry.slot, hostFd);
      hostFds.set(wasiFd, entry);
    };
  }
  /**
   * The fds the next `count` opens will get: the kernel hands out the lowest free numbers, so probing with
   * /dev/null and closing again predicts them. Another thread opening in between breaks the prediction, which the
   * callers detect by checking where the predicted fd points (then the fd is simply not tracked).
   */
  function nextFds(count: number): number[] {
    const fds: number[] = [];
    try {
      for (let i = 0; i < count; i++) fds.push(fs.openSync('/dev/null', 'r'));
    } finally {
      for (const fd of fds) fs.closeSync(fd);
    }
    return fds;
  }

  function hostCall(kind: number, fd: number | bigint, call: () => number): number {
    Atomics.store(control, C.callFd, Number(fd));
    Atomics.store(control, C.call, kind);
    try {
      return call();
    } finally {
      Atomics.store(control, C.call, 0);
    }
  }

  /**
   * poll_oneoff whose subscriptions are all clocks is a sleep, and uvwasi's sleep cannot be interrupted: a killed
   * module would hold its thread until the sleep ends. So clock-only polls sleep here in Atomics.wait on the kill
   * word instead, which kill() notifies. Polls that include fd subscriptions go to uvwasi unchanged.
   */
  function sleepOrPoll(
    memory: WebAssembly.Memory | undefined,
    inPtr: number,
    outPtr: number,
    nsubs: number,
    neventsPtr: number,
    poll: () => number,
  ): number {
    const SUB = 48;
    const EVENT = 32;
    if (!memory || nsubs === 0) return poll(); // uvwasi reports the error
    const size = memory.buffer.byteLength;
    if (inPtr + nsubs * SUB > size || outPtr + nsubs * EVENT > size || neventsPtr + 4 > size) return poll();
    let view = new DataView(memory.buffer);
    const now = (clock: number): bigint =>
      clock === 0 ? BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6)) : process.hrtime.bigint();
    const deadlines: bigint[] = [];
    for (let i = 0; i < nsubs; i++) {
      const sub = inPtr + i * SUB;
      if (view.getUint8(sub + 8) !== 0) return poll(); // an fd subscription
      const clock = view.getUint32(sub + 16, true);
      const timeout = view.getBigUint64(sub + 24, true);
      const absolute = (view.getUint16(sub + 40, true) & 1) !== 0;
      // deadlines on the monotonic scale
      deadlines.push(process.hrtime.bigint() + (absolute ? timeout - now(clock) : timeout));
    }
    const first = deadlines.reduce((a, b) => (b < a ? b : a));
    for (;;) {
      const left = first - process.hrtime.bigint();
      if (left <= 0n) break;
      Atomics.wait(control, C.kill, 0, Number(left) / 1e6);
      if (Atomics.load(control, C.kill) !== 0) return 27; // EINTR: the module is being killed and never sees it
    }
    view = new DataView(memory.buffer);
    let n = 0;
    const at = process.hrtime.bigint();
    for (let i = 0; i < nsubs; i++) {
      if (deadlines[i]! > at) continue;
      const ev = outPtr + n * EVENT;
      new Uint8Array(memory.buffer, ev, EVENT).fill(0);
      view.setBigUint64(ev, view.getBigUint64(inPtr + i * SUB, true), true); // userdata
      view.setUint8(ev + 10, 0); // type clock, error 0
      n++;
    }
    view.setUint32(neventsPtr, n, true);
    return 0;
  }

  function memoryBytes(instance: WebAssembly.Instance): number {
    const memory = instance.exports.memory;
    return memory instanceof WebAssembly.Memory ? memory.buffer.byteLength : 0;
  }

  function trapText(err: unknown, req: RunRequest, usedBytes: number): string {
    const e = err instanceof Error ? err : new Error(String(err));
    const lines = [`wasm trap: ${e.message}`];
    // keep the wasm frames (function index and code offset) and drop the runner's own JS frames
    for (const frame of (e.stack ?? '').split('\n').slice(1)) {
      if (frame.includes('wasm://') || frame.includes('wasm-function')) lines.push(frame);
    }
    const limit = req.memoryLimitBytes;
    if (limit !== undefined && usedBytes >= limit * 0.9) {
      lines.push(
        `linear memory in use: ${mib(usedBytes)} of the container's ${mib(limit)} memory limit; ` +
          'memory.grow fails beyond the limit',
      );
    }
    return `${lines.join('\n')}\n`;
  }

  type Fn = (...a: (number | bigint)[]) => number;

  function run(req: RunRequest): void {
    let wasi: InstanceType<typeof WASI>;
    let instance: WebAssembly.Instance;
    let imports: Record<string, Fn> | undefined;
    slots.fill(-1);
    hostFds.clear();
    Atomics.store(control, C.call, 0);
    Atomics.store(control, C.memPages, 0);
    try {
      const dirs = Object.values(req.preopens).map((p) => fs.realpathSync(p));
      const predicted = nextFds(dirs.length);
      wasi = new WASI({
        version: 'preview1',
        args: req.args,
        env: req.env,
        preopens: req.preopens,
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        returnOnExit: true,
      });
      // preopens are wasi fds 3, 4, ... in order
      dirs.forEach((dir, i) => {
        if (linkOf(predicted[i]!) === dir) track(3 + i, predicted[i]!, dir);
      });
      const fns = (wasi.getImportObject() as { wasi_snapshot_preview1: Record<string, Fn> }).wasi_snapshot_preview1;
      imports = fns;
      let memory: WebAssembly.Memory | undefined;
      // Every import is called through a JS frame: a termination requested while the thread is blocked inside a
      // host call then lands when the call returns (measured: called straight from wasm it can be lost).
      const viaJs = Object.fromEntries(Object.entries(fns).map(([name, fn]) => [name, (...a: (number | bigint)[]) => fn(...a)]));
      const wrapped: Record<string, Fn> = {
        ...viaJs,
        path_open: (...a) => {
          const [hostFd] = nextFds(1);
          const errno = fns.path_open!(...a);
          const base = hostFds.get(Number(a[0]))?.link;
          const mem = memory;
          if (errno !== 0 || base === undefined || !mem) return errno;
          const link = linkOf(hostFd!);
          // the predicted fd must now be a file under the directory the module opened it from
          if (link !== undefined && (link === base || link.startsWith(base === '/' ? '/' : `${base}/`))) {
            track(new DataView(mem.buffer).getUint32(Number(a[8]), true), hostFd!, link);
          }
          return errno;
        },
        // what the module is blocked on, if it is, so kill() can unblock exactly that stdio FIFO
        fd_read: (...a) => hostCall(C.read, a[0]!, () => fns.fd_read!(...a)),
        fd_write: (...a) => hostCall(C.write, a[0]!, () => fns.fd_write!(...a)),
        poll_oneoff: (inPtr, outPtr, nsubs, neventsPtr) =>
          sleepOrPoll(memory, Number(inPtr), Number(outPtr), Number(nsubs), Number(neventsPtr), () =>
            fns.poll_oneoff!(inPtr, outPtr, nsubs, neventsPtr),
          ),
        fd_close: (fd) => {
          const restore = untrack(Number(fd));
          const errno = fns.fd_close!(fd);
          if (errno !== 0) restore();
          return errno;
        },
        fd_renumber: (from, to) => {
          // `to` is closed and `from` takes its number
          const restore = untrack(Number(to));
          const errno = fns.fd_renumber!(from, to);
          if (errno !== 0) {
            restore();
            return errno;
          }
          const entry = hostFds.get(Number(from));
          if (entry !== undefined) {
            hostFds.delete(Number(from));
            hostFds.set(Number(to), entry);
          }
          return errno;
        },
      };
      // the main thread cannot see this thread's memory object: publish its size whenever the module calls out
      const noteMemory = (): void => {
        if (memory) Atomics.store(control, C.memPages, memory.buffer.byteLength >>> 16);
      };
      const noted = Object.fromEntries(Object.entries(wrapped).map(([name, fn]) => [name, (...a: (number | bigint)[]) => {
        noteMemory();
        return fn(...a);
      }]));
      instance = new WebAssembly.Instance(req.module, { wasi_snapshot_preview1: noted });
      memory = instance.exports.memory instanceof WebAssembly.Memory ? instance.exports.memory : undefined;
      noteMemory();
    } catch (err) {
      closeAll(imports);
      report({ type: 'start-failed', message: err instanceof Error ? err.message : String(err) });
      return;
    }
    report({ type: 'prepared' });
    Atomics.wait(control, C.go, 0);
    if (Atomics.load(control, C.go) !== C.goRun) {
      // killed before it ran: the thread is being terminated; nothing the module could see happened
      closeAll(imports);
      return;
    }
    let result: WorkerReport;
    try {
      const code = wasi.start(instance);
      result = { type: 'exit', code, memoryBytes: memoryBytes(instance) };
    } catch (err) {
      // a trap (RuntimeError), a wasm stack overflow (RangeError) or a WASI failure: the module is dead either way
      const used = memoryBytes(instance);
      const text = trapText(err, req, used);
      try {
        hostCall(C.write, 2, () => fs.writeSync(req.stderr, text));
      } catch {
        // the module's stderr is gone (reader closed): the message still reaches the runner below
      }
      result = { type: 'trap', message: text.trimEnd(), memoryBytes: used };
    }
    // before reporting the exit: the caller may unmount the rootfs as soon as it hears of it
    closeAll(imports);
    report(result);
  }

  /** Close every fd the module still holds (never 0-2: those are the caller's). */
  function closeAll(imports: Record<string, Fn> | undefined): void {
    if (!imports) return; // no WASI object: nothing was opened
    for (const wasiFd of [...hostFds.keys()]) {
      untrack(wasiFd);
      imports.fd_close!(wasiFd);
    }
    // and any the tracking missed: wasi fds are allocated low, so a long run of EBADF means the end
    for (let fd = 3, misses = 0; misses < 64; fd++) misses = imports.fd_close!(fd) === EBADF ? misses + 1 : 0;
  }

  // Warm the WASI and instantiate paths once, so the first container does not pay for them.
  const warm = new WASI({ version: 'preview1', args: [], env: {}, returnOnExit: true });
  warm.start(new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(warmUpModule)), warm.getImportObject() as WebAssembly.Imports));

  // See applyV8Flags: one compacting full GC now returns the bootstrap's garbage pages before a module holds this
  // thread for good. It takes 10-25 ms, so only a spare does it (booting ahead of demand); a worker started for a
  // waiting run skips it (measured: +37 ms on that cold start). Taken off the global so nothing later can call it.
  // The compaction flag is process-wide: another thread's GC in this window merely compacts too, and a concurrent
  // worker turning it off first merely makes this GC a plain one.
  const g = globalThis as { gc?: () => void };
  const gc = g.gc;
  delete g.gc;
  if (shared.collect && typeof gc === 'function') {
    const v8 = require('node:v8') as typeof import('node:v8');
    v8.setFlagsFromString('--compact-on-every-full-gc');
    try {
      gc();
    } finally {
      v8.setFlagsFromString('--no-compact-on-every-full-gc');
    }
  }

  port.on('message', (req: RunRequest) => {
    if (req.type === 'run') run(req);
  });
  report({ type: 'ready' });
}

/** The worker's source text. */
export function workerSource(): string {
  return `(${wasmWorkerMain.toString()})(${JSON.stringify(WARM_UP_MODULE)}, ${JSON.stringify(CONTROL)});`;
}
