// The wasm sandboxer through the real Task API (ttrpc on <dir>/task.sock) and Controller (gRPC), as containerd uses
// them: FIFO stdio, Wait, events at TTRPC_ADDRESS.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OCI_LINUX_RESOURCES_TYPE_URL, OCI_PROCESS_TYPE_URL, anyTypeName, cgroupsV1, cgroupsV2, packJsonAny, types, unpackAny } from '@kuasar/api';
import { Code } from '@kuasar/ttrpc';
import { ClientIO, NS, makeBundle, rpc, runPod, runTask, startWasmSandboxer, until, type WasmHarness } from './sandboxer';

jest.setTimeout(30_000);

let h: WasmHarness;
let seq = 0;
const nextId = (what: string) => `${what}-${seq++}`;
const ios: ClientIO[] = [];
const io = (o?: { stdin?: boolean }) => {
  const x = new ClientIO(h.root, o);
  ios.push(x);
  return x;
};

beforeAll(async () => {
  h = await startWasmSandboxer();
});

afterAll(async () => {
  for (const x of ios) x.close();
  await h?.close();
});

test('hello: stdout byte for byte through FIFOs, exit 0, State/Pids/Connect, and the task events in order', async () => {
  const id = nextId('hello');
  const bundle = makeBundle(h.root, id, { args: ['/hello.wasm'] });
  const x = io();
  const created = await h.tasks.create({ id, bundle, stdout: x.stdout, stderr: x.stderr });
  expect(created.pid).toBe(0);
  const st = await h.tasks.state({ id });
  expect(st.status).toBe(types.TaskStatus.CREATED);
  const waited = h.tasks.wait({ id });
  await h.tasks.start({ id });
  expect((await waited).exitStatus).toBe(0);
  expect((await x.out).toString('latin1')).toBe('hello from wasm\n');
  expect((await x.err).length).toBe(0);
  const done = await h.tasks.state({ id });
  expect(done.status).toBe(types.TaskStatus.STOPPED);
  expect(done.exitStatus).toBe(0);
  expect((await h.tasks.connect({ id })).version).toBe('kuasar-task/wasm');
  const deleted = await h.tasks.delete({ id });
  expect(deleted.exitStatus).toBe(0);
  await until(() => h.sink.of(id).includes('/tasks/delete'), 5000, 'delete event');
  expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', `/tasks/exit:${id}`, '/tasks/delete']);
  expect(h.sink.events.filter((e) => h.sink.of(id).length && (e.decoded.event as { containerId?: string }).containerId === id)
    .every((e) => e.namespace === NS)).toBe(true);
  await expect(h.tasks.state({ id })).rejects.toMatchObject({ code: Code.NOT_FOUND });
});

test('stderr is its own stream; proc_exit sets the exit status', async () => {
  const a = nextId('stderr');
  const x = io();
  const { exited: w } = await runTask(h, a, makeBundle(h.root, a, { args: ['/s.wasm'], modules: { '/s.wasm': 'stderr' } }), x);
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('to stdout\n');
  expect((await x.err).toString()).toBe('to stderr\n');
  const b = nextId('exit7');
  const y = io();
  const { exited: w7 } = await runTask(h, b, makeBundle(h.root, b, { args: ['/bin/exit7'], modules: { '/bin/exit7': 'exit7' } }), y);
  expect((await w7).exitStatus).toBe(7);
  await until(() => h.sink.exitStatus(b) === 7, 5000, 'TaskExit 7');
  await h.tasks.delete({ id: a });
  await h.tasks.delete({ id: b });
});

test('args and env reach the module; args[0] found through PATH and symlinks stay inside the rootfs', async () => {
  const id = nextId('args');
  const bundle = makeBundle(h.root, id, {
    args: ['args-env', 'one', 'two words'],
    env: ['PATH=/nowhere:/usr/bin', 'GREETING=hi there', 'EMPTY='],
    modules: { '/opt/app/args-env.wasm': 'args-env' },
  });
  // the image links /usr/bin/args-env -> /opt/app/args-env.wasm (absolute: resolved inside the rootfs)
  fs.mkdirSync(path.join(bundle, 'rootfs/usr/bin'), { recursive: true });
  fs.symlinkSync('/opt/app/args-env.wasm', path.join(bundle, 'rootfs/usr/bin/args-env'));
  const x = io();
  const { exited: w } = await runTask(h, id, bundle, x);
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('args-env\none\ntwo words\nPATH=/nowhere:/usr/bin\nGREETING=hi there\nEMPTY=\n');
  await h.tasks.delete({ id });
});

