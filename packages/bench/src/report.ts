// Turns a run's results into ratio rows, a markdown table, SVG plots and the generated block of docs/benchmarks.md.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BenchResults } from './bench';
import { summarize, ratio, percentile } from './stats';
import { barChart, cdfPlot } from './svg';

/** One figure: ours against its anchor from the same run. */
export interface RatioRow {
  figure: string;
  anchor: string;
  anchorValue: number;
  ours: string;
  oursValue: number;
  unit: string;
  /** ours / anchor, e.g. "0.55×". */
  ratio: string;
}

const KUASAR = 'runc-sandboxer';
const RUNC = 'runc-v2 shim + pause';
const mib = (kib: number): number => kib / 1024;

export function ratioRows(r: BenchResults): RatioRow[] {
  const rows: RatioRow[] = [];
  const add = (figure: string, anchor: string, anchorValue: number, ours: string, oursValue: number, unit: string): void => {
    rows.push({ figure, anchor, anchorValue, ours, oursValue, unit, ratio: ratio(oursValue, anchorValue) });
  };
  for (const [label, s] of [[`serial (N=${r.serialMs.kuasar.length})`, r.serialMs], [`${r.parallelMs.kuasar.length} in parallel`, r.parallelMs]] as const) {
    const k = summarize(s.kuasar);
    const a = summarize(s.runc);
    for (const p of ['p50', 'p90', 'p99'] as const) add(`${p} pod+container start, ${label}`, RUNC, a[p], KUASAR, k[p], 'ms');
  }
  add(`wall time to start ${r.parallelMs.kuasar.length} pods in parallel`, RUNC, r.parallelWallMs.runc, KUASAR, r.parallelWallMs.kuasar, 'ms');
  for (const l of r.memory.levels) {
    add(`management PSS at ${l.pods} pod${l.pods === 1 ? '' : 's'}`, `${l.runc.shims} shim${l.runc.shims === 1 ? '' : 's'} + ${l.runc.pauses} pause`, mib(l.runc.totalKiB), `${KUASAR} + task relay`, mib(l.kuasar.totalKiB), 'MiB');
  }
  const floor = percentile(r.bareOciMs.runc, 50);
  add('median create+start+delete, bare OCI runtime', 'runc', floor, 'crun', percentile(r.bareOciMs.crun, 50), 'ms');
  add('p50 serial pod+container start over the bare runc floor', 'bare runc', floor, KUASAR, percentile(r.serialMs.kuasar, 50), 'ms');
  add('p50 serial pod+container start over the bare runc floor', 'bare runc', floor, RUNC, percentile(r.serialMs.runc, 50), 'ms');
  for (const s of r.sandboxerRows) rows.push(...(s.rows ?? []));
  return rows;
}

const fmt = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

/** The headline lines, e.g. `runc-sandboxer / runc-v2 shim + pause, p50 pod+container start, serial (N=5): 0.55×`. */
export function ratioLines(rows: RatioRow[]): string[] {
  return rows.map((x) => `${x.ours} / ${x.anchor}, ${x.figure}: ${x.ratio} (${fmt(x.oursValue)} vs ${fmt(x.anchorValue)} ${x.unit})`);
}

export function markdownTable(r: BenchResults, rows = ratioRows(r)): string {
  const out = [
    '| figure | anchor | anchor | ours | ours | ours / anchor |',
    '|---|---|---:|---|---:|---:|',
    ...rows.map((x) => `| ${x.figure} | ${x.anchor} | ${fmt(x.anchorValue)} ${x.unit} | ${x.ours} | ${fmt(x.oursValue)} ${x.unit} | **${x.ratio}** |`),
  ];
  const skipped = r.sandboxerRows.filter((s) => s.skipped);
  if (skipped.length > 0) out.push('', 'Not measured in this run:', '', ...skipped.map((s) => `- ${s.name}: ${s.skipped}`));
  const failed = r.sandboxerRows.filter((s) => s.failed);
  if (failed.length > 0) out.push('', 'Failed in this run:', '', ...failed.map((s) => `- ${s.name}: ${s.failed}`));
  return `${out.join('\n')}\n`;
}

export function runContext(r: BenchResults): string {
  return [
    `${r.mode} run, ${r.startedAt} → ${r.finishedAt}; ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memMiB} MiB, kernel ${r.machine.kernel}, Node ${r.machine.node}.`,
    `containerd ${r.versions.containerd}; ${r.versions.runc}; ${r.versions.crun}; sandboxer \`${r.versions.sandboxer.replace(/^.*\/dist\/bin\//, 'dist/bin/')}\`.`,
  ].join('\n');
}

