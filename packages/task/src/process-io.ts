// Process IO as containerd hands it over (§5): FIFO paths, file:// and binary:// log URIs, or a terminal.
//
// Zero-copy where it is correct: stdout/stderr FIFO write ends, file:// log files and binary:// logger pipes are
// opened here and given to the runtime as the process's fds 1/2, so output goes straight from the container to
// the reader (no copy through Node; it also keeps flowing while the sandboxer restarts). The FIFO write ends are
// closed on our side right after the process got them, so containerd's reader sees EOF exactly when the process
// side closes. Copies remain only where the semantics need us in the path:
//   - stdin: CloseIO must be able to give the process EOF while the client still holds its writer, so the process
//     reads a private pipe that we feed from the client FIFO and can close. A `sleep` holds a second write end of
//     that pipe, so a sandboxer crash does not give the process EOF; the next sandboxer opens the pipe again by
//     path (it lives in the task dir), resumes the copy and replaces the holder (see reattach);
//   - terminal: the pty master exists only here (received over the console socket), so it is copied both ways.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, fstatSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { ReadStream as TtyStream } from 'node:tty';
import type { Writable, Readable } from 'node:stream';
import { isProcessAlive, readProcessStat, type ProcessIdentity } from '@kuasar/sys';
import type { Logger } from 'pino';
import type { ProcessStdio } from './engine';
import { Code, TtrpcError } from './errors';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export type IOTarget =
  | { kind: 'none' }
  | { kind: 'fifo'; path: string }
  | { kind: 'file'; path: string }
  | { kind: 'binary'; path: string; args: string[] };

/** Classify one stdio string: '' → none, plain path or fifo:// → FIFO, file:// → log file, binary:// → logger. */
export function parseIOTarget(s: string): IOTarget {
  if (s === '') return { kind: 'none' };
  if (s.startsWith('/')) return { kind: 'fifo', path: s };
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `stdio "${s}" is neither an absolute path nor a URI`);
  }
  const path = decodeURIComponent(u.pathname);
  if (!path.startsWith('/')) throw new TtrpcError(Code.INVALID_ARGUMENT, `stdio "${s}" needs an absolute path`);
  switch (u.protocol) {
    case 'fifo:':
      return { kind: 'fifo', path };
    case 'file:':
      return { kind: 'file', path };
    case 'binary:': {
      // containerd passes each query key and its first value as logger arguments
      const args: string[] = [];
      for (const k of new Set(u.searchParams.keys())) {
        args.push(k);
        const v = u.searchParams.get(k);
        if (v !== null && v !== '') args.push(v);
      }
      return { kind: 'binary', path, args };
    }
    default:
      throw new TtrpcError(Code.INVALID_ARGUMENT, `stdio scheme ${u.protocol} is not supported (fifo, file, binary)`);
  }
}

/** A private FIFO used as a pipe whose both ends are blocking and owned by us (Node has no pipe(2)). */
function privatePipe(path: string): { read: number; write: number } {
  rmSync(path, { force: true });
  execFileSync('mkfifo', ['-m', '0600', path]);
  // O_RDONLY|O_NONBLOCK never blocks; with that reader present the blocking O_WRONLY open returns at once, and
  // with the writer present the blocking O_RDONLY open does too. The temporary non-blocking reader is dropped so
  // neither end handed to a process carries O_NONBLOCK.
  const probe = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const write = openSync(path, constants.O_WRONLY);
  const read = openSync(path, constants.O_RDONLY);
  closeSync(probe);
  return { read, write };
}

