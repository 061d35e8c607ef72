// The host end of one VM's agent channel: QEMU's chardev socket <sandbox dir>/agent.sock carrying the
// @kuasar/vmm-protocol Session. The Session outlives connections; this reconnects whenever the socket drops while
// the VM lives (QEMU accepts one client at a time, and a new sandboxer process is a new client).
import { createConnection, type Socket } from 'node:net';
import { RpcError, Session, type EventMessage, type GuestHello, type RpcCode } from '@kuasar/vmm-protocol';
import { Code, TtrpcError } from '@kuasar/task';
import type { Logger } from '@kuasar/sandbox';

const RECONNECT_MS = 100;

/** gRPC code names from the guest → the numbers the Task API carries. */
const CODES: Record<RpcCode, Code> = {
  NOT_FOUND: Code.NOT_FOUND,
  ALREADY_EXISTS: Code.ALREADY_EXISTS,
  INVALID_ARGUMENT: Code.INVALID_ARGUMENT,
  FAILED_PRECONDITION: Code.FAILED_PRECONDITION,
  UNIMPLEMENTED: Code.UNIMPLEMENTED,
  INTERNAL: Code.INTERNAL,
  DEADLINE_EXCEEDED: Code.DEADLINE_EXCEEDED,
  UNAVAILABLE: Code.UNAVAILABLE,
};

/** A guest failure as the Task API reports it (containerd branches on NOT_FOUND, FAILED_PRECONDITION, ...). */
export function toTtrpcError(err: unknown, what: string): TtrpcError {
  if (err instanceof TtrpcError) return err;
  if (err instanceof RpcError) return new TtrpcError(CODES[err.code] ?? Code.INTERNAL, `guest ${what}: ${err.message}`);
  return new TtrpcError(Code.INTERNAL, `guest ${what}: ${err instanceof Error ? err.message : String(err)}`);
}

export interface AgentConnectionOptions {
  socketPath: string;
  logger: Logger;
  /** default request timeout (TCG guests are slow; crun create takes ~0.5 s of guest time) */
  requestTimeoutMs?: number;
}

export class AgentConnection {
  readonly session: Session;
  private readonly socketPath: string;
  private readonly logger: Logger;
  private socket: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(o: AgentConnectionOptions) {
    this.socketPath = o.socketPath;
    this.logger = o.logger.child({ component: 'agent' });
    // the guest drops a HELLO that arrives before its agent opened the port, so it is resent often until answered
    this.session = new Session({ role: 'host', requestTimeoutMs: o.requestTimeoutMs ?? 60_000, helloRetryMs: 250 });
    this.session.onProtocolError((err) => this.logger.warn({ code: err.code, err: err.message }, 'agent protocol error'));
    this.session.onReady((h) => {
      const hello = h as GuestHello;
      this.logger.debug({ agent: hello.agent, kernel: hello.kernelRelease, uptimeMs: hello.uptimeMs }, 'agent session ready');
    });
    this.connect();
  }

  get hello(): GuestHello | undefined {
    return this.session.peer;
  }

  /** HELLO of the current connection; rejects after `timeoutMs`. */
  async ready(timeoutMs: number): Promise<GuestHello> {
    await this.session.whenReady(timeoutMs);
    return this.session.peer!;
  }

  /** One request; guest errors become TtrpcErrors with the matching code. */
  async call<R = Record<string, unknown>>(method: string, params: Record<string, unknown>, timeoutMs?: number): Promise<R> {
    if (this.closed) throw new TtrpcError(Code.UNAVAILABLE, `agent channel closed (${method})`);
    try {
      return await this.session.request<R>(method, params, timeoutMs !== undefined ? { timeoutMs } : {});
    } catch (err) {
      throw toTtrpcError(err, method);
    }
  }

  onEvent(fn: (e: EventMessage) => void): void {
    this.session.onEvent(fn);
  }

  /** Stops reconnecting and drops the connection; the guest keeps its state for the next client. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.socket?.destroy();
    this.session.dispose();
  }

  private connect(): void {
    if (this.closed) return;
    const socket = createConnection(this.socketPath);
    this.socket = socket;
    socket.once('connect', () => {
      this.session.attach({ write: (bytes) => void socket.write(bytes) });
    });
    socket.on('data', (chunk: Buffer) => this.session.receive(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)));
    socket.on('error', () => undefined); // 'close' follows
    socket.once('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.session.detach();
      if (this.closed) return;
      // QEMU not listening yet (just launched) or the connection dropped: try again while the VM lives
      this.timer = setTimeout(() => this.connect(), RECONNECT_MS);
      this.timer.unref();
    });
  }
}
