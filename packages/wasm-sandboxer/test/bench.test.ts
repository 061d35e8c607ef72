// Measurements, printed and not asserted (KUASAR_BENCH=1 npx jest test/bench.test.ts): Task-API start latency of
// the SEA binary for a cached module, and its RSS with 50 idle pods (empty, then each with a sleeping container).
import * as grpc from '@grpc/grpc-js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { ClientIO, EventsSink, NS, makeBundle, rpc, runPod, tempDir, type TaskClient, type WasmHarness } from './sandboxer';

jest.setTimeout(600_000);
const REPO = path.resolve(__dirname, '../../..');
const BIN = path.join(REPO, 'dist/bin/wasm-sandboxer');
const RUNS = Number(process.env['KUASAR_BENCH_RUNS'] ?? 300);
const bench = process.env['KUASAR_BENCH'] === '1' ? test : test.skip;
// another build to compare (A/B), e.g. `node /path/to/bundle.js`: argv split on spaces; default the SEA binary
const COMMAND = process.env['KUASAR_BENCH_COMMAND']?.split(' ').filter(Boolean);
// where the sandboxer's state dir (task records) lives: /tmp by default; the production default /run is a tmpfs on
// most hosts (not on this VM), so KUASAR_BENCH_STATE_PARENT=/dev/shm measures that case
const STATE_PARENT = process.env['KUASAR_BENCH_STATE_PARENT'];

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

bench('Task-API start latency (Create+Start -> first stdout byte) and RSS with 50 idle pods', async () => {
  if (!COMMAND) {
    const build = spawnSync(process.execPath, [path.join(REPO, 'scripts/build-bin.mjs'), 'wasm-sandboxer'], { cwd: REPO, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(build.stderr);
  }
  const [cmd, ...pre] = COMMAND ?? [BIN];
  const root = tempDir('bench');
  const dir = STATE_PARENT ? fs.mkdtempSync(path.join(STATE_PARENT, 'kw-bench-state-')) : path.join(root, 'state');
  const sink = new EventsSink(path.join(root, 'ev.sock'));
  await sink.server.listen(sink.path);
  const child: ChildProcess = spawn(cmd!, [...pre, '--listen', path.join(root, 'c.sock'), '--dir', dir, '--log-level', 'error'], {
    env: { ...process.env, TTRPC_ADDRESS: sink.path, KUASAR_TASK_RELAY: '0' },
    stdio: 'ignore',
  });
  const controller = new sandboxApi.ControllerClient(`unix:${path.join(root, 'c.sock')}`, grpc.credentials.createInsecure());
  let client: TtrpcClient | undefined;
  try {
    for (let i = 0; i < 500 && !fs.existsSync(path.join(root, 'c.sock')); i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300)); // the pool's spare workers finish booting
    const h = { controller } as WasmHarness;
    const rssStart = rssMiB(child.pid!);
    client = await TtrpcClient.connect(path.join(dir, 'task.sock'), { metadata: { 'containerd-namespace-ttrpc': NS } });
    const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;

    // the floor under every call: one ttrpc round trip to the sandboxer (State of an unknown task: NOT_FOUND)
    const rtts: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await tasks.state({ id: 'none' }).catch(() => undefined);
      rtts.push(performance.now() - t);
    }
    const samples: number[] = [];
    const creates: number[] = [];
    const starts: number[] = [];
    const exits: number[] = [];
    const deletes: number[] = [];
    for (let i = -20; i < RUNS; i++) {
      const id = `lat${i + 20}`;
      const bundle = makeBundle(root, id, { args: ['/hello.wasm'] });
      const io = new ClientIO(root);
      // stamped when the bytes arrive, which may be before the Start reply does
      const first = io.firstOutput().then(() => performance.now());
      const t0 = performance.now();
      await tasks.create({ id, bundle, stdout: io.stdout, stderr: io.stderr });
      const t1 = performance.now();
      await tasks.start({ id });
      const t2 = performance.now();
      const t3 = await first;
      if (i >= 0) {
        // the first 20 warm the cache, JIT and connection
        samples.push(t3 - t0);
        creates.push(t1 - t0);
        starts.push(t2 - t1);
      }
      await tasks.wait({ id });
      const t4 = performance.now();
      await tasks.delete({ id });
      if (i >= 0) {
        exits.push(t4 - t2);
        deletes.push(performance.now() - t4);
      }
      io.close();
      fs.rmSync(bundle, { recursive: true, force: true });
    }
    const rssAfterRuns = rssMiB(child.pid!);

    for (let i = 0; i < 50; i++) await runPod(h, `idle${i}`);
    await new Promise((r) => setTimeout(r, 500));
    const rssEmptyPods = rssMiB(child.pid!);
    const ios: ClientIO[] = [];
    for (let i = 0; i < 50; i++) {
      const io = new ClientIO(root);
      ios.push(io);
      const id = `sleep${i}`;
      await tasks.create({ id, bundle: makeBundle(root, id, { args: ['/s.wasm'], modules: { '/s.wasm': 'sleep-long' }, sandboxId: `idle${i}` }), stdout: io.stdout });
      await tasks.start({ id });
    }
    await new Promise((r) => setTimeout(r, 1000));
    const rssSleeping = rssMiB(child.pid!);
    process.stdout.write(
      `wasm-sandboxer (${COMMAND ? COMMAND.join(' ') : 'SEA'}) Task-API start, cached module, n=${samples.length}: p50 ${pct(samples, 50).toFixed(2)} ms, ` +
        `p90 ${pct(samples, 90).toFixed(2)} ms, p99 ${pct(samples, 99).toFixed(2)} ms, max ${Math.max(...samples).toFixed(1)} ms ` +
        `(Create RPC p50 ${pct(creates, 50).toFixed(2)} ms, Start RPC p50 ${pct(starts, 50).toFixed(2)} ms, ` +
        `empty RPC round trip p50 ${pct(rtts, 50).toFixed(2)} ms; then Start reply -> Wait reply p50 ${pct(exits, 50).toFixed(2)} ms, ` +
        `Delete RPC p50 ${pct(deletes, 50).toFixed(2)} ms)\n` +
        `RSS: started ${rssStart.toFixed(1)} MiB, after ${RUNS} runs ${rssAfterRuns.toFixed(1)} MiB, ` +
        `50 idle empty pods ${rssEmptyPods.toFixed(1)} MiB, 50 pods each with a sleeping module ${rssSleeping.toFixed(1)} MiB\n` +
        `state dir ${dir}; load average: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}\n`,
    );
    for (let i = 0; i < 50; i++) {
      await tasks.kill({ id: `sleep${i}`, signal: 9 });
      await tasks.wait({ id: `sleep${i}` });
      await tasks.delete({ id: `sleep${i}` });
      await rpc(controller, 'shutdown', { sandboxId: `idle${i}` });
    }
    for (const io of ios) io.close();
  } finally {
    controller.close();
    await client?.close();
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    await sink.server.close(500);
    fs.rmSync(root, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
