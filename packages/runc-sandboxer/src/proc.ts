import * as fs from 'node:fs';

/**
 * What /proc tells about a process and the mount table: the only ground truth that survives a
 * sandboxer restart, so recovery decides from these and not from anything kept in memory.
 */

export { isProcessAlive, readProcessStat, type ProcessIdentity } from '@kuasar/sys';

/** The pid namespace chain of a process (NSpid of /proc/<pid>/status): [host pid, ..., innermost pid]. */
export function readNsPids(pid: number): number[] {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('NSpid:'));
  if (!line) return [pid];
  return line
    .slice('NSpid:'.length)
    .trim()
    .split(/\s+/)
    .map((s) => Number(s));
}

export interface MountEntry {
  mountId: number;
  root: string;
  mountPoint: string;
  fsType: string;
  /** Propagation tags such as 'shared:2' or 'master:1' (empty for private). */
  optional: string[];
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** This process's mount table (the mount namespace the sandboxer and its runc children share). */
export function readMountinfo(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const sep = line.indexOf(' - ');
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    out.push({
      mountId: Number(left[0]),
      root: unescapeMountinfo(left[3] ?? ''),
      mountPoint: unescapeMountinfo(left[4] ?? ''),
      fsType: right[0] ?? '',
      optional: left.slice(6),
    });
  }
  return out;
}

/** Mount points at or below dir, deepest (and most recently stacked) first: the order to unmount them in. */
export function mountPointsUnder(dir: string, table: MountEntry[] = readMountinfo()): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const hits = table.filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(prefix));
  return hits
    .map((m, i) => ({ m, i }))
    .sort((a, b) => b.m.mountPoint.length - a.m.mountPoint.length || b.i - a.i)
    .map(({ m }) => m.mountPoint);
}

/** The nsfs mount at exactly this path, if any (e.g. root 'ipc:[4026532178]'). */
export function nsfsMountAt(path: string, table: MountEntry[] = readMountinfo()): MountEntry | undefined {
  for (let i = table.length - 1; i >= 0; i--) {
    const m = table[i];
    if (m !== undefined && m.mountPoint === path && m.fsType === 'nsfs') return m;
  }
  return undefined;
}
