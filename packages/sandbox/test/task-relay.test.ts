// Where the sandboxer finds its task relay (the thin shim binary's `relay` mode, packages/shim/native/task-relay.c)
// and how it starts or reuses it: the real binary, built from source, in front of a real task server, across a
// sandboxer restart on the same state dir.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { task } from '@kuasar/api';
import { OciCliEngine } from '@kuasar/task';
import { Code, TtrpcClient, createClient } from '@kuasar/ttrpc';
import {
  RELAY_PID_FILE, RELAY_SOCKET, TaskRelayError, createLogger, defineConfig, ensureTaskRelay, findTaskRelayBinary,
  startSandboxer, taskRelayArgs, taskRelayBinaryName, type RunningSandboxer, type SandboxerSpec,
} from '../src';
import { isRunning } from '@kuasar/sys';
import { LogCapture, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(60_000);

const BUILD_SH = path.resolve(__dirname, '../../shim/native/build.sh');
let binDir: string;
let relayBin: string;
const relayPids: number[] = [];

beforeAll(() => {
  binDir = tempDir('kuasar-relay-bin-');
  const r = spawnSync('sh', [BUILD_SH, binDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`shim build failed: ${r.stderr}`);
  relayBin = path.join(binDir, taskRelayBinaryName('runc'));
});

afterAll(() => {
  // The relay outlives sandboxers by design; the tests that started one end it.
  for (const pid of relayPids) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
});

function relayPid(dir: string): number {
  const pid = Number(fs.readFileSync(path.join(dir, RELAY_PID_FILE), 'utf8').trim());
  relayPids.push(pid);
  return pid;
}

describe('findTaskRelayBinary', () => {
  function layout(): { root: string; put: (rel: string) => string } {
    const root = tempDir('kuasar-relay-find-');
    return {
      root,
      put: (rel) => {
        const p = path.join(root, rel);
        fs.mkdirSync(path.dirname(p), { recursive: true });
        fs.copyFileSync('/bin/true', p);
        fs.chmodSync(p, 0o755);
        return p;
      },
    };
  }

  test('next to the sandboxer executable first (install.sh and dist/bin put both in one dir)', () => {
    const { put } = layout();
    const sea = put('bin/runc-sandboxer');
    const relay = put('bin/containerd-shim-kuasar-runc-v2');
    const onPath = put('other/containerd-shim-kuasar-runc-v2');
    expect(findTaskRelayBinary('runc', { main: sea, env: { PATH: path.dirname(onPath) } })).toBe(relay);
  });

  test('a dev bundle finds <repo>/dist/bin, then PATH', () => {
    const { put } = layout();
    const script = put('packages/wasm-sandboxer/dist/main.js');
    const onPath = put('path/containerd-shim-kuasar-wasm-v2');
    expect(findTaskRelayBinary('wasm', { main: script, env: { PATH: `relative:${path.dirname(onPath)}` } })).toBe(onPath);
    const built = put('dist/bin/containerd-shim-kuasar-wasm-v2');
    expect(findTaskRelayBinary('wasm', { main: script, env: { PATH: path.dirname(onPath) } })).toBe(built);
  });

  test('$KUASAR_TASK_RELAY names the binary; a bad one, or none anywhere, is a TaskRelayError that says what to do', () => {
    const { put, root } = layout();
    const chosen = put('x/my-relay');
    expect(findTaskRelayBinary('runc', { env: { KUASAR_TASK_RELAY: chosen, PATH: '' } })).toBe(chosen);
    expect(() => findTaskRelayBinary('runc', { env: { KUASAR_TASK_RELAY: 'my-relay' } })).toThrow(/not an executable absolute path/);
    expect(() => findTaskRelayBinary('runc', { env: { KUASAR_TASK_RELAY: path.join(root, 'absent') } })).toThrow(TaskRelayError);
    expect(() => findTaskRelayBinary('runc', { main: path.join(root, 'bin/runc-sandboxer'), env: { PATH: root } })).toThrow(
      /containerd-shim-kuasar-runc-v2 \(the task relay\) is not next to the sandboxer nor on PATH; install it/,
    );
  });
});

describe('ensureTaskRelay', () => {
  test('starts the C relay detached, then reuses the live one instead of starting a second', async () => {
    const dir = tempDir('kuasar-relay-ens-');
    const logs = new LogCapture();
    const logger = createLogger({ level: 'debug', destination: logs });
    const listen = await ensureTaskRelay(dir, [relayBin, ...taskRelayArgs(dir, 'error')], logger);
    expect(listen).toBe(path.join(dir, RELAY_SOCKET));
    const pid = relayPid(dir);
    expect(isRunning(pid)).toBe(true);
    // Its own session: a signal to the sandboxer's process group does not reach it.
    expect(Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3])).toBe(pid);
    expect(logs.find('task relay started')).toMatchObject({ relayPid: pid, bin: relayBin });

    expect(await ensureTaskRelay(dir, [relayBin, ...taskRelayArgs(dir, 'error')], logger)).toBe(listen);
    expect(logs.find('task relay already running; reusing it')).toBeDefined();
    expect(relayPid(dir)).toBe(pid);
    process.kill(pid, 'SIGTERM');
  });

  test('a relay that cannot start is a TaskRelayError, not a hang', async () => {
    const dir = tempDir('kuasar-relay-bad-');
    const logger = createLogger({ level: 'fatal' });
    await expect(ensureTaskRelay(dir, [relayBin, 'relay', '--listen', 'relative'], logger, 3000)).rejects.toThrow(TaskRelayError);
    await expect(ensureTaskRelay(dir, [path.join(dir, 'absent')], logger, 3000)).rejects.toThrow(/did not start/);
  });
});

