// A guest process's stdio on the host: the fds the task core opened (containerd's FIFOs, log files, a private
// stdin pipe) pumped to and from protocol streams. Flow control is end to end: guest output is granted credit only
// after the host fd took it, and stdin is read only while the guest grants credit, so nothing here buffers more
// than one stream window.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { Socket } from 'node:net';
import * as tty from 'node:tty';
import { dup, loadKoffi, openPty, sendFd } from '@kuasar/sys';
import { Code, TtrpcError, type ProcessStdio } from '@kuasar/task';
import type { Session, Stream } from '@kuasar/vmm-protocol';
import type { Logger } from '@kuasar/sandbox';
import type { StreamRecord } from './pod-vm';
import { isProcessAlive as isAlive, readProcessStat } from '@kuasar/sys';

/**
 * containerd stops reading a FIFO at its first EOF. Our write ends die with the sandboxer process, so across a
 * restart a plain `sleep` holds copies of them: the reader never sees EOF, and the new process re-opens the FIFO
 * by path and carries on. The holder is killed once the process's exit has been handled.
 */
function spawnHolder(fds: number[]): { pid: number; startTime: string } | undefined {
  if (fds.length === 0) return undefined;
  try {
    const child = spawn('sleep', ['infinity'], { stdio: ['ignore', 'ignore', 'ignore', ...fds], detached: true });
    child.on('error', () => undefined);
    child.unref();
    const stat = child.pid ? readProcessStat(child.pid) : undefined;
    return child.pid && stat ? { pid: child.pid, startTime: stat.startTime } : undefined;
  } catch {
    return undefined; // without a holder only a restart loses the FIFO readers
  }
}

/**
 * libuv re-opens a tty slave by path and works on the new fd; destroying the stream closes only that one. The fd
 * we passed in would keep the slave open for good, and the pty master (containerd's copy to the stdout FIFO) would
 * never see EIO, so the FIFO would never get EOF. Close ours once libuv has its own.
 */
function adoptTty<T extends tty.ReadStream | tty.WriteStream>(stream: T, fd: number): T {
  const own = (stream as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof own === 'number' && own >= 0 && own !== fd) fs.closeSync(fd);
  return stream;
}

const TCGETS = 0x5401;
const TCSETS = 0x5402;
const OPOST = 0x1;
type Ioctl = (fd: number, request: number, arg: Buffer) => number;
let ioctl: Ioctl | undefined;

/**
 * The guest's pty already turned \n into \r\n; the host slave must pass bytes as they are (libuv's raw mode keeps
 * output processing on, which would make that \r\r\n).
 */
function disableOutputProcessing(fd: number): void {
  ioctl ??= loadKoffi().load('libc.so.6').func('ioctl', 'int', ['int', 'unsigned long', 'void *']) as unknown as Ioctl;
  const termios = Buffer.alloc(64); // struct termios (kernel): c_iflag, c_oflag, c_cflag, c_lflag, c_line, c_cc[19]
  if (ioctl(fd, TCGETS, termios) !== 0) throw new Error('ioctl(TCGETS) on the host pty failed');
  termios.writeUInt32LE(termios.readUInt32LE(4) & ~OPOST, 4);
  if (ioctl(fd, TCSETS, termios) !== 0) throw new Error('ioctl(TCSETS) on the host pty failed');
}

/** Where guest output goes on the host. */
interface Sink {
  write(bytes: Buffer, done: () => void): void;
  end(done: () => void): void;
  destroy(): void;
}

/** Discards (a reader that went away must not stall the guest: its process would block on a full pipe). */
const NULL_SINK: Sink = { write: (_b, done) => done(), end: (done) => done(), destroy: () => undefined };

function socketSink(socket: Socket | tty.WriteStream, log: Logger, what: string): Sink {
  let broken = false;
  socket.on('error', (err: Error) => {
    if (!broken) log.debug({ err: err.message, stream: what }, 'host side of guest output failed; discarding the rest');
    broken = true;
  });
  return {
    write(bytes, done) {
      if (broken || socket.destroyed) return done();
      // the callback runs once the kernel took the bytes (or on error): only then is the guest given more credit
      socket.write(bytes, () => done());
    },
    end(done) {
      if (broken || socket.destroyed) {
        socket.destroy();
        return done();
      }
      socket.end(() => {
        socket.destroy();
        done();
      });
    },
    destroy: () => socket.destroy(),
  };
}

