// A sandboxer restart: modules lived in the old process's threads and are gone; pods and task records are on disk.
// What must hold: the pod is still there and usable, every container that was running is reported exited (255)
// through Wait and TaskExit, finished containers keep their real status, and all of them can be deleted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { types } from '@kuasar/api';
import { ClientIO, EventsSink, NS, makeBundle, rpc, runPod, runTask, startWasmSandboxer, tempDir, until } from './sandboxer';

jest.setTimeout(30_000);

test('after a restart pods survive, running containers are reported exited 255, finished ones keep their status', async () => {
  const root = tempDir('rec');
  const sink = new EventsSink(path.join(root, 'ev.sock'));
  await sink.server.listen(sink.path);
  const ios: ClientIO[] = [];
  const io = () => {
    const x = new ClientIO(root);
    ios.push(x);
    return x;
  };
  try {
    const h1 = await startWasmSandboxer({ root, sink });
    await runPod(h1, 'pod1');
    const sleeping = makeBundle(root, 'sleeper', { args: ['/sleep.wasm'], modules: { '/sleep.wasm': 'sleep-long' }, sandboxId: 'pod1' });
    await runTask(h1, 'sleeper', sleeping, io());
    const done = await runTask(h1, 'done', makeBundle(root, 'done', { args: ['/exit7.wasm'], modules: { '/exit7.wasm': 'exit7' }, sandboxId: 'pod1' }), io());
    expect((await done.exited).exitStatus).toBe(7);
    const created = io();
    await h1.tasks.create({ id: 'created', bundle: makeBundle(root, 'created', { args: ['/hello.wasm'], sandboxId: 'pod1' }), stdout: created.stdout });
    await until(() => sink.exitStatus('done') === 7, 5000, 'TaskExit of done');
    await h1.stop(); // the modules die with the runner, as they would with the process

    const h2 = await startWasmSandboxer({ root, sink });
    try {
      // the pod is kept, Ready, and still knows its containers
      const status = await rpc(h2.controller, 'status', { sandboxId: 'pod1', verbose: true });
      expect(status.state).toBe('SANDBOX_READY');
      expect(JSON.stringify(status.info)).toContain(`${NS}/sleeper`);
      // what ran is reported through the normal exit path: Wait and a TaskExit event with 255
      expect((await h2.tasks.wait({ id: 'sleeper' })).exitStatus).toBe(255);
      await until(() => sink.exitStatus('sleeper') === 255, 5000, 'TaskExit 255 of sleeper');
      expect((await h2.tasks.state({ id: 'sleeper' })).status).toBe(types.TaskStatus.STOPPED);
      // a container that was only created cannot be started any more: it is reported exited too
      expect((await h2.tasks.wait({ id: 'created' })).exitStatus).toBe(255);
      // a container that had finished keeps its real status
      const d = await h2.tasks.state({ id: 'done' });
      expect([d.status, d.exitStatus]).toEqual([types.TaskStatus.STOPPED, 7]);
      for (const id of ['sleeper', 'done', 'created']) await h2.tasks.delete({ id });
      // the pod takes new containers
      const x = io();
      const again = await runTask(h2, 'again', makeBundle(root, 'again', { args: ['/hello.wasm'], sandboxId: 'pod1' }), x);
      expect((await again.exited).exitStatus).toBe(0);
      expect((await x.out).toString()).toBe('hello from wasm\n');
      await h2.tasks.delete({ id: 'again' });
      await rpc(h2.controller, 'stop', { sandboxId: 'pod1', timeoutSecs: 0 });
      await rpc(h2.controller, 'shutdown', { sandboxId: 'pod1' });
      expect(fs.existsSync(path.join(h2.dir, 'pod1'))).toBe(false);
    } finally {
      await h2.stop();
    }
  } finally {
    for (const x of ios) x.close();
    await sink.server.close(500);
    fs.rmSync(root, { recursive: true, force: true });
  }
});
