module.exports = require('../../jest.preset.js')(__dirname, {
  // testdata/*.wat -> testdata/build/*.wasm (wat2wasm), rebuilt only when stale
  globalSetup: '<rootDir>/test/global-setup.js',
});
