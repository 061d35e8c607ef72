import { ProtocolError, RpcError, type RpcCode } from './errors';
import { decodeU32, encodeFrame, encodeU32, type Frame, FrameDecoder, FrameType } from './frame';
import {
  decodeJson,
  encodeJson,
  type EventMessage,
  type GuestHello,
  type HostHello,
  parseAck,
  parseEvent,
  parseGuestHello,
  parseHostHello,
  parseRequest,
  parseResponse,
  PROTOCOL_VERSION,
  type RequestMessage,
  type ResponseMessage,
} from './messages';

/** One connection's byte sink. Each call carries whole frames; the transport owns any buffering. */
export interface Transport {
  write(bytes: Uint8Array): void;
}

/** Timers are injected: QuickJS has them on `os`, Node on globalThis. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export type Role = 'host' | 'guest';

export type RequestHandler = (
  params: Record<string, unknown>,
  request: RequestMessage,
) => Record<string, unknown> | void | Promise<Record<string, unknown> | void>;

export interface SessionOptions {
  role: Role;
  timers?: Timers;
  /** Default timeout of request(); 30 s. */
  requestTimeoutMs?: number;
  /** Initial credit per stream and direction; 256 KiB. */
  window?: number;
  /** Unacknowledged events kept for replay; 4096. */
  eventRingSize?: number;
  /** Host: how often HELLO is resent until the guest answers; 1 s. */
  helloRetryMs?: number;
  /** Host: session id per connection; default random. */
  newSessionId?: () => string;
  /** Guest: the fields of its HELLO answer. */
  guestInfo?: () => Omit<GuestHello, 'version' | 'session'>;
}

export interface SessionStats {
  framesIn: number;
  framesOut: number;
  protocolErrors: number;
  eventsDropped: number;
  dataDropped: number;
}

export const DEFAULT_WINDOW = 256 * 1024;
export const DEFAULT_EVENT_RING = 4096;
const MAX_DATA_FRAME = 64 * 1024;

function defaultTimers(): Timers {
  const g = globalThis as unknown as {
    setTimeout(fn: () => void, ms: number): unknown;
    clearTimeout(h: unknown): void;
  };
  return { setTimeout: (fn, ms) => g.setTimeout(fn, ms), clearTimeout: (h) => g.clearTimeout(h), now: () => Date.now() };
}

type Listener<T> = (value: T) => void;

class Listeners<T> {
  private readonly fns: Listener<T>[] = [];
  add(fn: Listener<T>): () => void {
    this.fns.push(fn);
    return () => {
      const i = this.fns.indexOf(fn);
      if (i >= 0) this.fns.splice(i, 1);
    };
  }
  emit(value: T): void {
    for (const fn of this.fns.slice()) {
      try {
        fn(value);
      } catch {
        // A listener's bug must not break the session's frame loop.
      }
    }
  }
  get size(): number {
    return this.fns.length;
  }
}

export interface StreamOptions {
  /** 'out': this side only sends (removed once its CLOSE went out); 'in': only receives (removed on the peer's CLOSE). */
  direction?: 'in' | 'out' | 'both';
  /** When true the receiver grants credit only as the application calls consume(); else on delivery. */
  manualCredit?: boolean;
}

/** One multiplexed byte stream with credit-based flow control in each direction. */
export class Stream {
  private sendCredit: number;
  private recvAllowed: number;
  private unreported = 0;
  private held = 0;
  private pending: Uint8Array[] = [];
  private pendingLength = 0;
  private endRequested = false;
  private closeSent = false;
  private remoteEnded = false;
  private removed = false;
  private readonly dataListeners = new Listeners<Uint8Array>();
  private readonly endListeners = new Listeners<void>();
  private readonly drainListeners = new Listeners<void>();

  /** @internal */
  constructor(
    private readonly session: Session,
    readonly id: number,
    private readonly window: number,
    private readonly options: StreamOptions,
  ) {
    this.sendCredit = window;
    this.recvAllowed = window;
  }

  /** Bytes the peer currently allows this side to send. */
  get credit(): number {
    return this.sendCredit;
  }

  /** Bytes queued here, waiting for credit or a connection. */
  get pendingBytes(): number {
    return this.pendingLength;
  }

  /** How many more bytes write() accepts before the local queue exceeds the peer's window (0 = wait for drain). */
  get writable(): number {
    return Math.max(0, this.sendCredit - this.pendingLength);
  }

  /** Received bytes not yet consume()d (manualCredit only). */
  get heldBytes(): number {
    return this.held;
  }

  get ended(): boolean {
    return this.remoteEnded;
  }

