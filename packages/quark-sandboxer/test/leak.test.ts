// A pod whose sandbox runsc no longer describes truthfully must still leave nothing behind after Controller Stop +
// Shutdown: no runsc-sandbox, runsc-gofer or runsc process of the pod and no state dir. Real runsc, real sandboxer
// process; the damage is done out of band with the runsc CLI and the state files, as an operator or a crash would.
// Needs trixie's runsc (scripts/fetch-debs.sh); skipped, and says so, without it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, type TtrpcClient } from '@kuasar/ttrpc';
import { isRunning } from '@kuasar/sys';
import {
  SandboxerUnderTest, criBundle, fifos, podOptions, rpc, taskClient, until, withRunsc, type BusyboxBundle,
  type Fifos, type TaskClient,
} from './helpers';
import { runscId } from '../src/runsc-engine';

jest.setTimeout(60_000);

const { runsc, maybe } = withRunsc('leak tests');

maybe('pods runsc lost track of leave nothing after Stop + Shutdown', () => {
  let q: SandboxerUnderTest;
  let conn: TtrpcClient | undefined;
  let tasks: TaskClient;
  const bundles: BusyboxBundle[] = [];
  const opened: Fifos[] = [];
  const made: string[] = [];

  const podRoot = (pod: string) => path.join(q.dir, '.runsc', 'pods', pod);
  /** Host processes of runsc for this pod: its sandbox, gofers and any runsc call on its state dir. */
  const runscOf = (pod: string): string[] =>
    execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')
      .filter((l) => /^\s*\d+\s+\S*runsc/.test(l) && l.split(/\s+/).some((a) => a === `--root=${podRoot(pod)}` || a === podRoot(pod)));

  beforeAll(async () => {
    q = await SandboxerUnderTest.start(runsc!, 'kuasar-quark-leak-');
  });

  afterAll(async () => {
    await q?.stop(made, conn);
    // never leave a kernel behind, even when the test failed
    for (const pod of made) {
      for (const l of runscOf(pod)) process.kill(Number(l.trim().split(/\s+/)[0]), 'SIGKILL');
    }
    opened.forEach((f) => f.close());
    bundles.forEach((b) => b.remove());
    q?.remove();
  });

  const startPod = async (pod: string): Promise<number> => {
    made.push(pod);
    await rpc(q.controller, 'create', { sandboxId: pod, options: podOptions(pod), netnsPath: '', sandboxer: 'quark' });
    const started = await rpc(q.controller, 'start', { sandboxId: pod });
    if (!conn) ({ conn, tasks } = await taskClient(started.address));
    return started.pid as number;
  };

  const startContainer = async (pod: string, sandboxPid: number, id: string): Promise<Fifos> => {
    const b = criBundle(pod, sandboxPid, ['sh', '-c', 'echo up; exec sleep 1000'], q.work);
    bundles.push(b);
    const f = fifos(q.work, id);
    opened.push(f);
    await tasks.create({ id, bundle: b.path, stdout: f.stdout, stderr: f.stderr } as never);
    await tasks.start({ id } as never);
    return f;
  };

  const expectNothingLeft = async (pod: string, sandboxPid: number): Promise<void> => {
    await until(() => !isRunning(sandboxPid), 5000, 'the sandbox process gone').catch(() => undefined);
    expect(isRunning(sandboxPid)).toBe(false);
    expect(runscOf(pod)).toEqual([]);
    expect(fs.existsSync(podRoot(pod))).toBe(false);
    expect(fs.existsSync(path.join(q.dir, pod))).toBe(false);
    await expect(rpc(q.controller, 'status', { sandboxId: pod })).rejects.toMatchObject({ code: Code.NOT_FOUND });
  };

  test('root container killed out of band: the pod exits, refuses new containers, and Stop + Shutdown clean it', async () => {
    const pod = `qleak${process.pid}a`;
    const pid = await startPod(pod);
    const out = await startContainer(pod, pid, `c1-${pod}`);
    const waited = rpc(q.controller, 'wait', { sandboxId: pod });
    // the kernel's init is gone: gVisor takes the whole sandbox down with it
    execFileSync(runsc!, ['--root', podRoot(pod), 'kill', runscId(pod), '9']);
    expect((await waited).exitStatus).toBe(137);
    expect((await out.out).toString()).toBe('up\n');
    await until(async () => (await rpc(q.controller, 'status', { sandboxId: pod })).state === 'SANDBOX_NOTREADY', 5000, 'pod not ready');
    const late = criBundle(pod, pid, ['true'], q.work);
    bundles.push(late);
    await expect(tasks.create({ id: `late-${pod}`, bundle: late.path } as never)).rejects.toThrow(/is not running/);
    await rpc(q.controller, 'stop', { sandboxId: pod, timeoutSecs: 0 });
    await tasks.delete({ id: `c1-${pod}` } as never).catch(() => undefined);
    await rpc(q.controller, 'shutdown', { sandboxId: pod });
    await expectNothingLeft(pod, pid);
  });

  test('runsc lost the pod (its root state file removed) while the kernel runs: Stop + Shutdown still kill it', async () => {
    const pod = `qleak${process.pid}b`;
    const pid = await startPod(pod);
    await startContainer(pod, pid, `c1-${pod}`);
    const root = podRoot(pod);
    const rootState = fs.readdirSync(root).filter((n) => n.startsWith(`${runscId(pod)}_sandbox:`) && n.endsWith('.state'));
    expect(rootState).toHaveLength(1);
    fs.rmSync(path.join(root, rootState[0]!));
    // `runsc delete --force <pod>` cannot find the sandbox any more: it must not survive the pod regardless
    expect(runscOf(pod).length).toBeGreaterThanOrEqual(2); // sandbox + gofers
    await rpc(q.controller, 'stop', { sandboxId: pod, timeoutSecs: 0 });
    expect(isRunning(pid)).toBe(false);
    await tasks.delete({ id: `c1-${pod}` } as never).catch(() => undefined);
    await rpc(q.controller, 'shutdown', { sandboxId: pod });
    await expectNothingLeft(pod, pid);
  });

  test('the sandboxer said why it had to kill', () => {
    expect(q.sb.logs.some((l) => l.includes('outlived runsc delete'))).toBe(true);
  });
});
