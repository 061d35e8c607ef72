// containerd 1.6/1.7: CRI's pause container arrives as a task and becomes a runc pod (the framework's task-sandbox.ts
// + RuncSandboxer.prepareContainer), with real runc, through the framework exactly as the binary wires it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { task } from '@kuasar/api';
import { createLogger, podMembers, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { runcSandboxerSpec } from '../src/sandboxer-spec';
import { mountPointsUnder } from '../src/proc';
import type { OciSpec } from '../src/spec-rewrite';
import { baseSpec, makeRootfs } from './oci-fixture';

jest.setTimeout(60_000);

const NS = 'k8s.io';
let work: string;
let rootfs: string;
let running: RunningSandboxer | undefined;
let config: string;
let n = 0;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-pause-'));
  rootfs = makeRootfs(work);
  config = path.join(work, 'config.toml');
  fs.writeFileSync(config, `[runc.runtime]\nbinary = "runc"\nroot = "${path.join(work, 'runc-root')}"\n`);
});

afterEach(async () => {
  await running?.close();
  running = undefined;
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

const dir = (): string => path.join(work, 'state');

async function start(): Promise<RunningSandboxer> {
  running = await startSandboxer(runcSandboxerSpec('test'), { listen: path.join(work, 'c.sock'), dir: dir(), config }, createLogger({ level: 'error' }));
  return running;
}

const nsOf = (pid: number, kind: string): string => fs.readlinkSync(`/proc/${pid}/ns/${kind}`);
const inoOf = (pid: number, kind: string): number => Number(/\[(\d+)\]/.exec(nsOf(pid, kind))![1]);

function bundle(id: string, spec: OciSpec): string {
  const b = path.join(work, 'bundles', id);
  fs.mkdirSync(b, { recursive: true });
  fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify(spec));
  return b;
}

/** The spec CRI 1.x gives a pause container: its own network (no CNI here)/ipc/uts/pid, hostname, annotations. */
function pauseSpec(id: string): OciSpec {
  const spec = baseSpec(rootfs, ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done']);
  spec.hostname = 'pause-pod';
  spec.linux!.namespaces = [{ type: 'pid' }, { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  spec.linux!.cgroupsPath = `/${NS}/${id}`; // containerd's default when CRI got no cgroup_parent
  spec.annotations = {
    'io.kubernetes.cri.container-type': 'sandbox',
    'io.kubernetes.cri.sandbox-id': id,
    'io.kubernetes.cri.sandbox-name': 'web',
    'io.kubernetes.cri.sandbox-namespace': 'default',
    'io.kubernetes.cri.sandbox-uid': `uid-${id}`,
  };
  return spec;
}

/** An app container as CRI 1.x writes it: the pause's /proc paths; pid only when the pod shares it (POD). */
function appSpec(podId: string, pausePid: number, sharedPid: boolean): OciSpec {
  const spec = baseSpec(rootfs, ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done']);
  spec.linux!.namespaces = [
    { type: 'network', path: `/proc/${pausePid}/ns/net` },
    { type: 'ipc', path: `/proc/${pausePid}/ns/ipc` },
    { type: 'uts', path: `/proc/${pausePid}/ns/uts` },
    sharedPid ? { type: 'pid', path: `/proc/${pausePid}/ns/pid` } : { type: 'pid' },
    { type: 'mount' },
  ];
  spec.annotations = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': podId };
  return spec;
}

async function createTask(r: RunningSandboxer, id: string, spec: OciSpec): Promise<number> {
  const { pid } = await r.taskService!.create(task.CreateTaskRequest.fromPartial({ id, bundle: bundle(id, spec) }), { namespace: NS });
  await r.taskService!.start(task.StartRequest.fromPartial({ id }), { namespace: NS });
  return pid;
}

async function endTask(r: RunningSandboxer, id: string): Promise<number> {
  const t = r.taskService!;
  await t.kill(task.KillRequest.fromPartial({ id, signal: 9 }), { namespace: NS }).catch(() => undefined);
  const { exitStatus } = await t.wait(task.WaitRequest.fromPartial({ id }), { namespace: NS });
  await t.delete(task.DeleteRequest.fromPartial({ id }), { namespace: NS });
  return exitStatus;
}

function expectPodGone(id: string): void {
  expect(running!.serving.controller.find(id)).toBeUndefined();
  expect(fs.existsSync(path.join(dir(), id))).toBe(false);
  expect(mountPointsUnder(path.join(dir(), id))).toEqual([]);
  expect(fs.existsSync(`/sys/fs/cgroup/memory/kuasar/${id}`)).toBe(false);
}

it('the pause task becomes a pod: namespaces held like a Controller pod, app containers join and become members', async () => {
  const r = await start();
  const controller = r.serving.controller;
  const id = `pause${process.pid}n${n++}`;
  const pausePid = await createTask(r, id, pauseSpec(id));

  const sandbox = controller.find(id)!;
  expect(sandbox).toBeDefined();
  expect(sandbox.record.task).toEqual({ namespace: NS, id });
  expect(sandbox.record.config?.metadata).toMatchObject({ name: 'web', namespace: 'default', uid: `uid-${id}` });
  const st = await controller.status(id, true);
  expect({ state: st.state, pid: st.pid }).toEqual({ state: 'SANDBOX_READY', pid: pausePid });
  // ipc/uts held by nsfs bind mounts in the pod dir, as for a 2.x pod; the pause is in them, with the pod's hostname
  for (const kind of ['net', 'ipc', 'uts']) expect(fs.statSync(path.join(dir(), id, 'ns', kind)).ino).toBe(inoOf(pausePid, kind));
  expect(execFileSync('nsenter', ['-t', String(pausePid), '-u', 'hostname'], { encoding: 'utf8' }).trim()).toBe('pause-pod');
  // containerd's default cgroup (/k8s.io/<id>) named no parent: the pod gets its own, as on 2.x
  expect(fs.readFileSync(`/proc/${pausePid}/cgroup`, 'utf8')).toContain(`/kuasar/${id}/${id}`);
  // the pause holds a pid namespace of its own (it is pid 1 there)
  expect(nsOf(pausePid, 'pid')).not.toBe(nsOf(process.pid, 'pid'));

  const shared = await createTask(r, `${id}-a`, appSpec(id, pausePid, true));
  const own = await createTask(r, `${id}-b`, appSpec(id, pausePid, false));
  for (const kind of ['net', 'ipc', 'uts']) expect([nsOf(shared, kind), nsOf(own, kind)]).toEqual([nsOf(pausePid, kind), nsOf(pausePid, kind)]);
  expect(nsOf(shared, 'pid')).toBe(nsOf(pausePid, 'pid')); // POD: joins the pause's pid namespace
  expect(nsOf(own, 'pid')).not.toBe(nsOf(pausePid, 'pid')); // CONTAINER: one of its own
  expect(podMembers(sandbox).map((m) => m.id).sort()).toEqual([`${id}-a`, `${id}-b`]);

  // an app container deleted by containerd leaves the pod
  expect(await endTask(r, `${id}-a`)).toBe(137);
  expect(podMembers(sandbox).map((m) => m.id)).toEqual([`${id}-b`]);

  // the pause's exit is the pod's; a container with a pid namespace of its own outlives it until the pause task is
  // deleted (as with containerd's runc shim)
  const waited = controller.wait(id);
  await r.taskService!.kill(task.KillRequest.fromPartial({ id, signal: 9 }), { namespace: NS });
  expect((await waited).exitStatus).toBe(137);
  expect((await controller.status(id, false)).state).toBe('SANDBOX_NOTREADY');
  await expect(createTask(r, `${id}-c`, appSpec(id, pausePid, false))).rejects.toThrow(/not running/);
  expect(fs.existsSync(`/proc/${own}`)).toBe(true);

  // deleting the pause task ends what is left and removes the pod
  await r.taskService!.delete(task.DeleteRequest.fromPartial({ id }), { namespace: NS });
  expectPodGone(id);
  const left = await r.taskService!.wait(task.WaitRequest.fromPartial({ id: `${id}-b` }), { namespace: NS });
  expect(left.exitStatus).toBe(137);
  await r.taskService!.delete(task.DeleteRequest.fromPartial({ id: `${id}-b` }), { namespace: NS });
});

it('a pause task whose create fails leaves no pod behind', async () => {
  const r = await start();
  const id = `pause${process.pid}n${n++}`;
  const spec = pauseSpec(id);
  spec.linux!.namespaces!.push({ type: 'user' }); // pod user namespaces are not supported
  await expect(createTask(r, id, spec)).rejects.toThrow(/user namespaces/);
  expectPodGone(id);

  const spec2 = pauseSpec(id);
  (spec2 as { process: { args: string[] } }).process.args = ['/no/such/binary'];
  await expect(r.taskService!.create(task.CreateTaskRequest.fromPartial({ id, bundle: bundle(`${id}-2`, spec2) }), { namespace: NS })
    .then(() => r.taskService!.start(task.StartRequest.fromPartial({ id }), { namespace: NS }))).rejects.toThrow();
  await r.taskService!.delete(task.DeleteRequest.fromPartial({ id }), { namespace: NS }).catch(() => undefined);
  expectPodGone(id);
});

it('a sandboxer restart recovers the pod from its pause task; a pause that died meanwhile ends it', async () => {
  let r = await start();
  const a = `pause${process.pid}n${n++}`;
  const b = `pause${process.pid}n${n++}`;
  const pauseA = await createTask(r, a, pauseSpec(a));
  const pauseB = await createTask(r, b, pauseSpec(b));
  await createTask(r, `${a}-x`, appSpec(a, pauseA, true));
  await r.close();
  process.kill(pauseB, 'SIGKILL');
  await new Promise((res) => setTimeout(res, 200));

  r = await start();
  const controller = r.serving.controller;
  const st = await controller.status(a, true);
  expect({ state: st.state, pid: st.pid }).toEqual({ state: 'SANDBOX_READY', pid: pauseA });
  expect(podMembers(controller.find(a)!).map((m) => m.id)).toEqual([`${a}-x`]);
  // b's pause died while the sandboxer was down: its pod is stopped, and goes with the pause task
  await expect(controller.wait(b)).resolves.toMatchObject({ exitStatus: expect.any(Number) });
  expect((await controller.status(b, false)).state).toBe('SANDBOX_NOTREADY');
  await endTask(r, b);
  expectPodGone(b);

  await endTask(r, `${a}-x`);
  await endTask(r, a);
  expectPodGone(a);
});
