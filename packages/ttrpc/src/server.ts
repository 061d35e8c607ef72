import { promises as fs } from 'node:fs';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeFrame, Flag, Frame, FrameDecoder, MAX_MESSAGE_SIZE, MessageType } from './frame';
import { decodeRequest, encodeResponse, Metadata, Request } from './messages';
import { NAMESPACE_KEY } from './metadata';
import { addService, ServiceDefinition, ServiceImplementation, ServiceNameOptions } from './service';
import { Code, TtrpcError } from './status';
import { FrameWriter, Logger, MessageQueue, ReadGate, silentLogger } from './transport';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** What a handler learns about its call. */
export interface CallContext {
  service: string;
  method: string;
  streamId: number;
  /** Request metadata; keys may carry several values. */
  metadata: Metadata;
  /** First value of `containerd-namespace-ttrpc`, if sent. */
  namespace: string | undefined;
  /** Absolute deadline (ms since epoch) from the request's timeout_nano; undefined = none. */
  deadline: number | undefined;
  /** Aborted at the deadline (reason: DEADLINE_EXCEEDED TtrpcError) or when the connection goes away (CANCELLED). */
  signal: AbortSignal;
  peer: PeerCredentials | undefined;
}

export type UnaryHandler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/** Server side of a streaming call: iterate to receive the client's messages, `send` to stream replies. */
export interface ServerStream extends AsyncIterable<Uint8Array> {
  /** Resolves once the frame is handed to the socket below its high-water mark; await it to respect backpressure. */
  send(msg: Uint8Array): Promise<void>;
}

/** For server-streaming methods a returned payload becomes the last Data message; otherwise it is the Response. */
export type StreamHandler = (stream: ServerStream, ctx: CallContext) => Promise<Uint8Array | void>;

export interface StreamKind {
  clientStreaming: boolean;
  serverStreaming: boolean;
}

export interface ServerOptions {
  /** Frame data limit in both directions (default 4 MiB, as Go). */
  maxMessageSize?: number;
  /** Stop reading a connection while this many requests are being handled (default 128). */
  maxInFlight?: number;
  /** Messages buffered per incoming stream before reading pauses (default 64, Go's streamRecvBufferSize). */
  streamHighWater?: number;
  /**
   * When set, every accepted connection must come from a peer whose uid and gid equal this process's effective
   * uid/gid (containerd's SO_PEERCRED rule). Node cannot call getsockopt itself, so the caller supplies it.
   */
  peerCredentials?: (socket: Duplex) => PeerCredentials;
  /** chmod applied to the socket file after listen (e.g. 0o600). */
  socketMode?: number;
  logger?: Logger;
}

type Registered =
  | { kind: 'unary'; handler: UnaryHandler }
  | { kind: 'stream'; handler: StreamHandler; stream: StreamKind };

export class TtrpcServer {
  private readonly services = new Map<string, Map<string, Registered>>();
  private readonly connections = new Set<ServerConnection>();
  private netServer: net.Server | null = null;
  private closing = false;
  readonly options: Required<Omit<ServerOptions, 'peerCredentials' | 'socketMode'>> & ServerOptions;

  constructor(options: ServerOptions = {}) {
    this.options = {
      maxMessageSize: MAX_MESSAGE_SIZE,
      maxInFlight: 128,
      streamHighWater: 64,
      logger: silentLogger,
      ...options,
    };
  }

  register(service: string, method: string, handler: UnaryHandler): this {
    this.methods(service).set(method, { kind: 'unary', handler });
    return this;
  }

  registerStream(service: string, method: string, kind: StreamKind, handler: StreamHandler): this {
    this.methods(service).set(method, { kind: 'stream', handler, stream: { ...kind } });
    return this;
  }

  /** Register a ts-proto generic definition; `opts.fullName` overrides the wire service name. */
  addService<D extends ServiceDefinition>(def: D, impl: ServiceImplementation<D>, opts: ServiceNameOptions = {}): this {
    addService(this, def, impl, opts);
    return this;
  }

  private methods(service: string): Map<string, Registered> {
    let m = this.services.get(service);
    if (!m) this.services.set(service, (m = new Map()));
    return m;
  }

