// Shared jest settings: tests run TypeScript straight from src/ (no build step) through swc,
// and @kuasar/* imports resolve to the sibling package's src/.
const path = require('node:path');
module.exports = function preset(dir, extra = {}) {
  return {
    rootDir: dir,
    testEnvironment: 'node',
    testMatch: ['<rootDir>/test/**/*.test.ts'],
    transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }] },
    reporters: ['default', path.join(__dirname, 'scripts/jest-summary-reporter.js')],
    moduleNameMapper: { '^@kuasar/([a-z0-9-]+)$': path.join(__dirname, 'packages/$1/src') },
    ...extra,
  };
};
