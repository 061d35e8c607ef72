// The vmm row end to end with one round: the pod's container printed first and reported the agent (checked inside
// measureVmmStart), the floor VM booted and ran its bundle, memory was read with VMs up, and the rows compare
// each figure with its floor or goal. KUASAR_BENCH_VMM_ROUNDS=N / KUASAR_BENCH_VMM_VMS=N print a bigger measurement.
import { measureVmmStart, vmmRatioRows, vmmRowSkipReason } from '../src/vmm-row';
import { ratioLines } from '../src/report';

jest.setTimeout(600_000);
const reason = vmmRowSkipReason();
const maybe = reason === undefined ? test : test.skip;
// eslint-disable-next-line no-console
if (reason) console.warn(`skipping the vmm row: ${reason}`);

maybe('vmm-sandboxer pod + container start vs bare QEMU boot + crun run, same run; memory per VM and agent RSS', async () => {
  const rounds = Number(process.env.KUASAR_BENCH_VMM_ROUNDS ?? 1);
  const vms = Number(process.env.KUASAR_BENCH_VMM_VMS ?? 1);
  const r = await measureVmmStart(rounds, vms, () => undefined);
  for (const xs of [r.floorMs, r.floorBootMs, r.floorCrunMs, r.podMs, r.podBootMs]) {
    expect(xs).toHaveLength(rounds);
    for (const ms of xs) expect(ms).toBeGreaterThan(0);
  }
  // every pod's container read the agent's RSS: the start rounds and the memory VMs
  expect(r.agentRssKiB).toHaveLength(rounds + vms);
  for (const kb of r.agentRssKiB) expect(kb).toBeGreaterThan(0);
  expect(r.memory.withVmsKiB).toBeGreaterThan(0);
  const rows = vmmRatioRows(r);
  process.stdout.write(`${ratioLines(rows).join('\n')}\nmemory: ${JSON.stringify(r.memory)}; pod ${r.podMs.map(Math.round).join(',')} ms, `
    + `floor boot ${r.floorBootMs.map(Math.round).join(',')} ms + guest crun ${r.floorCrunMs.map(Math.round).join(',')} ms; guest uptime ${JSON.stringify(r.guestUptime)}\n`);
  expect(rows.map((x) => x.unit)).toEqual(['ms', 'ms', 'KiB', 'KiB']);
  // start and agent ratios are positive; the per-VM PSS delta can dip below zero when a GC lands in between
  for (const row of [rows[0]!, rows[1]!, rows[3]!]) expect(row.ratio).toMatch(/^\d+(\.\d+)?×$/);
  expect(Number.isFinite(r.memory.perVmKiB)).toBe(true);
});