/** Regular files (file:// logs) cannot be polled: plain positional-less writes, one at a time. */
function fileSink(fd: number, log: Logger, what: string): Sink {
  let chain = Promise.resolve();
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      fs.closeSync(fd);
    } catch {
      // already closed
    }
  };
  return {
    write(bytes, done) {
      chain = chain.then(
        () =>
          new Promise<void>((resolve) => {
            if (closed) return resolve();
            fs.write(fd, bytes, (err) => {
              if (err) log.debug({ err: err.message, stream: what }, 'write of guest output failed');
              resolve();
            });
          }),
      );
      void chain.then(done);
    },
    end(done) {
      void chain.then(() => {
        close();
        done();
      });
    },
    destroy: close,
  };
}

/** A sink over our own copy of `fd`. */
function sinkFor(fd: number, log: Logger, what: string): Sink {
  const own = dup(fd);
  const st = fs.fstatSync(own);
  if (st.isFIFO() || st.isSocket()) return socketSink(new Socket({ fd: own, readable: false, writable: true }), log, what);
  return fileSink(own, log, what);
}

/** Re-opens an output FIFO after a restart; a reader that is gone means the output is discarded. */
function reopenSink(p: string | undefined, log: Logger, what: string): Sink {
  if (!p) return NULL_SINK;
  try {
    const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    const st = fs.fstatSync(fd);
    if (st.isFIFO()) return socketSink(new Socket({ fd, readable: false, writable: true }), log, what);
    return fileSink(fd, log, what);
  } catch (err) {
    log.info({ path: p, err: (err as NodeJS.ErrnoException).code }, 'output of a re-adopted process has no reader; discarding it');
    return NULL_SINK;
  }
}

/** The path behind an fd the core gave us (for re-attaching after a restart); undefined for pipes/anonymous. */
function fdPath(fd: number): string | undefined {
  try {
    const p = fs.readlinkSync(`/proc/self/fd/${fd}`);
    return p.startsWith('/') && !p.endsWith(' (deleted)') ? p : undefined;
  } catch {
    return undefined;
  }
}

/** What the guest is told about a process's stdio (container.create / process.exec `stdio`). */
export interface GuestStdio {
  stdin?: number;
  stdout?: number;
  stderr?: number;
  terminal: boolean;
}

/** The pumps of one process. `outputDone` resolves once every output stream ended and reached the host fd. */
export class ProcessPipes {
  readonly guest: GuestStdio;
  readonly record: StreamRecord;
  private readonly streams: Stream[] = [];
  private readonly cleanups: (() => void)[] = [];
  private readonly outputs: Promise<void>[] = [];
  private closed = false;

  private constructor(guest: GuestStdio, record: StreamRecord) {
    this.guest = guest;
    this.record = record;
  }

  /** Resolves when all output ended (or `ms` passed); exit events wait for this so containerd sees EOF first. */
  async outputDone(ms: number): Promise<void> {
    await Promise.race([Promise.all(this.outputs), new Promise((r) => setTimeout(r, ms).unref())]);
  }

