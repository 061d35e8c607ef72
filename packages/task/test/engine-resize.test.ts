// ResizePty on an engine that owns its terminals (as a VM engine does: the process's pty is in the guest): the core
// forwards the size through Engine.resize instead of setting it on the console fd it holds, and `stty size` in the
// process shows it. The engine here runs host processes on a pty of its own, whose master it hands to the core.
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OCI_PROCESS_TYPE_URL, packJsonAny, task } from '@kuasar/api';
import { openPty, sendFd, setWinsize } from '@kuasar/sys';
import { Code, TtrpcError } from '../src/errors';
import type { ContainerCreate, ContainerRef } from '../src/engine';
import { EventPublisher } from '../src/events';
import { TaskService } from '../src/task-service';
import { HostProcessEngine } from './helpers/host-engine';
import { clientFifos } from './helpers/fifo';
import { EventsSink, logger } from './helpers/harness';

class HostPtyEngine extends HostProcessEngine {
  readonly resizes: { id: string; execId: string | undefined; width: number; height: number }[] = [];
  private readonly slaves = new Map<string, number>();

  override async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    if (!init.stdio.terminal) return super.create(c, init);
    const pty = openPty();
    try {
      sendFd(init.stdio.consoleSocket, pty.master);
    } finally {
      closeSync(pty.master);
    }
    const slave = openSync(pty.slavePath, constants.O_RDWR | constants.O_NOCTTY);
    this.slaves.set(c.id, slave);
    return super.create(c, { ...init, stdio: { terminal: false, stdin: slave, stdout: slave, stderr: slave } });
  }

  async resize(c: ContainerRef, execId: string | undefined, width: number, height: number): Promise<void> {
    this.resizes.push({ id: c.id, execId, width, height });
    const fd = this.slaves.get(c.id);
    if (fd === undefined || execId !== undefined) throw new TtrpcError(Code.FAILED_PRECONDITION, `${c.id}: no terminal here`);
    setWinsize(fd, height, width);
  }

  override async delete(c: ContainerRef): Promise<void> {
    const fd = this.slaves.get(c.id);
    if (fd !== undefined) closeSync(fd);
    this.slaves.delete(c.id);
    await super.delete(c);
  }
}

test('ResizePty goes through Engine.resize when the engine has it; no terminal is FAILED_PRECONDITION', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-resize-'));
  const bundle = join(dir, 'bundle');
  mkdirSync(bundle);
  writeFileSync(join(bundle, 'config.json'), JSON.stringify({ process: { terminal: true, args: ['sh', '-c', 'read go; stty size; exec sleep 1000'] } }));
  const sink = new EventsSink(join(dir, 'ev.sock'));
  await sink.listen();
  const publisher = new EventPublisher({ address: sink.path, logger });
  const engine = new HostPtyEngine();
  const service = new TaskService({ engine, publisher, logger, stateDir: join(dir, 'state') });
  const ctx = { namespace: 'default' };
  const t = clientFifos('t', { stdin: true, stderr: false });
  try {
    await service.create(task.CreateTaskRequest.fromPartial({ id: 't', bundle, terminal: true, stdin: t.stdin, stdout: t.stdout }), ctx);
    const waited = service.wait({ id: 't', execId: '' }, ctx);
    await service.start({ id: 't', execId: '' }, ctx);
    await service.resizePty({ id: 't', execId: '', width: 91, height: 17 }, ctx);
    expect(engine.resizes).toEqual([{ id: 't', execId: undefined, width: 91, height: 17 }]);
    await t.writeStdin('go\n', false);
    for (let i = 0; i < 500 && !t.stdoutSoFar().includes('17 91'); i++) await new Promise((r) => setTimeout(r, 10));
    expect(t.stdoutSoFar()).toContain('17 91');

    // an exec without a terminal: the core answers itself, the engine is not asked
    await service.exec(task.ExecProcessRequest.fromPartial({ id: 't', execId: 'x',
      spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sleep', '1000'] }) }), ctx);
    await expect(service.resizePty({ id: 't', execId: 'x', width: 1, height: 1 }, ctx)).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await expect(service.resizePty({ id: 't', execId: 'nope', width: 1, height: 1 }, ctx)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    expect(engine.resizes).toHaveLength(1);
    await service.delete({ id: 't', execId: 'x' }, ctx);
    await service.kill({ id: 't', execId: '', signal: 9, all: false }, ctx);
    expect((await waited).exitStatus).toBe(137);
    await service.delete({ id: 't', execId: '' }, ctx);
  } finally {
    service.close();
    await publisher.close();
    await sink.server.close(500);
    t.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
