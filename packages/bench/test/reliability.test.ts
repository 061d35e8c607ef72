// The short churn-with-crashes run: pods created and removed through containerd 2.1 while the runc-sandboxer
// is SIGKILLed and restarted, and containerd itself once. Asserts correctness only (nothing lost, stuck, misreported
// or leaked), never timing.
import { SANDBOXERS } from '@kuasar/e2e';
import { containerdAvailability } from '@kuasar/testkit';
import { CHURN_SIZES, churnSummary, runChurn, type ChurnReport } from '../src';

jest.setTimeout(420_000);

const avail = containerdAvailability('2.1');
// eslint-disable-next-line no-console
if ('reason' in avail) console.warn(`skipping churn: ${avail.reason}`);
const maybe = 'bins' in avail ? it : it.skip;
const DURATION_MS = Number(process.env.KUASAR_CHURN_MS ?? CHURN_SIZES.quick.durationMs);

maybe(`churn: ${CHURN_SIZES.quick.pods} pods through CRI for ${DURATION_MS / 1000} s with sandboxer kill -9 + restart`, async () => {
  // The tree's code, bundled the way the e2e suite runs it (the packaged binary is what `pnpm bench` measures).
  const runc = SANDBOXERS.runc!;
  runc.build();
  const report: ChurnReport = await runChurn({ ...CHURN_SIZES.quick, durationMs: DURATION_MS, stack: { command: runc.command() } });
  // eslint-disable-next-line no-console
  console.log(churnSummary(report));
  expect(report.kills).toBeGreaterThan(0);
  expect(report.podsCreated).toBeGreaterThan(0);
  expect(report.podsLost).toEqual([]);
  expect(report.podsStuck).toEqual([]);
  expect(report.podsListedAtEnd).toEqual([]);
  expect(report.containersListedAtEnd).toEqual([]);
  expect(report.exitsWrong).toEqual([]);
  expect(report.podsRemoved).toBe(report.podsCreated);
  // The restart contract (docs/operations.md): a start interrupted by the crash is reported to the caller
  // (StartError); an exit while no sandboxer ran is reported as 255; every other exit keeps its real code, also
  // for containers re-adopted by the restarted sandboxer.
  expect(report.exitsReported + report.exitsWhileDown.length + report.startErrors.length).toBe(report.podsCreated);
  // containers re-adopted across a restart are among exitsReported (their count is in the summary): a re-adopted
  // exit reported 255 outside a down window lands in exitsWrong above
  expect(report.containerdRestarts).toBe(CHURN_SIZES.quick.containerdRestarts);
  expect(report.leaks).toEqual({ mounts: [], processes: [], cgroups: [], stateDirs: [], sockets: [], shims: [] });
});