  /** The process is over: stop pumping and let the FIFO readers see EOF. */
  close(): void {
    this.detach();
    const h = this.record.holder;
    if (h && isAlive(h)) {
      try {
        process.kill(h.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
  }

  /** The sandboxer is closing: stop pumping, but keep the holder so the readers stay attached. */
  detach(): void {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.cleanups.splice(0)) c();
    for (const s of this.streams.splice(0)) s.destroy();
  }

  /** New pumps for the stdio the core opened; `alloc` hands out stream ids. */
  static open(session: Session, stdio: ProcessStdio, alloc: () => number, log: Logger): ProcessPipes {
    if (stdio.terminal) return ProcessPipes.openTerminal(session, stdio.consoleSocket, alloc, log);
    const guest: GuestStdio = { terminal: false };
    const record: StreamRecord = {};
    const pipes = new ProcessPipes(guest, record);
    try {
      if (stdio.stdin !== undefined) {
        const id = alloc();
        guest.stdin = id;
        record.stdin = id;
        const own = dup(stdio.stdin);
        pipes.pumpIn(session, id, new Socket({ fd: own, readable: true, writable: false }));
      }
      for (const what of ['stdout', 'stderr'] as const) {
        const fd = stdio[what];
        if (fd === undefined) continue;
        const id = alloc();
        guest[what] = id;
        const p = fdPath(fd);
        record[what] = { id, ...(p ? { path: p } : {}) };
        pipes.pumpOut(session, id, sinkFor(fd, log, what));
      }
      const fifos = [stdio.stdout, stdio.stderr].filter((fd): fd is number => fd !== undefined && fs.fstatSync(fd).isFIFO());
      const holder = spawnHolder([...new Set(fifos)]);
      if (holder) record.holder = holder;
    } catch (err) {
      pipes.close();
      throw new TtrpcError(Code.INTERNAL, `cannot set up the process's stdio: ${(err as Error).message}`);
    }
    return pipes;
  }

  /**
   * Terminal: a host pty whose master goes to containerd's console socket (the core copies it to the client);
   * the slave, in raw mode so the guest's own pty does all line discipline, is pumped to the guest.
   */
  private static openTerminal(session: Session, consoleSocket: string, alloc: () => number, log: Logger): ProcessPipes {
    const pty = openPty();
    let slave: number | undefined;
    try {
      sendFd(consoleSocket, pty.master);
      slave = fs.openSync(pty.slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
      disableOutputProcessing(slave);
    } catch (err) {
      if (slave !== undefined) fs.closeSync(slave);
      throw new TtrpcError(Code.INTERNAL, `cannot set up the terminal: ${(err as Error).message}`);
    } finally {
      fs.closeSync(pty.master);
    }
    const inId = alloc();
    const outId = alloc();
    const guest: GuestStdio = { terminal: true, stdin: inId, stdout: outId };
    const pipes = new ProcessPipes(guest, { stdin: inId, stdout: { id: outId } });
    const out = dup(slave);
    const input = adoptTty(new tty.ReadStream(slave), slave);
    input.setRawMode(true);
    const output = adoptTty(new tty.WriteStream(out), out);
    pipes.pumpIn(session, inId, input);
    pipes.pumpOut(session, outId, socketSink(output, log, 'terminal'));
    return pipes;
  }

  /** After a restart: output streams resume into the same FIFOs; stdin cannot be recovered (its copy died with us). */
  static reattach(session: Session, record: StreamRecord, log: Logger): ProcessPipes {
    const pipes = new ProcessPipes({ terminal: false }, record);
    for (const what of ['stdout', 'stderr'] as const) {
      const r = record[what];
      if (r) pipes.pumpOut(session, r.id, reopenSink(r.path, log, what));
    }
    return pipes;
  }

  private pumpOut(session: Session, id: number, sink: Sink): void {
    const stream = session.openStream(id, { direction: 'in', manualCredit: true });
    this.streams.push(stream);
    let ended!: () => void;
    this.outputs.push(new Promise<void>((r) => (ended = r)));
    stream.onData((bytes) => {
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
      sink.write(buf, () => stream.consume(bytes.length));
    });
    stream.onEnd(() => sink.end(ended));
    this.cleanups.push(() => {
      sink.destroy();
      ended();
    });
  }

  private pumpIn(session: Session, id: number, source: Socket | tty.ReadStream): void {
    const stream = session.openStream(id, { direction: 'out' });
    this.streams.push(stream);
    source.on('data', (chunk: Buffer) => {
      if (!stream.write(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length))) source.pause();
    });
    stream.onDrain(() => source.resume());
    source.on('end', () => stream.end());
    source.on('error', () => stream.end());
    this.cleanups.push(() => source.destroy());
  }
}
