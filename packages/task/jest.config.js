module.exports = require('../../jest.preset.js')(__dirname, {
  globalSetup: '<rootDir>/test/global-setup.ts',
  testTimeout: 30000,
  // the tests drive real runtimes and cgroups; running files in parallel only makes timing flaky on 2 cores
  maxWorkers: 1,
});
