#!/usr/bin/env node
// Start latency and memory of the wasm runner, measured through the real pool with real FIFOs.
//   create+start -> first output: from pool.run() to the first stdout byte the host reads (cached module)
//   kill -> exited: infinite loop, a module blocked reading an empty stdin FIFO, one asleep in poll_oneoff
//   RSS: 50 idle pool workers, and 50 running modules blocked on stdin
// The source is bundled with esbuild exactly as the sandboxer binary is (minified), so the numbers include that.
//
// usage: node bench/start-latency.mjs [--runs N]
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { buildTestdata, BUILD } from '../scripts/build-testdata.mjs';

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 300;

buildTestdata();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wasm-bench-'));
const bundle = path.join(tmp, 'runner.js');
await esbuild.build({
  entryPoints: [path.join(PKG, 'src/index.ts')],
  outfile: bundle,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: true,
  logLevel: 'warning',
});
const { WasmRunnerPool } = createRequire(import.meta.url)(bundle);
const rootfs = fs.mkdtempSync(path.join(tmp, 'rootfs-'));
const mod = (name) => path.join(BUILD, `${name}.wasm`);
const devnull = fs.openSync('/dev/null', 'r+');
let fifoSeq = 0;

/**
 * A FIFO as containerd hands one over. `blockingRead`: the module reads (stdin), so its read end must block;
 * otherwise the module writes and the host reads the non-blocking end (as a net.Socket).
 */
