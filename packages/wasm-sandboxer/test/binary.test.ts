// The shipped artifact: dist/bin/wasm-sandboxer (esbuild bundle in a Node SEA, no node_modules, worker code inside
// the bundle) runs modules, and a kill -9 + restart behind its task relay is reported to a waiting client as 255.
import * as grpc from '@grpc/grpc-js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { ClientIO, EventsSink, NS, makeBundle, rpc, runPod, tempDir, until, type TaskClient, type WasmHarness } from './sandboxer';

jest.setTimeout(120_000);

const REPO = path.resolve(__dirname, '../../..');
const BIN = path.join(REPO, 'dist/bin/wasm-sandboxer');
// the task relay is the thin shim binary in relay mode: the one built from this tree, in a dir of the test's own
const relayDir = tempDir('relay');
const RELAY = path.join(relayDir, 'containerd-shim-kuasar-wasm-v2');

beforeAll(() => {
  for (const [cmd, args] of [
    [process.execPath, [path.join(REPO, 'scripts/build-bin.mjs'), 'wasm-sandboxer']],
    ['sh', [path.join(REPO, 'packages/shim/native/build.sh'), relayDir]],
  ] as const) {
    const r = spawnSync(cmd, args, { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${args[0]} failed: ${r.stdout}${r.stderr}`);
  }
});
afterAll(() => fs.rmSync(relayDir, { recursive: true, force: true }));

function startBinary(root: string, sink: EventsSink): Promise<ChildProcess> {
  const child = spawn(BIN, ['--listen', path.join(root, 'c.sock'), '--dir', path.join(root, 'state'), '--config', path.join(root, 'config.toml')], {
    env: { ...process.env, TTRPC_ADDRESS: sink.path, KUASAR_TASK_RELAY: RELAY },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (c: Buffer) => {
      log += c.toString();
      if (log.includes('"msg":"sandboxer ready"')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`wasm-sandboxer exited ${code}: ${log}`)));
  });
}

test('the SEA binary serves pods and runs modules; after kill -9 and a restart a pending Wait gets 255', async () => {
  const root = tempDir('bin');
  fs.writeFileSync(path.join(root, 'config.toml'), '[sandboxer]\nlog_level = "info"\n\n[wasm]\npool_size = 1\ndefault_memory_limit_mib = 64\n');
  const sink = new EventsSink(path.join(root, 'ev.sock'));
  await sink.server.listen(sink.path);
  const dir = path.join(root, 'state');
  let child = await startBinary(root, sink);
  const ios: ClientIO[] = [];
  let client: TtrpcClient | undefined;
  const controller = new sandboxApi.ControllerClient(`unix:${path.join(root, 'c.sock')}`, grpc.credentials.createInsecure());
  try {
    const h = { controller } as WasmHarness;
    const { address, pid } = await runPod(h, 'binpod');
    expect(pid).toBe(0);
    // containerd is handed the relay, which forwards to <dir>/task.sock
    expect(address).toBe(`ttrpc+unix://${dir}/relay.sock`);
    client = await TtrpcClient.connect(address.slice('ttrpc+unix://'.length), { metadata: { 'containerd-namespace-ttrpc': NS } });
    const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;

    const x = new ClientIO(root);
    ios.push(x);
    await tasks.create({ id: 'hello', bundle: makeBundle(root, 'hello', { args: ['/hello.wasm'], sandboxId: 'binpod' }), stdout: x.stdout, stderr: x.stderr });
    const w = tasks.wait({ id: 'hello' });
    await tasks.start({ id: 'hello' });
    expect((await w).exitStatus).toBe(0);
    expect((await x.out).toString()).toBe('hello from wasm\n');
    await tasks.delete({ id: 'hello' });

    // the config's default limit caps a memory bomb that has none of its own
    const b = new ClientIO(root);
    ios.push(b);
    await tasks.create({ id: 'bomb', bundle: makeBundle(root, 'bomb', { args: ['/bomb.wasm'], modules: { '/bomb.wasm': 'memory-bomb' } }), stdout: b.stdout, stderr: b.stderr });
    const bw = tasks.wait({ id: 'bomb' });
    await tasks.start({ id: 'bomb' });
    expect((await bw).exitStatus).toBe(134);
    expect((await b.err).toString()).toContain("of the container's 64.0 MiB memory limit");
    await tasks.delete({ id: 'bomb' });

    const s = new ClientIO(root);
    ios.push(s);
    await tasks.create({ id: 'sleeper', bundle: makeBundle(root, 'sleeper', { args: ['/s.wasm'], modules: { '/s.wasm': 'sleep-long' }, sandboxId: 'binpod' }), stdout: s.stdout });
    const sw = tasks.wait({ id: 'sleeper' });
    await tasks.start({ id: 'sleeper' });

    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    child = await startBinary(root, sink);
    // the relay re-sent the Wait to the new process, which reports the lost module as exited
    expect((await sw).exitStatus).toBe(255);
    await until(() => sink.exitStatus('sleeper') === 255, 5000, 'TaskExit 255');
    expect((await rpc(controller, 'status', { sandboxId: 'binpod' })).state).toBe('SANDBOX_READY');
    await tasks.delete({ id: 'sleeper' });
    await rpc(controller, 'stop', { sandboxId: 'binpod', timeoutSecs: 0 });
    await rpc(controller, 'shutdown', { sandboxId: 'binpod' });
  } finally {
    controller.close();
    await client?.close();
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    // the relay outlives the sandboxer by design; this test started it, so it ends it
    const relayPid = fs.existsSync(path.join(dir, 'relay.pid')) ? Number(fs.readFileSync(path.join(dir, 'relay.pid'), 'utf8').trim()) : 0;
    if (relayPid > 0) process.kill(relayPid, 'SIGTERM');
    for (const io of ios) io.close();
    await sink.server.close(500);
    fs.rmSync(root, { recursive: true, force: true });
  }
});
