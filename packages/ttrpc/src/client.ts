import net from 'node:net';
import type { Duplex } from 'node:stream';
import { encodeFrame, Flag, Frame, FrameDecoder, MAX_MESSAGE_SIZE, MessageType } from './frame';
import { decodeResponse, encodeRequest, Metadata, MetadataInit, Response, toMetadata } from './messages';
import { NAMESPACE_KEY } from './metadata';
import { Code, TtrpcError } from './status';
import { FrameWriter, Logger, MessageQueue, ReadGate, silentLogger } from './transport';

export interface ClientOptions {
  /** Frame data limit in both directions (default 4 MiB, as Go). */
  maxMessageSize?: number;
  /** Messages buffered per incoming stream before reading pauses (default 64). */
  streamHighWater?: number;
  /** Metadata sent with every call (per-call metadata is merged over it, per key). */
  metadata?: MetadataInit;
  logger?: Logger;
}

export interface CallOptions {
  /** Relative deadline; sent as timeout_nano and enforced locally with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  /** Aborting rejects the call with CANCELLED (the server is not told: ttrpc has no cancel frame). */
  signal?: AbortSignal;
  metadata?: MetadataInit;
  /** Shorthand for metadata `containerd-namespace-ttrpc`. */
  namespace?: string;
}

export interface StreamOptions extends CallOptions {
  clientStreaming: boolean;
  serverStreaming: boolean;
  /** Initial request message carried in the Request frame (required in practice for server-only streaming). */
  request?: Uint8Array;
}

interface Pending {
  onResponse(res: Response): void;
  onData(frame: Frame): void;
  fail(err: TtrpcError): void;
}

const EMPTY = new Uint8Array(0);

/** A ttrpc client multiplexing calls over one connection. */
export class TtrpcClient {
  private readonly decoder: FrameDecoder;
  private readonly writer: FrameWriter;
  private readonly gate: ReadGate;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: TtrpcError | null = null;
  private closeListeners: ((err: TtrpcError) => void)[] = [];
  private readonly maxMessageSize: number;
  private readonly streamHighWater: number;
  private readonly baseMetadata: Metadata;
  private readonly log: Logger;

