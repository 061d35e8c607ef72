/** Summary of latency samples (ms). Percentiles use the nearest-rank method: p99 of 100 samples is the 99th. */
export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) throw new RangeError('percentile of no samples');
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile must be in (0, 100], got ${p}`);
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)]!;
}

export function summarize(samples: number[]): Summary {
  if (samples.length === 0) throw new RangeError('summary of no samples');
  return {
    n: samples.length,
    min: Math.min(...samples),
    p50: percentile(samples, 50),
    p90: percentile(samples, 90),
    p99: percentile(samples, 99),
    max: Math.max(...samples),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
  };
}

/** ours / anchor as shown in the tables: "0.55×". */
export function ratio(ours: number, anchor: number): string {
  if (!Number.isFinite(ours) || !Number.isFinite(anchor) || anchor <= 0) return 'n/a';
  const r = ours / anchor;
  return `${r < 10 ? r.toFixed(2) : r.toFixed(1)}×`;
}
