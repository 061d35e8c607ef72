// --metrics-listen: a real sandboxer (framework + SleepKind + the runc engine's task server) serving Prometheus
// metrics on a random loopback port, scraped over HTTP after real Controller and Task API calls.
import * as grpc from '@grpc/grpc-js';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { ConfigError, buildCommand, createLogger, parseSandboxerConfig, startSandboxer } from '../src';
import { parseMetricsAddress } from '../src/metrics';
import { isRunning } from '@kuasar/sys';
import { EMPTY_SCHEMA, LogCapture, createRequest, rpc, sleepSandboxerSpec, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(30_000);

const schema = EMPTY_SCHEMA;
const spec = sleepSandboxerSpec;

function get(target: { port?: number; socketPath?: string }, urlPath: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', ...target, path: urlPath, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The value of one sample, matched by name and labels (any order, sandboxer label included). */
function sample(body: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...m[2]!.matchAll(/([a-zA-Z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

test('--metrics-listen is in the help and [metrics] listen in the config schema', () => {
  expect(buildCommand({ kind: 'test', version: '1', description: 'd' }).helpInformation()).toContain('--metrics-listen <addr>');
  expect(parseSandboxerConfig('test', schema, '').metrics).toEqual({ listen: '' });
  expect(parseSandboxerConfig('test', schema, '[metrics]\nlisten = "127.0.0.1:9464"\n').metrics).toEqual({ listen: '127.0.0.1:9464' });
  expect(() => parseSandboxerConfig('test', schema, '[metrics]\nport = 1\n')).toThrow(/unknown key "metrics.port"/);
});

test('metrics addresses: host:port, [v6]:port, :port, unix path; anything else is a ConfigError', () => {
  expect(parseMetricsAddress('127.0.0.1:9464')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9464 });
  expect(parseMetricsAddress('localhost:0')).toEqual({ kind: 'tcp', host: 'localhost', port: 0 });
  expect(parseMetricsAddress('[::1]:9464')).toEqual({ kind: 'tcp', host: '::1', port: 9464 });
  expect(parseMetricsAddress(':9464')).toEqual({ kind: 'tcp', host: '0.0.0.0', port: 9464 });
  expect(parseMetricsAddress('/run/kuasar/metrics.sock')).toEqual({ kind: 'unix', path: '/run/kuasar/metrics.sock' });
  for (const bad of ['9464', 'host:99999', 'http://x:1', 'relative/path.sock', '::1:9464', 'a b:1']) {
    expect(() => parseMetricsAddress(bad)).toThrow(ConfigError);
  }
});

test('a bad --metrics-listen fails the start before any socket exists', async () => {
  const root = tempDir('kuasar-metrics-bad-');
  const listen = path.join(root, 'c.sock');
  await expect(
    startSandboxer(spec(new SleepKind()), { listen, dir: path.join(root, 'state'), metricsListen: 'nope' }, createLogger({ level: 'fatal' })),
  ).rejects.toThrow(ConfigError);
  expect(await connects(listen)).toBe(false);
});

test('without --metrics-listen there is no endpoint', async () => {
  const root = tempDir('kuasar-metrics-off-');
  const running = await startSandboxer(spec(new SleepKind()), { listen: path.join(root, 'c.sock'), dir: path.join(root, 'state') }, createLogger({ level: 'fatal' }));
  try {
    expect(running.metrics).toBeUndefined();
  } finally {
    await running.close();
  }
});

test('prom-client is loaded only when metrics are asked for', async () => {
  const root = tempDir('kuasar-metrics-lazy-');
  let loads = 0;
  await jest.isolateModulesAsync(async () => {
    // Counts the loads and hands out the real module.
    jest.doMock('prom-client', () => {
      loads += 1;
      return jest.requireActual('prom-client');
    });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fresh = require('../src') as typeof import('../src');
    const log = fresh.createLogger({ level: 'fatal' });
    const off = await fresh.startSandboxer(spec(new SleepKind()), { listen: path.join(root, 'a.sock'), dir: path.join(root, 'a') }, log);
    await off.close();
    expect(loads).toBe(0);
    const on = await fresh.startSandboxer(
      spec(new SleepKind()),
      { listen: path.join(root, 'b.sock'), dir: path.join(root, 'b'), metricsListen: '127.0.0.1:0' },
      log,
    );
    await on.close();
    expect(loads).toBe(1);
  });
});

test('sandboxes by state, Controller and Task latency by method and code, errors', async () => {
  const root = tempDir('kuasar-metrics-');
  const listen = path.join(root, 'controller.sock');
  const dir = path.join(root, 'state');
  const kind = new SleepKind();
  const logs = new LogCapture();
  const running = await startSandboxer(spec(kind), { listen, dir, metricsListen: '127.0.0.1:0' }, createLogger({ level: 'debug', destination: logs }));
  const client = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
  let pid = 0;
  try {
    expect(running.metrics).toBeDefined();
    const port = Number(/^127\.0\.0\.1:(\d+)$/.exec(running.metrics!.address)![1]);
    expect(port).toBeGreaterThan(0);
    expect(logs.find('metrics endpoint listening')).toMatchObject({ address: running.metrics!.address });

    const before = await get({ port }, '/metrics');
    expect(before.status).toBe(200);
    expect(before.type).toContain('text/plain');
    expect(sample(before.body, 'kuasar_sandboxes', { sandboxer: 'test', state: 'ready' })).toBe(0);

    await rpc(client, 'create', createRequest('m-pod'));
    const afterCreate = await get({ port }, '/metrics');
    expect(sample(afterCreate.body, 'kuasar_sandboxes', { state: 'created' })).toBe(1);

    const started = await rpc(client, 'start', { sandboxId: 'm-pod' });
    pid = started.pid;
    await expect(rpc(client, 'start', { sandboxId: 'm-pod' })).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    await expect(rpc(client, 'status', { sandboxId: 'no-such-pod' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });

    // Task API on the address Start handed out: one call that succeeds, one that fails.
    const ttrpc = await TtrpcClient.connect(started.address.replace('ttrpc+unix://', ''));
    const tasks = createClient(task.TaskV3Definition, ttrpc);
    await tasks.connect(task.ConnectRequest.fromPartial({ id: '' }), { namespace: 'k8s.io' }).catch(() => undefined);
    await expect(tasks.state(task.StateRequest.fromPartial({ id: 'no-such-container' }), { namespace: 'k8s.io' })).rejects.toMatchObject({ code: 5 });
    await ttrpc.close();

    const { body } = await get({ port }, '/metrics');
    expect(sample(body, 'kuasar_sandboxes', { state: 'ready' })).toBe(1);
    expect(sample(body, 'kuasar_sandboxes', { state: 'created' })).toBe(0);
    const count = (family: string, labels: Record<string, string>) => sample(body, `${family}_count`, labels);
    expect(count('kuasar_controller_request_duration_seconds', { method: 'Create', code: 'OK' })).toBe(1);
    expect(count('kuasar_controller_request_duration_seconds', { method: 'Start', code: 'OK' })).toBe(1);
    expect(count('kuasar_controller_request_duration_seconds', { method: 'Start', code: 'FAILED_PRECONDITION' })).toBe(1);
    expect(count('kuasar_controller_request_duration_seconds', { method: 'Status', code: 'NOT_FOUND' })).toBe(1);
    // Start ran a real process: its latency is positive and every bucket is cumulative up to +Inf.
    expect(sample(body, 'kuasar_controller_request_duration_seconds_sum', { method: 'Start', code: 'OK' })).toBeGreaterThan(0);
    expect(sample(body, 'kuasar_controller_request_duration_seconds_bucket', { method: 'Start', code: 'OK', le: '+Inf' })).toBe(1);
    expect(count('kuasar_task_request_duration_seconds', { method: 'State', code: 'NOT_FOUND' })).toBe(1);
    expect(sample(body, 'kuasar_errors_total', { api: 'controller', method: 'Start', code: 'FAILED_PRECONDITION' })).toBe(1);
    expect(sample(body, 'kuasar_errors_total', { api: 'controller', method: 'Status', code: 'NOT_FOUND' })).toBe(1);
    expect(sample(body, 'kuasar_errors_total', { api: 'task', method: 'State', code: 'NOT_FOUND' })).toBe(1);
    expect(sample(body, 'kuasar_errors_total', { api: 'controller', method: 'Create' })).toBeUndefined();
    // Node's process metrics come along (same registry, same sandboxer label).
    expect(body).toMatch(/^process_resident_memory_bytes\{sandboxer="test"\} \d+/m);

    // Wait blocks for a lifetime: counted as an error when it fails, never timed.
    await rpc(client, 'shutdown', { sandboxId: 'm-pod' });
    const after = await get({ port }, '/metrics');
    expect(sample(after.body, 'kuasar_sandboxes', { state: 'ready' })).toBe(0);
    expect(sample(after.body, 'kuasar_controller_request_duration_seconds_count', { method: 'Shutdown', code: 'OK' })).toBe(1);
    expect(after.body).not.toMatch(/kuasar_controller_request_duration_seconds_count\{[^}]*method="Wait"/);
    expect(isRunning(pid)).toBe(false);

    expect((await get({ port }, '/')).status).toBe(404);
    expect((await get({ port }, '/metrics', 'POST')).status).toBe(405);
  } finally {
    client.close();
    if (pid && isRunning(pid)) process.kill(pid, 'SIGKILL');
    await running.close();
  }
  // close() takes the endpoint down with the servers.
  const port = Number(running.metrics!.address.split(':')[1]);
  await expect(get({ port }, '/metrics')).rejects.toThrow(/ECONNREFUSED/);
});

test('a unix socket endpoint is private (0600) and removed on close', async () => {
  const root = tempDir('kuasar-metrics-unix-');
  const socketPath = path.join(root, 'metrics.sock');
  const running = await startSandboxer(
    spec(new SleepKind()),
    { listen: path.join(root, 'c.sock'), dir: path.join(root, 'state'), metricsListen: socketPath },
    createLogger({ level: 'fatal' }),
  );
  try {
    expect(running.metrics!.address).toBe(socketPath);
    const { status, body } = await get({ socketPath }, '/metrics');
    expect(status).toBe(200);
    expect(sample(body, 'kuasar_sandboxes', { state: 'ready' })).toBe(0);
    const { statSync } = await import('node:fs');
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
  } finally {
    await running.close();
  }
  expect(await connects(socketPath)).toBe(false);
});

function connects(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}
