// `kuasarctl exec`'s way in: a unix socket <state dir>/debug.sock (0600, root only) on which each connection runs
// one command in one pod's guest through the agent's `debug.exec`, outside any container.
//
// Wire format (kuasarctl's src/exec.ts is the client):
//   client → server: one JSON line {sandbox, argv, tty, stdin, width?, height?}\n   (at most 64 KiB)
//   then frames both ways: u8 type, u32 big-endian length, payload (at most 64 KiB)
//     client → server: STDIN bytes, STDIN_END, RESIZE {width, height} (with tty: the client's window changed)
//     server → client: STARTED {pid}, STDOUT bytes, STDERR bytes, EXIT {exitCode}, ERROR {code, message}
//   The connection ends after EXIT or ERROR. A client that goes away first has its command killed.
// Flow control is end to end: guest output gets credit back only once the client socket took it, and the client is
// read only while the guest grants stdin credit, so a connection holds at most one stream window per direction.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { bindPrivate, prepareSocketPath, type Logger } from '@kuasar/sandbox';
import { peerCredentials } from '@kuasar/sys';
import { RpcError, type EventMessage, type Stream } from '@kuasar/vmm-protocol';
import type { PodRegistry, PodVm } from './pod-vm';

export const DEBUG_SOCKET = 'debug.sock';

export const DebugFrame = { Stdin: 1, StdinEnd: 2, Started: 3, Stdout: 4, Stderr: 5, Exit: 6, Error: 7, Resize: 8 } as const;
export const MAX_DEBUG_FRAME = 64 * 1024;
const MAX_REQUEST = 64 * 1024;
const REQUEST_TIMEOUT_MS = 10_000;
/** the agent sends CLOSE on output before the exit event; this only covers a CLOSE lost to a reconnect */
const OUTPUT_GRACE_MS = 2_000;
/** after the client left: how long the command's exit is awaited before its streams are dropped anyway */
const ORPHAN_MS = 30_000;

export interface DebugExecRequest {
  sandbox: string;
  argv: string[];
  tty: boolean;
  stdin: boolean;
  width?: number;
  height?: number;
}

export function encodeDebugFrame(type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Incremental frame reader: never holds more than one frame plus the chunk being parsed. */
export class DebugFrameReader {
  private buf: Buffer = Buffer.alloc(0);
  /** Returns the complete frames; throws on a frame longer than MAX_DEBUG_FRAME. */
  push(chunk: Buffer): { type: number; payload: Buffer }[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: { type: number; payload: Buffer }[] = [];
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32BE(1);
      if (len > MAX_DEBUG_FRAME) throw new Error(`debug frame of ${len} bytes (at most ${MAX_DEBUG_FRAME})`);
      if (this.buf.length < 5 + len) break;
      out.push({ type: this.buf[0]!, payload: this.buf.subarray(5, 5 + len) });
      this.buf = this.buf.subarray(5 + len);
    }
    return out;
  }
}

class RequestError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

const isSize = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535;

export function parseDebugRequest(line: string): DebugExecRequest {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new RequestError('INVALID_ARGUMENT', 'the request is not JSON');
  }
  if (!o || typeof o !== 'object' || Array.isArray(o)) throw new RequestError('INVALID_ARGUMENT', 'the request is not a JSON object');
  if (typeof o.sandbox !== 'string' || o.sandbox === '') throw new RequestError('INVALID_ARGUMENT', 'sandbox must be a non-empty string');
  if (!Array.isArray(o.argv) || o.argv.length === 0 || !o.argv.every((a) => typeof a === 'string')) {
    throw new RequestError('INVALID_ARGUMENT', 'argv must be a non-empty array of strings');
  }
  if (o.width !== undefined && !isSize(o.width)) throw new RequestError('INVALID_ARGUMENT', 'width must be an integer 0..65535');
  if (o.height !== undefined && !isSize(o.height)) throw new RequestError('INVALID_ARGUMENT', 'height must be an integer 0..65535');
  return {
    sandbox: o.sandbox,
    argv: o.argv as string[],
    tty: o.tty === true,
    stdin: o.stdin === true,
    ...(isSize(o.width) ? { width: o.width } : {}),
    ...(isSize(o.height) ? { height: o.height } : {}),
  };
}

