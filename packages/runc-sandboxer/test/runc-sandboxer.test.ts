import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cgroupsV1, cri, packAny, runtimeOptions, task, types, type google } from '@kuasar/api';
import { SandboxController, SandboxStore, createLogger, type Logger } from '@kuasar/sandbox';
import { Code, TaskService, type Publisher } from '@kuasar/task';
import { ENGINE_ANNOTATION, EngineSelector as Selector } from '../src/engine-select';
import { RuncSandboxer, taskServicePodTasks } from '../src/runc-sandboxer';
import { isProcessAlive, mountPointsUnder } from '../src/proc';
import { OciCli, baseSpec, engineWorks, makeRootfs, nsInode } from './oci-fixture';

jest.setTimeout(90_000);

const NS = 'k8s.io';
const ENDPOINT = { address: 'ttrpc+unix:///run/test/task.sock', version: 3 };

/** Events go nowhere: these tests look at processes and namespaces, not at containerd. */
class DiscardPublisher implements Publisher {
  topics: string[] = [];
  publish(_ns: string, topic: string): void {
    this.topics.push(topic);
  }
  async close(): Promise<void> {}
}

interface World {
  work: string;
  stateDir: string;
  rootfs: string;
  logger: Logger;
  sandboxer: RuncSandboxer;
  controller: SandboxController;
  tasks: TaskService;
  runcRoot: string;
}

let w: World;
let seq = 0;
const cleanups: Array<() => Promise<void> | void> = [];

async function makeWorld(work: string, rootfs: string, runcRoot: string): Promise<World> {
  const stateDir = path.join(work, 'state');
  const logger = createLogger({ level: (process.env.TEST_LOG_LEVEL as 'info') ?? 'error' });
  const sandboxer = new RuncSandboxer({ logger, engine: { binary: 'runc', root: runcRoot, systemdCgroup: false, noPivotRoot: false, noNewKeyring: false }, holderPollMs: 100 });
  const store = new SandboxStore(stateDir);
  await store.init();
  const controller = new SandboxController(sandboxer, store, logger, ENDPOINT);
  const tasks = new TaskService({
    engine: new Selector({ defaults: { binary: 'runc', root: runcRoot, systemdCgroup: false, noPivotRoot: false, noNewKeyring: false } }),
    publisher: new DiscardPublisher(),
    logger,
    stateDir,
    hooks: sandboxer.hooks,
    oomPollMs: 0,
  });
  sandboxer.attachTasks(taskServicePodTasks(tasks));
  return { work, stateDir, rootfs, logger, sandboxer, controller, tasks, runcRoot };
}

beforeAll(async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-runcsb-'));
  w = await makeWorld(work, makeRootfs(work), path.join(work, 'runc-root'));
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  w.tasks.close();
  w.sandboxer.close();
  fs.rmSync(w.work, { recursive: true, force: true });
});

function podConfig(opts: { hostname?: string; pid?: cri.NamespaceMode; network?: cri.NamespaceMode; cgroupParent?: string }): google.Any {
  const config = cri.PodSandboxConfig.fromPartial({
    metadata: { name: 'web', namespace: 'default', uid: 'u1' },
    hostname: opts.hostname ?? '',
    linux: {
      cgroupParent: opts.cgroupParent ?? '',
      securityContext: {
        namespaceOptions: { network: opts.network ?? cri.NamespaceMode.POD, pid: opts.pid ?? cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD },
      },
    },
  });
  return packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, config);
}

async function runPod(opts: Parameters<typeof podConfig>[0] & { sandbox?: types.Sandbox; netnsPath?: string } = {}): Promise<{ id: string; pid: number }> {
  const id = `sb${process.pid}n${++seq}`;
  await w.controller.create({ sandboxId: id, options: podConfig(opts), netnsPath: opts.netnsPath ?? '', ...(opts.sandbox ? { sandbox: opts.sandbox } : {}) });
  cleanups.push(() => w.controller.shutdown(id).catch(() => undefined));
  const started = await w.controller.start(id);
  return { id, pid: started.pid };
}

