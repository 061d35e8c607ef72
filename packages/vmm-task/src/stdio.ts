// Relays between a process's pipes and protocol streams. Flow control end to end: output is read
// from a pipe only while the stream has window left (so a disconnected host ends up blocking the
// container's writes, like a full pipe), and stdin credit goes back to the host only once the
// bytes are in the pipe.
import type { Session, Stream } from '@kuasar/vmm-protocol';
import * as platform from './platform';
import type { Stdio } from './params';

const READ_CHUNK = 65536;
// A pipe that select() reports writable has room for at least one page, and writes up to PIPE_BUF
// are atomic, so a write of this size never blocks the agent on a blocking pipe fd.
const PIPE_BUF = 4096;

/** Pipe read end -> stream. Calls onEof once the pipe hit EOF (all writers closed). */
class OutputRelay {
  private readonly buf = new ArrayBuffer(READ_CHUNK);
  private armed = false;
  private done = false;
  private readonly offDrain: () => void;

  constructor(
    private fd: number,
    private readonly stream: Stream,
    private readonly onEof: () => void,
  ) {
    this.offDrain = stream.onDrain(() => this.arm());
    this.arm();
  }

  private arm(): void {
    if (this.done || this.armed || this.stream.writable === 0) return;
    this.armed = true;
    platform.onReadable(this.fd, () => this.readable());
  }

  private disarm(): void {
    if (!this.armed) return;
    this.armed = false;
    platform.onReadable(this.fd, null);
  }

  private readable(): void {
    const room = Math.min(this.stream.writable, READ_CHUNK);
    if (room === 0) return this.disarm();
    const n = platform.read(this.fd, this.buf, room);
    if (n < 0 && (-n === platform.EAGAIN || -n === platform.EINTR)) return;
    if (n <= 0) return this.finish(true);
    this.stream.write(new Uint8Array(this.buf.slice(0, n)));
    if (this.stream.writable === 0) this.disarm();
  }

  /** EOF, or the process's io is torn down. */
  finish(eof: boolean): void {
    if (this.done) return;
    this.done = true;
    this.disarm();
    this.offDrain();
    platform.close(this.fd);
    this.fd = -1;
    if (eof) this.stream.end();
    else this.stream.destroy();
    this.onEof();
  }
}

/** Stream -> pipe write end; the pipe closes after the host's CLOSE (or closeStdin) once drained. */
class InputRelay {
  private queue: Uint8Array[] = [];
  private armed = false;
  private closing = false;
  private closed = false;

  constructor(
    private fd: number,
    private readonly stream: Stream,
  ) {
    stream.onData((b) => {
      if (this.closed) return stream.consume(b.length);
      this.queue.push(b);
      this.arm();
    });
    stream.onEnd(() => this.close());
  }

  close(): void {
    this.closing = true;
    if (this.queue.length === 0) this.finish();
  }

  private arm(): void {
    if (this.armed || this.closed) return;
    this.armed = true;
    platform.onWritable(this.fd, () => this.writable());
  }

  private writable(): void {
    const head = this.queue[0];
    if (!head) {
      this.armed = false;
      platform.onWritable(this.fd, null);
      if (this.closing) this.finish();
      return;
    }
    const part = head.length > PIPE_BUF ? head.subarray(0, PIPE_BUF) : head;
    const n = platform.write(this.fd, part);
    if (n < 0 && (-n === platform.EAGAIN || -n === platform.EINTR)) return;
    if (n < 0) {
      // EPIPE: the process closed its stdin. Take the rest so the host is not left without credit.
      const rest = this.queue.reduce((s, b) => s + b.length, 0);
      this.queue = [];
      this.stream.consume(rest);
      this.finish();
      return;
    }
    if (n === head.length) this.queue.shift();
    else this.queue[0] = head.subarray(n);
    this.stream.consume(n);
  }

  finish(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.armed) platform.onWritable(this.fd, null);
    this.armed = false;
    this.queue = [];
    platform.close(this.fd);
    this.fd = -1;
    if (!this.stream.ended) this.stream.destroy();
  }
}