/** A RESIZE frame's payload; throws RequestError for anything but {width, height} in 0..65535. */
export function parseResize(payload: Buffer): { width: number; height: number } {
  let o: unknown;
  try {
    o = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new RequestError('INVALID_ARGUMENT', 'resize frame is not JSON');
  }
  const r = (o ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o) || !isSize(r.width) || !isSize(r.height)) {
    throw new RequestError('INVALID_ARGUMENT', 'resize frame must be {"width": 0..65535, "height": 0..65535}');
  }
  return { width: r.width, height: r.height };
}

export class DebugSocket {
  private readonly connections = new Set<net.Socket>();

  private constructor(
    readonly path: string,
    private readonly server: net.Server,
    private readonly pods: PodRegistry,
    private readonly logger: Logger,
  ) {
    server.on('connection', (socket) => this.accept(socket));
  }

  static async listen(socketPath: string, pods: PodRegistry, logger: Logger): Promise<DebugSocket> {
    await prepareSocketPath(socketPath);
    const server = net.createServer();
    const self = new DebugSocket(socketPath, server, pods, logger.child({ component: 'debug-socket' }));
    await bindPrivate(socketPath, () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      }),
    );
    self.logger.debug({ socket: socketPath }, 'debug socket listening');
    return self;
  }

  /** Stops accepting and drops live connections (their commands are killed, as when a client leaves). */
  async close(): Promise<void> {
    for (const s of this.connections) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.path, { force: true });
  }

  private accept(socket: net.Socket): void {
    try {
      const uid = peerCredentials(socket).uid;
      if (uid !== process.getuid?.()) {
        this.logger.warn({ uid }, 'debug socket: peer refused');
        socket.destroy();
        return;
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'debug socket: cannot read peer credentials');
      socket.destroy();
      return;
    }
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    socket.on('error', () => undefined); // 'close' follows
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new RequestError('DEADLINE_EXCEEDED', 'no request line within 10 s')), REQUEST_TIMEOUT_MS);
    const fail = (err: RequestError) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.end(encodeDebugFrame(DebugFrame.Error, Buffer.from(JSON.stringify({ code: err.code, message: err.message }))));
    };
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(0x0a);
      if (nl < 0) {
        if (head.length > MAX_REQUEST) fail(new RequestError('INVALID_ARGUMENT', `request line longer than ${MAX_REQUEST} bytes`));
        return;
      }
      clearTimeout(timer);
      socket.off('data', onData);
      socket.pause();
      let req: DebugExecRequest;
      try {
        req = parseDebugRequest(head.subarray(0, nl).toString('utf8'));
      } catch (err) {
        return fail(err as RequestError);
      }
      const pod = this.pods.get(req.sandbox);
      if (!pod) return fail(new RequestError('NOT_FOUND', `sandbox ${req.sandbox} is not a VM this vmm sandboxer runs`));
      if (pod.hasExited || pod.stopping) return fail(new RequestError('FAILED_PRECONDITION', `sandbox ${req.sandbox} is not running`));
      new DebugExec(socket, pod, req, head.subarray(nl + 1), this.logger.child({ sandbox: pod.id })).start().catch((e: unknown) => {
        fail(e instanceof RequestError ? e : new RequestError('INTERNAL', (e as Error).message));
      });
    };
    socket.on('data', onData);
  }
}

/** One command in the guest, relayed to one client connection. */
class DebugExec {
  private pid: number | undefined;
  private exitCode: number | undefined;
  private finished = false;
  private clientGone = false;
  private readonly outputs: Stream[] = [];
  private stdin: Stream | undefined;
  private readonly cleanups: (() => void)[] = [];
  /** the agent's name for this command in its exit event (`debug-<seq>`), known with the pid */
  private execId: string | undefined;
  /** exits of debug commands seen before ours was named (response and event can arrive in one chunk), by exec id */
  private readonly early = new Map<string, number>();

