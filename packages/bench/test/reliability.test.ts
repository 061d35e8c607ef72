// The long churn-with-crashes run (opt-in: `KUASAR_RELIABILITY=1 npx jest test/reliability.test.ts`, or
// `pnpm reliability --full`): the full size, 20 pods for 10 minutes with 3 containerd restarts. Same checks as the
// short run in test/reliability-churn.test.ts, which every test run includes. KUASAR_CHURN_MS shortens it.
import { SANDBOXERS } from '@kuasar/e2e';
import { containerdAvailability } from '@kuasar/testkit';
import { CHURN_SIZES, churnFailures, churnSummary, runChurn } from '../src';

const size = { ...CHURN_SIZES.full, durationMs: Number(process.env.KUASAR_CHURN_MS ?? CHURN_SIZES.full.durationMs) };
jest.setTimeout(size.durationMs + 300_000);

const avail = containerdAvailability('2.1');
// eslint-disable-next-line no-console
if ('reason' in avail) console.warn(`skipping churn: ${avail.reason}`);
const maybe = 'bins' in avail ? it : it.skip;

maybe(`churn: ${size.pods} pods through CRI for ${size.durationMs / 1000} s with sandboxer kill -9 + restart and containerd restarts`, async () => {
  const runc = SANDBOXERS.runc!;
  runc.build();
  const report = await runChurn({ ...size, stack: { command: runc.command() } });
  // eslint-disable-next-line no-console
  console.log(churnSummary(report));
  expect(report.kills).toBeGreaterThan(0);
  expect(churnFailures(report)).toEqual([]);
  expect(report.podsRemoved).toBe(report.podsCreated);
});
