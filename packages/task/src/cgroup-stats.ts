// Reads a container's cgroup files into the shapes of io.containerd.cgroups.v1.Metrics and
// io.containerd.cgroups.v2.Metrics (ts-proto field names, uint64 as bigint), which is what CRI's stats code decodes.
// Everything that touches /sys/fs/cgroup or /proc/<pid>/cgroup lives here so it can be tested on fixture dirs.
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';

export type CgroupMode = 'v1' | 'v2';

/** Absolute cgroup directories of one container: per v1 controller, or the single unified dir. */
export interface CgroupDirs {
  mode: CgroupMode;
  /** v1: controller name → absolute dir (e.g. memory → /sys/fs/cgroup/memory/kuasar/abc) */
  v1: Record<string, string>;
  /** v2 (or the unified dir on a hybrid host) */
  unified?: string;
}

interface CgroupMount {
  mountpoint: string;
  /** root of the mount inside the hierarchy (mountinfo field 4), usually "/" */
  root: string;
  controllers: string[];
  v2: boolean;
}

const MOUNT_FLAGS = new Set(['rw', 'ro', 'noprefix', 'clone_children', 'xattr', 'cpuset_v2_mode', 'nsdelegate']);

/** Parse /proc/self/mountinfo for cgroup and cgroup2 mounts. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const fstype = post[0];
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    const superOpts = (post[2] ?? '').split(',');
    out.push({
      mountpoint: unescapeMountPath(pre[4] ?? ''),
      root: unescapeMountPath(pre[3] ?? '/'),
      controllers: fstype === 'cgroup2' ? [] : superOpts.filter((o) => o.startsWith('name=') || (!o.includes('=') && !MOUNT_FLAGS.has(o))),
      v2: fstype === 'cgroup2',
    });
  }
  return out;
}

function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse /proc/<pid>/cgroup: "hierarchy-id:controllers:path" lines → controller → path ("" key = unified). */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, , ctrls, path] = m;
    if (ctrls === '') out.set('', path!);
    else for (const c of ctrls!.split(',')) out.set(c, path!);
  }
  return out;
}

/**
 * Where a process's cgroups are. A host is v2 when /sys/fs/cgroup itself is cgroup2; a hybrid host (v1 controllers
 * plus cgroup2 at /sys/fs/cgroup/unified, as here) is reported as v1 because the runtime puts resources in v1.
 */
export function resolveCgroupDirs(procCgroup: string, mountinfo: string): CgroupDirs {
  const paths = parseProcCgroup(procCgroup);
  const mounts = parseCgroupMounts(mountinfo);
  const v1: Record<string, string> = {};
  let unified: string | undefined;
  for (const m of mounts) {
    if (m.v2) {
      const p = paths.get('');
      if (p !== undefined) unified = join(m.mountpoint, relativeTo(p, m.root));
      continue;
    }
    for (const c of m.controllers) {
      const p = paths.get(c);
      if (p !== undefined) v1[c] = join(m.mountpoint, relativeTo(p, m.root));
    }
  }
  const hasV1 = Object.keys(v1).some((c) => !c.startsWith('name='));
  return { mode: hasV1 ? 'v1' : 'v2', v1, unified };
}

function relativeTo(path: string, root: string): string {
  if (root !== '/' && path.startsWith(root)) return path.slice(root.length) || '/';
  return path;
}

