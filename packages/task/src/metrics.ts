// Packs container metrics as the Any that StatsResponse carries: io.containerd.cgroups.v1.Metrics on cgroup v1
// (and hybrid) hosts, io.containerd.cgroups.v2.Metrics on unified hosts — the only types CRI's stats code decodes.
import type { EngineAny } from './engine';
import type { CgroupMetrics, CgroupMode, V1Metrics, V1BlkIOEntry, V1MemoryEntry } from './cgroup-stats';
import { cgroupsV1, cgroupsV2, packAny } from '@kuasar/api';

export const V1_METRICS_TYPE = 'io.containerd.cgroups.v1.Metrics';
export const V2_METRICS_TYPE = 'io.containerd.cgroups.v2.Metrics';

export function packCgroupMetrics(m: CgroupMetrics): EngineAny {
  if (m.mode === 'v1') {
    return packAny(V1_METRICS_TYPE, cgroupsV1.Metrics, cgroupsV1.Metrics.fromPartial(m.metrics as cgroupsV1.DeepPartial<cgroupsV1.Metrics>));
  }
  return packAny(V2_METRICS_TYPE, cgroupsV2.Metrics, cgroupsV2.Metrics.fromPartial(m.metrics as cgroupsV2.DeepPartial<cgroupsV2.Metrics>));
}

/**
 * The few figures an engine with no host cgroup of its own can give (a VM guest agent's reply, a wasm runner's
 * count). They may come from outside this process, so a figure that is not a finite number counts as 0 and a
 * negative or fractional one is clamped and truncated.
 */
export interface TaskUsage {
  /** processes (or modules) running */
  pids: number;
  /** 0 or absent = no limit */
  pidsLimit?: number;
  /** memory in use, bytes */
  memoryUsage: number;
  /** 0 or absent = no limit */
  memoryLimit?: number;
  /** the part of memoryUsage that is anonymous, which CRI reports as RSS: v1 rss and total_rss, v2 anon */
  memoryRss?: number;
  /** cgroup v2 cpu.stat figures in microseconds; absent = no CPU message at all */
  cpu?: { usageUsec: number; userUsec: number; systemUsec: number };
}

/**
 * Packs a TaskUsage as the Metrics of the given cgroup version. An engine picks the version its consumer expects:
 * the host's for a process on the host, v2 for a guest that runs a unified hierarchy.
 */
export function packTaskUsage(mode: CgroupMode, u: TaskUsage): EngineAny {
  const pids = { current: u64(u.pids), limit: u64(u.pidsLimit) };
  const usage = u64(u.memoryUsage);
  const limit = u64(u.memoryLimit);
  if (mode === 'v2') {
    const cpu = u.cpu && { usageUsec: u64(u.cpu.usageUsec), userUsec: u64(u.cpu.userUsec), systemUsec: u64(u.cpu.systemUsec) };
    const memory: Record<string, bigint> = { usage, usageLimit: limit };
    if (u.memoryRss !== undefined) memory['anon'] = u64(u.memoryRss);
    return packCgroupMetrics({ mode, metrics: { pids, ...(cpu && { cpu }), memory, hugetlb: [] } });
  }
  const rss = u64(u.memoryRss);
  // v1's cpuacct figures are nanoseconds
  const cpu = u.cpu && {
    usage: { total: u64(u.cpu.usageUsec) * 1000n, user: u64(u.cpu.userUsec) * 1000n, kernel: u64(u.cpu.systemUsec) * 1000n, perCpu: [] },
  };
  return packCgroupMetrics({
    mode,
    metrics: { pids, ...(cpu && { cpu }), memory: { rss, totalRss: rss, usage: { usage, limit, max: 0n, failcnt: 0n } }, hugetlb: [] },
  });
}

function u64(v: number | undefined): bigint {
  return typeof v === 'number' && Number.isFinite(v) ? BigInt(Math.max(0, Math.trunc(v))) : 0n;
}

/** `runc/runsc events --stats` prints libcontainer's types.Stats; convert it to the v1 Metrics shape. */
export function runtimeStatsToV1(data: unknown): V1Metrics {
  const s = (data ?? {}) as RuntimeStats;
  const n = u64;
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
