import { fail, ok, warn, type Finding } from './finding';

export type CgroupMode = 'unified' | 'hybrid' | 'legacy' | 'none';

export interface CgroupMount {
  mountPoint: string;
  fsType: 'cgroup' | 'cgroup2';
  /** v1: the controllers of the hierarchy (super options such as cpu, memory, name=systemd). */
  options: string[];
}

/** The cgroup mounts from /proc/self/mountinfo text. */
export function cgroupMounts(mountinfo: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const [fsType, , superOpts = ''] = line.slice(sep + 3).split(' ');
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    const mountPoint = (left[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ mountPoint, fsType, options: superOpts.split(',').filter((o) => o !== 'rw' && o !== 'ro') });
  }
  return out;
}

export interface CgroupFacts {
  mounts: CgroupMount[];
  /** cgroup.controllers of the cgroup2 mount, when there is one. */
  unifiedControllers: string[] | undefined;
}

export function cgroupMode(mounts: readonly CgroupMount[], root = '/sys/fs/cgroup'): CgroupMode {
  const v2 = mounts.filter((m) => m.fsType === 'cgroup2');
  const v1 = mounts.filter((m) => m.fsType === 'cgroup');
  if (v2.some((m) => m.mountPoint === root)) return 'unified';
  if (v1.length > 0 && v2.length > 0) return 'hybrid';
  if (v1.length > 0) return 'legacy';
  if (v2.length > 0) return 'unified';
  return 'none';
}

/**
 * crun 1.8 refuses hybrid hosts whose cgroup2 side holds any controller ("cgroups in hybrid mode not supported,
 * drop all controllers from cgroupv2"): on these machines that was hugetlb, because systemd mounts no v1 hierarchy
 * for it. Mounting the controller as its own v1 hierarchy moves it out of cgroup2. runc works either way.
 */
export function checkCgroups(f: CgroupFacts): Finding {
  const mode = cgroupMode(f.mounts);
  const v2 = f.mounts.find((m) => m.fsType === 'cgroup2');
  const v1Count = f.mounts.filter((m) => m.fsType === 'cgroup').length;
  switch (mode) {
    case 'none':
      return fail('cgroups', 'no cgroup filesystem is mounted', 'mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd)');
    case 'unified':
      return ok('cgroups', `unified (cgroup2 at ${v2?.mountPoint}; controllers: ${(f.unifiedControllers ?? []).join(' ') || 'none'})`);
    case 'legacy':
      return warn(
        'cgroups',
        `legacy v1 only (${v1Count} hierarchies, no cgroup2): pods work, but cgroup2-only features (memory.high, PSI) are absent`,
        'boot with systemd.unified_cgroup_hierarchy=1 to switch to cgroup2',
      );
    case 'hybrid': {
      const where = `hybrid (${v1Count} v1 hierarchies + cgroup2 at ${v2?.mountPoint})`;
      const held = f.unifiedControllers ?? [];
      if (held.length === 0) return ok('cgroups', `${where}; no controller on the cgroup2 side, so crun and runc both work`);
      const fix = held.map((c) => `mkdir -p /sys/fs/cgroup/${c} && mount -t cgroup -o ${c} cgroup /sys/fs/cgroup/${c}`).join(' && ');
      return warn(
        'cgroups',
        `${where} with ${held.join(', ')} on the cgroup2 side: crun 1.8 refuses to run ("cgroups in hybrid mode not supported"); runc works`,
        `${fix} (moves the controller to a v1 hierarchy), or use runc`,
      );
    }
  }
}
