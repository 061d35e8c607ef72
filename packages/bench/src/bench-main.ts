// `pnpm bench` (quick by default) / `BENCH_MODE=full pnpm bench` or `--full`: runs the benchmarks, prints progress,
// writes bench-results/<timestamp>/ and updates docs/benchmarks.md.
import path from 'node:path';
import { REPO_ROOT } from '@kuasar/e2e';
import { runBench, type BenchMode } from './bench';
import { markdownTable, ratioLines, ratioRows, updateDocs, writeResults } from './report';

class UsageError extends Error {
  override readonly name = 'UsageError';
}

function parseMode(argv: string[], env: NodeJS.ProcessEnv): BenchMode {
  let mode: string = env.BENCH_MODE || 'quick';
  for (const a of argv) {
    if (a === '--quick') mode = 'quick';
    else if (a === '--full') mode = 'full';
    else if (a === '-h' || a === '--help') {
      process.stdout.write('usage: bench [--quick|--full]   (env BENCH_MODE=quick|full; BENCH_UPDATE_DOCS=1 lets a quick run replace a full run in docs)\n');
      process.exit(0);
    } else throw new UsageError(`unexpected argument '${a}'; usage: bench [--quick|--full]`);
  }
  if (mode !== 'quick' && mode !== 'full') throw new UsageError(`BENCH_MODE must be quick or full, not '${mode}'`);
  return mode;
}

async function main(): Promise<void> {
  const mode = parseMode(process.argv.slice(2), process.env);
  let interrupted = false;
  process.on('SIGINT', () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    process.stderr.write('\ninterrupted: cleaning up (Ctrl-C again to quit at once)\n');
  });
  const t0 = Date.now();
  const progress = (msg: string): void => {
    if (interrupted) throw new Error('interrupted');
    process.stdout.write(`[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}\n`);
  };
  const results = await runBench(mode, progress);
  const dir = path.join(REPO_ROOT, 'bench-results', results.startedAt.replace(/[:.]/g, '-'));
  const written = writeResults(results, dir);
  const docs = updateDocs(results, dir, path.join(REPO_ROOT, 'docs/benchmarks.md'), process.env.BENCH_UPDATE_DOCS === '1');
  const rows = ratioRows(results);
  process.stdout.write(`\n${markdownTable(results, rows)}\n${ratioLines(rows).join('\n')}\n\n`);
  process.stdout.write(`wrote ${written.files.map((f) => path.relative(REPO_ROOT, f)).join(', ')}\n`);
  process.stdout.write(docs.updated ? `updated docs/benchmarks.md (${docs.why} run)\n` : `docs/benchmarks.md not updated: ${docs.why}\n`);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err instanceof UsageError ? err.message : err.stack ?? err.message}\n`);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
