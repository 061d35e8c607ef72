import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { mountsUnder } from '@kuasar/testkit';

/**
 * What a finished test may have left behind: mounts, processes, cgroups, sockets. Each finder returns
 * human-readable findings, empty when clean, so a test asserts `toEqual([])` and a failure names the culprit.
 */

const CGROUP_ROOT = '/sys/fs/cgroup';

function unescapeMount(m: string): string {
  return m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mount points under any of `dirs`, and mounts whose point or source names one of `ids`. */
export function leftoverMounts(dirs: string[], ids: string[]): string[] {
  const out = new Set<string>();
  for (const d of dirs) for (const m of mountsUnder(d)) out.add(`mount under ${d}: ${m}`);
  const info = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  for (const line of info) {
    const f = line.split(' ');
    const point = unescapeMount(f[4] ?? '');
    const root = unescapeMount(f[3] ?? '');
    for (const id of ids) if (point.includes(id) || root.includes(id)) out.add(`mount naming ${id}: ${root} on ${point}`);
  }
  return [...out];
}

interface ProcInfo {
  pid: number;
  ppid: number;
  args: string[];
  cgroup: string;
}

export function processTable(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      const cgroup = readFileSync(`/proc/${name}/cgroup`, 'utf8');
      out.push({ pid: Number(name), ppid, args, cgroup });
    } catch { /* exited while we looked */ }
  }
  return out;
}

/** Children of the sandboxer (container inits, holders) and processes whose cmdline or cgroup names an id. */
export function leftoverProcesses(sandboxerPid: number | undefined, ids: string[], allowed: number[] = []): string[] {
  const out: string[] = [];
  for (const p of processTable()) {
    if (p.pid === process.pid || allowed.includes(p.pid)) continue;
    const state = (() => { try { return readFileSync(`/proc/${p.pid}/stat`, 'utf8').split(') ')[1]?.[0]; } catch { return undefined; } })();
    if (state === 'Z' && p.ppid !== sandboxerPid) continue; // someone else's zombie, reaped by its parent
    const why: string[] = [];
    if (sandboxerPid !== undefined && p.ppid === sandboxerPid) why.push('child of the sandboxer');
    for (const id of ids) {
      if (p.args.some((a) => a.includes(id))) why.push(`cmdline names ${id}`);
      if (p.cgroup.includes(id)) why.push(`cgroup names ${id}`);
    }
    if (why.length > 0) out.push(`pid ${p.pid} (${p.args.join(' ').slice(0, 120)}${state === 'Z' ? ', zombie' : ''}): ${why.join(', ')}`);
  }
  return out;
}

/** cgroup directories (every hierarchy, 4 levels deep) whose name contains one of `ids`. */
export function leftoverCgroups(ids: string[]): string[] {
  if (ids.length === 0) return [];
  const out: string[] = [];
  const walk = (dir: string, depth: number): void => {
    let entries;
    try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (ids.some((id) => e.name.includes(id))) out.push(p);
      else if (depth > 0) walk(p, depth - 1);
    }
  };
  walk(CGROUP_ROOT, 4);
  return out;
}

/** Unix sockets under `dir` (recursively) except the ones in `allowed`. */
export function leftoverSockets(dir: string, allowed: string[] = []): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let names: string[];
    try { names = readdirSync(d); } catch { return; }
    for (const n of names) {
      const p = path.join(d, n);
      let st;
      try { st = lstatSync(p); } catch { continue; }
      if (st.isSocket() && !allowed.includes(p)) out.push(p);
      else if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** Open sockets of a process, by inode count (a growing count across pods means a leaked connection). */
export function socketFdCount(pid: number): number {
  let n = 0;
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try { if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++; } catch { /* closed */ }
    }
  } catch { /* gone */ }
  return n;
}

/** Every fd of a process (leaked FIFOs and files show up here). */
export function fdCount(pid: number): number {
  try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return 0; }
}

/** Per-container state a runtime or the task core keeps on disk: `<root>/<namespace>/<id>` for each id. */
export function leftoverStateDirs(roots: string[], ids: string[]): string[] {
  const out: string[] = [];
  for (const root of roots) {
    let namespaces: string[];
    try { namespaces = readdirSync(root); } catch { continue; }
    for (const ns of namespaces) {
      for (const id of ids) {
        const p = path.join(root, ns, id);
        try { lstatSync(p); out.push(p); } catch { /* absent */ }
      }
    }
  }
  return out;
}