/** A container bundle the way containerd 2.x CRI writes it: /proc/<sandbox pid>/ns paths, annotations, the sandbox file. */
function criBundle(sandboxId: string, sandboxPid: number, cid: string, args: string[], sharedPid: boolean): string {
  const spec = baseSpec(w.rootfs, args);
  spec.linux = {
    ...spec.linux,
    namespaces: [
      { type: 'pid', ...(sharedPid ? { path: `/proc/${sandboxPid}/ns/pid` } : {}) },
      { type: 'ipc', path: `/proc/${sandboxPid}/ns/ipc` },
      { type: 'uts', path: `/proc/${sandboxPid}/ns/uts` },
      { type: 'mount' },
      { type: 'network', path: `/proc/${sandboxPid}/ns/net` },
    ],
  };
  spec.annotations = { 'io.kubernetes.cri.sandbox-id': sandboxId, 'io.kubernetes.cri.container-type': 'container' };
  const bundle = path.join(w.work, 'bundles', cid);
  fs.mkdirSync(bundle, { recursive: true });
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  fs.writeFileSync(path.join(bundle, 'sandbox'), sandboxId);
  return bundle;
}

async function runContainer(bundle: string, cid: string, options?: google.Any): Promise<{ pid: number; stdout: string }> {
  const stdout = path.join(bundle, 'stdout.log');
  const created = await w.tasks.create(task.CreateTaskRequest.fromPartial({ id: cid, bundle, stdout: `file://${stdout}`, stderr: `file://${stdout}`, options }), { namespace: NS });
  cleanups.push(async () => {
    await w.tasks.kill(task.KillRequest.fromPartial({ id: cid, signal: 9, all: true }), { namespace: NS }).catch(() => undefined);
    await w.tasks.wait(task.WaitRequest.fromPartial({ id: cid }), { namespace: NS }).catch(() => undefined);
    await w.tasks.delete(task.DeleteRequest.fromPartial({ id: cid }), { namespace: NS }).catch(() => undefined);
  });
  await w.tasks.start(task.StartRequest.fromPartial({ id: cid }), { namespace: NS });
  return { pid: created.pid, stdout };
}

async function runToEnd(bundle: string, cid: string, options?: google.Any): Promise<string> {
  const { stdout } = await runContainer(bundle, cid, options);
  const exit = await w.tasks.wait(task.WaitRequest.fromPartial({ id: cid }), { namespace: NS });
  const out = fs.readFileSync(stdout, 'utf8');
  if (exit.exitStatus !== 0) throw new Error(`container ${cid} exited ${exit.exitStatus}: ${out}`);
  return out;
}

function mountsOf(id: string): string[] {
  return mountPointsUnder(path.join(w.stateDir, id));
}