  get closed(): boolean {
    return this.endRequested;
  }

  /**
   * Queues bytes for the peer; returns false when the caller should stop producing until onDrain.
   * Bytes beyond the window are still queued (never dropped), so a caller that ignores the return
   * value costs memory, not data.
   */
  write(bytes: Uint8Array): boolean {
    if (this.endRequested) throw new ProtocolError('BAD_MESSAGE', `stream ${this.id} already ended`);
    if (bytes.length > 0) {
      this.pending.push(bytes);
      this.pendingLength += bytes.length;
      this.flush();
    }
    return this.writable > 0;
  }

  /** Sends CLOSE after everything queued went out. */
  end(): void {
    if (this.endRequested) return;
    this.endRequested = true;
    this.flush();
  }

  /** Grants the peer `n` more bytes (manualCredit); call as received data is handed on. */
  consume(n: number): void {
    if (!(n > 0)) return;
    n = Math.min(n, this.held);
    this.held -= n;
    this.grant(n);
  }

  onData(fn: Listener<Uint8Array>): () => void {
    return this.dataListeners.add(fn);
  }

  onEnd(fn: () => void): () => void {
    return this.endListeners.add(fn);
  }

  onDrain(fn: () => void): () => void {
    return this.drainListeners.add(fn);
  }

  /** Forgets the stream without a CLOSE (e.g. its process is gone). */
  destroy(): void {
    this.pending = [];
    this.pendingLength = 0;
    this.remove();
  }

  private remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.session._forget(this);
  }

  /** @internal Sends what credit and the connection allow. */
  flush(): void {
    if (this.removed || !this.session.ready) return;
    while (this.pending.length > 0 && this.sendCredit > 0) {
      const head = this.pending[0];
      const n = Math.min(head.length, this.sendCredit, MAX_DATA_FRAME);
      const part = n === head.length ? head : head.subarray(0, n);
      if (n === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(n);
      this.pendingLength -= n;
      this.sendCredit -= n;
      this.session._send(FrameType.Data, this.id, part);
    }
    if (this.endRequested && !this.closeSent && this.pending.length === 0) {
      this.closeSent = true;
      this.session._send(FrameType.Close, this.id);
      if (this.options.direction === 'out' || this.remoteEnded) this.remove();
    }
  }

  /** @internal A new connection: credits start over at the window. */
  resetCredit(): void {
    this.sendCredit = this.window;
    this.recvAllowed = this.window;
    this.unreported = 0;
    // A CLOSE sent on the old connection may have been lost with it.
    if (this.closeSent) this.closeSent = false;
  }

  /** @internal */
  receiveData(payload: Uint8Array): void {
    if (payload.length > this.recvAllowed) {
      this.session._report(
        new ProtocolError('CREDIT_EXCEEDED', `stream ${this.id}: ${payload.length} bytes with ${this.recvAllowed} allowed; dropped`),
      );
      this.session.stats.dataDropped += payload.length;
      return;
    }
    this.recvAllowed -= payload.length;
    if (this.options.manualCredit) this.held += payload.length;
    else this.grant(payload.length);
    this.dataListeners.emit(payload);
  }

  /** @internal */
  receiveCredit(n: number): void {
    const before = this.writable;
    this.sendCredit = Math.min(this.sendCredit + n, 0xffffffff);
    this.flush();
    if (before === 0 && this.writable > 0) this.drainListeners.emit();
  }

  /** @internal */
  receiveClose(): void {
    if (this.remoteEnded) return;
    this.remoteEnded = true;
    this.endListeners.emit();
    if (this.options.direction === 'in' || this.closeSent) this.remove();
  }

  /** @internal */
  notifyDrain(): void {
    if (this.writable > 0) this.drainListeners.emit();
  }

  private grant(n: number): void {
    this.unreported += n;
    this.recvAllowed += n;
    // Batched so a byte-at-a-time reader does not cost a CREDIT frame per byte.
    if (this.unreported >= this.window / 4 || this.held === 0) {
      const amount = this.unreported;
      this.unreported = 0;
      if (this.session.ready) this.session._send(FrameType.Credit, this.id, encodeU32(amount));
    }
  }
}

interface Pending {
  method: string;
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  timer: unknown;
  sent: boolean;
  params: Record<string, unknown>;
}

/**
 * One end of the host<->guest protocol; the same class runs on the host (Node) and in the guest
 * (QuickJS). A Session outlives connections: attach() a transport per connection, feed it bytes
 * with receive(), detach() when the connection goes away.
 */
