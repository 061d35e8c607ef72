import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Code, FrameDecoder, MessageType, decodeRequest, encodeFrame, encodeResponse } from '@kuasar/ttrpc';
import type { Logger } from 'pino';
import { bindPrivate, prepareSocketPath } from './socket';

/**
 * A relay in front of the task socket, so containerd's task connections outlive a sandboxer crash or restart.
 *
 * containerd keeps one ttrpc connection per task endpoint and parks a long-lived Wait on it for every container.
 * When the sandboxer dies that connection closes: containerd 2.x CRI reads the failed Wait as "container exited
 * (255)" and containerd 1.x runs the shim's delete and drops the task. The relay is a separate small process that
 * containerd connects to instead. It copies frames unchanged between each containerd connection and one upstream
 * connection to `<dir>/task.sock`; when the upstream closes it keeps containerd's side open, reconnects, re-sends
 * the requests still waiting for a reply that are safe to repeat (Wait, State, ...) and answers the others
 * UNAVAILABLE, because it cannot know whether the old sandboxer acted on them.
 */

export const RELAY_SOCKET = 'relay.sock';
export const RELAY_PID_FILE = 'relay.pid';

/** Requests that may be sent twice: reads, and Kill (a second signal to a process is harmless or a no-op). */
const REPEATABLE = new Set(['Wait', 'State', 'Pids', 'Stats', 'Connect', 'Kill', 'Shutdown']);
/** How long a containerd connection waits for the sandboxer to come back before its pending calls fail. */
const DEFAULT_RECONNECT_MS = 120_000;

export interface TaskRelayOptions {
  /** Where containerd connects. */
  listen: string;
  /** The sandboxer's task socket. */
  upstream: string;
  logger: Logger;
  reconnectMs?: number;
}

interface Pending {
  streamId: number;
  method: string;
  raw: Buffer;
}

function statusFrame(streamId: number, code: number, message: string): Buffer {
  return encodeFrame(streamId, MessageType.RESPONSE, 0, encodeResponse({ status: { code, message, details: [] }, payload: new Uint8Array(0) }));
}

/** One containerd connection and its upstream. */
class RelayedConnection {
  private up: net.Socket | undefined;
  private readonly pending = new Map<number, Pending>();
  /** Frames waiting for an upstream: requests that arrived while it was down, and the replayed ones. */
  private queue: Pending[] = [];
  private closed = false;
  private downSince: number | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly down: net.Socket,
    private readonly o: Required<Omit<TaskRelayOptions, 'listen'>>,
  ) {
    const dec = new FrameDecoder();
    down.on('data', (chunk: Buffer) => {
      for (const f of dec.push(chunk)) this.fromContainerd(f.streamId, f.type, f.flags, f.data);
    });
    down.on('error', () => undefined);
    down.on('close', () => this.close());
    this.connect();
  }

  private fromContainerd(streamId: number, type: number, flags: number, data: Buffer): void {
    const raw = encodeFrame(streamId, type, flags, data);
    let method = '';
    if (type === MessageType.REQUEST) {
      try {
        method = decodeRequest(data).method;
      } catch {
        method = ''; // the sandboxer answers the malformed request itself
      }
      const p = { streamId, method, raw };
      this.pending.set(streamId, p);
      if (this.up) this.up.write(raw);
      else this.queue.push(p);
      return;
    }
    // Stream data (the task API has none today) cannot be replayed; pass it on while connected.
    if (this.up) this.up.write(raw);
  }

  private connect(): void {
    if (this.closed) return;
    const up = net.connect(this.o.upstream);
    const dec = new FrameDecoder();
    up.once('connect', () => {
      if (this.closed) {
        up.destroy();
        return;
      }
      if (this.downSince !== undefined) this.o.logger.info({ replayed: this.queue.map((p) => p.method), downMs: Date.now() - this.downSince }, 'task relay reconnected');
      this.downSince = undefined;
      this.up = up;
      // The server wants increasing stream ids on a connection: replayed and queued requests go in id order.
      const queued = this.queue.sort((a, b) => a.streamId - b.streamId);
      this.queue = [];
      for (const p of queued) up.write(p.raw);
    });
    up.on('data', (chunk: Buffer) => {
      for (const f of dec.push(chunk)) {
        if (f.type === MessageType.RESPONSE) this.pending.delete(f.streamId);
        this.down.write(encodeFrame(f.streamId, f.type, f.flags, f.data));
      }
    });
    up.on('error', () => undefined);
    up.once('close', () => this.upstreamClosed(up));
  }

  private upstreamClosed(up: net.Socket): void {
    const wasUp = this.up === up;
    this.up = undefined;
    if (this.closed) return;
    if (wasUp) {
      this.downSince = Date.now();
      const inFlight = [...this.pending.values()].filter((p) => !this.queue.includes(p));
      for (const p of inFlight) {
        if (REPEATABLE.has(p.method)) {
          this.queue.push(p);
        } else {
          this.pending.delete(p.streamId);
          this.down.write(statusFrame(p.streamId, Code.UNAVAILABLE, `sandboxer restarted while handling ${p.method || 'a request'}; retry`));
        }
      }
      this.o.logger.warn({ requeued: this.queue.map((p) => p.method) }, 'task relay: sandboxer connection lost; reconnecting');
    }
    this.downSince ??= Date.now();
    if (Date.now() - this.downSince > this.o.reconnectMs) {
      for (const p of this.queue) this.down.write(statusFrame(p.streamId, Code.UNAVAILABLE, `sandboxer at ${this.o.upstream} is not reachable`));
      this.o.logger.error({ upstream: this.o.upstream }, 'task relay: sandboxer did not come back; closing the connection');
      this.close();
      return;
    }
    this.retry = setTimeout(() => this.connect(), 100);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.up?.destroy();
    this.down.destroy();
  }
}

