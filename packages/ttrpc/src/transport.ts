/** Pieces shared by client and server connections: ordered writes with backpressure, read pausing, message queues. */
import type { Duplex } from 'node:stream';
import { Code, TtrpcError } from './status';

/** Minimal pino-compatible logger surface; pass a pino instance (or child) to get structured JSON logs. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export const silentLogger: Logger = { debug() {}, warn() {}, error() {} };

/**
 * Writes frames in call order. `send` resolves once the socket is below its high-water mark again, so producers that
 * await it never buffer more than one frame beyond the socket's own buffer.
 */
export class FrameWriter {
  private drainWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private failure: Error | null = null;
  blocked = false;

  constructor(private readonly socket: Duplex, private readonly onBlockedChange: () => void) {
    socket.on('drain', () => {
      this.blocked = false;
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w.resolve();
      this.onBlockedChange();
    });
  }

  send(frame: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.socket.destroyed || !this.socket.writable) {
      return Promise.reject(new TtrpcError(Code.UNAVAILABLE, 'ttrpc: connection closed'));
    }
    const ok = this.socket.write(frame);
    if (ok && !this.blocked) return Promise.resolve();
    if (!this.blocked) {
      this.blocked = true;
      this.onBlockedChange();
    }
    return new Promise((resolve, reject) => this.drainWaiters.push({ resolve, reject }));
  }

  fail(err: Error): void {
    this.failure ??= err;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w.reject(this.failure);
  }
}

/**
 * Pauses the socket while any reason holds (too many in-flight requests, a stream consumer not draining, the
 * outgoing side blocked) so that a peer cannot make us buffer without bound.
 */
export class ReadGate {
  private readonly reasons = new Set<object>();
  private paused = false;

  constructor(private readonly socket: Duplex, private readonly onResume: () => void = () => {}) {}

  set(reason: object, hold: boolean): void {
    if (hold) this.reasons.add(reason);
    else this.reasons.delete(reason);
    const want = this.reasons.size > 0;
    if (want === this.paused) return;
    this.paused = want;
    if (want) this.socket.pause();
    else {
      if (!this.socket.destroyed) this.socket.resume();
      this.onResume();
    }
  }

  get isPaused(): boolean {
    return this.paused;
  }
}

/**
 * Async-iterable queue of incoming messages for one stream. Tells its owner when it holds more than `highWater`
 * messages so the owner can stop reading the socket until the consumer catches up.
 */
export class MessageQueue implements AsyncIterable<Uint8Array> {
  private items: Uint8Array[] = [];
  private waiter: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: Error) => void } | null = null;
  private ended = false;
  private error: Error | null = null;

  constructor(private readonly highWater: number, private readonly onFull: (full: boolean) => void) {}

  get length(): number {
    return this.items.length;
  }

  push(msg: Uint8Array): void {
    if (this.ended) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: msg, done: false });
      return;
    }
    this.items.push(msg);
    if (this.items.length === this.highWater) this.onFull(true);
  }

  /** No more messages; with `err`, consumers see the error after the buffered messages. */
  end(err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    if (err) this.error = err;
    if (this.waiter && this.items.length === 0) {
      const w = this.waiter;
      this.waiter = null;
      if (this.error) w.reject(this.error);
      else w.resolve({ value: undefined, done: true });
    }
    if (this.items.length === 0) this.onFull(false);
  }

  /** Drop everything (consumer went away) and release the read gate. */
  discard(): void {
    this.items = [];
    this.end();
    this.onFull(false);
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const item = this.items.shift();
    if (item !== undefined) {
      if (this.items.length === this.highWater - 1 || this.items.length === 0) this.onFull(this.items.length >= this.highWater);
      return Promise.resolve({ value: item, done: false });
    }
    if (this.ended) {
      return this.error ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiter) return Promise.reject(new Error('ttrpc: concurrent reads on one stream'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return {
      next: () => this.next(),
      return: async () => {
        this.discard();
        return { value: undefined, done: true };
      },
    };
  }
}
