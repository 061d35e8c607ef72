// The quick bench end to end (CI): one containerd 2.1 with both handlers, every figure measured and written. Asserts
// that the run is complete and well-formed, never what the numbers are.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { containerdAvailability } from '@kuasar/testkit';
import { SEA_BINARY, SIZES, ratioRows, runBench, writeResults } from '../src';

jest.setTimeout(300_000);

const avail = containerdAvailability('2.1');
const why = 'reason' in avail ? avail.reason : !existsSync(SEA_BINARY) ? `${SEA_BINARY} is not built` : undefined;
// eslint-disable-next-line no-console
if (why) console.warn(`skipping the quick bench: ${why}`);
const maybe = why ? it.skip : it;

maybe('quick bench: every row measured against its anchor in one run, results and plots written', async () => {
  const progress: string[] = [];
  const r = await runBench('quick', (m) => progress.push(m));
  const q = SIZES.quick;
  const positive = (xs: number[]): boolean => xs.every((x) => Number.isFinite(x) && x > 0);
  for (const k of ['kuasar', 'runc'] as const) {
    expect(r.serialMs[k]).toHaveLength(q.serial);
    expect(r.parallelMs[k]).toHaveLength(q.parallel);
    expect(positive(r.serialMs[k]) && positive(r.parallelMs[k])).toBe(true);
    expect(r.parallelWallMs[k]).toBeGreaterThan(0);
  }
  expect(r.memory.levels.map((l) => l.pods)).toEqual(q.memoryPods);
  for (const l of r.memory.levels) {
    // One shim and one pause per runc pod; kuasar's side is one sandboxer (+ relay) whatever the count.
    expect(l.runc.pauses).toBe(l.pods);
    expect(l.runc.shims).toBe(l.pods);
    expect(l.kuasar.sandboxerKiB).toBeGreaterThan(0);
    expect(l.runc.shimKiB).toBeGreaterThan(0);
  }
  expect(r.bareOciMs.runc).toHaveLength(q.bareRuns);
  expect(r.bareOciMs.crun).toHaveLength(q.bareRuns);
  for (const s of r.sandboxerRows) expect(s.failed).toBeUndefined();
  for (const s of r.sandboxerRows) expect(s.skipped !== undefined || (s.rows?.length ?? 0) > 0).toBe(true);
  const rows = ratioRows(r);
  expect(rows.length).toBeGreaterThanOrEqual(12);
  for (const row of rows) expect(row.ratio).toMatch(/^\d+(\.\d+)?×$/);
  expect(progress.some((m) => m.startsWith('serial pod+container start 1/'))).toBe(true);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'kbench-quick-'));
  try {
    const w = writeResults(r, dir);
    expect(w.files).toHaveLength(6);
    const json = JSON.parse(readFileSync(path.join(dir, 'results.json'), 'utf8')) as { ratios: unknown[] };
    expect(json.ratios).toHaveLength(rows.length);
    for (const f of w.files.filter((x) => x.endsWith('.svg'))) expect(readFileSync(f, 'utf8')).toMatch(/^<svg [^]*<\/svg>\n$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