describe('RuncSandboxer through the framework controller and the task core (real runc)', () => {
  it('runs a shared-PID pod: catatonit is pid 1, containers share hostname, ipc and pids; stop and shutdown leave nothing', async () => {
    const { id, pid } = await runPod({ hostname: 'web-0', pid: cri.NamespaceMode.POD });
    expect(pid).toBeGreaterThan(0);
    const status = await w.controller.status(id, true);
    expect(status.state).toBe('SANDBOX_READY');
    const kindInfo = await w.sandboxer.status(w.controller.get(id));
    expect(kindInfo).toMatchObject({ holderPid: pid, engine: 'runc', cgroupParent: `/kuasar/${id}`, isolation: { pid: 'pod' } });
    expect(status.info.info).toContain(`"holderPid":${pid}`); // the framework passes it on in verbose Status

    await runContainer(criBundle(id, pid, `${id}-a`, ['sleep', '1002'], true), `${id}-a`);
    const out = await runToEnd(criBundle(id, pid, `${id}-b`, ['sh', '-c', 'hostname; readlink /proc/self/ns/ipc; ps -o pid,args'], true), `${id}-b`);
    const [hostname, ipc, , ...ps] = out.trim().split('\n');
    expect(hostname).toBe('web-0');
    expect(ipc).toBe(fs.readlinkSync(`/proc/${pid}/ns/ipc`));
    const rows = ps.map((l) => l.trim().split(/\s+/));
    expect(rows).toContainEqual(['1', 'catatonit', '-P']);
    expect(rows.some((r) => r[1] === 'sleep' && r[2] === '1002')).toBe(true);
    // the rewritten config.json is what ran: the pod's files, not /proc/<pid> paths
    const written = JSON.parse(fs.readFileSync(path.join(w.work, 'bundles', `${id}-a`, 'config.json'), 'utf8'));
    expect(written.linux.namespaces.find((n: { type: string }) => n.type === 'pid').path).toBe(path.join(w.stateDir, id, 'ns/pid'));
    expect(written.linux.cgroupsPath).toBe(`/kuasar/${id}/${id}-a`);
    expect(JSON.parse(written.annotations[ENGINE_ANNOTATION]).binary).toBe('runc');

    // metrics come from the pod cgroup, which holds the running sleep
    const metric = await w.controller.metrics(id);
    expect(metric.data!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = cgroupsV1.Metrics.decode(metric.data!.value);
    expect(m.memory!.usage!.usage).toBeGreaterThan(0n);
    expect(m.pids!.current).toBeGreaterThanOrEqual(1n);

    const waited = w.controller.wait(id);
    await w.controller.stop(id, 2);
    expect((await waited).exitStatus).toBe(137);
    expect(isProcessAlive({ pid, startTime: fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]! })).toBe(false);
    expect((await w.controller.status(id, false)).state).toBe('SANDBOX_NOTREADY');
    expect(mountsOf(id)).toEqual([]);
    // a stopped pod takes no new containers
    await expect(w.tasks.create(task.CreateTaskRequest.fromPartial({ id: `${id}-c`, bundle: criBundle(id, pid, `${id}-c`, ['true'], true) }), { namespace: NS })).rejects.toMatchObject({
      code: Code.FAILED_PRECONDITION,
    });
    for (const c of cleanups.splice(0).reverse()) await c(); // CRI deletes tasks, then Shutdown
    expect(fs.existsSync(path.join(w.stateDir, id))).toBe(false);
    expect(fs.existsSync(`/sys/fs/cgroup/memory/kuasar/${id}`)).toBe(false);
  });

  it('holds a pod without shared PIDs with no process at all (pid 0), and Wait returns only after Stop', async () => {
    const { id, pid } = await runPod({ hostname: 'lonely' });
    expect(pid).toBe(0);
    const out = await runToEnd(criBundle(id, 0, `${id}-a`, ['sh', '-c', 'hostname; readlink /proc/self/ns/uts'], false), `${id}-a`);
    expect(out.trim().split('\n')).toEqual(['lonely', `uts:[${nsInode(path.join(w.stateDir, id, 'ns/uts'))}]`]);
    let exited = false;
    const waited = w.controller.wait(id).then((e) => ((exited = true), e));
    await new Promise((r) => setTimeout(r, 300));
    expect(exited).toBe(false);
    await w.controller.stop(id, 1);
    expect((await waited).exitStatus).toBe(0);
  });

  it('stops running containers of the pod with SIGTERM, then SIGKILL after the timeout', async () => {
    const { id } = await runPod({});
    // ignores SIGTERM: only the SIGKILL after the 1 s timeout ends it
    const stubborn = await runContainer(criBundle(id, 0, `${id}-a`, ['sh', '-c', 'trap "" TERM; while true; do sleep 0.1; done'], false), `${id}-a`);
    // pid 1 of its own pid namespace: SIGTERM only works through a handler
    const polite = await runContainer(criBundle(id, 0, `${id}-b`, ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done'], false), `${id}-b`);
    const t0 = Date.now();
    await w.controller.stop(id, 1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    const exitA = await w.tasks.wait(task.WaitRequest.fromPartial({ id: `${id}-a` }), { namespace: NS });
    const exitB = await w.tasks.wait(task.WaitRequest.fromPartial({ id: `${id}-b` }), { namespace: NS });
    expect(exitA.exitStatus).toBe(137);
    expect(exitB.exitStatus).toBe(0);
    for (const p of [stubborn.pid, polite.pid]) {
      const stat = fs.existsSync(`/proc/${p}/stat`) ? fs.readFileSync(`/proc/${p}/stat`, 'utf8') : ') X';
      expect(stat.includes(') S') || stat.includes(') R')).toBe(false);
    }
  });

  it('Stop kills what is left in the pod cgroup; Shutdown removes a container containerd lost (bundle gone)', async () => {
    const { id } = await runPod({});
    const cid = `${id}-lost`;
    const bundle = criBundle(id, 0, cid, ['sleep', '1003'], false);
    const { pid } = await runContainer(bundle, cid);
    // containerd 2.1 without the shim binary deletes the bundle on restart and forgets the task: runc can no longer
    // be driven for it (its --log file's dir is gone), so only the pod cgroup still reaches the process.
    fs.rmSync(bundle, { recursive: true, force: true });
    // A stray process in the pod cgroup (not a container at all) must not outlive the pod either.
    const stray = execFileSync('sh', ['-c', 'sleep 1004 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' }).trim();
    const strayCg = `/sys/fs/cgroup/pids/kuasar/${id}/stray`;
    fs.mkdirSync(strayCg, { recursive: true });
    fs.writeFileSync(path.join(strayCg, 'cgroup.procs'), stray);
    await w.controller.stop(id, 0);
    const gone = (p: number): boolean => !fs.existsSync(`/proc/${p}`) || fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]![0] === 'Z';
    for (let i = 0; i < 50 && !(gone(pid) && gone(Number(stray))); i++) await new Promise((r) => setTimeout(r, 50));
    expect(gone(pid)).toBe(true);
    expect(gone(Number(stray))).toBe(true);
    await w.controller.shutdown(id);
    expect(fs.existsSync(path.join(w.stateDir, 'tasks', NS, cid))).toBe(false);
    expect(fs.existsSync(path.join(w.runcRoot, NS, cid))).toBe(false);
    expect(fs.existsSync(`/sys/fs/cgroup/pids/kuasar/${id}`)).toBe(false);
  });

  it('never sweeps a cgroup parent that is not the pod\'s own', async () => {
    const shared = `/kuasar-shared-${process.pid}`;
    const { id } = await runPod({ cgroupParent: shared });
    const bystander = execFileSync('sh', ['-c', 'sleep 1005 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' }).trim();
    const cg = `/sys/fs/cgroup/pids${shared}/bystander`;
    fs.mkdirSync(cg, { recursive: true });
    cleanups.push(() => {
      try { process.kill(Number(bystander), 'SIGKILL'); } catch { /* gone */ }
      for (let i = 0; i < 20 && fs.existsSync(cg); i++) try { fs.rmdirSync(cg); } catch { execFileSync('sleep', ['0.05']); }
      try { fs.rmdirSync(`/sys/fs/cgroup/pids${shared}`); } catch { /* busy or gone */ }
    });
    fs.writeFileSync(path.join(cg, 'cgroup.procs'), bystander);
    await w.controller.stop(id, 0);
    expect(fs.existsSync(`/proc/${bystander}`)).toBe(true);
  });

  it('reports the pod exited when its holder dies', async () => {
    const { id, pid } = await runPod({ pid: cri.NamespaceMode.POD });
    const waited = w.controller.wait(id);
    process.kill(pid, 'SIGKILL');
    expect((await waited).exitStatus).toBe(137);
    expect((await w.controller.status(id, false)).state).toBe('SANDBOX_NOTREADY');
  });

  it('joins the netns CRI made and keeps a host-network pod on the host', async () => {
    const name = `kuasar-test-${process.pid}-${seq}`;
    execFileSync('ip', ['netns', 'add', name]);
    cleanups.push(() => void execFileSync('ip', ['netns', 'delete', name]));
    const netnsPath = `/var/run/netns/${name}`;
    const pod = await runPod({ netnsPath });
    const out = await runToEnd(criBundle(pod.id, 0, `${pod.id}-a`, ['readlink', '/proc/self/ns/net'], false), `${pod.id}-a`);
    expect(out.trim()).toBe(`net:[${nsInode(netnsPath)}]`);

    const host = await runPod({ network: cri.NamespaceMode.NODE, hostname: 'ignored' });
    const hostOut = await runToEnd(criBundle(host.id, 0, `${host.id}-a`, ['sh', '-c', 'readlink /proc/self/ns/net; hostname'], false), `${host.id}-a`);
    expect(hostOut.trim().split('\n')).toEqual([fs.readlinkSync('/proc/self/ns/net'), os.hostname()]);
  });

  it('runs a container without a pod standalone, with the namespaces of its spec', async () => {
    const cid = `solo${process.pid}n${++seq}`;
    const bundle = criBundle('not-a-pod', 0, cid, ['sh', '-c', 'hostname; readlink /proc/self/ns/ipc'], false);
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'));
    spec.linux.namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }];
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const out = (await runToEnd(bundle, cid)).trim().split('\n');
    expect(out[0]).toBe('runc'); // the hostname of runc's default spec, kept
    expect(out[1]).not.toBe(fs.readlinkSync('/proc/self/ns/ipc'));
  });

  it('rejects bad pod configs with INVALID_ARGUMENT and leaves nothing behind', async () => {
    const id = `bad${process.pid}n${++seq}`;
    const any = podConfig({ pid: cri.NamespaceMode.TARGET });
    await expect(w.controller.create({ sandboxId: id, options: any })).rejects.toMatchObject({ code: 3, message: expect.stringMatching(/pid namespace mode TARGET/) });
    await expect(w.controller.create({ sandboxId: id, options: podConfig({ cgroupParent: 'relative/x' }) })).rejects.toMatchObject({ code: 3 });
    await expect(w.controller.create({ sandboxId: id, options: podConfig({ network: cri.NamespaceMode.NODE }), netnsPath: '/var/run/netns/x' })).rejects.toMatchObject({ code: 3 });
    const crunSandbox = types.Sandbox.fromPartial({
      runtime: { name: 'io.containerd.kuasar.v1', options: packAny('runtimeoptions.v1.Options', runtimeOptions.Options, runtimeOptions.Options.fromPartial({ configBody: Buffer.from('BinaryName = "bash"') })) },
    });
    await expect(w.controller.create({ sandboxId: id, options: podConfig({}), sandbox: crunSandbox })).rejects.toMatchObject({ code: 3, message: expect.stringMatching(/unsupported runtime binary/) });
    expect(fs.existsSync(path.join(w.stateDir, id))).toBe(false);
  });

  it('runs a pod with crun when its CRI handler options say BinaryName = "crun"', async () => {
    const crunRoot = path.join(w.work, 'crun-root');
    if (!(await engineWorks(new OciCli('crun', path.join(crunRoot, 'probe')), w.rootfs, w.work))) {
      console.warn('crun cannot run containers here (hybrid cgroups with hugetlb in cgroup2); crun case skipped');
      return;
    }
    const handler = packAny('runtimeoptions.v1.Options', runtimeOptions.Options, runtimeOptions.Options.fromPartial({ configBody: Buffer.from(`BinaryName = "crun"\nRoot = "${crunRoot}"\n`) }));
    const { id } = await runPod({ hostname: 'crunny', sandbox: types.Sandbox.fromPartial({ runtime: { name: 'io.containerd.kuasar.v1', options: handler } }) });
    const { pid } = await runContainer(criBundle(id, 0, `${id}-a`, ['sleep', '1004'], false), `${id}-a`);
    const state = JSON.parse(execFileSync('crun', ['--root', path.join(crunRoot, NS), 'state', `${id}-a`], { encoding: 'utf8' }));
    expect(state.pid).toBe(pid);
    expect(fs.readlinkSync(`/proc/${pid}/ns/uts`)).toBe(`uts:[${nsInode(path.join(w.stateDir, id, 'ns/uts'))}]`);

    // a task's own options override its pod's engine: crun for one container of a runc pod
    const runcPod = await runPod({});
    const c2 = await runContainer(criBundle(runcPod.id, 0, `${runcPod.id}-a`, ['sleep', '1005'], false), `${runcPod.id}-a`, handler);
    expect(JSON.parse(execFileSync('crun', ['--root', path.join(crunRoot, NS), 'state', `${runcPod.id}-a`], { encoding: 'utf8' })).pid).toBe(c2.pid);
    const c3 = await runContainer(criBundle(runcPod.id, 0, `${runcPod.id}-b`, ['sleep', '1006'], false), `${runcPod.id}-b`);
    expect(JSON.parse(execFileSync('runc', ['--root', path.join(w.runcRoot, NS), 'state', `${runcPod.id}-b`], { encoding: 'utf8' })).pid).toBe(c3.pid);
  });
});