/** Serves the relay until `close()`. */
export class TaskRelay {
  private readonly conns = new Set<RelayedConnection>();

  private constructor(
    private readonly server: net.Server,
    readonly listen: string,
  ) {}

  static async start(o: TaskRelayOptions): Promise<TaskRelay> {
    const opts = { upstream: o.upstream, logger: o.logger, reconnectMs: o.reconnectMs ?? DEFAULT_RECONNECT_MS };
    await prepareSocketPath(o.listen);
    let relay!: TaskRelay;
    const server = net.createServer((sock) => {
      const c = new RelayedConnection(sock, opts);
      relay.conns.add(c);
      sock.once('close', () => relay.conns.delete(c));
    });
    relay = new TaskRelay(server, o.listen);
    await bindPrivate(o.listen, () => new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.listen, () => {
        server.off('error', reject);
        resolve();
      });
    }));
    return relay;
  }

  get connections(): number {
    return this.conns.size;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.close();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.setTimeout(2000, () => { s.destroy(); resolve(true); });
  });
}

/**
 * The relay main loop (`<sandboxer> --task-relay --dir <dir>`): serves `<dir>/relay.sock` → `<dir>/task.sock` and
 * exits on SIGTERM/SIGINT, or when its socket file is gone (the state dir was removed).
 */
export async function runTaskRelay(dir: string, logger: Logger): Promise<void> {
  const listen = path.join(dir, RELAY_SOCKET);
  const relay = await TaskRelay.start({ listen, upstream: path.join(dir, 'task.sock'), logger });
  fs.writeFileSync(path.join(dir, RELAY_PID_FILE), `${process.pid}\n`);
  logger.info({ listen }, 'task relay listening');
  const stop = (why: string): void => {
    clearInterval(watch);
    logger.info({ why }, 'task relay stopping');
    void relay.close().finally(() => process.exit(0));
  };
  const watch = setInterval(() => {
    if (!fs.existsSync(listen)) stop('socket removed');
  }, 2000);
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

/**
 * Makes sure a relay serves `<dir>/relay.sock`: reuses a live one (it outlived the previous sandboxer, which is its
 * point), else starts `command` detached in its own session so it survives this process. Returns the socket path.
 */
export async function ensureTaskRelay(dir: string, command: string[], logger: Logger, timeoutMs = 10_000): Promise<string> {
  const listen = path.join(dir, RELAY_SOCKET);
  if (await answers(listen)) {
    logger.info({ listen }, 'task relay already running; reusing it');
    return listen;
  }
  const [bin, ...args] = command;
  const child = spawn(bin!, args, { detached: true, stdio: ['ignore', 'ignore', 'inherit'] });
  child.unref();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (await answers(listen)) return listen;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`task relay did not start on ${listen} (exit ${child.exitCode ?? child.signalCode ?? 'none'})`);
}