test('files: read and write in the preopened rootfs and in a bind mount; file mounts are skipped', async () => {
  const id = nextId('files');
  const data = fs.mkdtempSync(path.join(h.root, 'data-'));
  const hosts = path.join(h.root, 'hosts');
  fs.writeFileSync(hosts, '127.0.0.1 localhost\n');
  const bundle = makeBundle(h.root, id, {
    args: ['/files.wasm'],
    modules: { '/files.wasm': 'files' },
    files: { '/in.txt': 'payload 123\n' },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/data', type: 'bind', source: data, options: ['rbind', 'rw'] },
      { destination: '/etc/hosts', type: 'bind', source: hosts, options: ['rbind', 'ro'] },
    ],
  });
  const x = io();
  const { exited: w } = await runTask(h, id, bundle, x);
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('payload 123\n');
  expect(fs.readFileSync(path.join(bundle, 'rootfs/out.txt'), 'utf8')).toBe('payload 123\n');
  expect(fs.readFileSync(path.join(data, 'out.txt'), 'utf8')).toBe('payload 123\n');
  await h.tasks.delete({ id });
});

test('the rootfs mount from CreateTaskRequest is mounted by the core and the module runs from it', async () => {
  const id = nextId('mounted');
  const image = fs.mkdtempSync(path.join(h.root, 'image-'));
  fs.copyFileSync(path.join(__dirname, '../testdata/build/hello.wasm'), path.join(image, 'hello.wasm'));
  const bundle = makeBundle(h.root, id, { args: ['/hello.wasm'], modules: {} });
  const x = io();
  const { exited: w } = await runTask(h, id, bundle, x, { rootfs: [{ type: 'bind', source: image, target: '', options: ['rbind', 'ro'] }] });
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('hello from wasm\n');
  await h.tasks.delete({ id });
  // unmounted on Delete: the bundle's rootfs is the empty directory again
  expect(fs.readdirSync(path.join(bundle, 'rootfs'))).toEqual([]);
});

test('stdin: what the client writes is echoed; CloseIO gives the module EOF', async () => {
  const id = nextId('echo');
  const x = io({ stdin: true });
  const bundle = makeBundle(h.root, id, { args: ['/echo.wasm'], modules: { '/echo.wasm': 'stdin-echo' } });
  await h.tasks.create({ id, bundle, stdin: x.stdin, stdout: x.stdout, stderr: x.stderr });
  const w = h.tasks.wait({ id });
  await h.tasks.start({ id });
  x.writeStdin('ping\n');
  x.writeStdin('pong\n');
  // the client keeps its writer open: only CloseIO can end the input
  await h.tasks.closeIO({ id, stdin: true });
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('ping\npong\n');
  await h.tasks.delete({ id });
});

test('a tight infinite loop is killed: exit 137 reported quickly, Stats/Pids/Update while it runs', async () => {
  const id = nextId('loop');
  const x = io();
  const { exited: w } = await runTask(h, id, makeBundle(h.root, id, { args: ['/loop.wasm'], modules: { '/loop.wasm': 'infinite-loop' }, memoryLimit: 8 << 20 }), x);
  expect((await h.tasks.state({ id })).status).toBe(types.TaskStatus.RUNNING);
  expect((await h.tasks.pids({ id })).processes).toEqual([]);
  const stats = (await h.tasks.stats({ id })).stats!;
  const memory = anyTypeName(stats) === 'io.containerd.cgroups.v2.Metrics'
    ? unpackAny(stats, cgroupsV2.Metrics).memory!.usage
    : unpackAny(stats, cgroupsV1.Metrics).memory!.usage!.usage;
  expect(memory).toBe(65536n); // one page of linear memory
  await expect(h.tasks.pause({ id })).rejects.toMatchObject({ code: Code.UNIMPLEMENTED });
  await h.tasks.update({ id, resources: packJsonAny(OCI_LINUX_RESOURCES_TYPE_URL, { memory: { limit: 16 << 20 } }) });
  const t0 = performance.now();
  await h.tasks.kill({ id, signal: 9 });
  expect((await w).exitStatus).toBe(137);
  const ms = performance.now() - t0;
  process.stdout.write(`kill -> Wait of a tight loop: ${ms.toFixed(1)} ms\n`);
  expect(ms).toBeLessThan(1000); // the bar is 100 ms; the shared 2-core VM gets slack
  await until(() => h.sink.exitStatus(id) === 137, 5000, 'TaskExit 137');
  await h.tasks.delete({ id });
});

