// One containerd at a time: the benchmark test drives a real containerd and sandboxer.
// In `pnpm test` (CI) the reliability suite runs its short variant: the decoder/wire fuzz, the bad-input and
// permission matrix and the quick churn with sandboxer kills and a containerd restart (test/reliability-*.test.ts).
// The long churn (test/reliability.test.ts) is opt-in: `pnpm reliability` or `KUASAR_RELIABILITY=1 npx jest`.
module.exports = require('../../jest.preset.js')(__dirname, {
  maxWorkers: 1,
  testPathIgnorePatterns: process.env.KUASAR_RELIABILITY === '1' ? [] : ['/test/reliability\\.test\\.ts$'],
});
