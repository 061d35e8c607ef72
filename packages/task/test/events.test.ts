import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packTaskEvent } from '@kuasar/api';
import { EventPublisher, ttrpcAddress, DEFAULT_TTRPC_ADDRESS } from '../src/events';
import { EventsSink, logger } from './helpers/harness';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kuasar-ev-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const exit = (containerId: string, exitStatus: number) => packTaskEvent('/tasks/exit', { containerId, id: containerId, pid: 1, exitStatus, exitedAt: undefined });

test('address: explicit, then TTRPC_ADDRESS, then the default; unix:// is stripped', () => {
  const saved = process.env['TTRPC_ADDRESS'];
  try {
    delete process.env['TTRPC_ADDRESS'];
    expect(ttrpcAddress()).toBe(DEFAULT_TTRPC_ADDRESS);
    process.env['TTRPC_ADDRESS'] = 'unix:///run/x/c.sock.ttrpc';
    expect(ttrpcAddress()).toBe('/run/x/c.sock.ttrpc');
    expect(ttrpcAddress('/explicit.sock')).toBe('/explicit.sock');
  } finally {
    if (saved === undefined) delete process.env['TTRPC_ADDRESS'];
    else process.env['TTRPC_ADDRESS'] = saved;
  }
});

test('events published before containerd listens are delivered in order once it does (retry + reconnect)', async () => {
  const path = join(dir, 'events.sock');
  const p = new EventPublisher({ address: path, logger, retryDelayMs: 50, maxAttempts: 10 });
  for (let i = 0; i < 20; i++) p.publish(i % 2 ? 'k8s.io' : 'default', '/tasks/exit', exit(`c${i % 3}`, i));
  expect(p.pending).toBe(20); // publish returned at once although nobody listens
  const sink = new EventsSink(path);
  await new Promise((r) => setTimeout(r, 120));
  await sink.listen();
  await p.flush();
  expect(sink.events.map((e) => (e.decoded.event as { exitStatus: number }).exitStatus)).toEqual([...Array(20).keys()]);
  expect(sink.events.map((e) => e.namespace)).toEqual(sink.events.map((e) => e.metadataNamespace));
  expect(sink.events[1]!.namespace).toBe('k8s.io');
  expect(sink.events.every((e) => e.topic === '/tasks/exit' && e.decoded.typeName === 'containerd.events.TaskExit')).toBe(true);

  // containerd restarts: the publisher reconnects
  await sink.server.close(500);
  const sink2 = new EventsSink(path);
  await sink2.listen();
  p.publish('k8s.io', '/tasks/oom', packTaskEvent('/tasks/oom', { containerId: 'c9' }));
  await p.flush();
  expect(sink2.events.map((e) => e.topic)).toEqual(['/tasks/oom']);
  await p.close();
  await sink2.server.close(500);
});

test('an undeliverable event is dropped after maxAttempts; a full queue drops new events', async () => {
  const p = new EventPublisher({ address: join(dir, 'none.sock'), logger, retryDelayMs: 1, maxAttempts: 3, queueSize: 4 });
  for (let i = 0; i < 10; i++) p.publish('default', '/tasks/exit', exit('c', i));
  expect(p.pending).toBe(4);
  await p.flush();
  expect(p.pending).toBe(0);
  await p.close();
});