function fifo({ blockingRead = false } = {}) {
  const p = path.join(tmp, `fifo-${fifoSeq++}`);
  execFileSync('mkfifo', [p]);
  let r = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(p, fs.constants.O_WRONLY);
  if (blockingRead) {
    const nb = r;
    r = fs.openSync(`/proc/self/fd/${nb}`, fs.constants.O_RDONLY); // a writer exists: does not block
    fs.closeSync(nb);
  }
  fs.unlinkSync(p);
  return { r, w };
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(2)} ms  p99 ${pct(xs, 99).toFixed(2)} ms  (n=${xs.length})`;
const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;
const rss = () => {
  globalThis.gc?.();
  return process.memoryUsage().rss;
};

async function startToFirstOutput(pool) {
  const { r, w } = fifo();
  const sock = new net.Socket({ fd: r, readable: true, writable: false });
  const first = new Promise((resolve) => sock.once('data', () => resolve(performance.now())));
  const t0 = performance.now();
  const m = await pool.run({ modulePath: mod('hello'), args: ['hello.wasm'], env: [], preopens: { '/': rootfs }, stdin: devnull, stdout: w, stderr: devnull });
  const tStarted = performance.now();
  const tFirst = await first;
  await m.exited;
  fs.closeSync(w);
  sock.destroy();
  return { started: tStarted - t0, first: tFirst - t0 };
}

/** prepare() (what Create does), then start() -> first output (what is left for Start) */
async function preparedStartToFirstOutput(pool) {
  const { r, w } = fifo();
  const sock = new net.Socket({ fd: r, readable: true, writable: false });
  const first = new Promise((resolve) => sock.once('data', () => resolve(performance.now())));
  const t0 = performance.now();
  const p = await pool.prepare({ modulePath: mod('hello'), args: ['hello.wasm'], env: [], preopens: { '/': rootfs }, stdin: devnull, stdout: w, stderr: devnull });
  const t1 = performance.now();
  const m = p.start();
  const tFirst = await first;
  await m.exited;
  fs.closeSync(w);
  sock.destroy();
  return { prepare: t1 - t0, start: tFirst - t1 };
}

const pool = new WasmRunnerPool({ size: 4 });
await pool.warm();

const cold = await startToFirstOutput(pool); // compiles the module: a cache miss
const started = [];
const first = [];
for (let i = 0; i < RUNS; i++) {
  const t = await startToFirstOutput(pool);
  started.push(t.started);
  first.push(t.first);
}
process.stdout.write(`first run (module compiled, cache miss): start ${cold.started.toFixed(2)} ms, first output ${cold.first.toFixed(2)} ms\n`);
process.stdout.write(`run() resolved (instantiated, _start called): ${fmt(started)}\n`);
process.stdout.write(`create+start -> first output, cached module:  ${fmt(first)}\n`);
const prepares = [];
const wakes = [];
for (let i = 0; i < RUNS; i++) {
  const t = await preparedStartToFirstOutput(pool);
  prepares.push(t.prepare);
  wakes.push(t.start);
}
process.stdout.write(`prepare() (at Create), cached module:        ${fmt(prepares)}\n`);
process.stdout.write(`start() of a prepared module -> first output: ${fmt(wakes)}\n`);

const killLoop = [];
for (let i = 0; i < 30; i++) {
  const m = await pool.run({ modulePath: mod('infinite-loop'), args: ['loop.wasm'], env: [], preopens: {}, stdin: devnull, stdout: devnull, stderr: devnull });
  await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  m.kill('SIGKILL');
  await m.exited;
  killLoop.push(performance.now() - t0);
}
process.stdout.write(`kill -> exited, tight loop:            ${fmt(killLoop)}\n`);

const killBlocked = [];
for (let i = 0; i < 30; i++) {
  const stdin = fifo({ blockingRead: true });
  const m = await pool.run({ modulePath: mod('stdin-echo'), args: ['echo.wasm'], env: [], preopens: {}, stdin: stdin.r, stdout: devnull, stderr: devnull });
  await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  m.kill('SIGTERM');
  await m.exited;
  killBlocked.push(performance.now() - t0);
  fs.closeSync(stdin.r);
  fs.closeSync(stdin.w);
}
process.stdout.write(`kill -> exited, blocked reading stdin: ${fmt(killBlocked)}\n`);

const killAsleep = [];
for (let i = 0; i < 30; i++) {
  const m = await pool.run({ modulePath: mod('sleep-long'), args: ['sleep.wasm'], env: [], preopens: {}, stdin: devnull, stdout: devnull, stderr: devnull });
  await new Promise((r) => setTimeout(r, 5));
  const t0 = performance.now();
  m.kill('SIGTERM');
  await m.exited;
  killAsleep.push(performance.now() - t0);
}
process.stdout.write(`kill -> exited, asleep in poll_oneoff:  ${fmt(killAsleep)}\n`);
await pool.close();

const base = rss();
const big = new WasmRunnerPool({ size: 50, maxIdle: 50 });
await big.warm();
await new Promise((r) => setTimeout(r, 200));
const idle50 = rss();
process.stdout.write(`RSS: ${mib(base)} before the pool; 50 idle workers ${mib(idle50)} (+${mib((idle50 - base) / 50)} per worker)\n`);
await big.close();

// A running module holds one worker for its whole life (wasi.start is synchronous), so measure 50 of them on a
// pool that keeps no spares.
const base2 = rss();
const busy = new WasmRunnerPool({ size: 0, maxIdle: 0 });
const running = [];
const stdins = [];
for (let i = 0; i < 50; i++) {
  const stdin = fifo({ blockingRead: true });
  stdins.push(stdin);
  running.push(await busy.run({ modulePath: mod('stdin-echo'), args: ['echo.wasm'], env: [], preopens: { '/': rootfs }, stdin: stdin.r, stdout: devnull, stderr: devnull }));
}
await new Promise((r) => setTimeout(r, 200));
const run50 = rss();
process.stdout.write(`RSS: 50 running modules blocked on stdin ${mib(run50)} (+${mib((run50 - base2) / 50)} per module)\n`);
for (const s of stdins) fs.closeSync(s.w); // EOF: every module returns
const exits = await Promise.all(running.map((m) => m.exited));
process.stdout.write(`50 modules exited after stdin EOF: codes ${[...new Set(exits.map((e) => e.exitCode))].join(',')}\n`);
for (const s of stdins) fs.closeSync(s.r);
await busy.close();
fs.rmSync(tmp, { recursive: true, force: true });