export class Session {
  readonly role: Role;
  readonly stats: SessionStats = { framesIn: 0, framesOut: 0, protocolErrors: 0, eventsDropped: 0, dataDropped: 0 };
  /** Host: the guest's HELLO on the current connection. */
  peer: GuestHello | undefined;

  private readonly timers: Timers;
  private readonly requestTimeoutMs: number;
  private readonly window: number;
  private readonly ringSize: number;
  private readonly helloRetryMs: number;
  private readonly newSessionId: () => string;
  private readonly guestInfo: () => Omit<GuestHello, 'version' | 'session'>;

  private readonly decoder: FrameDecoder;
  private transport: Transport | undefined;
  /** Bumped per attach, so a late response for an old connection is dropped. */
  private epoch = 0;
  private isReady = false;
  private sessionId = '';
  private helloTimer: unknown;

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<string, RequestHandler>();
  private readonly streams = new Map<number, Stream>();

  private lastSeq = 0;
  private ring: EventMessage[] = [];
  private deliveredSeq = 0;
  private ackedSeq = 0;
  private peerBootId: string | undefined;

  private readonly eventListeners = new Listeners<EventMessage>();
  private readonly readyListeners = new Listeners<HostHello | GuestHello>();
  private readonly errorListeners = new Listeners<ProtocolError>();
  private readonly disconnectListeners = new Listeners<void>();