  constructor(
    private readonly socket: net.Socket,
    private readonly pod: PodVm,
    private readonly req: DebugExecRequest,
    private readonly rest: Buffer,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const { pod, req } = this;
    const session = pod.agent.session;
    const out = pod.allocStream();
    const err = req.tty ? undefined : pod.allocStream();
    const inp = req.stdin ? pod.allocStream() : undefined;
    pod.save();
    this.cleanups.push(session.onEvent((e) => this.onEvent(e)));
    this.pipeOut(session.openStream(out, { direction: 'in', manualCredit: true }), DebugFrame.Stdout);
    if (err !== undefined) this.pipeOut(session.openStream(err, { direction: 'in', manualCredit: true }), DebugFrame.Stderr);
    if (inp !== undefined) this.stdin = session.openStream(inp, { direction: 'out' });
    this.socket.once('close', () => this.onClientClose());
    const vmGone = () => this.abort('UNAVAILABLE', `the VM of sandbox ${pod.id} exited`);
    void pod.exited.then(() => vmGone());
    let pid: number;
    let execIdReply: unknown;
    try {
      ({ pid, execId: execIdReply } = await session.request<{ pid: number; execId?: unknown }>('debug.exec', {
        argv: req.argv,
        stdio: { stdout: out, ...(err !== undefined ? { stderr: err } : {}), ...(inp !== undefined ? { stdin: inp } : {}), terminal: req.tty },
        terminal: req.tty,
        ...(req.width !== undefined && req.height !== undefined ? { width: req.width, height: req.height } : {}),
      }, { timeoutMs: 30_000 }));
    } catch (e) {
      this.dropStreams();
      this.runCleanups();
      throw e instanceof RpcError ? new RequestError(e.code, `guest debug.exec: ${e.message}`) : e;
    }
    this.pid = pid;
    // an agent without exec ids in its reply names the command after its pid
    this.execId = typeof execIdReply === 'string' ? execIdReply : `debug-${pid}`;
    this.logger.info({ pid, argv: req.argv, tty: req.tty }, 'debug exec started');
    if (this.clientGone) return this.killOrphan();
    this.send(DebugFrame.Started, Buffer.from(JSON.stringify({ pid })));
    const early = this.early.get(this.execId);
    if (early !== undefined) this.exited(early);
    this.readClient();
  }

  private pipeOut(stream: Stream, type: number): void {
    this.outputs.push(stream);
    stream.onData((bytes) => {
      if (this.clientGone || this.finished) return stream.consume(bytes.length);
      for (let off = 0; off < bytes.length; off += MAX_DEBUG_FRAME) {
        const part = bytes.subarray(off, Math.min(bytes.length, off + MAX_DEBUG_FRAME));
        this.socket.write(encodeDebugFrame(type, part), () => stream.consume(part.length));
      }
    });
    stream.onEnd(() => this.maybeFinish());
  }

  private readClient(): void {
    const reader = new DebugFrameReader();
    const stdin = this.stdin;
    if (stdin) stdin.onDrain(() => this.socket.resume());
    const onData = (chunk: Buffer) => {
      let frames;
      try {
        frames = reader.push(chunk);
      } catch (e) {
        return this.abort('INVALID_ARGUMENT', (e as Error).message);
      }
      for (const f of frames) {
        if (f.type === DebugFrame.Resize) {
          try {
            this.resize(parseResize(f.payload));
          } catch (e) {
            return this.abort('INVALID_ARGUMENT', (e as Error).message);
          }
          continue;
        }
        if (!stdin || stdin.closed) continue; // input without -i, or after its end: dropped
        if (f.type === DebugFrame.Stdin) {
          if (!stdin.write(new Uint8Array(f.payload))) this.socket.pause();
        } else if (f.type === DebugFrame.StdinEnd) {
          stdin.end();
        }
      }
    };
    this.socket.on('data', onData);
    if (this.rest.length > 0) onData(this.rest);
    this.socket.resume();
  }

