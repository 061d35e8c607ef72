import { readFileSync } from 'node:fs';

/** Proportional set size of a process in KiB (shared pages split among their users), from smaps_rollup. */
export function pssKiB(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const m = /^Pss:\s+(\d+) kB$/m.exec(text);
  if (!m) throw new Error(`no Pss in /proc/${pid}/smaps_rollup`);
  return Number(m[1]);
}

/** The median of samples (upper median for an even count). */
export function p50(samples: number[]): number {
  if (samples.length === 0) throw new RangeError('p50 of no samples');
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