describe('recovery in a new sandboxer process', () => {
  it('re-adopts a live pod, and cleans a pod whose holder died while it was down', async () => {
    const { id, pid } = await runPod({ pid: cri.NamespaceMode.POD, hostname: 'phoenix' });
    const dead = await runPod({ pid: cri.NamespaceMode.POD });
    cleanups.length = 0; // the second world owns them now

    // "restart": a new controller and sandboxer over the same state dir
    const w2 = await makeWorld(w.work, w.rootfs, w.runcRoot);
    process.kill(dead.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 100));
    const store = new SandboxStore(w.stateDir);
    const controller2 = new SandboxController(w2.sandboxer, store, w2.logger, ENDPOINT);
    const report = await controller2.recover();
    try {
      expect(report.adopted).toContain(id);
      expect(report.cleaned).toContain(dead.id);
      expect(fs.existsSync(path.join(w.stateDir, dead.id))).toBe(false);
      expect(mountsOf(dead.id)).toEqual([]);
      expect((await controller2.status(id, false)).state).toBe('SANDBOX_READY');
      expect((await controller2.status(id, false)).pid).toBe(pid);

      // the re-adopted pod still takes containers (through the new sandboxer's hooks)
      const tasks2 = w2.tasks;
      const bundle = criBundle(id, pid, `${id}-z`, ['hostname'], true);
      const stdout = path.join(bundle, 'out.log');
      await tasks2.create(task.CreateTaskRequest.fromPartial({ id: `${id}-z`, bundle, stdout: `file://${stdout}` }), { namespace: NS });
      await tasks2.start(task.StartRequest.fromPartial({ id: `${id}-z` }), { namespace: NS });
      await tasks2.wait(task.WaitRequest.fromPartial({ id: `${id}-z` }), { namespace: NS });
      expect(fs.readFileSync(stdout, 'utf8').trim()).toBe('phoenix');
      await tasks2.delete(task.DeleteRequest.fromPartial({ id: `${id}-z` }), { namespace: NS });

      // its holder is no child of the new process: the poll notices its death
      const waited = controller2.wait(id);
      process.kill(pid, 'SIGKILL');
      expect((await waited).exitStatus).toBeGreaterThan(0);
    } finally {
      await controller2.shutdown(id).catch(() => undefined);
      w2.tasks.close();
      w2.sandboxer.close();
    }
    expect(mountsOf(id)).toEqual([]);
    // the first world still has the pods in memory; forget them
    await w.sandboxer.shutdown((w.controller as unknown as { get(id: string): never }).get(id)).catch(() => undefined);
  });
});
