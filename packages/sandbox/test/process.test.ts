// The framework as a real sandboxer process: bundled like the shipped binaries, signalled and crashed for real.
import * as grpc from '@grpc/grpc-js';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { build } from 'esbuild';
import { sandboxApi } from '@kuasar/api';
import { isRunning } from '@kuasar/sys';
import { createRequest, rpc, tempDir } from './harness';

jest.setTimeout(60_000);

let bundle: string;

beforeAll(async () => {
  bundle = path.join(tempDir('kuasar-sbx-bundle-'), 'sleep-sandboxer.js');
  await build({
    entryPoints: [path.join(__dirname, 'fixtures', 'sleep-sandboxer.ts')],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    outfile: bundle,
    external: ['koffi'], // native; resolved from @kuasar/sys's node_modules via NODE_PATH
    logLevel: 'error',
  });
});

interface Proc {
  child: ChildProcess;
  logs: Array<{ msg: string; sandbox?: string; level: string }>;
  client: sandboxApi.ControllerClient;
}

const procs: Proc[] = [];
const pods: number[] = [];

afterAll(async () => {
  for (const p of procs) {
    p.client.close();
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  }
  for (const pid of pods) if (isRunning(pid)) process.kill(pid, 'SIGKILL');
});

async function startSandboxer(root: string): Promise<Proc> {
  const listen = path.join(root, 'sleep.sock');
  const child = spawn(process.execPath, [bundle, '--listen', listen, '--dir', path.join(root, 'state'), '--log-level', 'debug'], {
    env: { ...process.env, NODE_PATH: path.join(__dirname, '..', '..', 'sys', 'node_modules'), NOTIFY_SOCKET: '' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs: Proc['logs'] = [];
  let buffered = '';
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const l of lines) {
        try {
          const line = JSON.parse(l);
          logs.push(line);
          if (line.msg === 'sandboxer ready') resolve();
        } catch {
          logs.push({ msg: l, level: 'raw' });
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`sandboxer exited ${code}: ${logs.map((l) => l.msg).join(' | ')}`)));
  });
  await ready;
  const p = { child, logs, client: new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure()) };
  procs.push(p);
  return p;
}

test('SIGTERM: the process exits 0 and its pods keep running; the next process re-adopts them', async () => {
  const root = tempDir('kuasar-sbx-proc-');
  const p1 = await startSandboxer(root);
  await rpc(p1.client, 'create', createRequest('survivor'));
  const { pid } = await rpc(p1.client, 'start', { sandboxId: 'survivor' });
  pods.push(pid);
  p1.client.close();

  p1.child.kill('SIGTERM');
  const [code] = await once(p1.child, 'exit');
  expect(code).toBe(0);
  expect(p1.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['signal received', 'sandboxer stopped']));
  expect(isRunning(pid)).toBe(true);

  const p2 = await startSandboxer(root);
  const status = await rpc(p2.client, 'status', { sandboxId: 'survivor' });
  expect(status.state).toBe('SANDBOX_READY');
  expect(status.pid).toBe(pid);
  const wait = rpc(p2.client, 'wait', { sandboxId: 'survivor' });
  await rpc(p2.client, 'stop', { sandboxId: 'survivor', timeoutSecs: 1 });
  expect((await wait).exitStatus).toBe(255);
  await rpc(p2.client, 'shutdown', { sandboxId: 'survivor' });
  expect(existsSync(path.join(root, 'state', 'survivor'))).toBe(false);
});

test('SIGKILL (a real crash): the stale socket is replaced, live pods re-adopted, dead pods cleaned up', async () => {
  const root = tempDir('kuasar-sbx-proc-');
  const p1 = await startSandboxer(root);
  await rpc(p1.client, 'create', createRequest('alive'));
  const alive = await rpc(p1.client, 'start', { sandboxId: 'alive' });
  await rpc(p1.client, 'create', createRequest('doomed'));
  const doomed = await rpc(p1.client, 'start', { sandboxId: 'doomed' });
  pods.push(alive.pid, doomed.pid);
  p1.client.close();

  p1.child.kill('SIGKILL');
  await once(p1.child, 'exit');
  expect(existsSync(path.join(root, 'sleep.sock'))).toBe(true); // left behind, nobody answers
  process.kill(doomed.pid, 'SIGKILL');

  const p2 = await startSandboxer(root);
  expect((await rpc(p2.client, 'status', { sandboxId: 'alive' })).state).toBe('SANDBOX_READY');
  await expect(rpc(p2.client, 'status', { sandboxId: 'doomed' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  expect(p2.logs.find((l) => l.msg === 'recovery: sandbox dead, cleaning up')?.sandbox).toBe('doomed');
  expect(p2.logs.find((l) => l.msg === 'recovery: sandbox alive, re-adopted')?.sandbox).toBe('alive');
  expect(existsSync(path.join(root, 'state', 'doomed'))).toBe(false);
  await rpc(p2.client, 'shutdown', { sandboxId: 'alive' });
  expect(isRunning(alive.pid)).toBe(false);
});
