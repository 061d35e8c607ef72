import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  parseCgroupMounts, parseProcCgroup, resolveCgroupDirs, readV1Metrics, readV2Metrics, readOomKillCount, readMetrics,
} from '../src/cgroup-stats';

const HYBRID_MOUNTINFO = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
`;
const UNIFIED_MOUNTINFO = `30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n`;

const PROC_CGROUP = `9:name=systemd:/k/c1
4:memory:/k/c1
2:cpu,cpuacct:/k/c1
8:pids:/k/c1
0::/k/c1
`;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kuasar-cg-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function files(sub: string, content: Record<string, string>): string {
  const d = join(dir, sub);
  mkdirSync(d, { recursive: true });
  for (const [k, v] of Object.entries(content)) writeFileSync(join(d, k), v);
  return d;
}

describe('locating cgroups', () => {
  test('mountinfo: comounted controllers, named hierarchy, cgroup2', () => {
    const m = parseCgroupMounts(HYBRID_MOUNTINFO);
    expect(m.map((x) => [x.mountpoint, x.controllers, x.v2])).toEqual([
      ['/sys/fs/cgroup/cpu,cpuacct', ['cpu', 'cpuacct'], false],
      ['/sys/fs/cgroup/memory', ['memory'], false],
      ['/sys/fs/cgroup/pids', ['pids'], false],
      ['/sys/fs/cgroup/systemd', ['name=systemd'], false],
      ['/sys/fs/cgroup/unified', [], true],
    ]);
  });

  test('/proc/<pid>/cgroup splits comounted controllers', () => {
    const p = parseProcCgroup(PROC_CGROUP);
    expect(p.get('cpu')).toBe('/k/c1');
    expect(p.get('cpuacct')).toBe('/k/c1');
    expect(p.get('')).toBe('/k/c1');
  });

  test('hybrid host resolves to v1 dirs plus the unified dir', () => {
    const d = resolveCgroupDirs(PROC_CGROUP, HYBRID_MOUNTINFO);
    expect(d.mode).toBe('v1');
    expect(d.v1['memory']).toBe('/sys/fs/cgroup/memory/k/c1');
    expect(d.v1['cpuacct']).toBe('/sys/fs/cgroup/cpu,cpuacct/k/c1');
    expect(d.unified).toBe('/sys/fs/cgroup/unified/k/c1');
  });

  test('unified host resolves to v2', () => {
    const d = resolveCgroupDirs('0::/k/c2\n', UNIFIED_MOUNTINFO);
    expect(d).toEqual({ mode: 'v2', v1: {}, unified: '/sys/fs/cgroup/k/c2' });
  });
});

describe('v1 metrics', () => {
  test('reads memory, cpu, pids, oom and blkio files', () => {
    const memory = files('memory', {
      'memory.stat': 'cache 4096\nrss 8192\npgpgin 7\ntotal_rss 8192\nhierarchical_memory_limit 1048576\n',
      'memory.usage_in_bytes': '12288\n',
      'memory.limit_in_bytes': '1048576\n',
      'memory.max_usage_in_bytes': '20480\n',
      'memory.failcnt': '2\n',
      'memory.kmem.usage_in_bytes': '100\n',
      'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 3\n',
    });
    const cpuacct = files('cpuacct', {
      'cpuacct.usage': '5000000\n',
      'cpuacct.usage_percpu': '3000000 2000000 \n',
      'cpuacct.stat': 'user 2\nsystem 1\n',
    });
    const cpu = files('cpu', { 'cpu.stat': 'nr_periods 10\nnr_throttled 4\nthrottled_time 999\n' });
    const pids = files('pids', { 'pids.current': '3\n', 'pids.max': 'max\n' });
    const blkio = files('blkio', {
      'blkio.io_serviced_recursive': '',
      'blkio.throttle.io_service_bytes_recursive': '8:0 Read 4096\n8:0 Write 512\nTotal 4608\n',
      'blkio.throttle.io_serviced_recursive': '8:0 Read 1\n',
    });
    const m = readV1Metrics({ memory, cpuacct, cpu, pids, blkio });
    expect(m.memory?.usage).toEqual({ usage: 12288n, limit: 1048576n, max: 20480n, failcnt: 2n });
    expect(m.memory?.['cache']).toBe(4096n);
    expect(m.memory?.['pgPgIn']).toBe(7n);
    expect(m.memory?.['totalRss']).toBe(8192n);
    expect(m.memory?.['hierarchicalMemoryLimit']).toBe(1048576n);
    expect(m.memory?.['kernel']).toEqual({ usage: 100n, limit: 0n, max: 0n, failcnt: 0n });
    expect(m.memory?.['swap']).toBeUndefined();
    expect(m.memoryOomControl).toEqual({ oomKillDisable: 0n, underOom: 0n, oomKill: 3n });
    expect(m.cpu?.usage).toEqual({ total: 5000000n, user: 20000000n, kernel: 10000000n, perCpu: [3000000n, 2000000n] });
    expect(m.cpu?.throttling).toEqual({ periods: 10n, throttledPeriods: 4n, throttledTime: 999n });
    expect(m.pids).toEqual({ current: 3n, limit: 0n });
    expect(m.blkio?.['ioServiceBytesRecursive']).toEqual([
      { op: 'Read', device: '', major: 8n, minor: 0n, value: 4096n },
      { op: 'Write', device: '', major: 8n, minor: 0n, value: 512n },
    ]);
    expect(m.blkio?.['ioServicedRecursive']).toHaveLength(1);
    expect(readOomKillCount({ mode: 'v1', v1: { memory } })).toBe(3n);
  });

  test('missing controllers leave their fields out instead of failing', () => {
    const m = readV1Metrics({ memory: join(dir, 'gone') });
    expect(m).toEqual({ hugetlb: [] });
  });

  test('hugetlb sizes are discovered from file names', () => {
    const hugetlb = files('hugetlb', {
      'hugetlb.2MB.usage_in_bytes': '2097152\n', 'hugetlb.2MB.max_usage_in_bytes': '4194304\n', 'hugetlb.2MB.failcnt': '1\n',
      'hugetlb.1GB.usage_in_bytes': '0\n',
    });
    expect(readV1Metrics({ hugetlb }).hugetlb).toEqual([
      { pagesize: '1GB', usage: 0n, max: 0n, failcnt: 0n },
      { pagesize: '2MB', usage: 2097152n, max: 4194304n, failcnt: 1n },
    ]);
  });
});

describe('v2 metrics', () => {
  test('reads cpu.stat, memory.*, io.stat, pids and memory.events', () => {
    const d = files('c', {
      'cpu.stat': 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n',
      'memory.stat': 'anon 4096\nfile 8192\nworkingset_refault_anon 1\nworkingset_refault_file 2\npgfault 9\n',
      'memory.current': '12288\n',
      'memory.max': 'max\n',
      'memory.swap.current': '0\n',
      'memory.events': 'low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n',
      'io.stat': '8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n',
      'pids.current': '2\n',
      'pids.max': '100\n',
    });
    const m = readV2Metrics(d);
    expect(m.cpu).toMatchObject({ usageUsec: 1500n, userUsec: 1000n, systemUsec: 500n });
    expect(m.memory).toMatchObject({ anon: 4096n, file: 8192n, usage: 12288n, usageLimit: (1n << 64n) - 1n, pgfault: 9n, workingsetRefault: 3n });
    expect(m.memoryEvents).toEqual({ low: 0n, high: 0n, max: 5n, oom: 2n, oomKill: 1n });
    expect(m.io?.usage).toEqual([{ major: 8n, minor: 0n, rbytes: 4096n, wbytes: 0n, rios: 1n, wios: 0n }]);
    expect(m.pids).toEqual({ current: 2n, limit: 100n });
    expect(readOomKillCount({ mode: 'v2', v1: {}, unified: d })).toBe(1n);
    expect(readMetrics({ mode: 'v2', v1: {}, unified: d }).mode).toBe('v2');
  });
});