  constructor(private readonly socket: Duplex, options: ClientOptions = {}) {
    this.maxMessageSize = options.maxMessageSize ?? MAX_MESSAGE_SIZE;
    this.streamHighWater = options.streamHighWater ?? 64;
    this.baseMetadata = toMetadata(options.metadata);
    this.log = options.logger ?? silentLogger;
    this.decoder = new FrameDecoder(this.maxMessageSize);
    this.gate = new ReadGate(socket);
    this.writer = new FrameWriter(socket, () => {});
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: Error) => this.log.debug({ err }, 'ttrpc: client connection error'));
    socket.on('end', () => this.shutdown(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: connection closed by server')));
    socket.on('close', () => this.shutdown(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: connection closed')));
  }

  /** Connect to `path` or `unix://path`. */
  static connect(address: string, options: ClientOptions = {}): Promise<TtrpcClient> {
    const path = address.startsWith('unix://') ? address.slice('unix://'.length) : address;
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      const onError = (err: Error) => reject(new TtrpcError(Code.UNAVAILABLE, `ttrpc: dial ${path}: ${err.message}`));
      sock.once('error', onError);
      sock.once('connect', () => {
        sock.off('error', onError);
        resolve(new TtrpcClient(sock, options));
      });
    });
  }

  get closed(): boolean {
    return this.closedError !== null;
  }

  /** Called once when the connection goes away (also after `close()`). */
  onClose(listener: (err: TtrpcError) => void): void {
    if (this.closedError) listener(this.closedError);
    else this.closeListeners.push(listener);
  }

  /** Unary call with raw payload bytes. */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const started = this.begin(service, method, payload, 0, opts, reject);
      if (!started) return;
      const { id, cleanup } = started;
      this.pending.set(id, {
        onResponse: (res) => {
          cleanup();
          const st = res.status;
          if (st && st.code !== Code.OK) reject(new TtrpcError(st.code, st.message, st.details));
          else resolve(res.payload);
        },
        onData: () => {
          cleanup();
          reject(new TtrpcError(Code.INTERNAL, 'ttrpc: unexpected data frame for unary call'));
        },
        fail: (err) => {
          cleanup();
          reject(err);
        },
      });
    });
  }

  /** Open a streaming call; see §1.5 of the protocol notes for the frame sequence. */
  stream(service: string, method: string, opts: StreamOptions): ClientStream {
    return new ClientStream(this, service, method, opts);
  }

  /** @internal Allocate a stream id, write the Request, arm deadline/abort. Returns null after rejecting. */
  begin(
    service: string,
    method: string,
    payload: Uint8Array | undefined,
    flags: number,
    opts: CallOptions,
    reject: (err: TtrpcError) => void,
  ): { id: number; cleanup: () => void } | null {
    if (this.closedError) {
      reject(this.closedError);
      return null;
    }
    if (opts.signal?.aborted) {
      reject(new TtrpcError(Code.CANCELLED, 'context canceled'));
      return null;
    }
    if (opts.timeoutMs !== undefined && !(opts.timeoutMs > 0)) {
      reject(new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded'));
      return null;
    }
    const metadata = new Map(this.baseMetadata);
    for (const [k, v] of toMetadata(opts.metadata)) metadata.set(k, v);
    if (opts.namespace !== undefined) metadata.set(NAMESPACE_KEY, [opts.namespace]);
    const timeoutMs = opts.timeoutMs;
    const timeoutNano = timeoutMs !== undefined ? BigInt(Math.ceil(timeoutMs * 1e6)) : 0n;
    let data: Uint8Array;
    try {
      data = encodeRequest({ service, method, payload, timeoutNano, metadata });
    } catch (err) {
      reject(new TtrpcError(Code.INTERNAL, `ttrpc: encode request: ${(err as Error).message}`));
      return null;
    }
    if (data.length > this.maxMessageSize) {
      reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${data.length} exceed maximum message size of ${this.maxMessageSize}`));
      return null;
    }
    if (this.nextId > 0xffffffff) {
      reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, 'ttrpc: stream ids exhausted; reconnect'));
      return null;
    }
    const id = this.nextId;
    this.nextId += 2;

    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => this.abandon(id, new TtrpcError(Code.CANCELLED, 'context canceled'));
    const cleanup = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      opts.signal?.removeEventListener('abort', onAbort);
      this.pending.delete(id);
    };
    // Beyond setTimeout's 2^31-1 ms range Node would fire after 1 ms; such a deadline is effectively none locally.
    if (timeoutMs !== undefined && timeoutMs <= 2 ** 31 - 1) {
      // The call is forgotten locally; a late Response for this id is dropped on arrival.
      timer = setTimeout(() => this.abandon(id, new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded')), timeoutMs);
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    this.writer.send(encodeFrame(id, MessageType.REQUEST, flags, data)).catch((err: Error) => {
      this.abandon(id, err instanceof TtrpcError ? err : new TtrpcError(Code.UNAVAILABLE, err.message));
    });
    return { id, cleanup };
  }

  /** @internal */
  register(id: number, p: Pending): void {
    this.pending.set(id, p);
  }

  /** @internal */
  sendFrame(id: number, flags: number, data: Uint8Array): Promise<void> {
    if (this.closedError) return Promise.reject(this.closedError);
    if (data.length > this.maxMessageSize) {
      return Promise.reject(new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${data.length} exceed maximum message size of ${this.maxMessageSize}`));
    }
    return this.writer.send(encodeFrame(id, MessageType.DATA, flags, data));
  }

  /** @internal */
  newQueue(): MessageQueue {
    const q: MessageQueue = new MessageQueue(this.streamHighWater, (full) => this.gate.set(q, full));
    return q;
  }

  private abandon(id: number, err: TtrpcError): void {
    this.pending.get(id)?.fail(err);
  }

  private onData(chunk: Buffer): void {
    for (const f of this.decoder.push(chunk)) {
      try {
        this.onFrame(f);
      } catch (err) {
        this.log.error({ err, streamId: f.streamId }, 'ttrpc: client frame handling failed');
      }
    }
  }

  private onFrame(f: Frame): void {
    const p = this.pending.get(f.streamId);
    if (!p) return; // late reply for a forgotten call, or a stray id: ignore, as Go does
    if (f.oversized) {
      p.fail(new TtrpcError(Code.RESOURCE_EXHAUSTED, `message length ${f.length} exceed maximum message size of ${this.maxMessageSize}`));
      return;
    }
    if (f.type === MessageType.RESPONSE) {
      let res: Response;
      try {
        res = decodeResponse(f.data);
      } catch (err) {
        p.fail(new TtrpcError(Code.INTERNAL, `ttrpc: malformed response: ${(err as Error).message}`));
        return;
      }
      p.onResponse(res);
    } else if (f.type === MessageType.DATA) {
      p.onData(f);
    }
  }

  private shutdown(err: TtrpcError): void {
    if (this.closedError) return;
    this.closedError = err;
    this.writer.fail(err);
    for (const p of [...this.pending.values()]) p.fail(err);
    this.pending.clear();
    if (!this.socket.destroyed) this.socket.destroy();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const l of listeners) l(err);
  }

  /** Close the connection; pending calls reject with UNAVAILABLE. */
  async close(): Promise<void> {
    if (this.socket.destroyed) {
      this.shutdown(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: client closed'));
      return;
    }
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.shutdown(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: client closed'));
    await closed;
  }
}

/**
 * Client side of a streaming call. Iterate it for the server's messages; `send`/`closeSend` for the client's side;
 * `response` settles with the final Response payload (client-only streaming) or empty when the server closes its stream.
 */
export class ClientStream implements AsyncIterable<Uint8Array> {
  readonly response: Promise<Uint8Array>;
  private readonly queue: MessageQueue;
  private id = 0;
  private localClosed: boolean;
  private done = false;
  private cleanup: () => void = () => {};
  private readonly finish: (err: TtrpcError | null, payload?: Uint8Array) => void;

  constructor(private readonly client: TtrpcClient, service: string, method: string, opts: StreamOptions) {
    this.queue = client.newQueue();
    this.localClosed = !opts.clientStreaming;
    let resolveRes!: (b: Uint8Array) => void;
    let rejectRes!: (e: TtrpcError) => void;
    this.response = new Promise<Uint8Array>((res, rej) => {
      resolveRes = res;
      rejectRes = rej;
    });
    this.response.catch(() => {}); // errors also surface through iteration; don't make unobserved ones fatal
    const finish = (err: TtrpcError | null, payload: Uint8Array = EMPTY) => {
      if (this.done) return;
      this.done = true;
      this.cleanup();
      if (err) {
        this.queue.end(err);
        rejectRes(err);
      } else {
        this.queue.end();
        resolveRes(payload);
      }
    };
    this.finish = finish;
    const flags = opts.clientStreaming ? Flag.REMOTE_OPEN : Flag.REMOTE_CLOSED;
    const started = client.begin(service, method, opts.request, flags, opts, (err) => finish(err));
    if (!started) return;
    this.id = started.id;
    this.cleanup = started.cleanup;
    client.register(this.id, {
      onResponse: (res) => {
        const st = res.status;
        if (st && st.code !== Code.OK) finish(new TtrpcError(st.code, st.message, st.details));
        else finish(null, res.payload);
      },
      onData: (f) => {
        if ((f.flags & Flag.NO_DATA) === 0) this.queue.push(f.data);
        if ((f.flags & Flag.REMOTE_CLOSED) !== 0) finish(null);
      },
      fail: (err) => finish(err),
    });
  }

  /** Send one message; resolves when the socket can take more (await it to respect backpressure). */
  send(msg: Uint8Array): Promise<void> {
    if (this.localClosed) return Promise.reject(new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: send on closed stream'));
    if (this.done) return Promise.reject(new TtrpcError(Code.CANCELLED, 'ttrpc: stream finished'));
    return this.client.sendFrame(this.id, 0, msg);
  }

  /** Tell the server the client will send no more messages (Data with remote-closed|no-data). */
  closeSend(): Promise<void> {
    if (this.localClosed || this.done) return Promise.resolve();
    this.localClosed = true;
    return this.client.sendFrame(this.id, Flag.REMOTE_CLOSED | Flag.NO_DATA, EMPTY);
  }

  /** Give up locally (CANCELLED); the server is not told, as ttrpc has no cancel frame. */
  cancel(): void {
    this.finish(new TtrpcError(Code.CANCELLED, 'context canceled'));
    this.queue.discard(); // unread messages would otherwise keep the connection's reading paused
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.queue[Symbol.asyncIterator]();
  }
}