/** The cgroup dirs of a live pid, or undefined if it is gone. */
export function cgroupDirsOfPid(pid: number, procRoot = '/proc'): CgroupDirs | undefined {
  try {
    return resolveCgroupDirs(
      readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8'),
      readFileSync(join(procRoot, 'self', 'mountinfo'), 'utf8'),
    );
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// low-level readers: a missing file yields undefined so that absent controllers just leave fields out

const MAX_U64 = (1n << 64n) - 1n;

function readText(dir: string | undefined, file: string): string | undefined {
  if (!dir) return undefined;
  try {
    return readFileSync(join(dir, file), 'utf8');
  } catch {
    return undefined;
  }
}

/** a single integer; "max" → `max` */
function readU64(dir: string | undefined, file: string, max = MAX_U64): bigint | undefined {
  const t = readText(dir, file)?.trim();
  if (t === undefined || t === '') return undefined;
  if (t === 'max') return max;
  try {
    const v = BigInt(t);
    return v < 0n ? 0n : v;
  } catch {
    return undefined;
  }
}

/** "key value" lines */
function readKeyValues(dir: string | undefined, file: string): Map<string, bigint> | undefined {
  const t = readText(dir, file);
  if (t === undefined) return undefined;
  const out = new Map<string, bigint>();
  for (const line of t.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (!k || v === undefined) continue;
    try {
      out.set(k, BigInt(v));
    } catch {
      /* non-numeric values are not part of the metrics */
    }
  }
  return out;
}

function hugepageSizes(dir: string | undefined, suffix: string): string[] {
  if (!dir || !existsSync(dir)) return [];
  const sizes = new Set<string>();
  for (const f of readdirSync(dir)) {
    const m = /^hugetlb\.([^.]+)\./.exec(f);
    if (m && f.endsWith(suffix)) sizes.add(m[1]!);
  }
  return [...sizes].sort();
}

// ---------------------------------------------------------------------------------------------------------------
// cgroup v1

export interface V1MemoryEntry { limit: bigint; usage: bigint; max: bigint; failcnt: bigint }
export interface V1BlkIOEntry { op: string; device: string; major: bigint; minor: bigint; value: bigint }
/** io.containerd.cgroups.v1.Metrics (only the parts a Linux runtime can read; field names as ts-proto makes them) */
export interface V1Metrics {
  hugetlb: { usage: bigint; max: bigint; failcnt: bigint; pagesize: string }[];
  pids?: { current: bigint; limit: bigint };
  cpu?: {
    usage?: { total: bigint; kernel: bigint; user: bigint; perCpu: bigint[] };
    throttling?: { periods: bigint; throttledPeriods: bigint; throttledTime: bigint };
  };
  memory?: Record<string, bigint | V1MemoryEntry | undefined> & { usage?: V1MemoryEntry };
  blkio?: Record<string, V1BlkIOEntry[]>;
  memoryOomControl?: { oomKillDisable: bigint; underOom: bigint; oomKill: bigint };
}

// memory.stat key → MemoryStat field (ts-proto camelCase of the proto name)
const V1_MEMORY_STAT: [string, string][] = [
  ['cache', 'cache'], ['rss', 'rss'], ['rss_huge', 'rssHuge'], ['mapped_file', 'mappedFile'], ['dirty', 'dirty'],
  ['writeback', 'writeback'], ['pgpgin', 'pgPgIn'], ['pgpgout', 'pgPgOut'], ['pgfault', 'pgFault'],
  ['pgmajfault', 'pgMajFault'], ['inactive_anon', 'inactiveAnon'], ['active_anon', 'activeAnon'],
  ['inactive_file', 'inactiveFile'], ['active_file', 'activeFile'], ['unevictable', 'unevictable'],
  ['hierarchical_memory_limit', 'hierarchicalMemoryLimit'], ['hierarchical_memsw_limit', 'hierarchicalSwapLimit'],
  ['total_cache', 'totalCache'], ['total_rss', 'totalRss'], ['total_rss_huge', 'totalRssHuge'],
  ['total_mapped_file', 'totalMappedFile'], ['total_dirty', 'totalDirty'], ['total_writeback', 'totalWriteback'],
  ['total_pgpgin', 'totalPgPgIn'], ['total_pgpgout', 'totalPgPgOut'], ['total_pgfault', 'totalPgFault'],
  ['total_pgmajfault', 'totalPgMajFault'], ['total_inactive_anon', 'totalInactiveAnon'],
  ['total_active_anon', 'totalActiveAnon'], ['total_inactive_file', 'totalInactiveFile'],
  ['total_active_file', 'totalActiveFile'], ['total_unevictable', 'totalUnevictable'],
];

// blkio file (without the "blkio." prefix) → BlkIOStat field
const V1_BLKIO: [string, string][] = [
  ['io_service_bytes_recursive', 'ioServiceBytesRecursive'], ['io_serviced_recursive', 'ioServicedRecursive'],
  ['io_queued_recursive', 'ioQueuedRecursive'], ['io_service_time_recursive', 'ioServiceTimeRecursive'],
  ['io_wait_time_recursive', 'ioWaitTimeRecursive'], ['io_merged_recursive', 'ioMergedRecursive'],
  ['io_time_recursive', 'ioTimeRecursive'], ['sectors_recursive', 'sectorsRecursive'],
];

// cpuacct.stat is in USER_HZ ticks (100 on Linux); the metrics carry nanoseconds like containerd's cgroups library.
const NS_PER_TICK = 10_000_000n;

function memoryEntry(dir: string, prefix: string): V1MemoryEntry | undefined {
  const usage = readU64(dir, `${prefix}usage_in_bytes`);
  if (usage === undefined) return undefined;
  return {
    usage,
    limit: readU64(dir, `${prefix}limit_in_bytes`) ?? 0n,
    max: readU64(dir, `${prefix}max_usage_in_bytes`) ?? 0n,
    failcnt: readU64(dir, `${prefix}failcnt`) ?? 0n,
  };
}

function blkioEntries(dir: string, file: string): V1BlkIOEntry[] {
  const t = readText(dir, file);
  if (!t) return [];
  const out: V1BlkIOEntry[] = [];
  for (const line of t.split('\n')) {
    const f = line.trim().split(/\s+/);
    // "8:0 Read 4096" or, for io_time/sectors, "8:0 4096"; the "Total N" line is dropped like containerd does
    const m = /^(\d+):(\d+)$/.exec(f[0] ?? '');
    if (!m) continue;
    const [op, value] = f.length === 3 ? [f[1]!, f[2]!] : ['', f[1]];
    if (value === undefined) continue;
    out.push({ op, device: '', major: BigInt(m[1]!), minor: BigInt(m[2]!), value: BigInt(value) });
  }
  return out;
}

export function readV1Metrics(dirs: Record<string, string>): V1Metrics {
  const metrics: V1Metrics = { hugetlb: [] };

  const pidsDir = dirs['pids'];
  const current = readU64(pidsDir, 'pids.current');
  if (current !== undefined) metrics.pids = { current, limit: readU64(pidsDir, 'pids.max', 0n) ?? 0n };

  const acct = dirs['cpuacct'];
  const total = readU64(acct, 'cpuacct.usage');
  if (total !== undefined) {
    const stat = readKeyValues(acct, 'cpuacct.stat');
    const perCpu = (readText(acct, 'cpuacct.usage_percpu') ?? '').trim().split(/\s+/).filter(Boolean).map((v) => BigInt(v));
    metrics.cpu = {
      usage: {
        total,
        user: (stat?.get('user') ?? 0n) * NS_PER_TICK,
        kernel: (stat?.get('system') ?? 0n) * NS_PER_TICK,
        perCpu,
      },
    };
  }
  const cpuStat = readKeyValues(dirs['cpu'], 'cpu.stat');
  if (cpuStat) {
    metrics.cpu ??= {};
    metrics.cpu.throttling = {
      periods: cpuStat.get('nr_periods') ?? 0n,
      throttledPeriods: cpuStat.get('nr_throttled') ?? 0n,
      throttledTime: cpuStat.get('throttled_time') ?? 0n,
    };
  }

  const mem = dirs['memory'];
  const memStat = readKeyValues(mem, 'memory.stat');
  if (mem && memStat) {
    const m: NonNullable<V1Metrics['memory']> = {};
    for (const [k, field] of V1_MEMORY_STAT) m[field] = memStat.get(k) ?? 0n;
    m.usage = memoryEntry(mem, 'memory.');
    const swap = memoryEntry(mem, 'memory.memsw.');
    if (swap) m['swap'] = swap;
    const kernel = memoryEntry(mem, 'memory.kmem.');
    if (kernel) m['kernel'] = kernel;
    const kernelTcp = memoryEntry(mem, 'memory.kmem.tcp.');
    if (kernelTcp) m['kernelTcp'] = kernelTcp;
    metrics.memory = m;
    const oom = readKeyValues(mem, 'memory.oom_control');
    if (oom) {
      metrics.memoryOomControl = {
        oomKillDisable: oom.get('oom_kill_disable') ?? 0n,
        underOom: oom.get('under_oom') ?? 0n,
        oomKill: oom.get('oom_kill') ?? 0n,
      };
    }
  }

  const blk = dirs['blkio'];
  if (blk && existsSync(blk)) {
    // CFQ/BFQ stats when the scheduler provides them, else the throttle counters (same fallback as containerd)
    const plain = blkioEntries(blk, 'blkio.io_serviced_recursive');
    const prefix = plain.length > 0 ? 'blkio.' : 'blkio.throttle.';
    const b: Record<string, V1BlkIOEntry[]> = {};
    for (const [file, field] of V1_BLKIO) b[field] = blkioEntries(blk, prefix + file);
    metrics.blkio = b;
  }

  const huge = dirs['hugetlb'];
  for (const size of hugepageSizes(huge, '.usage_in_bytes')) {
    metrics.hugetlb.push({
      pagesize: size,
      usage: readU64(huge, `hugetlb.${size}.usage_in_bytes`) ?? 0n,
      max: readU64(huge, `hugetlb.${size}.max_usage_in_bytes`) ?? 0n,
      failcnt: readU64(huge, `hugetlb.${size}.failcnt`) ?? 0n,
    });
  }
  return metrics;
}

// ---------------------------------------------------------------------------------------------------------------
// cgroup v2

/** io.containerd.cgroups.v2.Metrics */
export interface V2Metrics {
  pids?: { current: bigint; limit: bigint };
  cpu?: Record<string, bigint>;
  memory?: Record<string, bigint>;
  io?: { usage: { major: bigint; minor: bigint; rbytes: bigint; wbytes: bigint; rios: bigint; wios: bigint }[] };
  hugetlb: { current: bigint; max: bigint; pagesize: string }[];
  memoryEvents?: { low: bigint; high: bigint; max: bigint; oom: bigint; oomKill: bigint };
}

const V2_CPU: [string, string][] = [
  ['usage_usec', 'usageUsec'], ['user_usec', 'userUsec'], ['system_usec', 'systemUsec'],
  ['nr_periods', 'nrPeriods'], ['nr_throttled', 'nrThrottled'], ['throttled_usec', 'throttledUsec'],
];

const V2_MEMORY_STAT = [
  'anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty', 'file_writeback', 'anon_thp',
  'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable', 'slab_reclaimable',
  'slab_unreclaimable', 'pgfault', 'pgmajfault', 'workingset_refault', 'workingset_activate',
  'workingset_nodereclaim', 'pgrefill', 'pgscan', 'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree',
  'pglazyfreed', 'thp_fault_alloc', 'thp_collapse_alloc',
];

const camel = (s: string) => s.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());

export function readV2Metrics(dir: string): V2Metrics {
  const metrics: V2Metrics = { hugetlb: [] };
  const current = readU64(dir, 'pids.current');
  if (current !== undefined) metrics.pids = { current, limit: readU64(dir, 'pids.max', 0n) ?? 0n };

  const cpu = readKeyValues(dir, 'cpu.stat');
  if (cpu) {
    metrics.cpu = {};
    for (const [k, field] of V2_CPU) metrics.cpu[field] = cpu.get(k) ?? 0n;
  }

  const stat = readKeyValues(dir, 'memory.stat');
  if (stat) {
    const m: Record<string, bigint> = {};
    for (const k of V2_MEMORY_STAT) m[camel(k)] = stat.get(k) ?? 0n;
    // workingset_refault is split into _anon/_file on newer kernels
    if (!stat.has('workingset_refault')) {
      m['workingsetRefault'] = (stat.get('workingset_refault_anon') ?? 0n) + (stat.get('workingset_refault_file') ?? 0n);
      m['workingsetActivate'] = (stat.get('workingset_activate_anon') ?? 0n) + (stat.get('workingset_activate_file') ?? 0n);
    }
    m['usage'] = readU64(dir, 'memory.current') ?? 0n;
    m['usageLimit'] = readU64(dir, 'memory.max') ?? 0n;
    m['swapUsage'] = readU64(dir, 'memory.swap.current') ?? 0n;
    m['swapLimit'] = readU64(dir, 'memory.swap.max') ?? 0n;
    m['maxUsage'] = readU64(dir, 'memory.peak') ?? 0n;
    m['swapMaxUsage'] = readU64(dir, 'memory.swap.peak') ?? 0n;
    metrics.memory = m;
  }

  const ev = readKeyValues(dir, 'memory.events');
  if (ev) {
    metrics.memoryEvents = {
      low: ev.get('low') ?? 0n, high: ev.get('high') ?? 0n, max: ev.get('max') ?? 0n,
      oom: ev.get('oom') ?? 0n, oomKill: ev.get('oom_kill') ?? 0n,
    };
  }

  const io = readText(dir, 'io.stat');
  if (io !== undefined) {
    metrics.io = { usage: [] };
    for (const line of io.split('\n')) {
      const f = line.trim().split(/\s+/);
      const m = /^(\d+):(\d+)$/.exec(f[0] ?? '');
      if (!m) continue;
      const kv = new Map(f.slice(1).map((p) => p.split('=') as [string, string]));
      const n = (k: string) => (kv.has(k) ? BigInt(kv.get(k)!) : 0n);
      metrics.io.usage.push({ major: BigInt(m[1]!), minor: BigInt(m[2]!), rbytes: n('rbytes'), wbytes: n('wbytes'), rios: n('rios'), wios: n('wios') });
    }
  }

  for (const size of hugepageSizes(dir, '.current')) {
    metrics.hugetlb.push({
      pagesize: size,
      current: readU64(dir, `hugetlb.${size}.current`) ?? 0n,
      max: readU64(dir, `hugetlb.${size}.max`) ?? 0n,
    });
  }
  return metrics;
}

// ---------------------------------------------------------------------------------------------------------------

export type CgroupMetrics = { mode: 'v1'; metrics: V1Metrics } | { mode: 'v2'; metrics: V2Metrics };

export function readMetrics(dirs: CgroupDirs): CgroupMetrics {
  if (dirs.mode === 'v1') return { mode: 'v1', metrics: readV1Metrics(dirs.v1) };
  if (!dirs.unified) throw new Error('no unified cgroup directory for this process');
  return { mode: 'v2', metrics: readV2Metrics(dirs.unified) };
}

/**
 * Count of OOM kills in the container's memory cgroup (v1 memory.oom_control `oom_kill`, v2 memory.events
 * `oom_kill`). The OOM watcher polls this counter rather than holding a v1 eventfd/cgroup.event_control
 * registration: it needs no native code, survives a sandboxer restart, and works the same on v1 and v2.
 */
export function readOomKillCount(dirs: CgroupDirs): bigint | undefined {
  if (dirs.mode === 'v1') return readKeyValues(dirs.v1['memory'], 'memory.oom_control')?.get('oom_kill');
  return readKeyValues(dirs.unified, 'memory.events')?.get('oom_kill');
}
