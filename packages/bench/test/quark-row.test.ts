// The quark row end to end with a few rounds: every pod's container and every bare `runsc run` printed/exited as it
// should (checked inside measureQuarkStart), both sides have their samples, and the row compares the two.
// KUASAR_BENCH_QUARK_ROUNDS=N prints a measurement with N rounds.
import { measureQuarkStart, quarkRatioRows, quarkRowSkipReason } from '../src/quark-row';
import { ratioLines } from '../src/report';

jest.setTimeout(600_000);
const reason = quarkRowSkipReason();
const maybe = reason === undefined ? test : test.skip;
// eslint-disable-next-line no-console
if (reason) console.warn(`skipping the quark row: ${reason}`);

maybe('quark-sandboxer pod + container start vs bare `runsc run`, same run', async () => {
  const rounds = Number(process.env.KUASAR_BENCH_QUARK_ROUNDS ?? 3);
  const r = await measureQuarkStart(rounds, () => undefined);
  expect(r.bareMs).toHaveLength(rounds);
  expect(r.podMs).toHaveLength(rounds);
  for (const ms of [...r.bareMs, ...r.podMs]) expect(ms).toBeGreaterThan(0);
  const rows = quarkRatioRows(r);
  expect(rows).toHaveLength(1);
  expect(rows[0]!.ratio).toMatch(/^\d+(\.\d+)?×$/);
  process.stdout.write(`${ratioLines(rows).join('\n')}\n`);
});
