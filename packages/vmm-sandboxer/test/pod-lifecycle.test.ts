// Whole pods through our APIs, as containerd 2.x drives them: Controller gRPC for the pod, Task ttrpc for its
// containers, real QEMU (TCG) guests running crun under the vmm-task agent.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OCI_PROCESS_TYPE_URL, types } from '@kuasar/api';
import { Code } from '@kuasar/task';
import * as grpc from '@grpc/grpc-js';
import { sandboxApi } from '@kuasar/api';
import { OCI_SPEC_TYPE_URL } from '../src/pod-update';
import { isAlive } from '../src/qemu';
import { agentSkipReason, readManifest } from './guest';
import { ClientIO, EventsSink, NS, killVms, makeBundle, mountsUnder, removeBundle, rpc, runPod, runTask, startHarness, tempDir, until, type Harness } from './harness';

// TCG on a loaded 2-core machine: a boot takes 1-3 s, one crun run 0.5 s of guest time, so minutes are plenty
jest.setTimeout(Number(process.env.KUASAR_TEST_TIMEOUT_MS) || 240_000);

const skip = agentSkipReason();
if (skip) console.warn(`vmm pod lifecycle tests skipped: ${skip}`);
const describeVm = skip ? describe.skip : describe;

function execSpec(args: string[]): { typeUrl: string; value: Buffer } {
  return { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify({ args, env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } })) };
}

/** Controller.Update of the sandbox spec, as containerd sends it (the harness's rpc() has no update). */
function updateSpec(h: Harness, id: string, spec: unknown, typeUrl = OCI_SPEC_TYPE_URL): Promise<unknown> {
  const req = sandboxApi.ControllerUpdateRequest.fromPartial({
    sandboxId: id,
    sandbox: { sandboxId: id, spec: { typeUrl, value: Buffer.from(JSON.stringify(spec)) } },
    fields: ['spec'],
  });
  const md = new grpc.Metadata();
  md.set('containerd-namespace', NS);
  return new Promise((resolve, reject) => h.controller.update(req, md, (err, res) => (err ? reject(err) : resolve(res))));
}

const resourcesSpec = (cpu: object, memory: object) => ({ ociVersion: '1.1.0', linux: { resources: { cpu, memory } } });

function vmPidOf(h: Harness, id: string): number {
  return JSON.parse(fs.readFileSync(path.join(h.dir, id, 'vm.json'), 'utf8')).identity.pid as number;
}

