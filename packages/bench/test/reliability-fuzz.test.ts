// Fuzzing of every request decoder the sandboxer's servers expose (Task v2/v3, Controller, Events Forward): in
// process through the exact decode functions, and over the real sockets of a real runc-sandboxer process.
// RELIABILITY_MODE=full for the full size; FUZZ_SEED replays a run.
import { FUZZ_SIZES, SandboxerTarget, fuzzDecoders, fuzzWire, requestDecoders } from '../src';

jest.setTimeout(1_800_000);

const MODE = process.env.RELIABILITY_MODE === 'full' ? 'full' : 'quick';
const SIZES = FUZZ_SIZES[MODE];
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 0x7fffffff);

test('the decoders cover all 17 Task RPCs (v2 and v3), the 9 Controller RPCs and Events Forward', () => {
  const names = requestDecoders().map((d) => d.name);
  expect(names.filter((n) => n.startsWith('containerd.task.v2.Task/'))).toHaveLength(17);
  expect(names.filter((n) => n.startsWith('containerd.task.v3.Task/'))).toHaveLength(17);
  expect(names.filter((n) => n.startsWith('containerd.services.sandbox.v1.Controller/'))).toHaveLength(9);
  expect(names).toContain('containerd.services.events.ttrpc.v1.Events/Forward');
});

test(`${SIZES.decoderCases} mutated requests through every decoder: errors only, no hang, bounded memory (seed ${SEED})`, () => {
  const r = fuzzDecoders({ cases: SIZES.decoderCases, seed: SEED });
  // eslint-disable-next-line no-console
  console.log(`decoder fuzz: ${r.cases} cases over ${r.decoders} decoders, ${r.accepted} decoded, ${r.rejected} rejected, slowest ${r.slowestMs.toFixed(1)} ms, heap ${(r.heapGrowthBytes / 1024).toFixed(0)} KiB`);
  expect(r.crashes).toEqual([]);
  expect(r.cases).toBe(SIZES.decoderCases);
  // both outcomes occur: the mutations reach past the first byte
  expect(r.accepted).toBeGreaterThan(r.cases / 10);
  expect(r.rejected).toBeGreaterThan(r.cases / 10);
  expect(r.heapGrowthBytes).toBeLessThan(32 << 20);
});

test(`${SIZES.wireCases} mutated calls over the real sockets of a runc-sandboxer: clear statuses, it keeps serving, nothing left (seed ${SEED})`, async () => {
  const target = await SandboxerTarget.start();
  try {
    const r = await fuzzWire(target, { cases: SIZES.wireCases, seed: SEED });
    // eslint-disable-next-line no-console
    console.log(`wire fuzz: ${JSON.stringify(r)}`);
    expect(r.sandboxerAlive).toBe(true);
    expect(r.hangs).toEqual([]);
    expect(r.unclear).toEqual([]);
    expect(r.answersAfter).toBe(true);
    expect(r.leftoverTaskDirs).toEqual([]);
    expect(target.sandboxDirs()).toEqual([]);
    // every fd the calls opened was closed again (a leak per call would be thousands); RSS did not run away
    expect(r.fds.end - r.fds.start).toBeLessThanOrEqual(8);
    expect(r.rssKiB.end - r.rssKiB.start).toBeLessThan(96 * 1024);
  } finally {
    await target.stop();
  }
});
