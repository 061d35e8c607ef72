// Thin layer over QuickJS's os/std: everything the agent does to the guest OS goes through here,
// so the agent logic reads like ordinary async code and errors come back typed.
// The parts of QuickJS's `os` and `std` modules the agent uses: globals under `qjs --std`, declared
// here (module scope, not global) so nothing else in the monorepo sees them. Calls return a
// negative errno on failure unless noted.

interface QjsFile {
  readAsString(max?: number): string;
  puts(s: string): void;
  write(buf: ArrayBuffer, pos: number, len: number): number;
  flush(): void;
  close(): number;
}

interface QjsExecOptions {
  block?: boolean;
  usePath?: boolean;
  file?: string;
  cwd?: string;
  stdin?: number;
  stdout?: number;
  stderr?: number;
  env?: Record<string, string>;
}

declare const os: {
  O_RDONLY: number;
  O_WRONLY: number;
  O_RDWR: number;
  O_CREAT: number;
  O_TRUNC: number;
  O_APPEND: number;
  SIGCHLD: number;
  SIGPIPE: number;
  SIGTERM: number;
  WNOHANG: number;
  open(path: string, flags: number, mode?: number): number;
  close(fd: number): number;
  read(fd: number, buf: ArrayBuffer, pos: number, len: number): number;
  write(fd: number, buf: ArrayBuffer, pos: number, len: number): number;
  pipe(): [number, number] | null;
  exec(argv: string[], options?: QjsExecOptions): number;
  waitpid(pid: number, options: number): [number, number];
  kill(pid: number, sig: number): number;
  signal(sig: number, fn: (() => void) | null | undefined): void;
  setReadHandler(fd: number, fn: (() => void) | null): void;
  setWriteHandler(fd: number, fn: (() => void) | null): void;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(h: unknown): void;
  mkdir(path: string, mode?: number): number;
  remove(path: string): number;
  stat(path: string): [{ mode: number; size: number } | null, number];
  getpid(): number;
  now(): number;
};

/** qjs's argv after its own options: [script, ...args]. */
declare const scriptArgs: string[];

declare const std: {
  open(path: string, mode: string, err?: { errno?: number }): QjsFile | null;
  getenv(name: string): string | undefined;
  strerror(errno: number): string;
  err: QjsFile;
  out: QjsFile;
  gc(): void;
};

export const EAGAIN = 11;
export const EINTR = 4;
const O_NONBLOCK = 0o4000;

export class PlatformError extends Error {
  override readonly name = 'PlatformError';
  constructor(
    readonly op: string,
    readonly errno: number,
  ) {
    super(`${op}: ${errno ? std.strerror(errno) : 'failed'}`);
  }
}

function check(op: string, ret: number): number {
  if (ret < 0) throw new PlatformError(op, -ret);
  return ret;
}

export function now(): number {
  return Date.now();
}

export const timers = {
  setTimeout: (fn: () => void, ms: number): unknown => os.setTimeout(fn, ms),
  clearTimeout: (h: unknown): void => os.clearTimeout(h),
  now,
};

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => os.setTimeout(resolve, ms));
}

export function getenv(name: string): string | undefined {
  return std.getenv(name);
}

/** Whole file as text, or undefined. (std.loadFile returns "" for /proc files, std.open works.) */
export function readText(path: string): string | undefined {
  const f = std.open(path, 'r');
  if (!f) return undefined;
  try {
    return f.readAsString();
  } finally {
    f.close();
  }
}

export function writeText(path: string, text: string): void {
  const err: { errno?: number } = {};
  const f = std.open(path, 'w', err);
  if (!f) throw new PlatformError(`open ${path}`, err.errno ?? 0);
  f.puts(text);
  if (f.close() !== 0) throw new PlatformError(`write ${path}`, 0);
}

export function exists(path: string): boolean {
  return os.stat(path)[1] === 0;
}

export function mkdirs(path: string): void {
  let cur = '';
  for (const part of path.split('/').filter(Boolean)) {
    cur += `/${part}`;
    const r = os.mkdir(cur, 0o755);
    if (r < 0 && r !== -17 /* EEXIST */) throw new PlatformError(`mkdir ${cur}`, -r);
  }
}

export function remove(path: string): void {
  os.remove(path);
}

export function pipe(): [number, number] {
  const p = os.pipe();
  if (!p) throw new PlatformError('pipe', 24 /* EMFILE is the usual cause */);
  return p;
}

export function openDevice(path: string, nonblocking: boolean): number {
  return check(`open ${path}`, os.open(path, os.O_RDWR | (nonblocking ? O_NONBLOCK : 0)));
}

/** Write end of a FIFO whose reader is up; non-blocking, so a stuck reader costs EAGAIN, not the agent. */
export function openFifoWriter(path: string): number {
  return check(`open ${path}`, os.open(path, os.O_WRONLY | O_NONBLOCK));
}

/** The directory the agent script runs from (/agent, or a 9p share); its helpers live next to it. */
export function agentDir(): string {
  const script = typeof scriptArgs !== 'undefined' ? (scriptArgs[0] ?? '') : '';
  const slash = script.lastIndexOf('/');
  return slash > 0 ? script.slice(0, slash) : '.';
}

export function openNull(write: boolean): number {
  return check('open /dev/null', os.open('/dev/null', write ? os.O_WRONLY : os.O_RDONLY));
}

