// The plot writer, percentiles and the report's ratio rows on known data (no containerd needed).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BENCH_BEGIN, BENCH_END, barChart, cdfPlot, markdownTable, percentile, ratio, ratioRows, replaceBlock, summarize, ticks, updateDocs, writeResults, type BenchResults } from '../src';

function results(mode: 'quick' | 'full'): BenchResults {
  const seq = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);
  return {
    mode, sizes: { serial: 10, parallel: 4, memoryPods: [1, 10], bareRuns: 3 }, startedAt: '2026-01-01T00:00:00.000Z', finishedAt: '2026-01-01T00:01:00.000Z',
    machine: { cpus: 2, cpuModel: 'cpu', memMiB: 1024, kernel: '6.1', node: 'v20' },
    versions: { containerd: '2.1.9', runc: 'runc 1.1.5', crun: 'crun 1.8.1', sandboxer: '/x/dist/bin/runc-sandboxer' },
    serialMs: { kuasar: seq(101, 10), runc: seq(201, 10) },
    parallelMs: { kuasar: [300, 310, 320, 330], runc: [600, 610, 620, 630] },
    parallelWallMs: { kuasar: 400, runc: 800 },
    memory: { idleSandboxerKiB: 40_000, levels: [
      { pods: 1, kuasar: { sandboxerKiB: 40_960, relayKiB: 10_240, totalKiB: 51_200 }, runc: { shims: 1, shimKiB: 8192, pauses: 1, pauseKiB: 1024, totalKiB: 9216 } },
      { pods: 10, kuasar: { sandboxerKiB: 46_080, relayKiB: 10_240, totalKiB: 56_320 }, runc: { shims: 10, shimKiB: 81_920, pauses: 10, pauseKiB: 10_240, totalKiB: 92_160 } },
    ] },
    bareOciMs: { runc: [60, 50, 70], crun: [20, 30, 25] },
    sandboxerRows: [{ name: 'wasm row', skipped: 'not servable yet' }],
  };
}

describe('stats', () => {
  it('nearest-rank percentiles and ratios', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile([7], 90)).toBe(7);
    expect(summarize([3, 1, 2])).toMatchObject({ n: 3, min: 1, p50: 2, max: 3, mean: 2 });
    expect(ratio(55, 100)).toBe('0.55×');
    expect(ratio(1, 0)).toBe('n/a');
    expect(() => percentile([], 50)).toThrow(RangeError);
    expect(() => percentile([1], 0)).toThrow(RangeError);
  });

  it('ticks are round and cover the range', () => {
    expect(ticks(0, 97)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(ticks(0, 100)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(ticks(13, 47)).toEqual([10, 20, 30, 40, 50]);
    expect(ticks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(() => ticks(0, Infinity)).toThrow(RangeError);
  });
});

describe('svg', () => {
  it('draws one CDF step line per series, ending at fraction 1, with escaped text', () => {
    const svg = cdfPlot([{ name: 'a <b>', values: [1, 2, 3, 4] }, { name: 'c', values: [2, 4] }], { title: 'T&T', xLabel: 'ms' });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.match(/<polyline /g)).toHaveLength(2);
    expect(svg).toContain('a &lt;b&gt;');
    expect(svg).toContain('T&amp;T');
    expect(svg).not.toContain('NaN');
    // 4 samples: a start point plus two points per sample.
    const first = /points="([^"]+)"/.exec(svg)![1]!.split(' ');
    expect(first).toHaveLength(9);
    const ys = first.map((p) => Number(p.split(',')[1]));
    expect(Math.min(...ys)).toBeLessThan(Math.max(...ys));
    expect(() => cdfPlot([{ name: 'x', values: [] }], { title: 't' })).toThrow(RangeError);
  });

  it('draws one bar per value with its label, and rejects ragged or negative data', () => {
    const svg = barChart(['a', 'b'], [{ label: '1 pod', values: [10, 20] }, { label: '10 pods', values: [30, 40] }], { title: 'mem' });
    // 4 bars + 2 legend swatches + background.
    expect(svg.match(/<rect /g)).toHaveLength(7);
    expect(svg).toContain('>10 pods<');
    expect(() => barChart(['a', 'b'], [{ label: 'x', values: [1] }], { title: 't' })).toThrow(RangeError);
    expect(() => barChart(['a'], [{ label: 'x', values: [-1] }], { title: 't' })).toThrow(RangeError);
  });
});

describe('report', () => {
  it('states every figure as ours / anchor from the same run', () => {
    const rows = ratioRows(results('quick'));
    const p50 = rows.find((r) => r.figure === 'p50 pod+container start, serial (N=10)')!;
    expect(p50).toMatchObject({ anchorValue: 205, oursValue: 105, ratio: '0.51×' });
    const mem10 = rows.find((r) => r.figure === 'management PSS at 10 pods')!;
    expect(mem10).toMatchObject({ anchorValue: 90, oursValue: 55, ratio: '0.61×' });
    expect(rows.find((r) => r.figure.startsWith('median create+start+delete'))).toMatchObject({ anchor: 'runc', anchorValue: 60, oursValue: 25, ratio: '0.42×' });
    const table = markdownTable(results('quick'), rows);
    expect(table.split('\n').filter((l) => l.startsWith('| ') && l.includes('×')).length).toBe(rows.length);
    expect(table).toContain('wasm row: not servable yet');
  });

  it('a quick run does not replace a full run in docs; a full run publishes its plots', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kbench-report-'));
    try {
      const docs = path.join(dir, 'benchmarks.md');
      writeFileSync(docs, `# B\n\n${BENCH_BEGIN}\nold\n${BENCH_END}\n\ntail\n`);
      const full = writeResults(results('full'), path.join(dir, 'full'));
      expect(full.files.map((f) => path.basename(f)).sort()).toEqual(['management-memory.svg', 'results.json', 'results.md', 'start-latency-parallel-cdf.svg', 'start-latency-percentiles.svg', 'start-latency-serial-cdf.svg']);
      expect(updateDocs(results('full'), full.dir, docs).updated).toBe(true);
      const after = readFileSync(docs, 'utf8');
      expect(after).toContain('<!-- mode: full -->');
      expect(after).toContain('](benchmarks/start-latency-serial-cdf.svg)');
      expect(readFileSync(path.join(dir, 'benchmarks/management-memory.svg'), 'utf8')).toContain('<svg');
      expect(after.endsWith(`${BENCH_END}\n\ntail\n`)).toBe(true);
      const quick = writeResults(results('quick'), path.join(dir, 'quick'));
      expect(updateDocs(results('quick'), quick.dir, docs).updated).toBe(false);
      expect(readFileSync(docs, 'utf8')).toBe(after);
      expect(updateDocs(results('quick'), quick.dir, docs, true).updated).toBe(true);
      expect(readFileSync(docs, 'utf8')).toContain('<!-- mode: quick -->');
      expect(() => replaceBlock('no markers', BENCH_BEGIN, BENCH_END, 'x')).toThrow(/markers/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