test("a memory bomb meets its limit (and a trap is reported) while another pod's container keeps running", async () => {
  const podA = nextId('pod-a');
  const podB = nextId('pod-b');
  await runPod(h, podA);
  await runPod(h, podB);
  const other = nextId('other');
  const ox = io();
  const { exited: ow } = await runTask(h, other, makeBundle(h.root, other, { args: ['/sleep.wasm'], modules: { '/sleep.wasm': 'sleep-long' }, sandboxId: podB }), ox);
  const bomb = nextId('bomb');
  const bx = io();
  const { exited: bw } = await runTask(h, bomb, makeBundle(h.root, bomb, { args: ['/bomb.wasm'], modules: { '/bomb.wasm': 'memory-bomb' }, memoryLimit: 32 << 20, sandboxId: podA }), bx);
  expect((await bw).exitStatus).toBe(134);
  const err = (await bx.err).toString();
  expect(err).toContain('memory.grow failed');
  expect(err).toContain('wasm trap: unreachable');
  expect(err).toMatch(/linear memory in use: 3\d\.\d MiB of the container's 32\.0 MiB memory limit/);
  const trap = nextId('trap');
  const tx = io();
  const { exited: tw } = await runTask(h, trap, makeBundle(h.root, trap, { args: ['/trap.wasm'], modules: { '/trap.wasm': 'trap' }, sandboxId: podA }), tx);
  expect((await tw).exitStatus).toBe(134);
  expect((await tx.err).toString()).toMatch(/^wasm trap: unreachable/);
  // the other pod's container was never disturbed
  expect((await h.tasks.state({ id: other })).status).toBe(types.TaskStatus.RUNNING);
  // pod metrics over the Controller: the sum of its members (one sleeping module, one page of linear memory)
  const metric = (await rpc(h.controller, 'metrics', { sandboxId: podB })).metrics;
  const [usage, modules] = anyTypeName(metric.data) === 'io.containerd.cgroups.v2.Metrics'
    ? ((m) => [m.memory!.usage, m.pids!.current])(unpackAny(metric.data, cgroupsV2.Metrics))
    : ((m) => [m.memory!.usage!.usage, m.pids!.current])(unpackAny(metric.data, cgroupsV1.Metrics));
  expect([usage, modules]).toEqual([65536n, 1n]);
  // Stop of pod B ends its container through the task core: TaskExit 143 (SIGTERM, which a module cannot catch)
  await rpc(h.controller, 'stop', { sandboxId: podB, timeoutSecs: 5 });
  expect((await ow).exitStatus).toBe(143);
  expect((await rpc(h.controller, 'wait', { sandboxId: podB })).exitStatus).toBe(0);
  for (const id of [other, bomb, trap]) await h.tasks.delete({ id });
  for (const p of [podA, podB]) await rpc(h.controller, 'shutdown', { sandboxId: p });
  expect(fs.existsSync(path.join(h.dir, podA))).toBe(false);
});

test('Exec runs another module of the image, with its own IO, exit status and events', async () => {
  const pod = nextId('pod');
  const started = await runPod(h, pod);
  expect(started.pid).toBe(0);
  expect(started.address).toBe(`ttrpc+unix://${h.dir}/task.sock`);
  const id = nextId('main');
  const bundle = makeBundle(h.root, id, {
    args: ['/sleep.wasm'], modules: { '/sleep.wasm': 'sleep-long', '/tools/hello.wasm': 'hello', '/tools/exit7.wasm': 'exit7' }, sandboxId: pod,
  });
  const x = io();
  const { exited: w } = await runTask(h, id, bundle, x);
  const ex = io();
  await h.tasks.exec({ id, execId: 'x1', stdout: ex.stdout, stderr: ex.stderr, spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['/tools/hello.wasm'], cwd: '/' }) });
  const xw = h.tasks.wait({ id, execId: 'x1' });
  await h.tasks.start({ id, execId: 'x1' });
  expect((await xw).exitStatus).toBe(0);
  expect((await ex.out).toString()).toBe('hello from wasm\n');
  await h.tasks.delete({ id, execId: 'x1' });
  // relative to cwd, and a module that is not in the image is refused at Start with a clear error
  const e2 = io();
  await h.tasks.exec({ id, execId: 'x2', stdout: e2.stdout, spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['./exit7.wasm'], cwd: '/tools' }) });
  const x2w = h.tasks.wait({ id, execId: 'x2' });
  await h.tasks.start({ id, execId: 'x2' });
  expect((await x2w).exitStatus).toBe(7);
  await h.tasks.exec({ id, execId: 'x3', spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['/tools/missing.wasm'] }) });
  await expect(h.tasks.start({ id, execId: 'x3' })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('/tools/missing.wasm not found') });
  // the pod's status lists its container; Stop ends it
  const status = await rpc(h.controller, 'status', { sandboxId: pod, verbose: true });
  expect(status.state).toBe('SANDBOX_READY');
  expect(JSON.stringify(status.info)).toContain(`${NS}/${id}`);
  await rpc(h.controller, 'stop', { sandboxId: pod, timeoutSecs: 0 });
  expect((await w).exitStatus).toBe(137);
  expect(h.sink.of(id)).toEqual(['/tasks/create', '/tasks/start', '/tasks/exec-added:x1', '/tasks/exec-started:x1', '/tasks/exit:x1',
    '/tasks/exec-added:x2', '/tasks/exec-started:x2', '/tasks/exit:x2', '/tasks/exec-added:x3', `/tasks/exit:${id}`]);
  await h.tasks.delete({ id });
  // Delete took it off the pod's membership
  expect(JSON.stringify((await rpc(h.controller, 'status', { sandboxId: pod, verbose: true })).info)).not.toContain(`${NS}/${id}`);
  await rpc(h.controller, 'shutdown', { sandboxId: pod });
});

