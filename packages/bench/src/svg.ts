// A small SVG writer for the two plot kinds the benchmarks need (CDF lines, grouped bars): no dependency, fixed
// palette, text escaped, output deterministic for the same data.

export interface Series {
  name: string;
  values: number[];
}

export interface PlotOptions {
  title: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];
const M = { left: 64, right: 16, top: 36, bottom: 64 };

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const num = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(2));

/** Round tick values from the last one ≤ lo to the first one ≥ hi (about `count` steps), so the axis covers the data. */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new RangeError('ticks: bounds must be finite');
  if (hi <= lo) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  for (let k = first; k <= last; k++) out.push(Number((k * step).toPrecision(12)));
  return out;
}

function frame(o: PlotOptions, w: number, h: number, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="#fff"/>`,
    `<text x="${w / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`,
    ...body,
    o.xLabel ? `<text x="${M.left + (w - M.left - M.right) / 2}" y="${h - 30}" text-anchor="middle">${esc(o.xLabel)}</text>` : '',
    o.yLabel ? `<text transform="translate(14 ${M.top + (h - M.top - M.bottom) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>` : '',
    '</svg>',
  ].filter(Boolean).join('\n') + '\n';
}

function legend(names: string[], x: number, y: number): string[] {
  const out: string[] = [];
  for (const [i, n] of names.entries()) {
    out.push(`<rect x="${x}" y="${y - 9}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`, `<text x="${x + 17}" y="${y + 1}">${esc(n)}</text>`);
    x += 17 + n.length * 7 + 24; // ~7 px per character at 12 px sans-serif
  }
  return out;
}

/** Empirical CDFs: one step line per series, x = value, y = fraction of samples ≤ x. */
export function cdfPlot(series: Series[], o: PlotOptions): string {
  if (series.length === 0 || series.some((s) => s.values.length === 0)) throw new RangeError('cdfPlot: every series needs samples');
  const w = o.width ?? 640;
  const h = o.height ?? 400;
  const all = series.flatMap((s) => s.values);
  const xt = ticks(0, Math.max(...all));
  const xMax = xt[xt.length - 1]!;
  const px = (v: number): number => M.left + (v / xMax) * (w - M.left - M.right);
  const py = (f: number): number => h - M.bottom - f * (h - M.top - M.bottom);
  const body: string[] = [];
  for (const t of xt) body.push(`<line x1="${px(t).toFixed(1)}" y1="${py(0)}" x2="${px(t).toFixed(1)}" y2="${py(1)}" stroke="#eee"/>`, `<text x="${px(t).toFixed(1)}" y="${py(0) + 16}" text-anchor="middle">${num(t)}</text>`);
  for (const f of [0, 0.25, 0.5, 0.75, 0.9, 1]) body.push(`<line x1="${px(0)}" y1="${py(f)}" x2="${px(xMax)}" y2="${py(f)}" stroke="#eee"/>`, `<text x="${px(0) - 6}" y="${py(f) + 4}" text-anchor="end">${f}</text>`);
  body.push(`<line x1="${px(0)}" y1="${py(0)}" x2="${px(xMax)}" y2="${py(0)}" stroke="#333"/>`, `<line x1="${px(0)}" y1="${py(0)}" x2="${px(0)}" y2="${py(1)}" stroke="#333"/>`);
  series.forEach((s, i) => {
    const v = [...s.values].sort((a, b) => a - b);
    const pts: string[] = [`${px(v[0]!).toFixed(1)},${py(0).toFixed(1)}`];
    v.forEach((x, k) => {
      pts.push(`${px(x).toFixed(1)},${py(k / v.length).toFixed(1)}`, `${px(x).toFixed(1)},${py((k + 1) / v.length).toFixed(1)}`);
    });
    body.push(`<polyline fill="none" stroke="${PALETTE[i % PALETTE.length]}" stroke-width="2" points="${pts.join(' ')}"/>`);
  });
  body.push(...legend(series.map((s) => s.name), M.left, h - 10));
  return frame({ yLabel: 'fraction of samples', ...o }, w, h, body);
}

export interface BarGroup {
  /** Label under the group, e.g. "10 pods". */
  label: string;
  /** One value per series name, in the order of `seriesNames`. */
  values: number[];
}

/** Grouped vertical bars with the value printed above each bar. */
export function barChart(seriesNames: string[], groups: BarGroup[], o: PlotOptions): string {
  if (groups.length === 0 || seriesNames.length === 0) throw new RangeError('barChart: needs groups and series');
  if (groups.some((g) => g.values.length !== seriesNames.length || g.values.some((v) => !Number.isFinite(v) || v < 0))) {
    throw new RangeError('barChart: each group needs one finite, non-negative value per series');
  }
  const w = o.width ?? 640;
  const h = o.height ?? 400;
  const yt = ticks(0, Math.max(...groups.flatMap((g) => g.values)) * 1.05);
  const yMax = yt[yt.length - 1]!;
  const plotW = w - M.left - M.right;
  const py = (v: number): number => h - M.bottom - (v / yMax) * (h - M.top - M.bottom);
  const body: string[] = [];
  for (const t of yt) body.push(`<line x1="${M.left}" y1="${py(t).toFixed(1)}" x2="${w - M.right}" y2="${py(t).toFixed(1)}" stroke="#eee"/>`, `<text x="${M.left - 6}" y="${(py(t) + 4).toFixed(1)}" text-anchor="end">${num(t)}</text>`);
  const gw = plotW / groups.length;
  const bw = (gw * 0.7) / seriesNames.length;
  groups.forEach((g, gi) => {
    const x0 = M.left + gi * gw + gw * 0.15;
    g.values.forEach((v, si) => {
      const x = x0 + si * bw;
      body.push(`<rect x="${x.toFixed(1)}" y="${py(v).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(py(0) - py(v)).toFixed(1)}" fill="${PALETTE[si % PALETTE.length]}"/>`);
      body.push(`<text x="${(x + bw / 2).toFixed(1)}" y="${(py(v) - 4).toFixed(1)}" text-anchor="middle" font-size="10">${String(Number(v.toPrecision(3)))}</text>`);
    });
    body.push(`<text x="${(M.left + gi * gw + gw / 2).toFixed(1)}" y="${py(0) + 16}" text-anchor="middle">${esc(g.label)}</text>`);
  });
  body.push(`<line x1="${M.left}" y1="${py(0)}" x2="${w - M.right}" y2="${py(0)}" stroke="#333"/>`);
  body.push(...legend(seriesNames, M.left, h - 10));
  return frame(o, w, h, body);
}
