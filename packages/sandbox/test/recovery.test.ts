import * as grpc from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRunning } from '@kuasar/sys';
import { type Harness, createRequest, rpc, startHarness, stopHarness, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(20_000);

const started: Harness[] = [];
afterEach(async () => {
  for (const h of started.splice(0)) {
    for (const id of h.serving.controller.ids()) await h.serving.controller.shutdown(id).catch(() => undefined);
    await stopHarness(h).catch(() => undefined);
  }
});

async function start(root: string): Promise<Harness> {
  const h = await startHarness({ root, kind: new SleepKind() });
  started.push(h);
  return h;
}

/** A crash, as far as the state dir and the sandboxes can tell: no graceful close, nothing stopped. */
function crash(h: Harness): void {
  h.kind.forgetChildren();
  h.client.close();
  h.serving.server.kill();
  started.splice(started.indexOf(h), 1);
}

test('after a crash: live sandboxes are re-adopted, dead ones cleaned up, corrupt records moved aside', async () => {
  const root = tempDir('kuasar-sbx-recover-');
  const h1 = await start(root);
  await rpc(h1.client, 'create', createRequest('live'));
  const live = await rpc(h1.client, 'start', { sandboxId: 'live' });
  await rpc(h1.client, 'create', createRequest('dead'));
  const dead = await rpc(h1.client, 'start', { sandboxId: 'dead' });
  await rpc(h1.client, 'create', createRequest('never-started'));
  crash(h1);

  // While the sandboxer is down: one pod dies, and two records get damaged.
  process.kill(dead.pid, 'SIGKILL');
  await waitFor(() => !isRunning(dead.pid));
  mkdirSync(path.join(h1.dir, 'torn'));
  writeFileSync(path.join(h1.dir, 'torn', 'sandbox.json'), '{"version":1,"id":"torn","sta');
  mkdirSync(path.join(h1.dir, 'odd'));
  writeFileSync(path.join(h1.dir, 'odd', 'sandbox.json'), JSON.stringify({ version: 1, id: 'odd', state: 'exploded', pid: 1 }));

  const h2 = await start(root);
  expect(h2.serving.recovery.adopted.sort()).toEqual(['live', 'never-started']);
  expect(h2.serving.recovery.cleaned).toEqual(['dead']);
  expect(h2.serving.recovery.corrupt.sort()).toEqual(['odd', 'torn']);

  // live: READY, same pid, and Wait still blocks until it really exits.
  const status = await rpc(h2.client, 'status', { sandboxId: 'live', verbose: true });
  expect(status.state).toBe('SANDBOX_READY');
  expect(status.pid).toBe(live.pid);
  expect(isRunning(live.pid)).toBe(true);
  let waited = false;
  const wait = rpc(h2.client, 'wait', { sandboxId: 'live' }).then((r) => ((waited = true), r));
  await new Promise((r) => setTimeout(r, 200));
  expect(waited).toBe(false);
  await rpc(h2.client, 'stop', { sandboxId: 'live', timeoutSecs: 2 });
  expect((await wait).exitStatus).toBe(255); // not our child any more: the real status is unknowable
  expect(isRunning(live.pid)).toBe(false);

  // dead: cleaned up through the kind and gone from disk, with the decision logged.
  expect(h2.kind.calls).toContainEqual({ op: 'shutdown', id: 'dead' });
  expect(existsSync(path.join(h2.dir, 'dead'))).toBe(false);
  await expect(rpc(h2.client, 'status', { sandboxId: 'dead' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  expect(h2.logs.find('recovery: sandbox dead, cleaning up', 'dead')).toBeDefined();
  expect(h2.logs.find('recovery: sandbox alive, re-adopted', 'live')).toBeDefined();

  // corrupt: moved aside (not deleted), logged, and the id stays taken so nothing overwrites the evidence.
  for (const id of ['torn', 'odd']) {
    const files = readdirSync(path.join(h2.dir, id));
    expect(files).not.toContain('sandbox.json');
    expect(files.some((f) => /^sandbox\.json\.corrupt-/.test(f))).toBe(true);
    const line = h2.logs.find('recovery: corrupt sandbox record moved aside', id);
    expect(line?.level).toBe('error');
  }
  expect(readFileSync(path.join(h2.dir, 'torn', readdirSync(path.join(h2.dir, 'torn'))[0]), 'utf8')).toContain('"sta');
  await expect(rpc(h2.client, 'create', createRequest('torn'))).rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS });

  // never-started: still created, can be started now.
  const late = await rpc(h2.client, 'start', { sandboxId: 'never-started' });
  expect(isRunning(late.pid)).toBe(true);
});

test('a graceful close leaves sandboxes running and the next server re-adopts them', async () => {
  const root = tempDir('kuasar-sbx-recover-');
  const h1 = await start(root);
  await rpc(h1.client, 'create', createRequest('keep'));
  const { pid } = await rpc(h1.client, 'start', { sandboxId: 'keep' });
  const pendingWait = rpc(h1.client, 'wait', { sandboxId: 'keep' }).catch((e) => e);
  h1.kind.forgetChildren();
  h1.client.close();
  await h1.serving.close();
  started.splice(started.indexOf(h1), 1);
  // containerd retries UNAVAILABLE Waits against the restarted sandboxer, so that is what a close must answer.
  const err = await pendingWait;
  expect([grpc.status.UNAVAILABLE, grpc.status.CANCELLED]).toContain(err.code);
  expect(isRunning(pid)).toBe(true);

  const h2 = await start(root);
  expect(h2.serving.recovery.adopted).toEqual(['keep']);
  expect((await rpc(h2.client, 'status', { sandboxId: 'keep' })).state).toBe('SANDBOX_READY');
});

test('a stale socket left by a dead process is replaced', async () => {
  const root = tempDir('kuasar-sbx-recover-');
  const socket = path.join(root, 'controller.sock');
  // python binds and exits without unlinking: a socket file nobody answers on.
  const py = spawnSync('python3', ['-c', `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(socket)})`]);
  expect(py.status).toBe(0);
  expect(statSync(socket).isSocket()).toBe(true);
  const h = await start(root);
  await rpc(h.client, 'create', createRequest('fresh'));
  expect(statSync(socket).mode & 0o777).toBe(0o600);
});

test('a state dir entry that is not a socket is never replaced', async () => {
  const root = tempDir('kuasar-sbx-recover-');
  writeFileSync(path.join(root, 'controller.sock'), 'precious');
  await expect(startHarness({ root })).rejects.toThrow(/not a socket/);
  expect(readFileSync(path.join(root, 'controller.sock'), 'utf8')).toBe('precious');
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}
