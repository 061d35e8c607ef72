import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupsV1, cgroupsV2, unpackAny } from '@kuasar/api';
import { setChildSubreaper } from '@kuasar/sys';
import { OciCliEngine } from '../src/engines/oci-cli';
import { packCgroupMetrics, runtimeStatsToV1, V1_METRICS_TYPE, V2_METRICS_TYPE } from '../src/metrics';
import { createBusyboxBundle } from './helpers/bundle';
import { removeTestCgroups } from './helpers/harness';

beforeAll(() => setChildSubreaper(false)); // nobody reaps here; see oci-cli.test.ts
afterAll(() => removeTestCgroups());

test('packCgroupMetrics: v1 and v2 round-trip through the protobuf messages', () => {
  const v1 = packCgroupMetrics({ mode: 'v1', metrics: { hugetlb: [], pids: { current: 3n, limit: 10n },
    memory: { cache: 1n, usage: { usage: 4096n, limit: 8192n, max: 5000n, failcnt: 0n } } } });
  expect(v1.typeUrl).toBe(V1_METRICS_TYPE);
  const d1 = unpackAny(v1, cgroupsV1.Metrics);
  expect(d1.pids).toEqual({ current: 3n, limit: 10n });
  expect(d1.memory!.usage!.usage).toBe(4096n);
  expect(d1.memory!.cache).toBe(1n);

  const v2 = packCgroupMetrics({ mode: 'v2', metrics: { hugetlb: [], memory: { usage: 7n, anon: 2n }, memoryEvents: { low: 0n, high: 0n, max: 1n, oom: 1n, oomKill: 1n } } });
  expect(v2.typeUrl).toBe(V2_METRICS_TYPE);
  const d2 = unpackAny(v2, cgroupsV2.Metrics);
  expect(d2.memory!.usage).toBe(7n);
  expect(d2.memoryEvents!.oomKill).toBe(1n);
});

test('runtimeStatsToV1 converts real `runc events --stats` output (the path runsc takes)', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kuasar-metrics-'));
  const engine = new OciCliEngine({ binary: 'runc', root });
  const b = createBusyboxBundle({ args: ['sleep', '1000'] });
  const ref = { id: 'stats', namespace: 'm', bundle: b.path };
  try {
    await engine.create(ref, { spec: b.spec, stdio: { terminal: false } });
    await engine.start(ref);
    const line = execFileSync('runc', ['--root', join(root, 'm'), 'events', '--stats', 'stats'], { encoding: 'utf8' });
    const m = runtimeStatsToV1((JSON.parse(line) as { data: unknown }).data);
    expect(m.memory!.usage!.usage).toBeGreaterThan(0n);
    expect(m.pids!.current).toBeGreaterThanOrEqual(1n);
    expect(m.cpu!.usage!.total).toBeGreaterThan(0n);
    // and the cgroup-file reader agrees on what the container is
    const fromFiles = unpackAny(await engine.stats(ref), cgroupsV1.Metrics);
    expect(fromFiles.pids!.current).toBe(m.pids!.current);
  } finally {
    await engine.kill(ref, undefined, 9, true).catch(() => undefined);
    await engine.delete(ref, { force: true });
    b.remove();
    rmSync(root, { recursive: true, force: true });
  }
});