test('a terminal task gets a pty: output arrives through the console the core copies', async () => {
  const id = nextId('tty');
  const x = io();
  const bundle = makeBundle(h.root, id, { args: ['/hello.wasm'], terminal: true });
  const { exited: w } = await runTask(h, id, bundle, x, { terminal: true, stderr: '' });
  expect((await w).exitStatus).toBe(0);
  expect((await x.out).toString()).toBe('hello from wasm\r\n');
  await h.tasks.delete({ id });
});

test('bad input gets clear errors and leaks nothing', async () => {
  const fds = fs.readdirSync('/proc/self/fd').length;
  const cases: [string, Parameters<typeof makeBundle>[2], Code, RegExp][] = [
    ['missing', { args: ['/nope.wasm'], modules: {} }, Code.FAILED_PRECONDITION, /module \/nope\.wasm not found/],
    ['escape', { args: ['/../../../../etc/passwd'], modules: {} }, Code.FAILED_PRECONDITION, /not found/],
    ['noargs', { args: [], modules: {} }, Code.INVALID_ARGUMENT, /args\[0\] names the wasm module/],
    ['foreign', { args: ['/f.wasm'], modules: { '/f.wasm': 'foreign-import' } }, Code.INVALID_ARGUMENT, /host_magic/],
    ['toobig', { args: ['/b.wasm'], modules: { '/b.wasm': 'big-minimum' }, memoryLimit: 1 << 20 }, Code.RESOURCE_EXHAUSTED, /limit/],
  ];
  for (const [name, o, code, msg] of cases) {
    const id = nextId(name);
    const x = io();
    await expect(h.tasks.create({ id, bundle: makeBundle(h.root, id, o), stdout: x.stdout })).rejects.toMatchObject({ code, message: expect.stringMatching(msg) });
    await expect(h.tasks.state({ id })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    x.close();
  }
  // a killed created task ends without running
  const id = nextId('created');
  const x = io();
  await h.tasks.create({ id, bundle: makeBundle(h.root, id, { args: ['/hello.wasm'] }), stdout: x.stdout });
  await h.tasks.kill({ id, signal: 15 });
  expect((await h.tasks.wait({ id })).exitStatus).toBe(143);
  await h.tasks.delete({ id });
  expect((await x.out).length).toBe(0);
  // a created task deleted without Start: its module (instantiated at Create) never runs, its worker is let go
  const id2 = nextId('created');
  const x2 = io();
  const before = h.spec.pool!.stats();
  await h.tasks.create({ id: id2, bundle: makeBundle(h.root, id2, { args: ['/hello.wasm'] }), stdout: x2.stdout });
  expect(h.spec.pool!.stats().busy).toBe(before.busy + 1);
  await h.tasks.delete({ id: id2 });
  expect((await x2.out).length).toBe(0);
  await until(() => h.spec.pool!.stats().busy === before.busy, 2000, 'the worker let go');
  x2.close(); // our own reader of its stderr, which never had a writer
  await until(() => fs.readdirSync('/proc/self/fd').length <= fds + 2, 2000, 'fds released');
});

test("CRI 1.x's pause container runs no module: created without one, running until a signal ends it", async () => {
  const id = nextId('pause');
  // the pause image's binary is not wasm; a container of any other type with it fails Create
  const bundle = makeBundle(h.root, id, { args: ['/catatonit', '-P'], modules: {}, files: { '/catatonit': '\x7fELF not wasm' } });
  await expect(h.tasks.create({ id: `${id}-app`, bundle })).rejects.toMatchObject({ code: Code.INVALID_ARGUMENT });
  const config = path.join(bundle, 'config.json');
  const spec = JSON.parse(fs.readFileSync(config, 'utf8'));
  spec.annotations = { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.cri.sandbox-id': id };
  fs.writeFileSync(config, JSON.stringify(spec));
  const x = io();
  const { exited } = await runTask(h, id, bundle, x);
  expect((await h.tasks.state({ id })).status).toBe(types.TaskStatus.RUNNING);
  await h.tasks.kill({ id, signal: 0 }); // only a check: still running
  expect((await h.tasks.state({ id })).status).toBe(types.TaskStatus.RUNNING);
  await h.tasks.kill({ id, signal: 15 });
  expect((await exited).exitStatus).toBe(143);
  expect((await x.out).length).toBe(0);
  await h.tasks.delete({ id });
});