  /** @internal */
  lookup(service: string, method: string): Registered | TtrpcError {
    const m = this.services.get(service);
    if (!m) return new TtrpcError(Code.UNIMPLEMENTED, `service ${service}`);
    const r = m.get(method);
    if (!r) return new TtrpcError(Code.UNIMPLEMENTED, `method ${method}`);
    return r;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** Listen on a unix socket path, replacing a stale socket file left by a dead process. */
  async listen(path: string): Promise<void> {
    if (this.netServer) throw new Error('ttrpc: server already listening');
    await removeStaleSocket(path);
    const srv = net.createServer((sock) => this.serve(sock));
    srv.on('error', (err) => this.options.logger.error({ err, path }, 'ttrpc listener error'));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(path, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.netServer = srv;
    if (this.options.socketMode !== undefined) await fs.chmod(path, this.options.socketMode);
  }

  /** Serve ttrpc on an already-connected byte stream (accepted socket, vsock, in-memory pair). */
  serve(socket: Duplex): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    let peer: PeerCredentials | undefined;
    if (this.options.peerCredentials) {
      try {
        peer = this.options.peerCredentials(socket);
      } catch (err) {
        this.options.logger.warn({ err }, 'ttrpc: cannot read peer credentials, closing connection');
        socket.on('error', () => {});
        socket.destroy();
        return;
      }
      const euid = process.geteuid?.();
      const egid = process.getegid?.();
      if (peer.uid !== euid || peer.gid !== egid) {
        this.options.logger.warn({ peer, euid, egid }, 'ttrpc: peer credentials do not match, closing connection');
        socket.on('error', () => {});
        socket.destroy();
        return;
      }
    }
    const conn = new ServerConnection(this, socket, peer);
    this.connections.add(conn);
    socket.once('close', () => this.connections.delete(conn));
  }

  /** Stop accepting, let in-flight calls finish (up to `timeoutMs`), then drop every connection. */
  async close(timeoutMs = 10_000): Promise<void> {
    this.closing = true;
    const srv = this.netServer;
    this.netServer = null;
    const listenerClosed = srv ? new Promise<void>((resolve) => srv.close(() => resolve())) : Promise.resolve();
    const conns = [...this.connections];
    // Each connection ends once its handlers are done; the peer then closes and queued replies are flushed.
    const drained = Promise.all(conns.map((c) => c.shutdown()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([drained, timedOut]);
    clearTimeout(timer);
    for (const c of conns) c.destroy();
    await listenerClosed;
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`ttrpc: ${path} exists and is not a socket`);
  // Only a socket nobody answers on is stale; refusing to steal a live one avoids two servers on one path.
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw Object.assign(new Error(`ttrpc: ${path} is in use by a live server`), { code: 'EADDRINUSE' });
  await fs.unlink(path);
}

interface ActiveCall {
  id: number;
  ctrl: AbortController;
  timer: NodeJS.Timeout | undefined;
  /** Incoming messages; null once the client closed its side (or for unary calls). */
  queue: MessageQueue | null;
  replied: boolean;
}

const EMPTY = new Uint8Array(0);
const OK_STATUS = { code: Code.OK, message: '', details: [] };

class ServerConnection {
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly gate: ReadGate;
  private readonly active = new Map<number, ActiveCall>();
  private readonly running = new Set<ActiveCall>();
  private lastStreamId = 0;
  private closed = false;
  /** Frames read but not yet handled because the gate closed mid-chunk; at most one socket chunk's worth. */
  private backlog: Frame[] = [];
  private backlogHead = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly log: Logger;

  constructor(private readonly server: TtrpcServer, private readonly socket: Duplex, private readonly peer: PeerCredentials | undefined) {
    this.log = server.options.logger;
    this.decoder = new FrameDecoder(server.options.maxMessageSize);
    this.gate = new ReadGate(socket, () => queueMicrotask(() => this.drainBacklog()));
    this.writer = new FrameWriter(socket, () => this.gate.set(this.writer, this.writer.blocked));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: Error) => this.log.debug({ err }, 'ttrpc: server connection error'));
    // Like Go: EOF from the client ends the connection; pending replies have nowhere to go.
    socket.on('end', () => {
      if (this.decoder.pendingBytes > 0) this.log.debug({ pending: this.decoder.pendingBytes }, 'ttrpc: client closed mid-frame');
      this.destroy();
    });
    socket.on('close', () => this.onClose());
  }

  private onData(chunk: Buffer): void {
    for (const f of this.decoder.push(chunk)) this.backlog.push(f);
    this.drainBacklog();
  }

  /** Handle queued frames until the gate closes, so a paused connection really stops starting new work. */
  private drainBacklog(): void {
    while (this.backlogHead < this.backlog.length && !this.gate.isPaused && !this.closed) {
      const f = this.backlog[this.backlogHead]!;
      this.backlog[this.backlogHead++] = undefined as unknown as Frame;
      try {
        this.onFrame(f);
      } catch (err) {
        // Nothing a peer sends may take the connection handler down.
        this.log.error({ err, streamId: f.streamId }, 'ttrpc: frame handling failed');
      }
    }
    if (this.backlogHead >= this.backlog.length) {
      this.backlog = [];
      this.backlogHead = 0;
    }
  }

  private onFrame(f: Frame): void {
    const max = this.server.options.maxMessageSize;
    if (f.oversized) {
      const call = this.active.get(f.streamId);
      const err = new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${f.length} exceed maximum message size of ${max}`);
      if (call) this.fail(call, err);
      else this.sendStatus(f.streamId, err);
      return;
    }
    if (f.streamId % 2 !== 1) {
      this.sendStatus(f.streamId, new TtrpcError(Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams'));
      return;
    }
    if (f.type === MessageType.DATA) {
      const call = this.active.get(f.streamId);
      if (!call || !call.queue) {
        this.sendStatus(f.streamId, new TtrpcError(Code.INVALID_ARGUMENT, 'StreamID is no longer active'));
        return;
      }
      if ((f.flags & Flag.NO_DATA) === 0) call.queue.push(f.data);
      if ((f.flags & Flag.REMOTE_CLOSED) !== 0) {
        call.queue.end();
        call.queue = null;
      }
      return;
    }
    if (f.type !== MessageType.REQUEST) return; // unknown or misdirected types are ignored for forward compatibility
    if (f.streamId <= this.lastStreamId) {
      this.sendStatus(f.streamId, new TtrpcError(Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment'));
      return;
    }
    this.lastStreamId = f.streamId;
    let req: Request;
    try {
      req = decodeRequest(f.data);
    } catch (err) {
      this.sendStatus(f.streamId, new TtrpcError(Code.INVALID_ARGUMENT, `unmarshal request error: ${(err as Error).message}`));
      return;
    }
    if (this.server.isClosing) {
      this.sendStatus(f.streamId, new TtrpcError(Code.UNAVAILABLE, 'ttrpc: server shutdown'));
      return;
    }
    const target = this.server.lookup(req.service, req.method);
    if (target instanceof TtrpcError) {
      this.sendStatus(f.streamId, target);
      return;
    }
    this.start(f.streamId, f.flags, req, target);
  }

  private start(id: number, flags: number, req: Request, target: Registered): void {
    const ctrl = new AbortController();
    const call: ActiveCall = { id, ctrl, timer: undefined, queue: null, replied: false };
    let deadline: number | undefined;
    if (req.timeoutNano !== 0n) {
      const ms = req.timeoutNano < 0n ? 0 : Number(req.timeoutNano / 1_000_000n);
      deadline = Date.now() + ms;
      // setTimeout caps at 2^31-1 ms; anything longer is effectively no deadline for a timer.
      if (ms < 2 ** 31 - 1) {
        call.timer = setTimeout(() => {
          call.timer = undefined;
          this.fail(call, new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded'));
        }, ms);
      }
    }
    const ctx: CallContext = {
      service: req.service,
      method: req.method,
      streamId: id,
      metadata: req.metadata,
      namespace: req.metadata.get(NAMESPACE_KEY)?.[0],
      deadline,
      signal: ctrl.signal,
      peer: this.peer,
    };
    this.active.set(id, call);
    this.running.add(call);
    this.updateInFlight();

    let work: Promise<Uint8Array | void>;
    let serverStreaming = false;
    if (target.kind === 'unary') {
      work = invoke(() => target.handler(req.payload ?? EMPTY, ctx));
    } else {
      serverStreaming = target.stream.serverStreaming;
      const queue = new MessageQueue(this.server.options.streamHighWater, (full) => this.gate.set(queue, full));
      // Go delivers the request payload as the first message unless a client-streaming call sent none.
      if (req.payload !== undefined || !target.stream.clientStreaming) queue.push(req.payload ?? EMPTY);
      // A Request flagged remote-closed promises no Data frames, whatever the method's declared shape.
      if (target.stream.clientStreaming && (flags & Flag.REMOTE_CLOSED) === 0) call.queue = queue;
      else queue.end();
      const stream: ServerStream = {
        [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
        send: (msg) => this.sendData(call, msg, serverStreaming),
      };
      work = invoke(() => target.handler(stream, ctx)).finally(() => queue.discard());
    }
    work.then(
      (result) => {
        if (call.replied) return;
        const payload = result ?? undefined;
        if (payload !== undefined && !(payload instanceof Uint8Array)) {
          this.fail(call, new TtrpcError(Code.INTERNAL, 'ttrpc: handler returned a non-Uint8Array payload'));
          return;
        }
        if (payload !== undefined && payload.length > this.server.options.maxMessageSize) {
          this.fail(call, new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${payload.length} exceed maximum message size of ${this.server.options.maxMessageSize}`));
        } else if (serverStreaming) {
          const flags = Flag.REMOTE_CLOSED | (payload === undefined ? Flag.NO_DATA : 0);
          this.replyFrame(call, encodeFrame(id, MessageType.DATA, flags, payload));
        } else {
          // Go always sends a (empty) status on success: `0a 00` before the payload.
          this.replyFrame(call, encodeFrame(id, MessageType.RESPONSE, 0, encodeResponse({ status: OK_STATUS, payload: payload ?? EMPTY })));
        }
      },
      (err: unknown) => this.fail(call, TtrpcError.from(err)),
    ).catch((err: unknown) => this.log.error({ err, streamId: id }, 'ttrpc: failed to send reply'))
    .finally(() => {
      if (call.timer) clearTimeout(call.timer);
      call.timer = undefined;
      this.running.delete(call);
      if (this.active.get(id) === call) this.active.delete(id);
      this.updateInFlight();
    });
  }

  private sendData(call: ActiveCall, msg: Uint8Array, serverStreaming: boolean): Promise<void> {
    if (!serverStreaming) return Promise.reject(new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: method is not server-streaming'));
    if (call.replied || this.closed) return Promise.reject(new TtrpcError(Code.CANCELLED, 'ttrpc: stream closed'));
    if (msg.length > this.server.options.maxMessageSize) {
      return Promise.reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${msg.length} exceed maximum message size of ${this.server.options.maxMessageSize}`));
    }
    return this.writer.send(encodeFrame(call.id, MessageType.DATA, 0, msg));
  }

  /** End a call with an error status now; the handler may still be running but its result will be dropped. */
  private fail(call: ActiveCall, err: TtrpcError): void {
    if (call.replied) return;
    if (call.timer) clearTimeout(call.timer);
    call.timer = undefined;
    if (!call.ctrl.signal.aborted) call.ctrl.abort(err);
    call.queue?.end(err);
    call.queue = null;
    this.replyFrame(call, statusFrame(call.id, err));
  }

  private replyFrame(call: ActiveCall, frame: Buffer): void {
    if (call.replied) return;
    call.replied = true;
    if (this.active.get(call.id) === call) this.active.delete(call.id);
    if (this.closed) return;
    this.writer.send(frame).catch(() => {});
  }

  private sendStatus(id: number, err: TtrpcError): void {
    if (this.closed) return;
    this.writer.send(statusFrame(id, err)).catch(() => {});
  }

  private updateInFlight(): void {
    this.gate.set(this.running, this.running.size >= this.server.options.maxInFlight);
    if (this.running.size === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Graceful: once no handler is running, end our side and resolve when the socket has closed. */
  shutdown(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    const idle = this.running.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    void idle.then(() => {
      if (!this.closed) this.socket.end();
    });
    return closed;
  }

  destroy(): void {
    if (!this.socket.destroyed) this.socket.destroy();
    this.onClose();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    const gone = new TtrpcError(Code.CANCELLED, 'ttrpc: connection closed');
    this.writer.fail(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: connection closed'));
    for (const call of this.running) {
      if (call.timer) clearTimeout(call.timer);
      call.timer = undefined;
      call.replied = true;
      if (!call.ctrl.signal.aborted) call.ctrl.abort(gone);
      call.queue?.end(gone);
      call.queue = null;
    }
    this.active.clear();
    this.backlog = [];
    this.backlogHead = 0;
  }
}

function statusFrame(id: number, err: TtrpcError): Buffer {
  const payload = encodeResponse({ status: { code: err.code, message: err.message, details: err.details }, payload: EMPTY });
  return encodeFrame(id, MessageType.RESPONSE, 0, payload);
}

/** Run a handler so that synchronous throws become rejections too. */
function invoke<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}