describeVm('vmm pods (QEMU TCG + guest agent)', () => {
  let root: string;
  let sink: EventsSink;
  let h: Harness;
  const ios: ClientIO[] = [];
  const bundles: string[] = [];
  const io = (o: { stdin?: boolean } = {}) => {
    const x = new ClientIO(root, o);
    ios.push(x);
    return x;
  };
  const bundle = (name: string, pod: string, args: string[], o: { mounts?: object[] } = {}) => {
    const b = makeBundle(root, name, pod, args, o);
    bundles.push(b);
    return b;
  };

  beforeAll(async () => {
    root = tempDir('pod');
    sink = new EventsSink(path.join(root, 'ev.sock'));
    await sink.server.listen(sink.path);
  });

  afterEach(async () => {
    await h?.stop();
    if (h) killVms(h.dir);
    for (const x of ios.splice(0)) x.close();
    for (const b of bundles.splice(0)) removeBundle(b);
  });

  afterAll(async () => {
    await sink.server.close(500);
    for (const m of mountsUnder(root).reverse()) execFileSync('umount', ['-l', m]);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('runs containers in one VM: IO byte for byte, exit codes, exec, stdin, the guest kernel; stop and shutdown clean up', async () => {
    h = await startHarness(root, sink);
    const t0 = Date.now();
    const { pid } = await runPod(h, 'pod1', 'web-0');
    const podReadyMs = Date.now() - t0;
    expect(pid).toBe(vmPidOf(h, 'pod1'));
    const status = await rpc(h.controller, 'status', { sandboxId: 'pod1', verbose: true });
    expect(status.state).toBe('SANDBOX_READY');
    const info = JSON.parse(status.info.info);
    expect(info.kuasar.kind).toMatchObject({ vmPid: pid, accel: 'tcg', vcpus: 1, memoryMiB: 256 });

    // 1: output byte for byte (binary, and 2 MB through the flow-controlled stream), exit code, the guest kernel
    const a = io();
    const t1 = Date.now();
    const first = a.out.then(() => undefined);
    const run1 = await runTask(h, 'c1', bundle('c1', 'pod1', ['sh', '-c', 'uname -r; hostname; printf "\\000\\001\\377x"; yes abcdefgh | head -c 2000000; echo err >&2; exit 3']), a);
    expect((await run1.exited).exitStatus).toBe(3);
    const containerMs = Date.now() - t1;
    await first;
    const out = await a.out;
    const release = readManifest()!.kernel.release;
    const head = Buffer.from(`${release}\nweb-0\n\x00\x01\xffx`, 'latin1');
    expect(out.subarray(0, head.length).equals(head)).toBe(true);
    const big = out.subarray(head.length);
    expect(big.length).toBe(2_000_000);
    expect(createHash('sha256').update(big).digest('hex')).toBe(createHash('sha256').update(Buffer.from('abcdefgh\n'.repeat(222223)).subarray(0, 2_000_000)).digest('hex'));
    expect((await a.err).toString()).toBe('err\n');
    await until(() => sink.exitStatus('c1') === 3, 10_000, 'TaskExit of c1');

    // 2: two containers in the same VM (same boot id, not the host's); exec with its own IO and exit code
    const b = io();
    const run2 = await runTask(h, 'c2', bundle('c2', 'pod1', ['sh', '-c', 'trap "exit 42" TERM; cat /proc/sys/kernel/random/boot_id; while :; do sleep 1; done']), b);
    await until(() => b.outSoFar.length >= 37, 60_000, 'boot id from c2');
    const c = io();
    const run3 = await runTask(h, 'c3', bundle('c3', 'pod1', ['cat', '/proc/sys/kernel/random/boot_id']), c);
    expect((await run3.exited).exitStatus).toBe(0);
    const bootIds = [b.outSoFar.trim(), (await c.out).toString().trim()];
    expect(bootIds[0]).toMatch(/^[0-9a-f-]{36}$/);
    expect(bootIds[1]).toBe(bootIds[0]);
    expect(bootIds[0]).not.toBe(fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());

    const e = io();
    await h.tasks.exec({ id: 'c2', execId: 'e1', stdout: e.stdout, stderr: e.stderr, spec: execSpec(['sh', '-c', 'echo exec-out; ls /proc/1/exe >/dev/null; exit 5']) });
    const execWait = h.tasks.wait({ id: 'c2', execId: 'e1' });
    await h.tasks.start({ id: 'c2', execId: 'e1' });
    expect((await execWait).exitStatus).toBe(5);
    expect((await e.out).toString()).toBe('exec-out\n');
    const pids = await h.tasks.pids({ id: 'c2' });
    expect(pids.processes.length).toBeGreaterThanOrEqual(1);
    await h.tasks.delete({ id: 'c2', execId: 'e1' });

    // 3: stdin reaches the guest and its EOF ends the process
    const s = io({ stdin: true });
    const run4 = await runTask(h, 'c4', bundle('c4', 'pod1', ['sh', '-c', 'tr a-z A-Z; echo done']), s);
    s.writeStdin('hello vm\n');
    s.writeStdin('second line\n', true);
    await h.tasks.closeIO({ id: 'c4', stdin: true });
    expect((await run4.exited).exitStatus).toBe(0);
    expect((await s.out).toString()).toBe('HELLO VM\nSECOND LINE\ndone\n');

    // stats from the guest's cgroup of the container
    const stats = await h.tasks.stats({ id: 'c2' });
    expect(stats.stats?.typeUrl).toContain('io.containerd.cgroups.v2.Metrics');
    const metrics = await rpc(h.controller, 'metrics', { sandboxId: 'pod1' });
    expect(metrics.metrics?.data?.value?.length ?? 0).toBeGreaterThan(0);

    // the shares are in place while containers exist; deleting a container removes its share
    const share = path.join(h.dir, 'pod1', 'shared');
    expect(mountsUnder(path.join(share, 'c1')).length).toBeGreaterThan(0);
    for (const id of ['c1', 'c3', 'c4']) await h.tasks.delete({ id });
    expect(mountsUnder(path.join(share, 'c1'))).toEqual([]);
    expect(fs.existsSync(path.join(share, 'c1'))).toBe(false);

    // Stop: c2 gets SIGTERM (and handles it), the VM ends, Wait returns
    const waited = rpc(h.controller, 'wait', { sandboxId: 'pod1' });
    await rpc(h.controller, 'stop', { sandboxId: 'pod1', timeoutSecs: 5 });
    await waited;
    expect((await run2.exited).exitStatus).toBe(42);
    expect(isAlive({ pid, startTime: JSON.parse(fs.readFileSync(path.join(h.dir, 'pod1', 'vm.json'), 'utf8')).identity.startTime })).toBe(false);
    await h.tasks.delete({ id: 'c2' });
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod1' });
    expect(fs.existsSync(path.join(h.dir, 'pod1'))).toBe(false);
    expect(mountsUnder(path.join(h.dir, 'pod1'))).toEqual([]);
    process.stderr.write(`vmm timings: pod create+start (boot to agent ready) ${podReadyMs} ms, boot ${info.kuasar.kind.bootMs} ms; container create+start+run ${containerMs} ms\n`);
  });

  it('killing QEMU ends the sandbox: Wait returns, its containers exit 255, shutdown leaves nothing', async () => {
    h = await startHarness(root, sink);
    const { pid } = await runPod(h, 'pod2');
    const a = io();
    const run = await runTask(h, 'k1', bundle('k1', 'pod2', ['sh', '-c', 'echo up; exec sleep 1000']), a);
    await until(() => a.outSoFar === 'up\n', 60_000, 'k1 running');
    const waited = rpc(h.controller, 'wait', { sandboxId: 'pod2' });
    process.kill(pid, 'SIGKILL');
    const exit = await waited;
    expect(exit.exitStatus).toBe(137);
    expect((await run.exited).exitStatus).toBe(255);
    await a.out; // our write end was closed: the reader got EOF
    expect((await rpc(h.controller, 'status', { sandboxId: 'pod2', verbose: false })).state).toBe('SANDBOX_NOTREADY');
    await h.tasks.delete({ id: 'k1' });
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod2' });
    expect(fs.existsSync(path.join(h.dir, 'pod2'))).toBe(false);
    expect(mountsUnder(path.join(h.dir, 'pod2'))).toEqual([]);
  });

  it('a sandboxer restart keeps the VM and its containers: output resumes, real exit codes, exec still works', async () => {
    h = await startHarness(root, sink);
    const { pid } = await runPod(h, 'pod3');
    const a = io();
    const run = await runTask(h, 'r1', bundle('r1', 'pod3', ['sh', '-c', 'echo before; sleep 6; echo after; exit 7']), a);
    const b = io();
    await runTask(h, 'r2', bundle('r2', 'pod3', ['sh', '-c', 'exec sleep 1000']), b);
    await until(() => a.outSoFar === 'before\n', 60_000, 'r1 output before the restart');
    await h.stop();
    run.exited.catch(() => undefined); // its connection went with the old process

    h = await startHarness(root, sink);
    expect(isAlive({ pid, startTime: JSON.parse(fs.readFileSync(path.join(h.dir, 'pod3', 'vm.json'), 'utf8')).identity.startTime })).toBe(true);
    expect((await rpc(h.controller, 'status', { sandboxId: 'pod3', verbose: false })).state).toBe('SANDBOX_READY');
    expect((await h.tasks.state({ id: 'r2' })).status).toBe(types.TaskStatus.RUNNING);
    // r1 exits after the restart: its output reaches the same FIFO and its real status is reported
    expect((await h.tasks.wait({ id: 'r1' })).exitStatus).toBe(7);
    expect((await a.out).toString()).toBe('before\nafter\n');
    const e = io();
    await h.tasks.exec({ id: 'r2', execId: 'x', stdout: e.stdout, stderr: e.stderr, spec: execSpec(['echo', 'still here']) });
    const ew = h.tasks.wait({ id: 'r2', execId: 'x' });
    await h.tasks.start({ id: 'r2', execId: 'x' });
    expect((await ew).exitStatus).toBe(0);
    expect((await e.out).toString()).toBe('still here\n');
    await h.tasks.kill({ id: 'r2', signal: 9 });
    expect((await h.tasks.wait({ id: 'r2' })).exitStatus).toBe(137);
    for (const id of ['r1', 'r2']) await h.tasks.delete({ id });
    await rpc(h.controller, 'stop', { sandboxId: 'pod3', timeoutSecs: 0 });
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod3' });
    expect(fs.existsSync(path.join(h.dir, 'pod3'))).toBe(false);
  });

  it('Update of the sandbox spec: sizes a VM not yet started; on a running VM sets QEMU\'s cgroup and the guest pod cgroup, and says what it cannot do', async () => {
    h = await startHarness(root, sink);
    const kindInfo = async (id: string) => JSON.parse((await rpc(h.controller, 'status', { sandboxId: id, verbose: true })).info.info).kuasar.kind;
    // before Start: the VM gets the new size
    const options = { typeUrl: 'runtime.v1.PodSandboxConfig', value: Buffer.alloc(0) };
    await rpc(h.controller, 'create', { sandboxId: 'pod6', options, netnsPath: '' });
    await updateSpec(h, 'pod6', resourcesSpec({ quota: 150_000, period: 100_000 }, { limit: 96 * 1024 * 1024 }));
    expect(await kindInfo('pod6')).toMatchObject({ vcpus: 2, memoryMiB: 96 + 64 });
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod6' });

    await runPod(h, 'pod5');
    await updateSpec(h, 'pod5', resourcesSpec({ quota: 50_000, period: 100_000, shares: 512 }, { limit: 64 * 1024 * 1024 }));
    const hostCpu = '/sys/fs/cgroup/cpu/kuasar/pod5';
    expect(fs.readFileSync(path.join(hostCpu, 'cpu.cfs_quota_us'), 'utf8').trim()).toBe('50000');
    expect(fs.readFileSync(path.join(hostCpu, 'cpu.shares'), 'utf8').trim()).toBe('512');
    expect(fs.readFileSync(`/proc/${vmPidOf(h, 'pod5')}/cgroup`, 'utf8')).toMatch(/^\d+:cpu:\/kuasar\/pod5$/m);
    const pod = h.sandboxer.pods.get('pod5')!;
    expect((await pod.agent.call('guest.info', {})).podCgroup).toEqual({ memoryMax: String(64 * 1024 * 1024), cpuMax: '50000 100000', cpuWeight: '20' });
    // more than the VM has (1 vCPU, 256 MiB): limits applied, then UNIMPLEMENTED naming the hotplug gap
    const big = updateSpec(h, 'pod5', resourcesSpec({ quota: -1 }, { limit: 1024 * 1024 * 1024 }));
    await expect(big).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED, details: expect.stringMatching(/keeps 1 vCPU\(s\) and 256 MiB.*hotplug/) });
    expect((await pod.agent.call('guest.info', {})).podCgroup).toMatchObject({ memoryMax: String(1024 * 1024 * 1024), cpuMax: 'max 100000' });
    expect(fs.readFileSync(path.join(hostCpu, 'cpu.cfs_quota_us'), 'utf8').trim()).toBe('-1');
    // bad specs are refused before anything is touched
    await expect(updateSpec(h, 'pod5', resourcesSpec({}, {}), 'example.com/NotASpec')).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(updateSpec(h, 'pod5', resourcesSpec({ quota: 'lots' }, {}))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(updateSpec(h, 'pod5', resourcesSpec({ quota: 10 }, {}))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await rpc(h.controller, 'stop', { sandboxId: 'pod5', timeoutSecs: 0 });
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod5' });
  });

  it('a terminal container: ResizePty reaches the pty in the guest (stty there sees the size)', async () => {
    h = await startHarness(root, sink);
    await runPod(h, 'pod4');
    const t = io({ stdin: true });
    const tb = bundle('t1', 'pod4', ['sh', '-c', 'read go; busybox stty size; exit 4'], {
      mounts: [{ destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] }],
    });
    const spec = JSON.parse(fs.readFileSync(path.join(tb, 'config.json'), 'utf8'));
    spec.process.terminal = true;
    fs.writeFileSync(path.join(tb, 'config.json'), JSON.stringify(spec));
    await h.tasks.create({ id: 't1', bundle: tb, terminal: true, stdin: t.stdin, stdout: t.stdout });
    const exited = h.tasks.wait({ id: 't1' });
    await h.tasks.start({ id: 't1' });
    await h.tasks.resizePty({ id: 't1', width: 123, height: 45 });
    t.writeStdin('go\n');
    expect((await exited).exitStatus).toBe(4);
    // the pty echoes the input; stty's answer follows, and the stdout FIFO ends once the process is gone
    const out = await Promise.race([t.out, new Promise<never>((_r, rej) => setTimeout(() => rej(new Error(`no EOF on the terminal's stdout FIFO; got ${JSON.stringify(t.outSoFar)}`)), 10_000))]);
    expect(out.toString()).toContain('45 123\r\n');
    // a process without a terminal: FAILED_PRECONDITION from the core
    const n = io();
    await runTask(h, 't2', bundle('t2', 'pod4', ['sh', '-c', 'exec sleep 1000']), n);
    await expect(h.tasks.resizePty({ id: 't2', width: 80, height: 24 })).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION });
    await h.tasks.kill({ id: 't2', signal: 9 });
    expect((await h.tasks.wait({ id: 't2' })).exitStatus).toBe(137);
    for (const id of ['t1', 't2']) await h.tasks.delete({ id });
    const gone = rpc(h.controller, 'wait', { sandboxId: 'pod4' });
    await rpc(h.controller, 'stop', { sandboxId: 'pod4', timeoutSecs: 5 });
    await gone;
    await rpc(h.controller, 'shutdown', { sandboxId: 'pod4' });
    expect(fs.existsSync(path.join(h.dir, 'pod4'))).toBe(false);
  });
});

export { NS };
