// Prometheus metrics of one sandboxer process. cli.ts loads this module only when --metrics-listen (or
// [metrics] listen) is set, so a sandboxer without metrics never loads prom-client nor times a call.
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CallApi, CallObserver } from './call-observer';
import { ConfigError, StatusCode, messageOf, statusCodeOf } from './errors';
import type { SandboxState } from './sandbox';
import { bindPrivate, prepareSocketPath } from './socket';

export type MetricsAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** `host:port`, `[v6addr]:port`, `:port` (every interface) or an absolute unix socket path. */
export function parseMetricsAddress(value: string): MetricsAddress {
  if (value.startsWith('/')) return { kind: 'unix', path: value };
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError(`metrics listen address must be host:port, [ipv6]:port or an absolute unix socket path, got ${JSON.stringify(value)}`);
  }
  return { kind: 'tcp', host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

const CODE_NAMES = new Map<number, string>(Object.entries(StatusCode).map(([name, code]) => [code, name]));
const codeName = (err: unknown): string => CODE_NAMES.get(statusCodeOf(err)) ?? 'UNKNOWN';

// From a Status (sub-millisecond) to a VM boot under TCG (seconds).
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
// Wait blocks until the sandbox or process exits: its "latency" is a lifetime, which would drown every bucket.
const UNTIMED_METHODS = new Set(['Wait']);


const STATES: readonly SandboxState[] = ['created', 'ready', 'stopped'];

/** The metric families of one sandboxer, in their own registry (labelled with the sandboxer's kind). */
export class SandboxerMetrics implements CallObserver {
  readonly registry = new Registry();
  private readonly controllerLatency: Histogram<'method' | 'code'>;
  private readonly taskLatency: Histogram<'method' | 'code'>;
  private readonly errors: Counter<'api' | 'method' | 'code'>;

  constructor(kind: string, sandboxStates: () => Iterable<SandboxState>) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ sandboxer: kind });
    new Gauge({
      name: 'kuasar_sandboxes',
      help: 'Sandboxes known to this sandboxer, by state (created, ready, stopped)',
      labelNames: ['state'],
      registers,
      // Counted at scrape time from the controller's own table: nothing to keep in step.
      collect() {
        const counts = new Map<SandboxState, number>(STATES.map((s) => [s, 0]));
        for (const s of sandboxStates()) counts.set(s, (counts.get(s) ?? 0) + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    this.controllerLatency = new Histogram({
      name: 'kuasar_controller_request_duration_seconds',
      help: 'Sandbox Controller (containerd.services.sandbox.v1) call latency by method and status code; Wait excluded',
      labelNames: ['method', 'code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.taskLatency = new Histogram({
      name: 'kuasar_task_request_duration_seconds',
      help: 'Task API (containerd.task.v2/v3) call latency by method and status code; Wait excluded',
      labelNames: ['method', 'code'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.errors = new Counter({
      name: 'kuasar_errors_total',
      help: 'Failed Controller and Task API calls by api, method and status code',
      labelNames: ['api', 'method', 'code'],
      registers,
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** Records one finished call; `err` undefined = OK. */
  observe(api: 'controller' | 'task', method: string, startNs: bigint, err?: unknown): void {
    const code = err === undefined ? 'OK' : codeName(err);
    if (err !== undefined) this.errors.inc({ api, method, code });
    if (UNTIMED_METHODS.has(method)) return;
    const seconds = Number(process.hrtime.bigint() - startNs) / 1e9;
    (api === 'controller' ? this.controllerLatency : this.taskLatency).observe({ method, code }, seconds);
  }

  /** CallObserver: times the call and counts its error, if any. */
  around<T>(api: CallApi, method: string, call: () => T): T {
    const start = process.hrtime.bigint();
    let result: T;
    try {
      result = call();
    } catch (err) {
      this.observe(api, method, start, err);
      throw err;
    }
    if (result instanceof Promise) {
      return result.then(
        (value) => {
          this.observe(api, method, start);
          return value;
        },
        (err: unknown) => {
          this.observe(api, method, start, err);
          throw err;
        },
      ) as T;
    }
    this.observe(api, method, start);
    return result;
  }
}

/** The HTTP endpoint Prometheus scrapes: GET /metrics, nothing else. */
export class MetricsServer {
  private constructor(
    private readonly server: http.Server,
    /** Where it listens: `host:port` (the real port when 0 was asked) or the socket path. */
    readonly address: string,
  ) {}

  static async listen(value: string, metrics: SandboxerMetrics, logger: Logger): Promise<MetricsServer> {
    const addr = parseMetricsAddress(value);
    const server = http.createServer((req, res) => {
      const url = (req.url ?? '').split('?')[0];
      if (url !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
        return;
      }
      metrics.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(req.method === 'HEAD' ? undefined : body),
        (err: unknown) => {
          logger.error({ err: messageOf(err) }, 'metrics collection failed');
          res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics collection failed\n');
        },
      );
    });
    server.on('clientError', (_err, socket) => socket.destroy());
    const bind = () =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const done = () => {
          server.off('error', reject);
          resolve();
        };
        if (addr.kind === 'unix') server.listen(addr.path, done);
        else server.listen(addr.port, addr.host, done);
      });
    if (addr.kind === 'unix') {
      await prepareSocketPath(addr.path);
      await bindPrivate(addr.path, bind);
    } else {
      await bind();
    }
    const bound = server.address();
    const address =
      addr.kind === 'unix' ? addr.path : formatHostPort((bound as AddressInfo).address, (bound as AddressInfo).port);
    // Scrapes must never keep the process alive on their own.
    server.unref();
    logger.info({ address }, 'metrics endpoint listening');
    return new MetricsServer(server, address);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.address.startsWith('/')) await fs.rm(this.address, { force: true });
  }
}

function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