export function close(fd: number): void {
  if (fd >= 0) os.close(fd);
}

export function read(fd: number, buf: ArrayBuffer, len: number): number {
  return os.read(fd, buf, 0, len);
}

export function write(fd: number, bytes: Uint8Array): number {
  return os.write(fd, bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length);
}

export function onReadable(fd: number, fn: (() => void) | null): void {
  os.setReadHandler(fd, fn);
}

export function onWritable(fd: number, fn: (() => void) | null): void {
  os.setWriteHandler(fd, fn);
}

export function kill(pid: number, sig: number): void {
  check(`kill ${pid}`, os.kill(pid, sig));
}

// --- processes ------------------------------------------------------------------------------------

type ExitFn = (waitStatus: number) => void;
const waiters = new Map<number, ExitFn>();
/** Exits reaped before anyone asked (a container init can die before its pid file is read). */
const unclaimed = new Map<number, number>();
const UNCLAIMED_MAX = 1024;

function reap(): void {
  for (;;) {
    const [pid, status] = os.waitpid(-1, os.WNOHANG);
    if (pid <= 0) return;
    const fn = waiters.get(pid);
    if (fn) {
      waiters.delete(pid);
      try {
        fn(status);
      } catch (err) {
        log('error', 'exit handler failed', { pid, err: String(err) });
      }
    } else {
      unclaimed.set(pid, status);
      if (unclaimed.size > UNCLAIMED_MAX) unclaimed.delete(unclaimed.keys().next().value as number);
    }
  }
}

/** The agent is PID 1: it reaps every child and orphan, and hands each exit to whoever waits for it. */
export function startReaper(): void {
  os.signal(os.SIGCHLD, reap);
  // Writes to a pipe whose reader died must fail with EPIPE, not kill the agent.
  os.signal(os.SIGPIPE, undefined);
  reap();
}

export function onExit(pid: number, fn: ExitFn): void {
  const st = unclaimed.get(pid);
  if (st !== undefined) {
    unclaimed.delete(pid);
    // We reaped that exit, so a process that holds the pid now is a newer one (pids wrap): the record is stale and
    // this process's own exit is still to come. Without one, the record is the latest process with the pid: ours.
    if (!exists(`/proc/${pid}`)) {
      fn(st);
      return;
    }
  }
  waiters.set(pid, fn);
}

export interface SpawnOptions {
  stdin?: number;
  stdout?: number;
  stderr?: number;
  cwd?: string;
  env?: Record<string, string>;
}

/** Starts argv without waiting; the child's fds 0-2 are the given ones, every other fd is closed by qjs. */
export function spawn(argv: string[], opts: SpawnOptions = {}): number {
  const pid = os.exec(argv, { block: false, usePath: true, ...opts });
  if (pid < 0) throw new PlatformError(`exec ${argv[0]}`, -pid);
  return pid;
}

export interface RunResult {
  status: number;
  stdout: string;
}

const MAX_CAPTURE = 1 << 20;

/** Runs argv to completion, capturing stdout (up to 1 MiB) and, with mergeStderr, stderr; else stderr goes to /dev/null. */
export function run(argv: string[], opts: { mergeStderr?: boolean } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let out: [number, number];
    let devnull = -1;
    let pid: number;
    try {
      out = pipe();
      devnull = os.open('/dev/null', os.O_RDWR);
      pid = spawn(argv, { stdin: devnull, stdout: out[1], stderr: opts.mergeStderr ? out[1] : devnull });
    } catch (err) {
      reject(err);
      return;
    } finally {
      if (devnull >= 0) close(devnull);
    }
    close(out[1]);
    const chunks: string[] = [];
    let size = 0;
    let status: number | undefined;
    let eof = false;
    const buf = new ArrayBuffer(16384);
    const finish = () => {
      if (eof && status !== undefined) resolve({ status, stdout: chunks.join('') });
    };
    onReadable(out[0], () => {
      const n = read(out[0], buf, buf.byteLength);
      if (n > 0) {
        if (size < MAX_CAPTURE) chunks.push(latin1OrUtf8(new Uint8Array(buf, 0, n)));
        size += n;
        return;
      }
      if (n < 0 && (-n === EAGAIN || -n === EINTR)) return;
      onReadable(out[0], null);
      close(out[0]);
      eof = true;
      finish();
    });
    onExit(pid, (st) => {
      status = st;
      finish();
    });
  });
}

// crun and busybox print ASCII; a cheap conversion keeps this module free of a codec dependency.
function latin1OrUtf8(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
  return s;
}

// --- logging --------------------------------------------------------------------------------------

let debug = false;
export function setDebug(on: boolean): void {
  debug = on;
}

/** One JSON line per entry on stderr (the guest console): pino's shape, so host tooling reads both. */
export function log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  // The console is a slow emulated UART; below warn only with kuasar.debug=1.
  if (!debug && (level === 'debug' || level === 'info')) return;
  const lv = { debug: 20, info: 30, warn: 40, error: 50 }[level];
  std.err.puts(`${JSON.stringify({ level: lv, time: Date.now(), name: 'vmm-task', msg, ...fields })}\n`);
  std.err.flush();
}

/** A line on the guest console (markers the host and tests look for). */
export function consoleLine(line: string): void {
  std.err.puts(`${line}\n`);
  std.err.flush();
}