  /** In order with other requests on the one channel, so the last size the client sent is the one that stays. */
  private resize(size: { width: number; height: number }): void {
    if (!this.req.tty || this.pid === undefined || this.exitCode !== undefined || this.finished) return;
    this.pod.agent.session.request('debug.resize', { pid: this.pid, ...size }, { timeoutMs: 10_000 })
      .catch((e: unknown) => this.logger.debug({ pid: this.pid, err: (e as Error).message }, 'debug exec resize not applied'));
  }

  private onEvent(e: EventMessage): void {
    if (e.type !== 'exit') return;
    const x = e as EventMessage & { execId?: unknown; pid?: unknown; status?: unknown };
    if (typeof x.execId !== 'string' || !x.execId.startsWith('debug-') || typeof x.pid !== 'number') return;
    const status = typeof x.status === 'number' ? x.status : 255;
    if (this.execId === undefined) this.early.set(x.execId, status);
    else if (x.execId === this.execId) this.exited(status);
  }

  private exited(status: number): void {
    if (this.exitCode !== undefined) return;
    this.exitCode = status;
    this.logger.info({ pid: this.pid, exitCode: status }, 'debug exec exited');
    const t = setTimeout(() => this.finish(), OUTPUT_GRACE_MS);
    t.unref();
    this.cleanups.push(() => clearTimeout(t));
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.exitCode !== undefined && this.outputs.every((s) => s.ended)) this.finish();
  }

  /** Exit code to the client once its output is written, then forget the streams. */
  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.dropStreams();
    this.runCleanups();
    if (!this.clientGone) this.socket.end(encodeDebugFrame(DebugFrame.Exit, Buffer.from(JSON.stringify({ exitCode: this.exitCode }))));
  }

  private abort(code: string, message: string): void {
    if (this.finished) return;
    this.finished = true;
    this.dropStreams();
    this.runCleanups();
    if (this.pid !== undefined && this.exitCode === undefined) this.kill();
    if (!this.clientGone) this.socket.end(encodeDebugFrame(DebugFrame.Error, Buffer.from(JSON.stringify({ code, message }))));
  }

  private onClientClose(): void {
    if (this.clientGone) return;
    this.clientGone = true;
    if (this.finished) return;
    if (this.stdin && !this.stdin.closed) this.stdin.end();
    if (this.pid !== undefined) this.killOrphan();
  }

  /** The client left while its command runs: kill it, and give its exit a while to arrive before forgetting it. */
  private killOrphan(): void {
    if (this.exitCode === undefined) this.kill();
    const t = setTimeout(() => this.finish(), ORPHAN_MS);
    t.unref();
    this.cleanups.push(() => clearTimeout(t));
  }

  /** The agent has no kill for debug processes (process.kill wants a container), so a second debug process kills it. */
  private kill(): void {
    const pid = this.pid;
    if (pid === undefined || this.pod.hasExited) return;
    this.logger.info({ pid }, 'client left; killing its debug exec');
    this.pod.agent.session.request('debug.exec', { argv: ['kill', '-KILL', String(pid)], stdio: { terminal: false } }, { timeoutMs: 30_000 })
      .catch((e: unknown) => this.logger.warn({ pid, err: (e as Error).message }, 'cannot kill the debug exec'));
  }

  private dropStreams(): void {
    for (const s of this.outputs) if (!s.ended) s.destroy();
    if (this.stdin && !this.stdin.closed) this.stdin.destroy();
  }

  private runCleanups(): void {
    for (const fn of this.cleanups.splice(0)) fn();
  }

  private send(type: number, payload: Buffer): void {
    if (!this.clientGone) this.socket.write(encodeDebugFrame(type, payload));
  }
}
