// @kuasar/bench: same-run benchmarks against the anchors (pnpm bench) and the churn-with-crashes reliability suite.
export { SIZES, runBench } from './bench';
export type { BenchMode, BenchResults, BenchSizes, MemoryLevel, Pair, Progress } from './bench';
export { BareRuntimeError, bareRuntimeSamples, busyboxBundle } from './bare-oci';
export { CHURN_SIZES, churnFailures, churnSummary, runChurn } from './reliability';
export type { ChurnOptions, ChurnReport } from './reliability';
export { BENCH_BEGIN, BENCH_END, markdownTable, plots, ratioLines, ratioRows, replaceBlock, runContext, updateDocs, writeResults } from './report';
export type { RatioRow, Written } from './report';
export { SANDBOXER_ROWS } from './rows';
export type { SandboxerRow } from './rows';
export { BenchStack, KUASAR_HANDLER, RUNC_HANDLER, SEA_BINARY, StackError } from './stack';
export type { BenchStackOptions } from './stack';
export { percentile, ratio, summarize } from './stats';
export type { Summary } from './stats';
export { barChart, cdfPlot, ticks } from './svg';
export type { BarGroup, PlotOptions, Series } from './svg';
