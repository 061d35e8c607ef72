import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OCI_PROCESS_TYPE_URL, packJsonAny, task, types } from '@kuasar/api';
import { Code } from '@kuasar/ttrpc';
import { EventPublisher } from '../src/events';
import { TaskService } from '../src/task-service';
import { HostProcessEngine } from './helpers/host-engine';
import { clientFifos } from './helpers/fifo';
import { EventsSink, logger } from './helpers/harness';

// An engine that reports exits itself (like wasm or a VM agent): the core must not reap, and Wait, events and
// IO work the same.
test('engine-reported exits drive Wait, TaskExit order and IO for a non-runtime engine', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-hostengine-'));
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle);
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({ process: { args: ['sh', '-c', 'echo from-init; exec sleep 1000'] } }));
  const sink = new EventsSink(join(dir, 'ev.sock'));
  await sink.listen();
  const publisher = new EventPublisher({ address: sink.path, logger });
  const service = new TaskService({ engine: new HostProcessEngine(), publisher, logger, stateDir: join(dir, 'state') });
  const ctx = { namespace: 'wasm-ns' };
  const f = clientFifos('h');
  const e = clientFifos('x');
  try {
    const req = (o: Partial<task.CreateTaskRequest>) => task.CreateTaskRequest.fromPartial(o);
    expect((await service.create(req({ id: 'h', bundle, stdout: f.stdout }), ctx)).pid).toBe(0);
    const waited = service.wait({ id: 'h', execId: '' }, ctx);
    await service.start({ id: 'h', execId: '' }, ctx);
    await service.exec(task.ExecProcessRequest.fromPartial({ id: 'h', execId: 'x', stdout: e.stdout,
      spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sh', '-c', 'echo from-exec; exit 4'] }) }), ctx);
    const xw = service.wait({ id: 'h', execId: 'x' }, ctx);
    await service.start({ id: 'h', execId: 'x' }, ctx);
    expect((await xw).exitStatus).toBe(4);
    expect(await e.stdoutText).toBe('from-exec\n');
    await expect(service.pause({ id: 'h' }, ctx)).rejects.toMatchObject({ code: Code.UNIMPLEMENTED });
    await service.kill({ id: 'h', execId: '', signal: 15, all: false }, ctx);
    expect((await waited).exitStatus).toBe(143);
    expect(await f.stdoutText).toBe('from-init\n');
    await service.delete({ id: 'h', execId: '' }, ctx);
    await publisher.flush();
    expect(sink.of('h')).toEqual(['/tasks/create', '/tasks/start', '/tasks/exec-added:x', '/tasks/exec-started:x',
      '/tasks/exit:x', '/tasks/exit:h', '/tasks/delete']);
    expect(sink.events.every((x) => x.namespace === 'wasm-ns')).toBe(true);
  } finally {
    service.close();
    await publisher.close();
    await sink.server.close(500);
    f.close();
    e.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

// containerd ids are unique per namespace only: an exit an engine reports must end the container of its namespace
test('an engine-reported exit marks only the container of its namespace exited', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-hostengine-'));
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle);
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({ process: { args: ['sleep', '1000'] } }));
  const sink = new EventsSink(join(dir, 'ev.sock'));
  await sink.listen();
  const publisher = new EventPublisher({ address: sink.path, logger });
  const service = new TaskService({ engine: new HostProcessEngine(), publisher, logger, stateDir: join(dir, 'state') });
  const a = { namespace: 'ns-a' };
  const b = { namespace: 'ns-b' };
  try {
    const req = task.CreateTaskRequest.fromPartial({ id: 'same', bundle });
    await service.create(req, a);
    await service.create(req, b);
    await service.start({ id: 'same', execId: '' }, a);
    await service.start({ id: 'same', execId: '' }, b);
    const waited = service.wait({ id: 'same', execId: '' }, a);
    await service.kill({ id: 'same', execId: '', signal: 9, all: false }, a);
    expect((await waited).exitStatus).toBe(137);
    // give a wrongly matched exit time to land on the other namespace's container
    await new Promise((r) => setTimeout(r, 200));
    expect((await service.state({ id: 'same', execId: '' }, a)).status).toBe(types.TaskStatus.STOPPED);
    expect((await service.state({ id: 'same', execId: '' }, b)).status).toBe(types.TaskStatus.RUNNING);
    const waitedB = service.wait({ id: 'same', execId: '' }, b);
    await service.kill({ id: 'same', execId: '', signal: 15, all: false }, b);
    expect((await waitedB).exitStatus).toBe(143);
    await service.delete({ id: 'same', execId: '' }, a);
    await service.delete({ id: 'same', execId: '' }, b);
  } finally {
    service.close();
    await publisher.close();
    await sink.server.close(500);
    rmSync(dir, { recursive: true, force: true });
  }
});
