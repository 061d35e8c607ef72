// The OTLP exporter loads node:http with import(), which jest's CommonJS sandbox refuses without
// --experimental-vm-modules; swc turns those imports into require() for the OpenTelemetry files only.
const preset = require('../../jest.preset.js')(__dirname);
module.exports = {
  ...preset,
  transform: {
    ...preset.transform,
    '/@opentelemetry/.+\\.cjs$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs', ignoreDynamic: false } }],
  },
  transformIgnorePatterns: ['/node_modules/(?!\\.pnpm/@opentelemetry|@opentelemetry)'],
};
