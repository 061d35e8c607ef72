// [tracing] endpoint: a real sandboxer exporting OTLP/HTTP spans to a real HTTP collector (a small server in this
// test that keeps what it receives) after real Controller and Task API calls.
import * as grpc from '@grpc/grpc-js';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { ConfigError, createLogger, parseSandboxerConfig, startSandboxer, tracesEndpoint } from '../src';
import { isRunning } from '@kuasar/sys';
import { EMPTY_SCHEMA, createRequest, rpc, sleepSandboxerSpec, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(30_000);

const schema = EMPTY_SCHEMA;
const spec = sleepSandboxerSpec;

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  status?: { code?: number; message?: string };
  attributes: { key: string; value: { stringValue?: string; intValue?: string | number } }[];
}

/** An OTLP/HTTP JSON traces receiver: every span it was sent, with its resource's service.name. */
async function collector(): Promise<{ url: string; spans: (OtlpSpan & { service: string })[]; posts: string[]; close(): Promise<void> }> {
  const spans: (OtlpSpan & { service: string })[] = [];
  const posts: string[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      posts.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const doc = JSON.parse(body) as {
        resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
      };
      for (const rs of doc.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
        for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ ...s, service });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    posts,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

test('[tracing] endpoint is in the config schema; the OTEL_* variables are the fallback', () => {
  expect(parseSandboxerConfig('test', schema, '').tracing).toEqual({ endpoint: '' });
  expect(parseSandboxerConfig('test', schema, '[tracing]\nendpoint = "http://c:4318/v1/traces"\n').tracing).toEqual({
    endpoint: 'http://c:4318/v1/traces',
  });
  expect(() => parseSandboxerConfig('test', schema, '[tracing]\nurl = "x"\n')).toThrow(/unknown key "tracing.url"/);
  expect(tracesEndpoint('', {})).toBeUndefined();
  expect(tracesEndpoint('http://a/v1/traces', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318' })).toBe('http://a/v1/traces');
  expect(tracesEndpoint('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318/' })).toBe('http://b:4318/v1/traces');
  expect(tracesEndpoint('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t/x' })).toBe('http://t/x');
  expect(tracesEndpoint('', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://b:4318', OTEL_TRACES_EXPORTER: 'none' })).toBeUndefined();
});

test('a tracing endpoint that is not an http(s) URL fails the start', async () => {
  const root = tempDir('kuasar-tracing-bad-');
  const config = path.join(root, 'config.toml');
  for (const bad of ['not a url', 'grpc://127.0.0.1:4317']) {
    fs.writeFileSync(config, `[tracing]\nendpoint = ${JSON.stringify(bad)}\n`);
    await expect(
      startSandboxer(spec(new SleepKind()), { listen: path.join(root, 'c.sock'), dir: path.join(root, 'state'), config }, createLogger({ level: 'fatal' })),
    ).rejects.toThrow(ConfigError);
  }
});

test('the OpenTelemetry SDK is loaded only when tracing is configured', async () => {
  const root = tempDir('kuasar-tracing-lazy-');
  let loads = 0;
  await jest.isolateModulesAsync(async () => {
    jest.doMock('@opentelemetry/sdk-trace', () => {
      loads += 1;
      return jest.requireActual('@opentelemetry/sdk-trace');
    });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fresh = require('../src') as typeof import('../src');
    const off = await fresh.startSandboxer(spec(new SleepKind()), { listen: path.join(root, 'a.sock'), dir: path.join(root, 'a') }, fresh.createLogger({ level: 'fatal' }));
    await off.close();
    expect(loads).toBe(0);
  });
});

test('Controller and Task calls become spans; a Task call continues the trace in its traceparent', async () => {
  const otlp = await collector();
  const root = tempDir('kuasar-tracing-');
  const config = path.join(root, 'config.toml');
  fs.writeFileSync(config, `[tracing]\nendpoint = "${otlp.url}"\n`);
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec(new SleepKind()), { listen, dir: path.join(root, 'state'), config }, createLogger({ level: 'fatal' }));
  const client = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
  let pid = 0;
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const parentSpanId = '00f067aa0ba902b7';
  try {
    await rpc(client, 'create', createRequest('t-pod'));
    const started = await rpc(client, 'start', { sandboxId: 't-pod' });
    pid = started.pid;
    await expect(rpc(client, 'status', { sandboxId: 'no-such-pod' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });

    const ttrpc = await TtrpcClient.connect(started.address.replace('ttrpc+unix://', ''));
    const tasks = createClient(task.TaskV3Definition, ttrpc);
    await expect(
      tasks.state(task.StateRequest.fromPartial({ id: 'no-such-container' }), {
        namespace: 'k8s.io',
        metadata: { traceparent: `00-${traceId}-${parentSpanId}-01` },
      }),
    ).rejects.toMatchObject({ code: 5 });
    await ttrpc.close();
    await rpc(client, 'shutdown', { sandboxId: 't-pod' });
  } finally {
    client.close();
    if (pid && isRunning(pid)) process.kill(pid, 'SIGKILL');
    // close() flushes the spans still batched.
    await running.close();
    await otlp.close();
  }
  expect(otlp.posts.length).toBeGreaterThan(0);
  expect(otlp.posts[0]).toMatch(/^POST \/v1\/traces application\/json/);
  const names = otlp.spans.map((s) => s.name);
  expect(names).toEqual(
    expect.arrayContaining([
      'containerd.services.sandbox.v1.Controller/Create',
      'containerd.services.sandbox.v1.Controller/Start',
      'containerd.services.sandbox.v1.Controller/Status',
      'containerd.services.sandbox.v1.Controller/Shutdown',
      'containerd.task.v3.Task/State',
    ]),
  );
  expect(new Set(otlp.spans.map((s) => s.service))).toEqual(new Set(['kuasar-test-sandboxer']));
  const state = otlp.spans.find((s) => s.name === 'containerd.task.v3.Task/State')!;
  expect(state.traceId).toBe(traceId);
  expect(state.parentSpanId).toBe(parentSpanId);
  expect(state.status?.code).toBe(2); // ERROR
  expect(state.status?.message).toMatch(/^NOT_FOUND: /);
  const create = otlp.spans.find((s) => s.name.endsWith('Controller/Create'))!;
  expect(create.traceId).not.toBe(traceId);
  expect(create.status?.code ?? 0).not.toBe(2);
  const status = otlp.spans.find((s) => s.name.endsWith('Controller/Status'))!;
  expect(status.status?.message).toMatch(/^NOT_FOUND: /);
});