/** SVG name → contents. */
export function plots(r: BenchResults): Record<string, string> {
  const series = (p: { runc: number[]; kuasar: number[] }): { name: string; values: number[] }[] => [
    { name: `${KUASAR} (kuasar-runc)`, values: p.kuasar },
    { name: `${RUNC} (runc)`, values: p.runc },
  ];
  const xLabel = 'RunPodSandbox + CreateContainer + StartContainer until RUNNING (ms)';
  const pct = (xs: number[]): number[] => [50, 90, 99].map((p) => percentile(xs, p));
  return {
    'start-latency-serial-cdf.svg': cdfPlot(series(r.serialMs), { title: `Pod+container start, serial (N=${r.serialMs.kuasar.length} each)`, xLabel }),
    'start-latency-parallel-cdf.svg': cdfPlot(series(r.parallelMs), { title: `Pod+container start, ${r.parallelMs.kuasar.length} pods in parallel`, xLabel }),
    'start-latency-percentiles.svg': barChart([KUASAR, RUNC], [
      ...['p50', 'p90', 'p99'].map((p, i) => ({ label: `serial ${p}`, values: [pct(r.serialMs.kuasar)[i]!, pct(r.serialMs.runc)[i]!] })),
      ...['p50', 'p90', 'p99'].map((p, i) => ({ label: `parallel ${p}`, values: [pct(r.parallelMs.kuasar)[i]!, pct(r.parallelMs.runc)[i]!] })),
    ], { title: 'Pod+container start percentiles', yLabel: 'ms', width: 760 }),
    'management-memory.svg': barChart([`${KUASAR} + task relay`, RUNC], r.memory.levels.map((l) => ({
      label: `${l.pods} pod${l.pods === 1 ? '' : 's'}`, values: [mib(l.kuasar.totalKiB), mib(l.runc.totalKiB)],
    })), { title: 'Management memory (PSS, smaps_rollup)', yLabel: 'MiB' }),
  };
}

export interface Written {
  dir: string;
  files: string[];
}

/** Writes results.json, results.md and the plots into `dir`. */
export function writeResults(r: BenchResults, dir: string): Written {
  mkdirSync(dir, { recursive: true });
  const rows = ratioRows(r);
  const files: string[] = [];
  const put = (name: string, text: string): void => { writeFileSync(path.join(dir, name), text); files.push(path.join(dir, name)); };
  put('results.json', `${JSON.stringify({ ...r, ratios: rows }, null, 2)}\n`);
  put('results.md', `# Kuasar benchmarks\n\n${runContext(r)}\n\n${markdownTable(r, rows)}\n${ratioLines(rows).map((l) => `- ${l}`).join('\n')}\n`);
  for (const [name, svg] of Object.entries(plots(r))) put(name, svg);
  return { dir, files };
}

export const BENCH_BEGIN = '<!-- bench:begin (generated by `pnpm bench`; edits inside are overwritten) -->';
export const BENCH_END = '<!-- bench:end -->';

/** Replaces the text between `begin` and `end` in `doc`; throws when the markers are missing. */
export function replaceBlock(doc: string, begin: string, end: string, body: string): string {
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`markers ${begin} … ${end} not found`);
  return `${doc.slice(0, i + begin.length)}\n${body.trim()}\n${doc.slice(j)}`;
}

/**
 * Updates docs/benchmarks.md. A full run replaces the block and copies its plots to docs/benchmarks/; a quick run
 * replaces it only when the block holds no full run yet (or `force`), so CI never overwrites the published numbers.
 */
export function updateDocs(r: BenchResults, resultsDir: string, docsFile: string, force = false): { updated: boolean; why: string } {
  if (!existsSync(docsFile)) return { updated: false, why: `${docsFile} does not exist` };
  const doc = readFileSync(docsFile, 'utf8');
  const block = doc.slice(doc.indexOf(BENCH_BEGIN), doc.indexOf(BENCH_END));
  if (r.mode === 'quick' && !force && block.includes('<!-- mode: full -->')) return { updated: false, why: 'docs hold a full run; a quick run does not replace it (BENCH_UPDATE_DOCS=1 forces)' };
  const parts = [`<!-- mode: ${r.mode} -->`, runContext(r), '', markdownTable(r)];
  if (r.mode === 'full') {
    const plotDir = path.join(path.dirname(docsFile), 'benchmarks');
    mkdirSync(plotDir, { recursive: true });
    for (const name of Object.keys(plots(r))) copyFileSync(path.join(resultsDir, name), path.join(plotDir, name));
    parts.push('', ...Object.keys(plots(r)).map((n) => `![${n.replace(/\.svg$/, '').replace(/-/g, ' ')}](benchmarks/${n})`));
  } else {
    parts.push('', '_Quick run: plots are published here by a full run (`BENCH_MODE=full pnpm bench`); this run\'s plots are in `bench-results/`._');
  }
  writeFileSync(docsFile, replaceBlock(doc, BENCH_BEGIN, BENCH_END, parts.join('\n')));
  return { updated: true, why: r.mode };
}
