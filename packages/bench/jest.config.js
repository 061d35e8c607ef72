// One containerd at a time: the benchmark test drives a real containerd and sandboxer.
// In `pnpm test` (CI) the reliability suite runs its short variant: the decoder/wire fuzz and the bad-input and
// permission matrix (test/reliability-*.test.ts). The churn with sandboxer and containerd crashes
// (test/reliability.test.ts) is left out: a kill -9 during RunPodSandbox can leave a sandbox containerd forgot
// (docs/benchmarks.md), so it would be flaky there. It runs in `pnpm reliability` and with `KUASAR_RELIABILITY=1 npx jest`.
module.exports = require('../../jest.preset.js')(__dirname, {
  maxWorkers: 1,
  testPathIgnorePatterns: process.env.KUASAR_RELIABILITY === '1' ? [] : ['/test/reliability\\.test\\.ts$'],
});
