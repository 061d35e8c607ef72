// The wasm row end to end with a few tasks per runner: every `ctr run --rm` and Task-API task printed what it should
// (checked inside measureWasmTasks), each runner has its samples, and the rows compare wasm with the runc anchors.
// KUASAR_BENCH_WASM_RUNS=N prints a measurement with N tasks per runner.
import { IDLE_PODS, measureWasmTasks, wasmRatioRows, wasmRowSkipReason } from '../src/wasm-row';
import { ratioLines } from '../src/report';

jest.setTimeout(600_000);
const reason = wasmRowSkipReason();
const maybe = reason === undefined ? test : test.skip;
// eslint-disable-next-line no-console
if (reason) console.warn(`skipping the wasm row: ${reason}`);

maybe('wasm vs runc-sandboxer and the runc-v2 shim through `ctr run --rm`, same containerd, same run', async () => {
  const runs = Number(process.env.KUASAR_BENCH_WASM_RUNS ?? 4);
  const r = await measureWasmTasks(runs, () => undefined);
  const labels = Object.keys(r.serialMs);
  expect(labels).toEqual(['wasm-sandboxer (hello.wasm)', 'runc-sandboxer (busybox echo)', 'runc-v2 shim (busybox echo)']);
  for (const l of labels) {
    expect(r.serialMs[l]).toHaveLength(runs);
    expect(r.serialTasksPerSec[l]).toBeGreaterThan(0);
    expect(r.parallelTasksPerSec[l]).toBeGreaterThan(0);
  }
  expect(r.taskApiMs.wasm).toHaveLength(runs);
  expect(r.taskApiMs.runc).toHaveLength(runs);
  expect(r.startMs.wasm.length).toBeGreaterThanOrEqual(100);
  expect(r.startMs.runc.length).toBe(r.startMs.wasm.length);
  expect(r.ctrFloorMs).toHaveLength(runs);
  // the idle pods cost something, and not more than a whole worker (about 6 MiB) each
  expect(r.memory.pods).toBe(IDLE_PODS);
  expect(r.memory.withPods.rssKiB).toBeGreaterThan(r.memory.before.rssKiB);
  expect(r.memory.withPods.pssKiB).toBeGreaterThan(r.memory.before.pssKiB);
  expect(r.memory.withPods.rssKiB - r.memory.before.rssKiB).toBeLessThan(IDLE_PODS * 12 * 1024);
  const rows = wasmRatioRows(r);
  expect(rows.map((x) => `${x.ours} | ${x.anchor} | ${x.unit}`)).toEqual([
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo) | tasks/s',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo) | tasks/s',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo) | ms',
    'wasm-sandboxer (hello.wasm) | runc-v2 shim (busybox echo) | tasks/s',
    'wasm-sandboxer (hello.wasm) | runc-v2 shim (busybox echo) | tasks/s',
    'wasm-sandboxer (hello.wasm) | runc-v2 shim (busybox echo) | ms',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo, Task API) | tasks/s',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo, Task API) | ms',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo, Task API) | ms',
    'containerd + ctr | whole `ctr run --rm` of hello.wasm | ms',
    'wasm-sandboxer (hello.wasm) | runc-sandboxer (busybox echo) | tasks/s',
    `wasm-sandboxer + ${IDLE_PODS} pods | wasm-sandboxer before the pods | MiB`,
    `wasm-sandboxer + ${IDLE_PODS} pods | wasm-sandboxer before the pods | MiB`,
  ]);
  process.stdout.write(`${ratioLines(rows).join('\n')}\n`);
});