  constructor(options: SessionOptions) {
    this.role = options.role;
    this.timers = options.timers ?? defaultTimers();
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.window = options.window ?? DEFAULT_WINDOW;
    this.ringSize = options.eventRingSize ?? DEFAULT_EVENT_RING;
    this.helloRetryMs = options.helloRetryMs ?? 1000;
    this.newSessionId = options.newSessionId ?? (() => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`);
    this.guestInfo = options.guestInfo ?? (() => ({ agent: 'unknown', uptimeMs: 0, kernelRelease: '', bootId: '' }));
    this.decoder = new FrameDecoder((err) => this._report(err));
  }

  /** True once the HELLO exchange on the current connection is done. */
  get ready(): boolean {
    return this.isReady;
  }

  get attached(): boolean {
    return this.transport !== undefined;
  }

  /** Host: the session id sent in the current connection's HELLO. */
  get session(): string {
    return this.sessionId;
  }

  /** Guest: events emitted but not yet acknowledged. */
  get unacknowledged(): number {
    return this.ring.length;
  }

  // --- connection -------------------------------------------------------------------------------

  /** A new connection. The host sends HELLO (and resends it until answered). */
  attach(transport: Transport): void {
    this.detach();
    this.transport = transport;
    this.epoch++;
    this.decoder.reset();
    if (this.role === 'host') {
      this.sessionId = this.newSessionId();
      this.sendHello();
    }
  }

  /** The connection is gone: in-flight requests fail with UNAVAILABLE; queued ones wait for the next. */
  detach(): void {
    if (!this.transport) return;
    this.transport = undefined;
    this.isReady = false;
    if (this.helloTimer !== undefined) this.timers.clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    for (const [id, p] of this.pending) {
      if (!p.sent) continue;
      this.pending.delete(id);
      this.timers.clearTimeout(p.timer);
      p.reject(new RpcError('UNAVAILABLE', `connection lost during ${p.method}`));
    }
    this.disconnectListeners.emit();
  }

  /** Feeds bytes from the transport. Never throws; bad input is reported through onProtocolError. */
  receive(chunk: Uint8Array): void {
    for (const frame of this.decoder.push(chunk)) {
      this.stats.framesIn++;
      try {
        this.dispatch(frame);
      } catch (err) {
        if (err instanceof ProtocolError) this._report(err);
        else this._report(new ProtocolError('BAD_MESSAGE', `frame type ${frame.type} on stream ${frame.stream}: ${String(err)}`));
      }
    }
  }

  /** Stops timers and fails every request; the session is unusable afterwards. */
  dispose(): void {
    this.detach();
    for (const p of this.pending.values()) {
      this.timers.clearTimeout(p.timer);
      p.reject(new RpcError('UNAVAILABLE', `session closed before ${p.method}`));
    }
    this.pending.clear();
  }

  onReady(fn: (hello: HostHello | GuestHello) => void): () => void {
    return this.readyListeners.add(fn);
  }

  onDisconnect(fn: () => void): () => void {
    return this.disconnectListeners.add(fn);
  }

  onProtocolError(fn: (err: ProtocolError) => void): () => void {
    return this.errorListeners.add(fn);
  }

  /** Resolves when the current (or next) connection finishes its HELLO exchange. */
  whenReady(timeoutMs = this.requestTimeoutMs): Promise<HostHello | GuestHello> {
    if (this.isReady) return Promise.resolve(this.peer ?? { version: PROTOCOL_VERSION, session: this.sessionId });
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        off();
        reject(new RpcError('DEADLINE_EXCEEDED', `no HELLO from the peer within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.readyListeners.add((hello) => {
        off();
        this.timers.clearTimeout(timer);
        resolve(hello);
      });
    });
  }

  // --- requests ---------------------------------------------------------------------------------

  handle(method: string, handler: RequestHandler): void {
    this.handlers.set(method, handler);
  }

  /** Sends a REQUEST once the connection is ready; rejects with RpcError (peer error, timeout, disconnect). */
  request<R = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, options: { timeoutMs?: number } = {}): Promise<R> {
    const id = this.nextId++;
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    return new Promise<R>((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError('DEADLINE_EXCEEDED', `${method} got no response within ${timeoutMs} ms`));
      }, timeoutMs);
      const p: Pending = { method, params, timer, sent: false, resolve: resolve as Pending['resolve'], reject };
      this.pending.set(id, p);
      if (this.isReady) this.sendRequest(id, p);
    });
  }

  private sendRequest(id: number, p: Pending): void {
    p.sent = true;
    this._send(FrameType.Request, 0, encodeJson({ id, method: p.method, params: p.params }));
  }

  // --- events -----------------------------------------------------------------------------------

  /** Emits an event; it is kept for replay until the peer ACKs it. */
  emit(type: string, fields: Record<string, unknown> = {}): EventMessage {
    const event: EventMessage = { ...fields, seq: ++this.lastSeq, type };
    this.ring.push(event);
    if (this.ring.length > this.ringSize) {
      this.ring.shift();
      this.stats.eventsDropped++;
    }
    if (this.isReady) this._send(FrameType.Event, 0, encodeJson(event));
    return event;
  }

  /** Events from the peer, each delivered once per Session even when replayed. */
  onEvent(fn: (event: EventMessage) => void): () => void {
    return this.eventListeners.add(fn);
  }

  /** Acknowledges events up to `seq`: the peer may forget them. */
  ack(seq: number): void {
    if (seq <= this.ackedSeq) return;
    this.ackedSeq = seq;
    if (this.isReady) this._send(FrameType.Ack, 0, encodeJson({ seq }));
  }

  // --- streams ----------------------------------------------------------------------------------

  /** Registers stream `id` on this side (the host picks ids); returns the existing one if open. */
  openStream(id: number, options: StreamOptions = {}): Stream {
    if (!Number.isInteger(id) || id <= 0 || id > 0xffffffff) throw new ProtocolError('BAD_MESSAGE', `stream id ${id} is not a u32 > 0`);
    let s = this.streams.get(id);
    if (!s) {
      s = new Stream(this, id, this.window, options);
      this.streams.set(id, s);
    }
    return s;
  }

  getStream(id: number): Stream | undefined {
    return this.streams.get(id);
  }

  get streamCount(): number {
    return this.streams.size;
  }

  // --- internals --------------------------------------------------------------------------------

  /** @internal */
  _forget(stream: Stream): void {
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
  }

  /** @internal */
  _send(type: FrameType, stream: number, payload?: Uint8Array): void {
    if (!this.transport) return;
    this.stats.framesOut++;
    this.transport.write(encodeFrame(type, stream, payload));
  }

  /** @internal */
  _report(err: ProtocolError): void {
    this.stats.protocolErrors++;
    this.errorListeners.emit(err);
  }

  private sendHello(): void {
    this._send(FrameType.Hello, 0, encodeJson({ version: PROTOCOL_VERSION, session: this.sessionId }));
    const epoch = this.epoch;
    this.helloTimer = this.timers.setTimeout(() => {
      this.helloTimer = undefined;
      if (this.epoch === epoch && this.transport && !this.isReady) this.sendHello();
    }, this.helloRetryMs);
  }

  private dispatch(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Hello:
        return this.role === 'guest' ? this.onHostHello(parseHostHello(decodeJson(frame.payload))) : this.onGuestHello(parseGuestHello(decodeJson(frame.payload)));
      case FrameType.Request:
        return this.onRequest(parseRequest(decodeJson(frame.payload)));
      case FrameType.Response:
        return this.onResponse(parseResponse(decodeJson(frame.payload)));
      case FrameType.Event:
        return this.onEventFrame(parseEvent(decodeJson(frame.payload)));
      case FrameType.Ack: {
        const { seq } = parseAck(decodeJson(frame.payload));
        let drop = 0;
        while (drop < this.ring.length && this.ring[drop].seq <= seq) drop++;
        if (drop > 0) this.ring = this.ring.slice(drop);
        return;
      }
      case FrameType.Data:
      case FrameType.Credit:
      case FrameType.Close:
        return this.onStreamFrame(frame);
    }
  }

  private onHostHello(hello: HostHello): void {
    // A resent HELLO of the same session must not reset credits the host already counts on.
    const fresh = hello.session !== this.sessionId || !this.isReady;
    this.sessionId = hello.session;
    if (fresh) for (const s of this.streams.values()) s.resetCredit();
    this.isReady = true;
    this._send(FrameType.Hello, 0, encodeJson({ ...this.guestInfo(), version: PROTOCOL_VERSION, session: hello.session }));
    for (const event of this.ring) this._send(FrameType.Event, 0, encodeJson(event));
    this.afterReady(hello);
  }

  private onGuestHello(hello: GuestHello): void {
    if (hello.session !== this.sessionId || this.isReady) return; // a stale or repeated answer
    if (this.helloTimer !== undefined) this.timers.clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    if (this.peerBootId !== undefined && this.peerBootId !== hello.bootId) {
      // The guest rebooted: its event numbering started over.
      this.deliveredSeq = 0;
      this.ackedSeq = 0;
    }
    this.peerBootId = hello.bootId;
    this.peer = hello;
    this.isReady = true;
    for (const s of this.streams.values()) s.resetCredit();
    if (this.ackedSeq > 0) this._send(FrameType.Ack, 0, encodeJson({ seq: this.ackedSeq }));
    this.afterReady(hello);
  }

  private afterReady(hello: HostHello | GuestHello): void {
    for (const [id, p] of this.pending) if (!p.sent) this.sendRequest(id, p);
    for (const s of this.streams.values()) {
      s.flush();
      s.notifyDrain();
    }
    this.readyListeners.emit(hello);
  }

  private onRequest(req: RequestMessage): void {
    const epoch = this.epoch;
    const reply = (msg: ResponseMessage) => {
      if (this.epoch === epoch) this._send(FrameType.Response, 0, encodeJson(msg));
    };
    const handler = this.handlers.get(req.method);
    if (!handler) {
      reply({ id: req.id, error: { code: 'UNIMPLEMENTED', message: `unknown method ${req.method}` } });
      return;
    }
    const fail = (err: unknown) => {
      const code: RpcCode = err instanceof RpcError ? err.code : 'INTERNAL';
      reply({ id: req.id, error: { code, message: err instanceof Error ? err.message : String(err) } });
    };
    try {
      const out = handler(req.params, req);
      if (out && typeof (out as Promise<unknown>).then === 'function') {
        (out as Promise<Record<string, unknown> | void>).then((result) => reply({ id: req.id, result: result || {} }), fail);
      } else {
        reply({ id: req.id, result: (out as Record<string, unknown> | void) || {} });
      }
    } catch (err) {
      fail(err);
    }
  }

  private onResponse(res: ResponseMessage): void {
    const p = this.pending.get(res.id);
    if (!p || !p.sent) return; // timed out already, or not ours
    this.pending.delete(res.id);
    this.timers.clearTimeout(p.timer);
    if (res.error) p.reject(new RpcError(res.error.code, res.error.message));
    else p.resolve(res.result ?? {});
  }

  private onEventFrame(event: EventMessage): void {
    if (event.seq <= this.deliveredSeq) return; // a replay of one already delivered
    this.deliveredSeq = event.seq;
    this.eventListeners.emit(event);
  }

  private onStreamFrame(frame: Frame): void {
    const s = this.streams.get(frame.stream);
    if (!s) {
      // Late frames for a stream this side already finished are normal after a CLOSE; only DATA is worth a report.
      if (frame.type === FrameType.Data) {
        this.stats.dataDropped += frame.payload.length;
        this._report(new ProtocolError('UNKNOWN_STREAM', `DATA for unknown stream ${frame.stream}; ${frame.payload.length} bytes dropped`));
      }
      return;
    }
    if (frame.type === FrameType.Data) s.receiveData(frame.payload);
    else if (frame.type === FrameType.Close) s.receiveClose();
    else {
      const n = decodeU32(frame.payload);
      if (n === undefined) throw new ProtocolError('BAD_CREDIT', `CREDIT on stream ${frame.stream} has ${frame.payload.length} bytes, not 4`);
      s.receiveCredit(n);
    }
  }
}


