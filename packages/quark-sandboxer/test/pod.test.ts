// gVisor pods end to end through a real quark-sandboxer process: the gRPC Controller creates and starts the pod (its
// application kernel), the ttrpc Task API runs containers in it, and a kill -9 + restart of the sandboxer keeps
// the pod running. Needs trixie's runsc (scripts/fetch-debs.sh); skipped, and says so, without it.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OCI_PROCESS_TYPE_URL, cgroupsV1, packJsonAny, unpackAny } from '@kuasar/api';
import { Code, type TtrpcClient } from '@kuasar/ttrpc';
import { isRunning } from '@kuasar/sys';
import {
  SandboxerUnderTest, criBundle, fifos, podOptions, rpc, taskClient, until, withRunsc, type BusyboxBundle,
  type Fifos, type TaskClient,
} from './helpers';
import { runscId } from '../src/runsc-engine';

jest.setTimeout(60_000);

const { runsc, maybe } = withRunsc('pod tests');

const NETNS = `kq-test-${process.pid}`;

/** An exec's OCI process as containerd sends it. */
const processSpec = (args: string[]) => packJsonAny(OCI_PROCESS_TYPE_URL, { args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } });

maybe('gVisor pods through the Controller and the Task API', () => {
  let q: SandboxerUnderTest;
  let conn: TtrpcClient;
  let tasks: TaskClient;
  let address: string;
  let sandboxPid = 0;
  const pod = `qpod${process.pid}`;
  const bundles: BusyboxBundle[] = [];
  const opened: Fifos[] = [];

  const podRoot = () => path.join(q.dir, '.runsc', 'pods', pod);
  const runscJson = (args: string[]) => JSON.parse(execFileSync(runsc!, ['--root', podRoot(), ...args], { encoding: 'utf8' })) as unknown;

  beforeAll(async () => {
    // the pod's netns, with a veth pair only that netns has: proof the sandbox joined it
    execFileSync('ip', ['netns', 'add', NETNS]);
    execFileSync('ip', ['-n', NETNS, 'link', 'add', 'kqveth0', 'type', 'veth', 'peer', 'name', 'kqveth1']);
    q = await SandboxerUnderTest.start(runsc!, 'kuasar-quark-');
  });

  afterAll(async () => {
    // a test that failed half-way leaves the pod: Shutdown removes its sandbox, state and cgroup
    await q?.stop([pod], conn);
    if (sandboxPid > 0 && isRunning(sandboxPid)) process.kill(sandboxPid, 'SIGKILL');
    opened.forEach((f) => f.close());
    bundles.forEach((b) => b.remove());
    try {
      execFileSync('ip', ['netns', 'del', NETNS]);
    } catch {
      /* gone */
    }
    q?.remove();
  });

  /** Starts an exec in container `id`: its output FIFOs and its Wait. */
  const startExec = async (id: string, execId: string, args: string[]): Promise<{ f: Fifos; waited: Promise<{ exitStatus: number }> }> => {
    const f = fifos(q.work, execId);
    opened.push(f);
    await tasks.exec({ id, execId, stdout: f.stdout, stderr: f.stderr, spec: processSpec(args) } as never);
    const waited = tasks.wait({ id, execId } as never) as Promise<{ exitStatus: number }>;
    await tasks.start({ id, execId } as never);
    return { f, waited };
  };

  const container = async (id: string, args: string[], o: { stdin?: boolean } = {}): Promise<{ b: BusyboxBundle; f: Fifos; pid: number }> => {
    const b = criBundle(pod, sandboxPid, args, q.work);
    bundles.push(b);
    const f = fifos(q.work, id, o.stdin);
    opened.push(f);
    const { pid } = await tasks.create({ id, bundle: b.path, stdin: f.stdin, stdout: f.stdout, stderr: f.stderr } as never);
    return { b, f, pid };
  };

  test('Controller.Create + Start boot one application kernel for the pod in its netns', async () => {
    await rpc(q.controller, 'create', { sandboxId: pod, options: podOptions(pod), netnsPath: `/var/run/netns/${NETNS}`, sandboxer: 'quark' });
    const started = await rpc(q.controller, 'start', { sandboxId: pod });
    expect(started.address).toMatch(/^ttrpc\+unix:\/\/.*task\.sock$/);
    expect(started.version).toBe(3);
    sandboxPid = started.pid;
    expect(fs.readFileSync(`/proc/${sandboxPid}/cmdline`, 'utf8')).toMatch(/^runsc-sandbox\0/);
    // the sandbox sits in the pod netns
    expect(fs.readlinkSync(`/proc/${sandboxPid}/ns/net`)).toBe(`net:[${fs.statSync(`/var/run/netns/${NETNS}`).ino}]`);
    const status = await rpc(q.controller, 'status', { sandboxId: pod, verbose: true });
    expect(status.state).toBe('SANDBOX_READY');
    expect(status.pid).toBe(sandboxPid);
    address = started.address;
    ({ conn, tasks } = await taskClient(address));
  });

  test('two containers share the kernel; IO byte for byte; exec; exit codes; kill; stats; pause/resume', async () => {
    const c1 = await container('c1', ['sh', '-c', 'dmesg; echo ==; cat /proc/net/dev; exec sleep 1000']);
    const c2 = await container('c2', ['sh', '-c', 'dmesg >&2; exec cat'], { stdin: true });
    // every container of a gVisor pod reports the pod's runsc-sandbox as its process
    expect(c1.pid).toBe(sandboxPid);
    expect(c2.pid).toBe(sandboxPid);
    const w1 = tasks.wait({ id: 'c1' } as never);
    const w2 = tasks.wait({ id: 'c2' } as never);
    await tasks.start({ id: 'c1' } as never);
    await tasks.start({ id: 'c2' } as never);

    // one kernel: the same runsc-sandbox for both (runsc's own view) and the same boot log — gVisor picks its
    // boot messages at random per kernel, so equal logs come from one kernel
    const list = runscJson(['list', '--format=json']) as { id: string; pid: number; status: string }[];
    expect(list.map((e) => e.id).sort()).toEqual(['c1', 'c2', pod].map(runscId).sort());
    expect(new Set(list.map((e) => e.pid))).toEqual(new Set([sandboxPid]));
    await until(async () => (await tasks.state({ id: 'c1' } as never)).status === 2, 5000, 'c1 running');
    const pids1 = runscJson(['ps', '--format=json', runscId('c1')]) as number[];
    expect(pids1.length).toBeGreaterThan(0);
    // IO: 256 KiB of random bytes through stdin and back through `cat`, byte for byte
    const data = randomBytes(256 * 1024);
    await c2.f.write(data);
    const w2r = await w2;
    expect(w2r.exitStatus).toBe(0);
    const echoed = await c2.f.out;
    expect(echoed.length).toBe(data.length);
    expect(echoed.equals(data)).toBe(true);

    const dmesg2 = (await c2.f.err).toString();
    expect(dmesg2).toContain('Starting gVisor');
    expect((await tasks.pids({ id: 'c1' } as never)).processes.map((p) => p.pid)).toEqual(pids1);

    // exec in c1: output and exit code
    const { f: x, waited: xw } = await startExec('c1', 'x1', ['sh', '-c', 'echo in-exec; ls /proc | grep -c "^[0-9]"; exit 6']);
    expect((await xw).exitStatus).toBe(6);
    expect((await x.out).toString()).toMatch(/^in-exec\n\d+\n$/);
    await tasks.delete({ id: 'c1', execId: 'x1' } as never);

    // kill of an exec reaches the process inside the sandbox (SIGTERM → 143)
    const { f: y, waited: yw } = await startExec('c1', 'y1', ['sleep', '1000']);
    await tasks.kill({ id: 'c1', execId: 'y1', signal: 15 } as never);
    expect((await yw).exitStatus).toBe(143);
    await tasks.delete({ id: 'c1', execId: 'y1' } as never);

    // an init's own exit code
    const c3 = await container('c3', ['sh', '-c', 'exit 3']);
    const w3 = tasks.wait({ id: 'c3' } as never);
    await tasks.start({ id: 'c3' } as never);
    expect((await w3).exitStatus).toBe(3);
    expect(c3.pid).toBe(sandboxPid);
    await tasks.delete({ id: 'c3' } as never);

    // Stats: `runsc events --stats` as cgroups v1 Metrics
    const { stats } = await tasks.stats({ id: 'c1' } as never);
    expect(stats!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = unpackAny(stats!, cgroupsV1.Metrics);
    expect(m.memory!.usage!.usage).toBeGreaterThan(0n);
    expect(m.pids!.current).toBeGreaterThan(0n);

    // Pause/Resume
    await tasks.pause({ id: 'c1' } as never);
    expect((await tasks.state({ id: 'c1' } as never)).status).toBe(4); // PAUSED
    await tasks.resume({ id: 'c1' } as never);
    expect((await tasks.state({ id: 'c1' } as never)).status).toBe(2); // RUNNING

    // the pod's netns: c1's kernel (host stack of the pod netns) sees the dummy link
    await tasks.kill({ id: 'c1', signal: 9 } as never);
    expect((await w1).exitStatus).toBe(137);
    const out = (await c1.f.out).toString();
    const [dmesg1, netdev] = out.split('==\n');
    expect(dmesg1).toBe(dmesg2);
    expect(netdev).toContain('kqveth0');
    await expect(tasks.kill({ id: 'c1', signal: 9 } as never)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await tasks.delete({ id: 'c1' } as never);
    await tasks.delete({ id: 'c2' } as never);
    expect((runscJson(['list', '--format=json']) as { id: string }[]).map((e) => e.id)).toEqual([runscId(pod)]);

    // Controller.Metrics: the pod cgroup (sandbox, gofers, stubs)
    const metrics = await rpc(q.controller, 'metrics', { sandboxId: pod });
    expect(metrics.metrics.data.typeUrl).toMatch(/io\.containerd\.cgroups\.v[12]\.Metrics/);
  });

  test('a sandboxer kill -9 and restart keeps the pod and its container running', async () => {
    const c4 = await container('c4', ['sh', '-c', 'echo before; exec sleep 1000']);
    await tasks.start({ id: 'c4' } as never);
    // an exec that outlives the sandboxer: its exit status must still arrive afterwards
    const e = fifos(q.work, 'e4');
    opened.push(e);
    await tasks.exec({ id: 'c4', execId: 'e4', stdout: e.stdout,
      spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['sh', '-c', 'while [ ! -f /tmp/go ]; do sleep 0.1; done; echo went; exit 4'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } }) } as never);
    await tasks.start({ id: 'c4', execId: 'e4' } as never);
    conn.close();
    q.sb.child.kill('SIGKILL');
    await q.sb.exited;
    expect(isRunning(sandboxPid)).toBe(true);
    await q.restart();
    ({ conn, tasks } = await taskClient(address));
    const status = await rpc(q.controller, 'status', { sandboxId: pod });
    expect(status.state).toBe('SANDBOX_READY');
    expect(status.pid).toBe(sandboxPid);
    expect((await tasks.state({ id: 'c4' } as never)).status).toBe(2);
    expect((await tasks.state({ id: 'c4', execId: 'e4' } as never)).status).toBe(2);
    const ew = tasks.wait({ id: 'c4', execId: 'e4' } as never);
    const { f: go, waited: gw } = await startExec('c4', 'go4', ['touch', '/tmp/go']);
    expect((await gw).exitStatus).toBe(0);
    // the exec started by the previous sandboxer process: real status (from the sandbox), output unbroken
    expect((await ew).exitStatus).toBe(4);
    expect((await e.out).toString()).toBe('went\n');
    await tasks.delete({ id: 'c4', execId: 'e4' } as never);
    await tasks.delete({ id: 'c4', execId: 'go4' } as never);
    // exec and exit detection work in the re-adopted pod
    const { f: x, waited: xw } = await startExec('c4', 'x4', ['sh', '-c', 'exit 9']);
    expect((await xw).exitStatus).toBe(9);
    const w4 = tasks.wait({ id: 'c4' } as never);
    await tasks.kill({ id: 'c4', signal: 9 } as never);
    expect((await w4).exitStatus).toBe(137);
    expect((await c4.f.out).toString()).toBe('before\n');
    await tasks.delete({ id: 'c4' } as never);
  });

  test('Controller.Stop ends every container and the kernel; Shutdown removes the pod', async () => {
    const c5 = await container('c5', ['sleep', '1000']);
    const w5 = tasks.wait({ id: 'c5' } as never);
    await tasks.start({ id: 'c5' } as never);
    const waited = rpc(q.controller, 'wait', { sandboxId: pod });
    await rpc(q.controller, 'stop', { sandboxId: pod, timeoutSecs: 1 });
    expect((await w5).exitStatus).toBe(143); // SIGTERM first
    const exit = await waited;
    expect(typeof exit.exitStatus).toBe('number');
    await until(() => !isRunning(sandboxPid), 5000, 'sandbox gone');
    expect((await rpc(q.controller, 'status', { sandboxId: pod })).state).toBe('SANDBOX_NOTREADY');
    await tasks.delete({ id: 'c5' } as never);
    await rpc(q.controller, 'shutdown', { sandboxId: pod });
    expect(fs.existsSync(path.join(q.dir, pod))).toBe(false);
    expect(fs.existsSync(podRoot())).toBe(false);
    await expect(rpc(q.controller, 'status', { sandboxId: pod })).rejects.toMatchObject({ code: Code.NOT_FOUND });
    // no runsc process of this sandboxer is left
    const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(q.dir) && l.startsWith('runsc'));
    expect(left).toEqual([]);
  });
});
