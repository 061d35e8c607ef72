import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OCI_PROCESS_TYPE_URL, packJsonAny, task, types } from '@kuasar/api';
import { Code } from '@kuasar/ttrpc';
import { MNT_DETACH, setChildSubreaper, umount2 } from '@kuasar/sys';
import type { ContainerCreate, ContainerRef, Engine } from '../src/engine';
import { OciCliEngine } from '../src/engines/oci-cli';
import { EventPublisher } from '../src/events';
import { TaskService } from '../src/task-service';
import { processStartTime } from '../src/task-store';
import { createBusyboxBundle } from './helpers/bundle';
import { clientFifos } from './helpers/fifo';
import { logger, removeTestCgroups, runtimeList, startHarness, until } from './helpers/harness';

afterAll(() => removeTestCgroups());

// After a real restart the container processes are no longer children of the sandboxer. Inside one jest process
// they would be (the worker stays their subreaper), so the first service is made a non-subreaper right after it
// starts: the container processes then re-parent to pid 1 as they would when a sandboxer dies.
async function oldSandboxer() {
  const h = await startHarness();
  setChildSubreaper(false);
  return h;
}

test('a restarted TaskService re-adopts running containers: output keeps flowing, State/Kill/Delete and exits (real status) resume', async () => {
  const h1 = await oldSandboxer();
  const b = createBusyboxBundle({ args: ['sh', '-c', 'i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done'] });
  const out = clientFifos('rec');
  const reader = out.stdoutText;
  try {
    const { pid } = await h1.tasks.create({ id: 'rec', bundle: b.path, stdout: out.stdout, stderr: out.stderr });
    await h1.tasks.start({ id: 'rec' });
    await h1.tasks.exec({ id: 'rec', execId: 'side', spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sleep', '1000'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } }) });
    const { pid: sidePid } = await h1.tasks.start({ id: 'rec', execId: 'side' });
    const record = JSON.parse(readFileSync(join(h1.stateDir, 'tasks', 'k8s.io', 'rec', 'task.json'), 'utf8'));
    expect(record).toMatchObject({ id: 'rec', namespace: 'k8s.io', bundle: b.path, processes: [
      { execId: '', pid, status: 'running' }, { execId: 'side', pid: sidePid, status: 'running' }] });

    const ticksSoFar = (): number => out.stdoutSoFar().split('\n').filter(Boolean).length;
    // "kill -9": the service disappears without deleting anything
    await h1.crash();
    const ticksAtCrash = ticksSoFar();
    expect(runtimeList('runc', h1.runtimeRoot)).toEqual(['rec']);

    const h2 = await startHarness({ dir: h1.dir });
    try {
      expect(await h2.service.recover()).toEqual(['rec']);
      expect(await h2.tasks.state({ id: 'rec' })).toMatchObject({ pid, status: types.TaskStatus.RUNNING });
      expect(await h2.tasks.state({ id: 'rec', execId: 'side' })).toMatchObject({ pid: sidePid, status: types.TaskStatus.RUNNING });
      expect((await h2.tasks.connect({ id: 'rec' })).taskPid).toBe(pid);
      // output keeps reaching the client after the restart
      const flowing = Date.now() + 20_000;
      while (ticksSoFar() < ticksAtCrash + 3 && Date.now() < flowing) await new Promise((r) => setTimeout(r, 50));
      expect(ticksSoFar()).toBeGreaterThanOrEqual(ticksAtCrash + 3);

      // the exec is signalled through its pid file; its exit is reported by the new service
      const sideWait = h2.tasks.wait({ id: 'rec', execId: 'side' });
      await h2.tasks.kill({ id: 'rec', execId: 'side', signal: 9 });
      // not our child, but it exited after recover() began listening: the kernel's exit event has its real status
      expect((await sideWait).exitStatus).toBe(137);

      const waited = h2.tasks.wait({ id: 'rec' });
      await h2.tasks.kill({ id: 'rec', signal: 9 });
      expect((await waited).exitStatus).toBe(137);
      await h2.publisher.flush();
      expect(h2.sink.of('rec')).toEqual(['/tasks/exit:side', '/tasks/exit:rec']);
      await expect(h2.tasks.kill({ id: 'rec', signal: 9 })).rejects.toMatchObject({ code: Code.NOT_FOUND });
      await h2.tasks.delete({ id: 'rec', execId: 'side' });
      await h2.tasks.delete({ id: 'rec' });
      expect(runtimeList('runc', h2.runtimeRoot)).toEqual([]);
      expect(existsSync(join(h2.stateDir, 'tasks', 'k8s.io', 'rec'))).toBe(false);
    } finally {
      await h2.close();
    }
    // output written by the container across the restart reached the client, and the FIFO ended with it
    const text = await reader;
    const ticks = text.trim().split('\n');
    expect(ticks.length).toBeGreaterThan(3);
    ticks.forEach((t, i) => expect(t).toBe(`tick-${i + 1}`));
  } finally {
    b.remove();
    out.close();
    rmSync(h1.dir, { recursive: true, force: true });
  }
});

test('stdin survives a restart: what the client writes afterwards reaches the process, then its EOF', async () => {
  const h1 = await oldSandboxer();
  const b = createBusyboxBundle({ args: ['cat'] });
  const io = clientFifos('stdin-rec', { stdin: true });
  const holders = (): string[] => readdirSync(join(h1.stateDir, 'tasks', 'k8s.io', 'cat')).filter((n) => n.endsWith('.holder'));
  try {
    await h1.tasks.create({ id: 'cat', bundle: b.path, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr });
    await h1.tasks.start({ id: 'cat' });
    // containerd's writer stays open across the restart, as it does when a shim or sandboxer goes away
    await io.writeStdin('before\n', false);
    await until(() => io.stdoutSoFar() === 'before\n', 5000, 'first line echoed');
    expect(holders()).toEqual(['init-stdin.pipe.holder']);
    await h1.crash();
    const h2 = await startHarness({ dir: h1.dir });
    try {
      expect(await h2.service.recover()).toEqual(['cat']);
      // the process did not see EOF when the old service went away
      expect((await h2.tasks.state({ id: 'cat' })).status).toBe(types.TaskStatus.RUNNING);
      const waited = h2.tasks.wait({ id: 'cat' });
      await io.writeStdin('after\n', true);
      expect((await waited).exitStatus).toBe(0);
      expect(await io.stdoutText).toBe('before\nafter\n');
      // EOF was delivered, so the holder of the stdin pipe is gone with its record
      expect(holders()).toEqual([]);
      await h2.tasks.delete({ id: 'cat' });
    } finally {
      await h2.close();
    }
  } finally {
    b.remove();
    io.close();
    rmSync(h1.dir, { recursive: true, force: true });
  }
});

test('the stdin holder of a process that ended while no sandboxer ran goes with its task', async () => {
  const h1 = await oldSandboxer();
  const b = createBusyboxBundle({ args: ['cat'] });
  const io = clientFifos('stdin-gone', { stdin: true });
  try {
    const { pid } = await h1.tasks.create({ id: 'gone-in', bundle: b.path, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr });
    await h1.tasks.start({ id: 'gone-in' });
    const record = join(h1.stateDir, 'tasks', 'k8s.io', 'gone-in', 'init-stdin.pipe.holder');
    const holder = JSON.parse(readFileSync(record, 'utf8')) as { pid: number; startTime: string };
    expect(processStartTime(holder.pid)).toBe(holder.startTime);
    await h1.crash();
    process.kill(pid, 'SIGKILL');
    await until(() => !existsSync(`/proc/${pid}`), 5000, 'init death');
    const h2 = await startHarness({ dir: h1.dir });
    try {
      await h2.service.recover();
      expect((await h2.tasks.wait({ id: 'gone-in' })).exitStatus).toBe(255);
      // the holder outlived the process (nothing re-attached to it) until containerd deletes the task
      expect(processStartTime(holder.pid)).toBe(holder.startTime);
      await h2.tasks.delete({ id: 'gone-in' });
      await until(() => processStartTime(holder.pid) !== holder.startTime, 5000, 'holder gone');
    } finally {
      await h2.close();
    }
  } finally {
    b.remove();
    io.close();
    rmSync(h1.dir, { recursive: true, force: true });
  }
});

test('a container that died while the sandboxer was down is reported exited (255) on recover()', async () => {
  const h1 = await oldSandboxer();
  const b = createBusyboxBundle({ args: ['sleep', '1000'] });
  try {
    const { pid } = await h1.tasks.create({ id: 'gone', bundle: b.path });
    await h1.tasks.start({ id: 'gone' });
    await h1.crash();
    process.kill(pid, 'SIGKILL');
    await until(() => !existsSync(`/proc/${pid}`), 5000, 'init death');
    const h2 = await startHarness({ dir: h1.dir });
    try {
      await h2.service.recover();
      const w = await h2.tasks.wait({ id: 'gone' });
      expect(w.exitStatus).toBe(255);
      expect((await h2.tasks.state({ id: 'gone' })).status).toBe(types.TaskStatus.STOPPED);
      await h2.tasks.delete({ id: 'gone' });
      expect(runtimeList('runc', h2.runtimeRoot)).toEqual([]);
    } finally {
      await h2.close();
    }
  } finally {
    b.remove();
    rmSync(h1.dir, { recursive: true, force: true });
  }
});

test('an unreadable task record is skipped with an error, not a crash', async () => {
  const h = await startHarness();
  try {
    const dir = join(h.stateDir, 'tasks', 'k8s.io', 'broken');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'task.json'), '{not json');
    expect(await h.service.recover()).toEqual([]);
    await expect(h.tasks.state({ id: 'broken' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
  } finally {
    await h.close();
  }
});

test('re-adopted processes that are still our children are reaped with their real status', async () => {
  const h1 = await startHarness();
  const b = createBusyboxBundle({ args: ['sleep', '1000'] });
  try {
    await h1.tasks.create({ id: 'child', bundle: b.path });
    await h1.tasks.start({ id: 'child' });
    await h1.crash();
    const h2 = await startHarness({ dir: h1.dir });
    try {
      await h2.service.recover();
      const waited = h2.tasks.wait({ id: 'child' });
      await h2.tasks.kill({ id: 'child', signal: 9 });
      expect((await waited).exitStatus).toBe(137);
      await h2.tasks.delete({ id: 'child' });
    } finally {
      await h2.close();
    }
  } finally {
    b.remove();
    rmSync(h1.dir, { recursive: true, force: true });
  }
});

test('a sandboxer killed during Create (after the runtime created the container) leaks nothing: recover() removes it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-task-'));
  const runtimeRoot = join(dir, 'runtime');
  const source = createBusyboxBundle({});
  const b = createBusyboxBundle({ args: ['sleep', '1000'] });
  rmSync(b.rootfs, { recursive: true });
  mkdirSync(b.rootfs);
  const runc = new OciCliEngine({ binary: 'runc', root: runtimeRoot, logger, timeoutMs: 10_000 });
  let createdPid = 0;
  // the real create runs, then the "sandboxer" never gets further (as if killed right after `runc create`)
  const engine: Engine = Object.assign(Object.create(runc) as OciCliEngine, {
    create: async (c: ContainerRef, init: ContainerCreate) => {
      createdPid = (await runc.create(c, init)).pid;
      return new Promise<never>(() => undefined);
    },
  });
  const publisher = new EventPublisher({ address: join(dir, 'no-events.sock'), logger, retryDelayMs: 20 });
  const mounted = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === b.rootfs);
  try {
    const s1 = new TaskService({ engine, publisher, logger, stateDir: join(dir, 'state'), oomPollMs: 0 });
    setChildSubreaper(false);
    void s1.create(task.CreateTaskRequest.fromPartial({ id: 'half', bundle: b.path,
      rootfs: [{ type: 'bind', source: source.rootfs, target: '', options: ['rbind', 'rw'] }] }), { namespace: 'k8s.io' });
    await until(() => createdPid > 0, 10_000, 'runc create');
    // the crash: no cleanup, the service object is simply dropped
    s1.close();
    expect(runtimeList('runc', runtimeRoot)).toEqual(['half']);
    expect(mounted()).toBe(true);
    expect(processStartTime(createdPid)).toBeDefined();

    const h2 = await startHarness({ dir });
    try {
      expect(await h2.service.recover()).toEqual([]);
      expect(runtimeList('runc', runtimeRoot)).toEqual([]);
      expect(existsSync(join(h2.stateDir, 'tasks', 'k8s.io', 'half'))).toBe(false);
      expect(mounted()).toBe(false);
      // the `runc init` waiting for start is gone (dead or a zombie about to be reaped)
      await until(() => processStartTime(createdPid) === undefined, 5000, 'runc init exit');
      const cgroupsPath = (b.spec['linux'] as { cgroupsPath: string }).cgroupsPath;
      for (const ctrl of readdirSync('/sys/fs/cgroup')) expect(existsSync(join('/sys/fs/cgroup', ctrl, cgroupsPath))).toBe(false);
      await expect(h2.tasks.state({ id: 'half' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
      // the id is free again
      const b2 = createBusyboxBundle({ args: ['true'] });
      try {
        await h2.tasks.create({ id: 'half', bundle: b2.path });
        await h2.tasks.delete({ id: 'half' });
      } finally {
        b2.remove();
      }
    } finally {
      await h2.close();
    }
  } finally {
    await publisher.close(200);
    if (mounted()) umount2(b.rootfs, MNT_DETACH);
    b.remove();
    source.remove();
    rmSync(dir, { recursive: true, force: true });
  }
});
