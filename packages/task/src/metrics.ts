// Packs container metrics as the Any that StatsResponse carries: io.containerd.cgroups.v1.Metrics on cgroup v1
// (and hybrid) hosts, io.containerd.cgroups.v2.Metrics on unified hosts — the only types CRI's stats code decodes.
import type { EngineAny } from './engine';
import type { CgroupMetrics, V1Metrics, V1BlkIOEntry, V1MemoryEntry } from './cgroup-stats';
import { cgroupsV1, cgroupsV2, packAny } from '@kuasar/api';

export const V1_METRICS_TYPE = 'io.containerd.cgroups.v1.Metrics';
export const V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';

export function packCgroupMetrics(m: CgroupMetrics): EngineAny {
  if (m.mode === 'v1') {
    return packAny(V1_METRICS_TYPE, cgroupsV1.Metrics, cgroupsV1.Metrics.fromPartial(m.metrics as cgroupsV1.DeepPartial<cgroupsV1.Metrics>));
  }
  return packAny(V2_METRICS_TYPE, cgroupsV2.Metrics, cgroupsV2.Metrics.fromPartial(m.metrics as cgroupsV2.DeepPartial<cgroupsV2.Metrics>));
}

/** `runc/runsc events --stats` prints libcontainer's types.Stats; convert it to the v1 Metrics shape. */
export function runtimeStatsToV1(data: unknown): V1Metrics {
  const s = (data ?? {}) as RuntimeStats;
  const n = (v: number | undefined) => BigInt(Math.max(0, Math.trunc(v ?? 0)));
  const entry = (e: RuntimeMemoryEntry | undefined): V1MemoryEntry | undefined =>
    e ? { limit: n(e.limit), usage: n(e.usage), max: n(e.max), failcnt: n(e.failcnt) } : undefined;
  const m: V1Metrics = { hugetlb: [] };
  if (s.pids) m.pids = { current: n(s.pids.current), limit: n(s.pids.limit) };
  if (s.cpu) {
    m.cpu = {
      usage: {
        total: n(s.cpu.usage?.total), kernel: n(s.cpu.usage?.kernel), user: n(s.cpu.usage?.user),
        perCpu: (s.cpu.usage?.percpu ?? []).map(n),
      },
      throttling: {
        periods: n(s.cpu.throttling?.periods), throttledPeriods: n(s.cpu.throttling?.throttled_periods),
        throttledTime: n(s.cpu.throttling?.throttled_time),
      },
    };
  }
  if (s.memory) {
    const raw = s.memory.raw ?? {};
    m.memory = {
      cache: n(s.memory.cache ?? raw['cache']), rss: n(raw['rss']), rssHuge: n(raw['rss_huge']),
      mappedFile: n(raw['mapped_file']), dirty: n(raw['dirty']), writeback: n(raw['writeback']),
      pgFault: n(raw['pgfault']), pgMajFault: n(raw['pgmajfault']), totalRss: n(raw['total_rss']),
      totalCache: n(raw['total_cache']), inactiveFile: n(raw['inactive_file']), activeFile: n(raw['active_file']),
      usage: entry(s.memory.usage), swap: entry(s.memory.swap), kernel: entry(s.memory.kernel),
      kernelTcp: entry(s.memory.kernel_tcp),
    };
  }
  if (s.blkio) {
    const list = (l: RuntimeBlkio[] | undefined): V1BlkIOEntry[] =>
      (l ?? []).map((e) => ({ op: e.op ?? '', device: '', major: n(e.major), minor: n(e.minor), value: n(e.value) }));
    m.blkio = {
      ioServiceBytesRecursive: list(s.blkio.io_service_bytes_recursive),
      ioServicedRecursive: list(s.blkio.io_serviced_recursive),
      ioQueuedRecursive: list(s.blkio.io_queue_recursive),
      ioServiceTimeRecursive: list(s.blkio.io_service_time_recursive),
      ioWaitTimeRecursive: list(s.blkio.io_wait_time_recursive),
      ioMergedRecursive: list(s.blkio.io_merged_recursive),
      ioTimeRecursive: list(s.blkio.io_time_recursive),
      sectorsRecursive: list(s.blkio.sectors_recursive),
    };
  }
  for (const [pagesize, h] of Object.entries(s.hugetlb ?? {})) {
    m.hugetlb.push({ pagesize, usage: n(h.usage), max: n(h.max), failcnt: n(h.failcnt) });
  }
  return m;
}

export function packRuntimeStats(data: unknown): EngineAny {
  return packCgroupMetrics({ mode: 'v1', metrics: runtimeStatsToV1(data) });
}

interface RuntimeMemoryEntry { limit?: number; usage?: number; max?: number; failcnt?: number }
interface RuntimeBlkio { major?: number; minor?: number; op?: string; value?: number }
interface RuntimeStats {
  cpu?: {
    usage?: { total?: number; percpu?: number[]; kernel?: number; user?: number };
    throttling?: { periods?: number; throttled_periods?: number; throttled_time?: number };
  };
  memory?: {
    cache?: number;
    usage?: RuntimeMemoryEntry; swap?: RuntimeMemoryEntry; kernel?: RuntimeMemoryEntry; kernel_tcp?: RuntimeMemoryEntry;
    raw?: Record<string, number>;
  };
  pids?: { current?: number; limit?: number };
  blkio?: Record<string, RuntimeBlkio[] | undefined>;
  hugetlb?: Record<string, { usage?: number; max?: number; failcnt?: number }>;
}