const schema = defineConfig({});
const spec: SandboxerSpec<typeof schema, SleepKind> = {
  kind: 'test',
  version: '0.0.0-test',
  description: 'relay test sandboxer',
  configSchema: schema,
  createSandboxer: () => new SleepKind(),
  createEngine: (ctx) => new OciCliEngine({ root: path.join(ctx.dir, '.runc'), logger: ctx.logger }),
};

test('a sandboxer hands containerd the relay; a call made while it restarts is answered by the next one', async () => {
  const root = tempDir('kuasar-relay-sbx-');
  const dir = path.join(root, 'state');
  const options = { listen: path.join(root, 'ctl.sock'), dir, logLevel: 'error' as const };
  const logs1 = new LogCapture();
  let running: RunningSandboxer | undefined = await startSandboxer(spec, options, createLogger({ level: 'debug', destination: logs1 }), [relayBin]);
  const pid = relayPid(dir);
  try {
    expect(logs1.find('task relay started')).toBeDefined();
    const c = await TtrpcClient.connect(path.join(dir, RELAY_SOCKET));
    const client = createClient(task.TaskV3Definition, c);
    // The real task service behind the relay answers.
    await expect(client.state({ id: 'nope', execId: '' })).rejects.toMatchObject({ code: Code.NOT_FOUND });

    await running.close();
    running = undefined;
    // State is safe to repeat: the relay holds it until a sandboxer is back.
    const during = client.state({ id: 'during', execId: '' });
    const settled = jest.fn();
    during.then(settled, settled);
    await new Promise((r) => setTimeout(r, 300));
    expect(settled).not.toHaveBeenCalled();

    const logs2 = new LogCapture();
    running = await startSandboxer(spec, options, createLogger({ level: 'debug', destination: logs2 }), [relayBin]);
    expect(logs2.find('task relay already running; reusing it')).toBeDefined();
    await expect(during).rejects.toMatchObject({ code: Code.NOT_FOUND, message: expect.stringContaining('during') });
    expect(relayPid(dir)).toBe(pid);
    await c.close();
  } finally {
    await running?.close();
    process.kill(pid, 'SIGTERM');
  }
});

test('without a relay binary the sandboxer logs why and hands out the task socket itself', async () => {
  const root = tempDir('kuasar-relay-none-');
  const dir = path.join(root, 'state');
  const logs = new LogCapture();
  const running = await startSandboxer(spec, { listen: path.join(root, 'ctl.sock'), dir }, createLogger({ level: 'debug', destination: logs }), () => {
    throw new TaskRelayError('containerd-shim-kuasar-test-v2 (the task relay) is not next to the sandboxer nor on PATH');
  });
  try {
    expect(logs.find('task relay unavailable; handing out the task socket itself')).toMatchObject({ level: 'error', err: expect.stringContaining('not next to the sandboxer') });
    expect(fs.existsSync(path.join(dir, RELAY_SOCKET))).toBe(false);
  } finally {
    await running.close();
  }
});