/**
 * The pipes of one process. Create it, hand `child` to the spawn, then call started(); `outputDone`
 * resolves once every output pipe reached EOF.
 */
export class ProcessIo {
  /** fds for the child's 0, 1, 2. */
  readonly child: { stdin: number; stdout: number; stderr: number };
  readonly outputDone: Promise<void>;
  private readonly parentEnds: { stdin?: number; stdout?: number; stderr?: number } = {};
  private input: InputRelay | undefined;
  private outputs: OutputRelay[] = [];
  private readonly streams: Stream[] = [];
  private openOutputs = 0;
  private resolveDone: () => void = () => {};

  constructor(
    private readonly session: Session,
    private readonly stdio: Stdio,
  ) {
    this.outputDone = new Promise((r) => (this.resolveDone = r));
    const fds: number[] = [];
    try {
      const inPipe = stdio.stdin ? platform.pipe() : undefined;
      if (inPipe) fds.push(...inPipe);
      const outPipe = stdio.stdout ? platform.pipe() : undefined;
      if (outPipe) fds.push(...outPipe);
      // A terminal merges stderr into the pty, which arrives on stdout.
      const errPipe = stdio.stderr && !stdio.terminal ? platform.pipe() : undefined;
      if (errPipe) fds.push(...errPipe);
      const nullIn = inPipe ? -1 : platform.openNull(false);
      if (nullIn >= 0) fds.push(nullIn);
      const nullOut = outPipe && errPipe ? -1 : platform.openNull(true);
      if (nullOut >= 0) fds.push(nullOut);
      this.child = { stdin: inPipe ? inPipe[0] : nullIn, stdout: outPipe ? outPipe[1] : nullOut, stderr: errPipe ? errPipe[1] : nullOut };
      this.parentEnds = { stdin: inPipe?.[1], stdout: outPipe?.[0], stderr: errPipe?.[0] };
    } catch (err) {
      fds.forEach(platform.close);
      throw err;
    }
  }

  /** The child has its copies: close ours and start relaying. */
  started(): void {
    this.closeChildEnds();
    const { stdin, stdout, stderr } = this.parentEnds;
    if (stdin !== undefined && this.stdio.stdin) {
      const s = this.session.openStream(this.stdio.stdin, { direction: 'in', manualCredit: true });
      this.streams.push(s);
      this.input = new InputRelay(stdin, s);
    }
    for (const [fd, sid] of [
      [stdout, this.stdio.stdout],
      [stderr, this.stdio.stderr],
    ] as const) {
      if (fd === undefined || !sid) continue;
      const s = this.session.openStream(sid, { direction: 'out' });
      this.streams.push(s);
      this.openOutputs++;
      this.outputs.push(new OutputRelay(fd, s, () => this.outputClosed()));
    }
    // A host that opened a stderr stream for a terminal process still gets its CLOSE.
    if (this.stdio.terminal && this.stdio.stderr) {
      const s = this.session.openStream(this.stdio.stderr, { direction: 'out' });
      this.streams.push(s);
      s.end();
    }
    if (this.openOutputs === 0) this.resolveDone();
  }

  closeStdin(): void {
    this.input?.close();
  }

  /** Spawn failed or the process is deleted: release every fd and forget the streams. */
  destroy(): void {
    this.closeChildEnds();
    for (const fd of [this.parentEnds.stdin, this.parentEnds.stdout, this.parentEnds.stderr]) {
      if (fd !== undefined && !this.input && this.outputs.length === 0) platform.close(fd);
    }
    this.input?.finish();
    for (const o of this.outputs) o.finish(false);
    for (const s of this.streams) s.destroy();
    this.resolveDone();
  }

  private childClosed = false;
  private closeChildEnds(): void {
    if (this.childClosed) return;
    this.childClosed = true;
    const { stdin, stdout, stderr } = this.child;
    platform.close(stdin);
    platform.close(stdout);
    if (stderr !== stdout) platform.close(stderr);
  }

  private outputClosed(): void {
    if (--this.openOutputs === 0) this.resolveDone();
  }
}
