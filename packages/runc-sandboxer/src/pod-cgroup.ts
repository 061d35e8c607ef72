import * as fs from 'node:fs';
import * as path from 'node:path';
import { packCgroupMetrics, readMetrics, resolveCgroupDirs, type CgroupDirs } from '@kuasar/task';
import type { google } from '@kuasar/api';

/**
 * The pod's cgroup parent as directories: the engine creates each container's cgroup below it, so its
 * (hierarchical) counters are the pod's totals, and removing it is the pod's cleanup.
 */

/** 'kubepods-besteffort-pod1.slice' → '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice' (systemd's nesting). */
export function cgroupfsPath(parent: string): string {
  if (parent.startsWith('/')) return path.posix.normalize(parent);
  if (!parent.endsWith('.slice')) throw new Error(`not a cgroupfs path or systemd slice: ${parent}`);
  const name = parent.slice(0, -'.slice'.length);
  if (name === '-' || name === '') return '/';
  const parts = name.split('-');
  let prefix = '';
  const out: string[] = [];
  for (const part of parts) {
    prefix = prefix === '' ? part : `${prefix}-${part}`;
    out.push(`${prefix}.slice`);
  }
  return `/${out.join('/')}`;
}

/**
 * Directories of the cgroup parent in every hierarchy mounted here. Built as if a process sat in the parent
 * (this process's /proc/self/cgroup with the path replaced), so v1, hybrid and v2 hosts resolve the same way
 * the task core resolves a container.
 */
export function podCgroupDirs(parent: string): CgroupDirs {
  const cgPath = cgroupfsPath(parent);
  const self = fs.readFileSync('/proc/self/cgroup', 'utf8');
  const asIfInParent = self
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/^(\d+:[^:]*:).*$/, `$1${cgPath}`))
    .join('\n');
  return resolveCgroupDirs(asIfInParent, fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Pod totals as io.containerd.cgroups.v1.Metrics (v1 and hybrid hosts) or v2.Metrics. */
export function podMetrics(parent: string): google.Any {
  return packCgroupMetrics(readMetrics(podCgroupDirs(parent)));
}

/** Removes the parent's (empty) directories bottom-up in every hierarchy; returns those still busy. */
export function removePodCgroup(parent: string): string[] {
  const dirs = podCgroupDirs(parent);
  const tops = new Set([...Object.values(dirs.v1), ...(dirs.unified ? [dirs.unified] : [])]);
  const busy: string[] = [];
  for (const top of tops) {
    if (!fs.existsSync(top)) continue;
    const all: string[] = [];
    const walk = (d: string): void => {
      all.push(d);
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
    };
    walk(top);
    for (const d of all.reverse()) {
      try {
        fs.rmdirSync(d);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') busy.push(d);
      }
    }
  }
  return busy;
}

/** Pids of every process in the parent's subtree, from all hierarchies (a process shows up in each; deduplicated). */
export function podCgroupPids(parent: string): number[] {
  const dirs = podCgroupDirs(parent);
  const tops = new Set([...Object.values(dirs.v1), ...(dirs.unified ? [dirs.unified] : [])]);
  const pids = new Set<number>();
  const walk = (d: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return; // removed meanwhile
    }
    try {
      for (const l of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l !== '') pids.add(Number(l));
    } catch {
      // no cgroup.procs (removed meanwhile)
    }
    for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name));
  };
  for (const top of tops) walk(top);
  return [...pids];
}

/**
 * SIGKILLs whatever still runs in the pod's cgroup and waits (up to `waitMs`) for it to be gone. The backstop of a pod
 * Stop: a container containerd has forgotten (or whose bundle is gone, so the runtime CLI cannot reach it) would
 * otherwise outlive its pod. Returns the pids it signalled and those still present after the wait.
 */
export async function killPodCgroup(parent: string, waitMs: number): Promise<{ killed: number[]; left: number[] }> {
  const deadline = Date.now() + waitMs;
  const killed = new Set<number>();
  for (;;) {
    const pids = podCgroupPids(parent).filter((p) => p !== process.pid);
    if (pids.length === 0) return { killed: [...killed], left: [] };
    if (Date.now() >= deadline && killed.size > 0) return { killed: [...killed], left: pids };
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch {
        // exited meanwhile
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