/** Open a client FIFO for writing without blocking: hold a reader of our own first (runc-v2's extra handle). */
function openOutputFifo(path: string, what: string): { keep: number; write: number } {
  let keep: number;
  try {
    keep = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot open ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  if (!fstatSync(keep).isFIFO()) {
    closeSync(keep);
    // a regular file or device given as a plain path: append to it
    return { keep: -1, write: openSync(path, constants.O_WRONLY | constants.O_APPEND) };
  }
  return { keep, write: openSync(path, constants.O_WRONLY) };
}

/**
 * A `sleep` that holds `fd` (a write end of a private stdin pipe) so the pipe keeps a writer while no sandboxer
 * runs. Recorded by pid and start time in `file`: after a restart it is no child of ours and its pid may be reused.
 */
function spawnStdinHolder(fd: number, file: string, logger: Logger): ProcessIdentity | undefined {
  try {
    const child = spawn('sleep', ['infinity'], { stdio: ['ignore', 'ignore', 'ignore', fd], detached: true });
    child.on('error', () => undefined);
    child.unref();
    const stat = child.pid ? readProcessStat(child.pid) : undefined;
    if (!child.pid || !stat) return undefined;
    const id = { pid: child.pid, startTime: stat.startTime };
    writeFileSync(`${file}.tmp`, JSON.stringify(id), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
    return id;
  } catch (err) {
    // without a holder only a sandboxer crash ends the process's stdin early
    logger.warn({ err: (err as Error).message }, 'no holder for the stdin pipe; a sandboxer crash will close the process stdin');
    return undefined;
  }
}

function readHolder(file: string): ProcessIdentity | undefined {
  try {
    const h = JSON.parse(readFileSync(file, 'utf8')) as Partial<ProcessIdentity>;
    return typeof h.pid === 'number' && typeof h.startTime === 'string' ? { pid: h.pid, startTime: h.startTime } : undefined;
  } catch {
    return undefined;
  }
}

/** End a holder; only the recorded process (pid AND start time), never a newer process that reused its pid. */
function killHolder(h: ProcessIdentity | undefined): void {
  if (!h || !isProcessAlive(h)) return;
  try {
    process.kill(h.pid, 'SIGKILL');
  } catch {
    /* gone meanwhile */
  }
}

function closeQuiet(fd: number | undefined): void {
  if (fd === undefined || fd < 0) return;
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}

export interface ProcessIOOptions {
  /** private directory for our own FIFOs (the task's state dir) */
  dir: string;
  /** file-name prefix within `dir`: "init" or the exec id */
  name: string;
  containerId: string;
  namespace: string;
  logger: Logger;
  /** terminal mode: path of a listening console socket the runtime will send the pty master to */
  consoleSocket?: string;
}

export class ProcessIO {
  readonly paths: StdioPaths;
  /** what the engine gives the process */
  readonly stdio: ProcessStdio;
  private readonly logger: Logger;
  /** fds that belong to the process once the engine call returned */
  private handOff: number[] = [];
  /** extra read handles on output FIFOs (never read): keep container writes from EPIPE while no reader exists */
  private keep: number[] = [];
  private privateFifos: string[] = [];
  private stdinSource: Readable | undefined;
  private stdinSink: Writable | undefined;
  private stdinDone: Promise<void> = Promise.resolve();
  /** the holder of the stdin pipe's second write end, and where it is recorded */
  private stdinHolder: ProcessIdentity | undefined;
  private stdinHolderFile: string | undefined;
  private console: TtyStream | undefined;
  private masterFd: number | undefined;
  private outputDone: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(paths: StdioPaths, stdio: ProcessStdio, logger: Logger) {
    this.paths = paths;
    this.stdio = stdio;
    this.logger = logger;
  }

  /** Open everything the process needs before the engine creates it. */
  static async open(paths: StdioPaths, o: ProcessIOOptions): Promise<ProcessIO> {
    const stdin = parseIOTarget(paths.stdin);
    const stdout = parseIOTarget(paths.stdout);
    const stderr = paths.terminal ? ({ kind: 'none' } as IOTarget) : parseIOTarget(paths.stderr);
    if (stdin.kind !== 'none' && stdin.kind !== 'fifo') {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `stdin must be a FIFO path, not ${paths.stdin}`);
    }
    const logger = o.logger.child({ io: o.name });
    if (paths.terminal) {
      if (!o.consoleSocket) throw new TtrpcError(Code.INTERNAL, 'terminal IO without a console socket');
      const io = new ProcessIO(paths, { terminal: true, consoleSocket: o.consoleSocket }, logger);
      try {
        io.openTerminalTargets(stdin, stdout);
      } catch (err) {
        io.close();
        throw err;
      }
      return io;
    }
    const fds: { stdin?: number; stdout?: number; stderr?: number } = {};
    const io = new ProcessIO(paths, { terminal: false }, logger);
    try {
      mkdirSync(o.dir, { recursive: true });
      if (stdin.kind === 'fifo') fds.stdin = io.openStdinCopy(stdin.path, join(o.dir, `${o.name}-stdin.pipe`));
      if (stdout.kind === 'binary' || stderr.kind === 'binary') {
        const b = (stdout.kind === 'binary' ? stdout : stderr) as Extract<IOTarget, { kind: 'binary' }>;
        const w = await io.startLogger(b, o);
        fds.stdout = w.stdout;
        fds.stderr = w.stderr;
      } else if (stdout.kind === 'file' || stderr.kind === 'file') {
        // containerd sends the same file:// URI for both; one append-mode fd serves both
        const f = (stdout.kind === 'file' ? stdout : stderr) as Extract<IOTarget, { kind: 'file' }>;
        mkdirSync(dirname(f.path), { recursive: true });
        const fd = openSync(f.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640);
        io.handOff.push(fd);
        fds.stdout = fd;
        fds.stderr = fd;
      } else {
        if (stdout.kind === 'fifo') fds.stdout = io.openOutput(stdout.path, 'stdout');
        if (stderr.kind === 'fifo') fds.stderr = io.openOutput(stderr.path, 'stderr');
      }
    } catch (err) {
      io.close();
      throw err;
    }
    (io as { stdio: ProcessStdio }).stdio = { terminal: false, ...fds };
    return io;
  }

  /**
   * Re-attach to a process that outlived a sandboxer restart: hold the output FIFOs again and resume the stdin
   * copy if the stdin was still open (its holder is recorded) and the private pipe still has its reader (the process,
   * or whatever runtime process holds it for the process, e.g. gVisor's sandbox). Terminal IO cannot be re-attached
   * (the pty master was ours alone and closed with the old sandboxer).
   */
  static reattach(paths: StdioPaths, o: ProcessIOOptions): ProcessIO {
    const io = new ProcessIO(paths, { terminal: false }, o.logger.child({ io: o.name, reattached: true }));
    if (paths.terminal) {
      io.logger.warn('terminal IO of a re-adopted process cannot be restored');
      return io;
    }
    for (const p of [paths.stdout, paths.stderr]) {
      const t = (() => {
        try {
          return parseIOTarget(p);
        } catch {
          return { kind: 'none' } as IOTarget;
        }
      })();
      if (t.kind !== 'fifo') continue;
      try {
        io.keep.push(openSync(t.path, constants.O_RDONLY | constants.O_NONBLOCK));
      } catch {
        /* the client removed it */
      }
    }
    const stdin = paths.stdin ? parseIOTarget(paths.stdin) : ({ kind: 'none' } as IOTarget);
    if (stdin.kind === 'fifo') {
      const pipe = join(o.dir, `${o.name}-stdin.pipe`);
      const holderFile = `${pipe}.holder`;
      const holder = readHolder(holderFile);
      try {
        // no holder recorded: the process already got EOF (the client closed stdin, CloseIO, or no holder could run)
        if (!holder) throw new Error('stdin was closed');
        // O_NONBLOCK write open fails with ENXIO when nobody (the process) reads the pipe any more
        const w = openSync(pipe, constants.O_WRONLY | constants.O_NONBLOCK);
        io.privateFifos.push(pipe);
        // closes `w` itself when it fails
        io.startStdinCopy(stdin.path, w);
        // our write end is open: the old holder can go, and a new one covers the next crash
        killHolder(holder);
        io.stdinHolderFile = holderFile;
        io.stdinHolder = spawnStdinHolder(w, holderFile, io.logger);
      } catch (err) {
        killHolder(holder);
        rmSync(holderFile, { force: true });
        io.logger.info({ reason: (err as Error).message }, 'stdin of the re-adopted process is gone');
      }
    }
    return io;
  }

  /**
   * End the stdin holders recorded in a task dir (of one process, or of all): for processes whose ProcessIO is not
   * in this sandboxer (they ended while no sandboxer ran, or their Create was interrupted) when their task goes.
   */
  static releaseHolders(dir: string, name?: string): void {
    let files: string[];
    try {
      files = name === undefined ? readdirSync(dir).filter((f) => f.endsWith('-stdin.pipe.holder')) : [`${name}-stdin.pipe.holder`];
    } catch {
      return;
    }
    for (const f of files) {
      killHolder(readHolder(join(dir, f)));
      rmSync(join(dir, f), { force: true });
    }
  }

  private openOutput(path: string, what: string): number {
    const { keep, write } = openOutputFifo(path, what);
    if (keep >= 0) this.keep.push(keep);
    this.handOff.push(write);
    return write;
  }

  private openStdinCopy(clientFifo: string, pipePath: string): number {
    const pipe = privatePipe(pipePath);
    this.privateFifos.push(pipePath);
    this.handOff.push(pipe.read);
    this.startStdinCopy(clientFifo, pipe.write);
    this.stdinHolderFile = `${pipePath}.holder`;
    this.stdinHolder = spawnStdinHolder(pipe.write, this.stdinHolderFile, this.logger);
    return pipe.read;
  }

  /** The process is to see EOF on stdin: the holder's write end must go too. */
  private releaseStdinHolder(): void {
    killHolder(this.stdinHolder);
    this.stdinHolder = undefined;
    if (this.stdinHolderFile) rmSync(this.stdinHolderFile, { force: true });
    this.stdinHolderFile = undefined;
  }

  private startStdinCopy(clientFifo: string, writeFd: number): void {
    let src: number;
    try {
      // O_NONBLOCK: the client may not have attached its writer yet. libuv polls the FIFO, which reports neither
      // data nor hangup before a writer has attached once, so EOF reaches the process only after the client
      // attached and closed (or CloseIO).
      src = openSync(clientFifo, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch (err) {
      closeQuiet(writeFd);
      throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot open stdin ${clientFifo}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
    this.attachStdin(new Socket({ fd: src, readable: true, writable: false }), new Socket({ fd: writeFd, readable: false, writable: true }));
  }

  private attachStdin(source: Readable, sink: Writable): void {
    this.stdinSource = source;
    this.stdinSink = sink;
    this.stdinDone = new Promise<void>((resolve) => {
      source.once('end', () => resolve());
      source.once('close', () => resolve());
    });
    source.on('error', (err) => this.logger.debug({ err: err.message }, 'stdin source error'));
    sink.on('error', (err) => {
      // the process closed its stdin or exited: nothing more to deliver
      this.logger.debug({ err: err.message }, 'stdin sink error');
      source.destroy();
    });
    // the client closed its writer and everything was delivered: EOF for the process needs every write end closed
    sink.once('finish', () => this.releaseStdinHolder());
    source.pipe(sink);
  }

  private async startLogger(b: Extract<IOTarget, { kind: 'binary' }>, o: ProcessIOOptions): Promise<{ stdout: number; stderr: number }> {
    const out = privatePipe(join(o.dir, `${o.name}-stdout.pipe`));
    const err = privatePipe(join(o.dir, `${o.name}-stderr.pipe`));
    this.privateFifos.push(join(o.dir, `${o.name}-stdout.pipe`), join(o.dir, `${o.name}-stderr.pipe`));
    this.handOff.push(out.write, err.write);
    const child = spawn(b.path, b.args, {
      stdio: ['ignore', 'ignore', 'ignore', out.read, err.read, 'pipe'],
      env: { ...process.env, CONTAINER_ID: o.containerId, CONTAINER_NAMESPACE: o.namespace },
      detached: true,
    });
    closeQuiet(out.read);
    closeQuiet(err.read);
    const ready = (child.stdio as unknown as Readable[])[5]!;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TtrpcError(Code.DEADLINE_EXCEEDED, `logger ${b.path} did not signal readiness`)), 10_000);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      // containerd's contract: the logger closes (or writes to) fd 5 once it is ready
      ready.once('data', done);
      ready.once('end', done);
      ready.once('error', done);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new TtrpcError(Code.FAILED_PRECONDITION, `cannot start logger ${b.path}: ${e.message}`));
      });
    });
    ready.destroy();
    child.unref();
    return { stdout: out.write, stderr: err.write };
  }

  // --- terminal -------------------------------------------------------------------------------------------------

  private terminalOut: number | undefined;
  private terminalIn: number | undefined;

  private openTerminalTargets(stdin: IOTarget, stdout: IOTarget): void {
    if (stdout.kind === 'fifo') {
      const { keep, write } = openOutputFifo(stdout.path, 'stdout');
      if (keep >= 0) this.keep.push(keep);
      this.terminalOut = write;
    } else if (stdout.kind === 'file') {
      mkdirSync(dirname(stdout.path), { recursive: true });
      this.terminalOut = openSync(stdout.path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640);
    } else if (stdout.kind === 'binary') {
      throw new TtrpcError(Code.INVALID_ARGUMENT, 'binary:// logging is not supported with a terminal');
    }
    if (stdin.kind === 'fifo') {
      try {
        // see startStdinCopy for why O_NONBLOCK is right here
        this.terminalIn = openSync(stdin.path, constants.O_RDONLY | constants.O_NONBLOCK);
      } catch (err) {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot open stdin ${stdin.path}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
    }
  }

  /** Terminal mode: start copying once the runtime has sent the pty master. */
  attachConsole(masterFd: number): void {
    const master = new TtyStream(masterFd);
    this.console = master;
    this.masterFd = masterFd;
    if (this.terminalOut !== undefined) {
      const out = new Socket({ fd: this.terminalOut, readable: false, writable: true });
      this.terminalOut = undefined;
      out.on('error', (err) => this.logger.debug({ err: err.message }, 'terminal output error'));
      this.outputDone = new Promise<void>((resolve) => {
        // EIO on the master means every slave fd is closed: the process side is done
        master.on('error', (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EIO') this.logger.debug({ err: err.message }, 'pty master error');
          out.end(() => resolve());
        });
        master.on('end', () => out.end(() => resolve()));
        out.once('close', () => resolve());
      });
      master.pipe(out, { end: false });
    } else {
      master.on('error', () => undefined);
      master.resume();
    }
    if (this.terminalIn !== undefined) {
      const source = new Socket({ fd: this.terminalIn, readable: true, writable: false });
      this.terminalIn = undefined;
      source.on('error', () => undefined);
      source.pipe(master, { end: false });
      this.stdinSource = source;
    }
  }

  /** the pty master fd (ResizePty), if this is a terminal process */
  get consoleFd(): number | undefined {
    return this.closed ? undefined : this.masterFd;
  }

  // --- lifecycle --------------------------------------------------------------------------------------------------

  /** Close our copies of the fds the process now holds (call after the engine created/exec'd it, or failed to). */
  handedOver(): void {
    for (const fd of this.handOff) closeQuiet(fd);
    this.handOff = [];
  }

  /** CloseIO(stdin): give the process EOF, after what the client already wrote has been delivered. */
  async closeStdin(): Promise<void> {
    const source = this.stdinSource;
    if (!source) return;
    // the client normally closes its writer before CloseIO; let the copy drain that for a moment
    await Promise.race([this.stdinDone, new Promise((r) => setTimeout(r, 100).unref())]);
    source.unpipe();
    source.destroy();
    this.stdinSource = undefined;
    if (this.stdinSink) {
      this.stdinSink.end();
      this.stdinSink = undefined;
    }
    this.releaseStdinHolder();
  }

  /** Wait (bounded) until copied output has been flushed — only terminal output is copied. */
  async outputFlushed(timeoutMs = 2000): Promise<void> {
    await Promise.race([this.outputDone, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }

  /** The process is done (or was never started): drop every handle, the stdin holder and our private FIFOs. */
  close(): void {
    if (this.closed) return;
    this.releaseStdinHolder();
    this.detach();
    for (const p of this.privateFifos) rmSync(p, { force: true });
  }

  /**
   * The sandboxer is closing while the process keeps running: drop our handles but keep what the next sandboxer
   * re-attaches to (the private FIFOs in the task dir and the stdin holder).
   */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    this.handedOver();
    this.stdinSource?.destroy();
    this.stdinSink?.destroy();
    this.console?.destroy();
    closeQuiet(this.terminalOut);
    closeQuiet(this.terminalIn);
    for (const fd of this.keep) closeQuiet(fd);
    this.keep = [];
  }
}
