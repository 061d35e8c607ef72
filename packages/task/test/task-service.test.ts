import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OCI_LINUX_RESOURCES_TYPE_URL, OCI_PROCESS_TYPE_URL, cgroupsV1, packJsonAny, types, unpackAny } from '@kuasar/api';
import { Code } from '@kuasar/ttrpc';
import { createBusyboxBundle, type BusyboxBundle } from './helpers/bundle';
import { clientFifos, type ClientFifos } from './helpers/fifo';
import { removeTestCgroups, runtimeList, startHarness, until, zombieChildren, type Harness } from './helpers/harness';

const proc = (args: string[], extra: Record<string, unknown> = {}) =>
  packJsonAny(OCI_PROCESS_TYPE_URL, { args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, ...extra });

afterAll(() => removeTestCgroups());

describe.each(['runc', 'crun'])('TaskService over ttrpc with %s', (runtime) => {
  let h: Harness;
  const bundles: BusyboxBundle[] = [];
  const fifos: ClientFifos[] = [];
  const bundle = (o: Parameters<typeof createBusyboxBundle>[0]) => {
    const b = createBusyboxBundle(o);
    bundles.push(b);
    return b;
  };
  const io = (name: string, o?: Parameters<typeof clientFifos>[1]) => {
    const f = clientFifos(name, o);
    fifos.push(f);
    return f;
  };

  beforeAll(async () => {
    h = await startHarness({ runtime });
  });
  afterAll(async () => {
    const left = runtimeList(runtime, h.runtimeRoot);
    const size = h.service.size;
    // dot names are the store's own (the spare task dir, removed records still being deleted)
    const records = readdirSync(join(h.stateDir, 'tasks')).filter((n) => !n.startsWith('.'));
    // clean up before asserting, so a failure cannot leave containers or open FIFOs behind
    for (const id of left) execFileSync(runtime, ['--root', join(h.runtimeRoot, 'k8s.io'), 'delete', '--force', id]);
    await h.close();
    for (const b of bundles) b.remove();
    for (const f of fifos) f.close();
    expect(left).toEqual([]);
    expect(size).toBe(0);
    expect(records).toEqual([]);
  });

  test('lifecycle: Wait before Start, stdin/stdout/stderr FIFOs byte for byte, exit 3, events in order', async () => {
    const id = `life-${runtime}`;
    const b = bundle({ args: ['sh', '-c', 'read line; echo "got:$line"; printf "err\\000bytes" >&2; exit 3'] });
    const f = io(id, { stdin: true });
    const { pid } = await h.tasks.create({ id, bundle: b.path, stdin: f.stdin, stdout: f.stdout, stderr: f.stderr });
    expect(pid).toBeGreaterThan(0);
    expect(await h.tasks.state({ id })).toMatchObject({ id, pid, status: types.TaskStatus.CREATED, bundle: b.path, stdout: f.stdout });
    const waited = h.tasks.wait({ id });
    expect((await h.tasks.start({ id })).pid).toBe(pid);
    await f.writeStdin('hello wörld\n');
    const w = await waited;
    expect(w.exitStatus).toBe(3);
    expect(w.exitedAt).toBeDefined();
    expect(await f.stdoutText).toBe('got:hello wörld\n');
    expect(await f.stderrText).toBe('err\0bytes');
    expect(await h.tasks.state({ id })).toMatchObject({ status: types.TaskStatus.STOPPED, exitStatus: 3 });
    await expect(h.tasks.kill({ id, signal: 9 })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    const d = await h.tasks.delete({ id });
    expect(d).toMatchObject({ pid, exitStatus: 3 });
    await expect(h.tasks.state({ id })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await h.publisher.flush();
    expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', `/tasks/exit:${id}`, '/tasks/delete']);
    for (const e of h.sink.events.filter((x) => (x.decoded.event as { containerId?: string }).containerId === id)) {
      expect(e.namespace).toBe('k8s.io');
      expect(e.metadataNamespace).toBe('k8s.io');
      expect(Math.abs(e.timestamp.getTime() - Date.now())).toBeLessThan(60_000);
    }
    const exit = h.sink.events.find((e) => e.topic === '/tasks/exit' && (e.decoded.event as { containerId: string }).containerId === id)!;
    expect(exit.decoded.event).toMatchObject({ containerId: id, id, pid, exitStatus: 3 });
  });

  test('exec, duplicate exec id, Delete of a running task, SIGKILL → 137, Kill after exit, v2 service name', async () => {
    const id = `exec-${runtime}`;
    const b = bundle({ args: ['sleep', '1000'] });
    const f = io(id);
    await h.tasks.create({ id, bundle: b.path, stdout: f.stdout, stderr: f.stderr });
    await h.tasks.start({ id });
    const e = io(`${id}-x1`, { stdin: true });
    await h.tasks.exec({ id, execId: 'x1', stdin: e.stdin, stdout: e.stdout, stderr: e.stderr, spec: proc(['sh', '-c', 'cat; echo exec-err >&2; exit 5']) });
    await expect(h.tasks.exec({ id, execId: 'x1', spec: proc(['true']) })).rejects.toMatchObject({ code: Code.ALREADY_EXISTS });
    expect(await h.tasks.state({ id, execId: 'x1' })).toMatchObject({ status: types.TaskStatus.CREATED, execId: 'x1' });
    const waited = h.tasks.wait({ id, execId: 'x1' });
    const { pid: xpid } = await h.tasks.start({ id, execId: 'x1' });
    expect(xpid).toBeGreaterThan(0);
    const pids = await h.tasks.pids({ id });
    expect(pids.processes.map((p) => p.pid)).toContain(xpid);
    expect(pids.processes.find((p) => p.pid === xpid)!.info?.typeUrl).toBe('containerd.runc.v1.ProcessDetails');
    await e.writeStdin('abc', false);
    await h.tasks.closeIO({ id, execId: 'x1', stdin: true });
    expect((await waited).exitStatus).toBe(5);
    expect(await e.stdoutText).toBe('abc');
    expect(await e.stderrText).toBe('exec-err\n');
    expect((await h.tasks.delete({ id, execId: 'x1' })).exitStatus).toBe(5);
    await expect(h.tasks.state({ id, execId: 'x1' })).rejects.toMatchObject({ code: Code.NOT_FOUND });

    await expect(h.tasks.delete({ id })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    // the same service answers on the v2 name
    expect((await h.tasksV2.state({ id })).status).toBe(types.TaskStatus.RUNNING);
    await h.tasksV2.kill({ id, signal: 9 });
    expect((await h.tasks.wait({ id })).exitStatus).toBe(137);
    await expect(h.tasks.kill({ id, signal: 15 })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    expect(await f.stdoutText).toBe(''); // the output FIFOs end with the process
    await h.tasks.delete({ id });
    await h.publisher.flush();
    expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exec-added:x1', '/tasks/exec-started:x1',
      '/tasks/exit:x1', `/tasks/exit:${id}`, '/tasks/delete']);
  });

  test('terminal exec: output through the pty, ResizePty visible to stty', async () => {
    const id = `tty-${runtime}`;
    const b = bundle({ args: ['sleep', '1000'] });
    await h.tasks.create({ id, bundle: b.path });
    await h.tasks.start({ id });
    const t = io(`${id}-t`, { stdin: true, stderr: false });
    await h.tasks.exec({ id, execId: 't1', terminal: true, stdin: t.stdin, stdout: t.stdout,
      spec: proc(['sh', '-c', 'read go; stty size; exit 7'], { terminal: true, env: ['PATH=/bin', 'TERM=xterm'] }) });
    const waited = h.tasks.wait({ id, execId: 't1' });
    await h.tasks.start({ id, execId: 't1' });
    await h.tasks.resizePty({ id, execId: 't1', width: 123, height: 45 });
    await t.writeStdin('go\n', false);
    expect((await waited).exitStatus).toBe(7);
    expect(await t.stdoutText).toContain('45 123');
    await expect(h.tasks.resizePty({ id, width: 1, height: 1 })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await h.tasks.delete({ id, execId: 't1' });
    await h.tasks.kill({ id, signal: 9 });
    await h.tasks.wait({ id });
    await h.tasks.delete({ id });
  });

  test('Pause/Resume, Update (memory limit in the cgroup), Stats as cgroups v1 Metrics', async () => {
    const id = `res-${runtime}`;
    const b = bundle({ args: ['sh', '-c', 'x=$(head -c 2000000 /dev/zero | tr "\\0" a); sleep 1000'] });
    await h.tasks.create({ id, bundle: b.path });
    const { pid } = await h.tasks.start({ id });
    await h.tasks.pause({ id });
    expect((await h.tasks.state({ id })).status).toBe(types.TaskStatus.PAUSED);
    await expect(h.tasks.pause({ id })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await h.tasks.resume({ id });
    expect((await h.tasks.state({ id })).status).toBe(types.TaskStatus.RUNNING);

    await h.tasks.update({ id, resources: packJsonAny(OCI_LINUX_RESOURCES_TYPE_URL, { memory: { limit: 96 * 1024 * 1024 } }) });
    const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8').match(/:memory:(.*)/)![1];
    expect(readFileSync(`/sys/fs/cgroup/memory${cg}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(96 * 1024 * 1024));
    await expect(h.tasks.update({ id, resources: packJsonAny('something/else', {}) })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });

    await until(() => readFileSync(`/proc/${pid}/cgroup`, 'utf8') && true);
    const { stats } = await h.tasks.stats({ id });
    expect(stats!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = unpackAny(stats!, cgroupsV1.Metrics);
    expect(m.memory!.usage!.usage).toBeGreaterThan(0n);
    expect(m.memory!.usage!.limit).toBe(BigInt(96 * 1024 * 1024));
    expect(m.pids!.current).toBeGreaterThanOrEqual(1n);
    expect(m.cpu!.usage!.total).toBeGreaterThan(0n);

    // busybox sh execs its last command, so `sleep` is pid 1 of the container and ignores SIGTERM
    await h.tasks.kill({ id, signal: 9, all: true });
    expect((await h.tasks.wait({ id })).exitStatus).toBe(137);
    await h.tasks.delete({ id });
    await h.publisher.flush();
    expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed', `/tasks/exit:${id}`, '/tasks/delete']);
  });

  test('shared pid namespace: init exit kills the execs, whose exits are reported first', async () => {
    const id = `shared-${runtime}`;
    const b = bundle({ args: ['sleep', '1000'], hostPid: true });
    await h.tasks.create({ id, bundle: b.path });
    await h.tasks.start({ id });
    await h.tasks.exec({ id, execId: 'bg', spec: proc(['sleep', '1000']) });
    const { pid: bg } = await h.tasks.start({ id, execId: 'bg' });
    await h.tasks.kill({ id, signal: 9 });
    expect((await h.tasks.wait({ id })).exitStatus).toBe(137);
    expect((await h.tasks.wait({ id, execId: 'bg' })).exitStatus).toBe(137);
    expect(existsSync(`/proc/${bg}`)).toBe(false);
    await h.tasks.delete({ id, execId: 'bg' });
    await h.tasks.delete({ id });
    await h.publisher.flush();
    expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exec-added:bg', '/tasks/exec-started:bg',
      '/tasks/exit:bg', `/tasks/exit:${id}`, '/tasks/delete']);
  });

  test('terminal init: output through the pty, ResizePty on the init', async () => {
    const id = `ttyinit-${runtime}`;
    const b = bundle({ args: ['sh', '-c', 'read go; stty size; echo done'], terminal: true });
    const t = io(id, { stdin: true, stderr: false });
    await h.tasks.create({ id, bundle: b.path, terminal: true, stdin: t.stdin, stdout: t.stdout });
    await h.tasks.start({ id });
    await h.tasks.resizePty({ id, width: 77, height: 22 });
    await t.writeStdin('go\n', false);
    expect((await h.tasks.wait({ id })).exitStatus).toBe(0);
    const text = await t.stdoutText;
    expect(text).toContain('22 77');
    expect(text).toContain('done');
    await h.tasks.delete({ id });
  });

  test('OOM kill in the container publishes /tasks/oom', async () => {
    const id = `oom-${runtime}`;
    const b = bundle({
      args: ['sh', '-c', 'sleep 0.5; x=$(head -c 200000000 /dev/zero | tr "\\0" a); sleep 1000'],
      linux: { resources: { memory: { limit: 16 * 1024 * 1024, swap: 16 * 1024 * 1024 } } },
    });
    await h.tasks.create({ id, bundle: b.path });
    await h.tasks.start({ id });
    try {
      await until(() => h.sink.of(id).includes('/tasks/oom'), 15_000, 'TaskOOM');
    } finally {
      await h.tasks.kill({ id, signal: 9, all: true }).catch(() => undefined);
      await h.tasks.wait({ id });
      await h.tasks.delete({ id });
    }
    // the OOM kill may have ended the container; TaskOOM still precedes its TaskExit
    await h.publisher.flush();
    const topics = h.sink.of(id);
    expect(topics.indexOf('/tasks/oom')).toBeLessThan(topics.indexOf(`/tasks/exit:${id}`));
  });

  test('rootfs mounts from the request are mounted on <bundle>/rootfs and unmounted on Delete', async () => {
    const id = `mnt-${runtime}`;
    const source = bundle({});
    const b = bundle({ args: ['cat', '/etc/marker'] });
    rmSync(b.rootfs, { recursive: true });
    mkdirSync(b.rootfs);
    writeFileSync(join(source.rootfs, 'etc', 'marker'), 'from-the-mounted-rootfs\n');
    const f = io(id);
    await h.tasks.create({ id, bundle: b.path, stdout: f.stdout,
      rootfs: [{ type: 'bind', source: source.rootfs, target: '', options: ['rbind', 'rw'] }] });
    const mounted = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === b.rootfs);
    expect(mounted()).toBe(true);
    await h.tasks.start({ id });
    expect((await h.tasks.wait({ id })).exitStatus).toBe(0);
    expect(await f.stdoutText).toBe('from-the-mounted-rootfs\n');
    await h.tasks.delete({ id });
    expect(mounted()).toBe(false);
    expect(readdirSync(b.rootfs)).toEqual([]);
  });

  test('orphans a host-pid container leaves behind are killed with it and reaped, not left as zombies', async () => {
    const id = `orphans-${runtime}`;
    const b = bundle({ args: ['sh', '-c', 'sleep 1000 & sleep 1000 & echo started; exec sleep 1000'], hostPid: true });
    await h.tasks.create({ id, bundle: b.path });
    await h.tasks.start({ id });
    const inContainer = await h.tasks.pids({ id });
    expect(inContainer.processes.length).toBe(3);
    await h.tasks.kill({ id, signal: 9 });
    expect((await h.tasks.wait({ id })).exitStatus).toBe(137);
    await h.tasks.delete({ id });
    for (const p of inContainer.processes) {
      await until(() => !existsSync(`/proc/${p.pid}`), 5000, `orphan ${p.pid} reaped`);
    }
    expect(zombieChildren()).toEqual([]);
  });

  test('a created (never started) task: Wait resolves on Delete', async () => {
    const id = `created-${runtime}`;
    const b = bundle({ args: ['true'] });
    await h.tasks.create({ id, bundle: b.path });
    const waited = h.tasks.wait({ id });
    await h.tasks.delete({ id });
    expect((await waited).exitStatus).toBe(137);
  });

  test('bad input gets clear errors and leaves nothing behind', async () => {
    await expect(h.tasks.state({ id: 'nope' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(h.tasks.kill({ id: 'nope', signal: 9 })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(h.tasks.delete({ id: 'nope' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(h.tasks.wait({ id: 'nope' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(h.tasks.connect({ id: 'nope' })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(h.tasks.create({ id: 'bad/id', bundle: '/tmp' })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    await expect(h.tasks.create({ id: 'nobundle', bundle: '/nonexistent/bundle/x' }))
      .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('/nonexistent/bundle/x does not exist') });
    const noConfig = bundle({});
    rmSync(join(noConfig.path, 'config.json'));
    await expect(h.tasks.create({ id: 'noconfig', bundle: noConfig.path }))
      .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: `bundle ${noConfig.path} has no config.json` });
    await expect(h.tasks.create({ id: 'filebundle', bundle: join(noConfig.path, 'rootfs', 'bin', 'busybox') }))
      .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('is not a directory') });
    const bad = bundle({});
    writeFileSync(join(bad.path, 'config.json'), '{"ociVersion": "1.0.2", ');
    await expect(h.tasks.create({ id: 'badjson', bundle: bad.path })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    const noTty = bundle({});
    await expect(h.tasks.create({ id: 'notty', bundle: noTty.path, terminal: true }))
      .rejects.toMatchObject({ code: Code.INVALID_ARGUMENT, message: expect.stringContaining('process.terminal=false') });
    await expect(h.tasks.create({ id: 'badio', bundle: noTty.path, stdout: 'tcp://1.2.3.4:5' }))
      .rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    expect(runtimeList(runtime, h.runtimeRoot)).toEqual([]);
    // a spec the runtime rejects: the runtime's own message comes back
    const badSpec = bundle({ args: ['/no/such/binary'] });
    const f = io('badspec');
    const err = await h.tasks.create({ id: 'badspec', bundle: badSpec.path, stdout: f.stdout, stderr: f.stderr })
      .then(() => h.tasks.start({ id: 'badspec' })).then(() => undefined, (e: unknown) => e);
    expect(String((err as Error).message)).toMatch(new RegExp(`${runtime} (create|start) failed`));
    if (await h.tasks.state({ id: 'badspec' }).then(() => true, () => false)) {
      await h.tasks.kill({ id: 'badspec', signal: 9 }).catch(() => undefined);
      await h.tasks.wait({ id: 'badspec' });
      await h.tasks.delete({ id: 'badspec' });
    }
    const live = bundle({ args: ['sleep', '1000'] });
    await h.tasks.create({ id: 'dup', bundle: live.path });
    await expect(h.tasks.create({ id: 'dup', bundle: live.path })).rejects.toMatchObject({ code: Code.ALREADY_EXISTS });
    await expect(h.tasks.exec({ id: 'dup', execId: 'e', spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: [] }) }))
      .rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
    await expect(h.tasks.checkpoint({ id: 'dup', path: '/tmp/x' })).rejects.toMatchObject({ code: Code.UNIMPLEMENTED });
    expect((await h.tasks.connect({ id: 'dup' })).shimPid).toBe(process.pid);
    await h.tasks.delete({ id: 'dup' });
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain('kuasar-bundle-');
  });
});

test('missing runtime binary → FAILED_PRECONDITION naming the path, nothing left behind', async () => {
  const h = await startHarness({ runtime: '/nonexistent/bin/runc' });
  const b = createBusyboxBundle({});
  try {
    await expect(h.tasks.create({ id: 'c', bundle: b.path }))
      .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('/nonexistent/bin/runc') });
    expect(h.service.size).toBe(0);
    expect(existsSync(join(h.stateDir, 'tasks', 'k8s.io', 'c'))).toBe(false);
  } finally {
    await h.close();
    b.remove();
  }
});

test('Shutdown is a no-op while tasks remain, else calls onShutdown', async () => {
  let calls = 0;
  const h = await startHarness({ hooks: { onShutdown: () => void calls++ } });
  const b = createBusyboxBundle({ args: ['sleep', '1000'] });
  try {
    await h.tasks.create({ id: 's', bundle: b.path });
    await h.tasks.shutdown({ id: 's' });
    expect(calls).toBe(0);
    await h.tasks.delete({ id: 's' });
    await h.tasks.shutdown({ id: 's' });
    expect(calls).toBe(1);
    expect(h.server).toBeDefined();
  } finally {
    await h.close();
    b.remove();
  }
});

test('prepareContainer rewrites the spec the runtime runs; containerRemoved follows Delete', async () => {
  const removed: string[] = [];
  const h = await startHarness({
    hooks: {
      prepareContainer: (_req, spec) => {
        spec.process!.args = ['sh', '-c', 'echo rewritten']; // edited in place, as a sandboxer may well do
        return spec;
      },
      containerRemoved: (id) => void removed.push(id),
    },
  });
  const b = createBusyboxBundle({ args: ['sh', '-c', 'echo original'] });
  const f = clientFifos('hook');
  try {
    await h.tasks.create({ id: 'hook', bundle: b.path, stdout: f.stdout });
    await h.tasks.start({ id: 'hook' });
    expect((await h.tasks.wait({ id: 'hook' })).exitStatus).toBe(0);
    expect(await f.stdoutText).toBe('rewritten\n');
    await h.tasks.delete({ id: 'hook' });
    expect(removed).toEqual(['hook']);
  } finally {
    await h.close();
    b.remove();
    f.close();
  }
});

test('prepareContainer: config.json is rewritten only when the spec changed, whatever its formatting', async () => {
  const h = await startHarness({
    hooks: {
      prepareContainer: (req, spec) => {
        if (req.id.startsWith('edit')) spec.process!.env = [...(spec.process!.env ?? []), 'EDITED=1'];
        return req.id.startsWith('copy') ? JSON.parse(JSON.stringify(spec)) : spec;
      },
    },
  });
  const pretty = createBusyboxBundle({ args: ['true'] }); // written indented
  const compact = createBusyboxBundle({ args: ['true'] });
  writeFileSync(join(compact.path, 'config.json'), JSON.stringify(compact.spec)); // as containerd writes it
  const config = (b: BusyboxBundle) => ({ text: readFileSync(join(b.path, 'config.json'), 'utf8'), ino: statSync(join(b.path, 'config.json')).ino });
  try {
    for (const b of [pretty, compact]) {
      const before = config(b);
      for (const id of ['same', 'copy']) {
        await h.tasks.create({ id, bundle: b.path });
        expect(config(b)).toEqual(before); // untouched: not even replaced by the same content
        await h.tasks.delete({ id });
      }
      await h.tasks.create({ id: 'edit', bundle: b.path });
      const after = config(b);
      expect(after.ino).not.toBe(before.ino);
      expect(JSON.parse(after.text)).toEqual({ ...b.spec, process: { ...(b.spec.process as object), env: [...(b.spec.process as { env: string[] }).env, 'EDITED=1'] } });
      await h.tasks.delete({ id: 'edit' });
      b.writeSpec();
    }
  } finally {
    await h.close();
    pretty.remove();
    compact.remove();
  }
});

test('lifecycle hooks: containerCreated with the pid and spec, containerExited for the init only, containerRemoved after a failed Create', async () => {
  const calls: string[] = [];
  const h = await startHarness({
    hooks: {
      prepareContainer: (req, spec) => {
        if (req.id === 'bad') throw new Error('refused by the owner');
        return spec;
      },
      containerCreated: (c, init) => void calls.push(`created ${c.namespace}/${c.id} ${init.pid > 0} ${init.spec.process?.args?.[0]}`),
      containerExited: (c, exit) => void calls.push(`exited ${c.id} ${exit.exitStatus} ${exit.exitedAt instanceof Date}`),
      containerRemoved: (id, ns) => void calls.push(`removed ${ns}/${id}`),
    },
  });
  const b = createBusyboxBundle({ args: ['sh', '-c', 'exit 4'] });
  const sleeper = createBusyboxBundle({ args: ['sleep', '1000'] });
  try {
    const { pid } = await h.tasks.create({ id: 'hk', bundle: b.path });
    expect(calls).toEqual(['created k8s.io/hk true sh']);
    expect(pid).toBeGreaterThan(0);
    await h.tasks.create({ id: 'ex', bundle: sleeper.path });
    await h.tasks.start({ id: 'ex' });
    await h.tasks.exec({ id: 'ex', execId: 'e1', spec: proc(['true']) });
    await h.tasks.start({ id: 'ex', execId: 'e1' });
    expect((await h.tasks.wait({ id: 'ex', execId: 'e1' })).exitStatus).toBe(0);
    await h.tasks.start({ id: 'hk' });
    expect((await h.tasks.wait({ id: 'hk' })).exitStatus).toBe(4);
    await until(() => calls.includes('exited hk 4 true'));
    // the exec's exit is no container exit
    expect(calls.filter((c) => c.startsWith('exited'))).toEqual(['exited hk 4 true']);
    await h.tasks.delete({ id: 'hk' });
    await expect(h.tasks.create({ id: 'bad', bundle: b.path })).rejects.toThrow(/refused by the owner/);
    expect(calls.slice(-2)).toEqual(['removed k8s.io/hk', 'removed k8s.io/bad']);
    await h.tasks.kill({ id: 'ex', signal: 9 });
    await h.tasks.wait({ id: 'ex' });
    await h.tasks.delete({ id: 'ex' });
  } finally {
    await h.close();
    b.remove();
    sleeper.remove();
  }
});
