// One containerd at a time: the tests measure timings and assert on the process table.
module.exports = require('../../jest.preset.js')(__dirname, { maxWorkers: 1 });
