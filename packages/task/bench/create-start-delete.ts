// Median create+start+delete of one busybox bundle (`true`): through the TaskService over a real ttrpc socket
// (create, start, wait, delete, events forwarded to a local sink) versus bare `runc` and `crun` CLI calls.
// Run: bash packages/task/bench/run.sh  (bundles this file with esbuild; not a test)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHarness, removeTestCgroups } from '../test/helpers/harness';
import { createBusyboxBundle } from '../test/helpers/bundle';
import globalSetup from '../test/global-setup';

const N = Number(process.env['BENCH_N'] ?? 30);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function bare(runtime: string, bundle: string): number[] {
  const root = mkdtempSync(join(tmpdir(), `bench-${runtime}-`));
  const out: number[] = [];
  for (let i = 0; i < N + 3; i++) {
    const id = `bare-${i}`;
    const t0 = process.hrtime.bigint();
    execFileSync(runtime, ['--root', root, 'create', '--bundle', bundle, id], { stdio: 'ignore' });
    execFileSync(runtime, ['--root', root, 'start', id], { stdio: 'ignore' });
    execFileSync(runtime, ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    if (i >= 3) out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  rmSync(root, { recursive: true, force: true });
  return out;
}

async function service(runtime: string, bundle: string): Promise<number[]> {
  const h = await startHarness({ runtime });
  const out: number[] = [];
  for (let i = 0; i < N + 3; i++) {
    const id = `svc-${i}`;
    const t0 = process.hrtime.bigint();
    await h.tasks.create({ id, bundle });
    const waited = h.tasks.wait({ id });
    await h.tasks.start({ id });
    await waited;
    await h.tasks.delete({ id });
    if (i >= 3) out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  await h.publisher.flush();
  await h.close();
  return out;
}

async function main(): Promise<void> {
  globalSetup();
  const b = createBusyboxBundle({ args: ['true'], cgroupsPath: '/kuasar-test/bench' });
  try {
    for (const runtime of ['runc', 'crun']) {
      const bareMs = median(bare(runtime, b.path));
      const svcMs = median(await service(runtime, b.path));
      console.log(`${runtime}: bare create+start+delete median ${bareMs.toFixed(1)} ms; TaskService create+wait+start+delete median ${svcMs.toFixed(1)} ms (n=${N})`);
    }
  } finally {
    b.remove();
    removeTestCgroups();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
