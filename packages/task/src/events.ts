// Task events to containerd: ttrpc containerd.services.events.ttrpc.v1.Events/Forward at TTRPC_ADDRESS.
// One FIFO queue and one sender keep events in publish order (so per container too: TaskStart is always
// published before that process's TaskExit because the core publishes it first). publish() only enqueues, so a
// slow or absent containerd never blocks a task operation (sending starts a millisecond later, off the RPC path); a failed Forward is retried (reconnecting) a few times
// with growing pauses, then dropped with an error log, like containerd-shim-runc-v2.
import { eventsTtrpc, timestampFromDate, type TaskEventTopic, type google } from '@kuasar/api';
import { TtrpcClient, createClient, type ServiceClient } from '@kuasar/ttrpc';
import type { Logger } from 'pino';

export const DEFAULT_TTRPC_ADDRESS = '/run/containerd/containerd.sock.ttrpc';
/** how long an event waits before sending starts, so the task calls that follow each other go first (see publish) */
const SEND_DELAY_MS = 1;

/** What the task core needs from an event sink. */
export interface Publisher {
  /** enqueue; never blocks and never throws */
  publish(namespace: string, topic: TaskEventTopic, event: google.Any): void;
  close(): Promise<void>;
}

export interface EventPublisherOptions {
  /** containerd's ttrpc socket; default $TTRPC_ADDRESS, else /run/containerd/containerd.sock.ttrpc (unix:// stripped) */
  address?: string;
  logger: Logger;
  /** queued events beyond this are dropped (default 2048) */
  queueSize?: number;
  /** attempts per event before it is dropped (default 5) */
  maxAttempts?: number;
  /** per-Forward timeout (default 5 s) */
  timeoutMs?: number;
  /** first retry pause; doubles per attempt (default 100 ms) */
  retryDelayMs?: number;
}

interface QueuedEvent {
  namespace: string;
  topic: TaskEventTopic;
  event: google.Any;
  timestamp: Date;
  attempts: number;
}

export function ttrpcAddress(address?: string): string {
  const a = address || process.env['TTRPC_ADDRESS'] || DEFAULT_TTRPC_ADDRESS;
  return a.startsWith('unix://') ? a.slice('unix://'.length) : a;
}

export class EventPublisher implements Publisher {
  readonly address: string;
  private readonly logger: Logger;
  private readonly queueSize: number;
  private readonly maxAttempts: number;
  private readonly timeoutMs: number;
  private readonly retryDelayMs: number;
  private readonly queue: QueuedEvent[] = [];
  private client: TtrpcClient | undefined;
  private events: ServiceClient<typeof eventsTtrpc.EventsDefinition> | undefined;
  private sending = false;
  private closed = false;
  private idle: (() => void)[] = [];
  private wake: (() => void) | undefined;

  constructor(o: EventPublisherOptions) {
    this.address = ttrpcAddress(o.address);
    this.logger = o.logger.child({ component: 'events' });
    this.queueSize = o.queueSize ?? 2048;
    this.maxAttempts = o.maxAttempts ?? 5;
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.retryDelayMs = o.retryDelayMs ?? 100;
  }

  publish(namespace: string, topic: TaskEventTopic, event: google.Any): void {
    if (this.closed) return;
    if (this.queue.length >= this.queueSize) {
      this.logger.error({ topic, namespace, queued: this.queue.length }, 'event queue full, dropping event');
      return;
    }
    this.queue.push({ namespace, topic, event, timestamp: new Date(), attempts: 0 });
    if (!this.sending) {
      // Not from here: the first Forward's encode and write would run inside the caller's RPC, before its reply.
      // Nor right after it: containerd sends Start ~0.2 ms after Create's reply, and would wait behind the Forward.
      // (containerd's shims, too, forward events from another goroutine, never in the call that caused them.)
      this.sending = true;
      setTimeout(() => void this.drain(), SEND_DELAY_MS);
    }
  }

  /** Resolves once everything queued so far was sent or dropped (for tests and orderly shutdown). */
  flush(): Promise<void> {
    if (this.queue.length === 0 && !this.sending) return Promise.resolve();
    return new Promise((resolve) => this.idle.push(resolve));
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Tries to deliver what is queued for up to `timeoutMs`, then drops the rest and disconnects. */
  async close(timeoutMs = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise((r) => (timer = setTimeout(r, timeoutMs).unref()))]);
    // a closed publisher leaves no handle behind (the sandboxer's close() promises that)
    clearTimeout(timer);
    this.closed = true;
    this.queue.length = 0;
    this.wake?.();
    this.disconnect();
    for (const f of this.idle.splice(0)) f();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        const e = this.queue[0]!;
        try {
          await this.forward(e);
          this.queue.shift();
        } catch (err) {
          e.attempts++;
          this.disconnect();
          if (e.attempts >= this.maxAttempts) {
            this.logger.error({ topic: e.topic, namespace: e.namespace, err: (err as Error).message, attempts: e.attempts },
              'dropping event after repeated forward failures');
            this.queue.shift();
            continue;
          }
          this.logger.warn({ topic: e.topic, err: (err as Error).message, attempt: e.attempts }, 'event forward failed, retrying');
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, this.retryDelayMs * 2 ** (e.attempts - 1));
            this.wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
          this.wake = undefined;
        }
      }
    } finally {
      this.sending = false;
      if (this.queue.length === 0 || this.closed) for (const f of this.idle.splice(0)) f();
    }
  }

  private async forward(e: QueuedEvent): Promise<void> {
    if (!this.events) {
      this.client = await TtrpcClient.connect(this.address, { logger: this.logger });
      this.events = createClient(eventsTtrpc.EventsDefinition, this.client);
    }
    await this.events.forward(
      { envelope: { timestamp: timestampFromDate(e.timestamp), namespace: e.namespace, topic: e.topic, event: e.event } },
      { timeoutMs: this.timeoutMs, namespace: e.namespace },
    );
  }

  private disconnect(): void {
    const c = this.client;
    this.client = undefined;
    this.events = undefined;
    if (c) void c.close().catch(() => undefined);
  }
}
