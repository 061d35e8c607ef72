// packTaskUsage is what the VM and wasm engines answer Stats with: decode its Any with the generated decoders, as
// containerd's CRI does, and check every field it sets (toEqual on the whole message also proves nothing else is set).
import { cgroupsV1, cgroupsV2, unpackAny } from '@kuasar/api';
import { packTaskUsage, V1_METRICS_TYPE, V2_METRICS_TYPE } from '../src/metrics';

const GiB = 2 ** 30;

test('v2: pids, cpu.stat figures and memory usage/limit, in a io.containerd.cgroups.v2.Metrics', () => {
  const any = packTaskUsage('v2', {
    pids: 3, pidsLimit: 128, memoryUsage: 5 * GiB + 1, memoryLimit: 8 * GiB,
    cpu: { usageUsec: 1_500_000, userUsec: 1_000_000, systemUsec: 500_000 },
  });
  expect(any.typeUrl).toBe(V2_METRICS_TYPE);
  const m = unpackAny(any, cgroupsV2.Metrics, V2_METRICS_TYPE);
  expect(m).toEqual(cgroupsV2.Metrics.fromPartial({
    pids: { current: 3n, limit: 128n },
    cpu: { usageUsec: 1_500_000n, userUsec: 1_000_000n, systemUsec: 500_000n },
    memory: { usage: 5n * 2n ** 30n + 1n, usageLimit: 8n * 2n ** 30n },
  }));
});

test('v2 without cpu sends no CPU message; memoryRss is v2\'s anon (what CRI reports as RSS there)', () => {
  const m = unpackAny(packTaskUsage('v2', { pids: 1, memoryUsage: 8192, memoryRss: 4096 }), cgroupsV2.Metrics, V2_METRICS_TYPE);
  expect(m.cpu).toBeUndefined();
  expect(m).toEqual(cgroupsV2.Metrics.fromPartial({ pids: { current: 1n, limit: 0n }, memory: { usage: 8192n, usageLimit: 0n, anon: 4096n } }));
});

test('v1: memory as usage entry plus rss/total_rss, cpu in nanoseconds, in a io.containerd.cgroups.v1.Metrics', () => {
  const any = packTaskUsage('v1', {
    pids: 2, memoryUsage: 65_536, memoryLimit: 1_048_576, memoryRss: 65_536,
    cpu: { usageUsec: 30, userUsec: 20, systemUsec: 10 },
  });
  expect(any.typeUrl).toBe(V1_METRICS_TYPE);
  const m = unpackAny(any, cgroupsV1.Metrics, V1_METRICS_TYPE);
  expect(m).toEqual(cgroupsV1.Metrics.fromPartial({
    pids: { current: 2n, limit: 0n },
    cpu: { usage: { total: 30_000n, user: 20_000n, kernel: 10_000n } },
    memory: { rss: 65_536n, totalRss: 65_536n, usage: { usage: 65_536n, limit: 1_048_576n, max: 0n, failcnt: 0n } },
  }));
  // the v1 CRI path reads memory.usage for usage and working set: the entry must be there even when all zero
  const zero = unpackAny(packTaskUsage('v1', { pids: 0, memoryUsage: 0 }), cgroupsV1.Metrics);
  expect(zero.memory?.usage).toEqual({ usage: 0n, limit: 0n, max: 0n, failcnt: 0n });
  expect(zero.cpu).toBeUndefined();
});

test('figures from outside (a guest agent) that are not finite numbers count as 0; others are clamped and truncated', () => {
  const junk = { pids: 'many', pidsLimit: NaN, memoryUsage: -4096, memoryLimit: Infinity,
    cpu: { usageUsec: 2.9, userUsec: null, systemUsec: undefined } } as unknown as Parameters<typeof packTaskUsage>[1];
  const m = unpackAny(packTaskUsage('v2', junk), cgroupsV2.Metrics);
  expect(m.pids).toEqual({ current: 0n, limit: 0n });
  expect(m.memory).toMatchObject({ usage: 0n, usageLimit: 0n });
  expect(m.cpu).toMatchObject({ usageUsec: 2n, userUsec: 0n, systemUsec: 0n });
  // beyond 2^53 a JS number is still an integer; it must arrive whole, not rounded through a float or 32 bits
  const big = unpackAny(packTaskUsage('v2', { pids: 1, memoryUsage: 2 ** 53 + 2 }), cgroupsV2.Metrics);
  expect(big.memory!.usage).toBe(2n ** 53n + 2n);
});
