// Container ids that are prefixes of each other in one runsc state dir. runsc resolves every CLI id as a prefix and
// refuses an ambiguous one even when one container matches exactly, so before RunscEngine gave runsc terminated
// ids a pod `P` with a container `P-a` (or ctr containers `web` and `web-1`) could not be started, killed or deleted.
// Real sandboxer process, real runsc; skipped, and says so, without runsc (scripts/fetch-debs.sh).
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { OCI_PROCESS_TYPE_URL, packJsonAny } from '@kuasar/api';
import { Code, type TtrpcClient } from '@kuasar/ttrpc';
import { isRunning } from '@kuasar/sys';
import {
  SandboxerUnderTest, createBusyboxBundle, criBundle, fifos, podOptions, rpc, taskClient, until, withRunsc,
  type BusyboxBundle, type Fifos, type TaskClient,
} from './helpers';
import { containerdId, runscId, runscProcesses } from '../src/runsc-engine';

jest.setTimeout(120_000);

const { runsc, maybe } = withRunsc('id prefix tests');

const processSpec = (args: string[]) => packJsonAny(OCI_PROCESS_TYPE_URL, { args, cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } });
const RUNNING = 2;

maybe('container ids that are prefixes of one another in one runsc root', () => {
  let q: SandboxerUnderTest;
  let conn: TtrpcClient | undefined;
  let tasks: TaskClient;
  const bundles: BusyboxBundle[] = [];
  const opened: Fifos[] = [];
  // the pid keeps the pod's cgroup apart from other test runs; the ids only need to share prefixes
  const pod = `p1x${process.pid}`;

  const runscRoot = (...p: string[]) => path.join(q.dir, '.runsc', ...p);
  const listed = (root: string): string[] =>
    ((JSON.parse(execFileSync(runsc!, ['--root', root, 'list', '--format=json'], { encoding: 'utf8' })) as { id: string }[] | null) ?? [])
      .map((e) => e.id).sort();

  beforeAll(async () => {
    q = await SandboxerUnderTest.start(runsc!, 'kuasar-quark-ids-');
  });

  afterAll(async () => {
    await q?.stop([pod], conn);
    // never leave a kernel behind, even when a test failed half-way
    for (const root of [runscRoot('pods', pod), runscRoot('ns', 'k8s.io')]) {
      for (const pid of runscProcesses(root)) process.kill(pid, 'SIGKILL');
    }
    opened.forEach((f) => f.close());
    bundles.forEach((b) => b.remove());
    q?.remove();
  });

  /** Create + Start of `id` running `sleep`; its Wait (wrapped: an async function would wait for a returned promise). */
  const run = async (id: string, b: BusyboxBundle): Promise<{ waited: Promise<{ exitStatus: number }> }> => {
    bundles.push(b);
    const f = fifos(q.work, id);
    opened.push(f);
    await tasks.create({ id, bundle: b.path, stdout: f.stdout, stderr: f.stderr } as never);
    const waited = tasks.wait({ id } as never) as Promise<{ exitStatus: number }>;
    waited.catch(() => undefined); // awaited below; a failed test must not add an unhandled rejection
    await tasks.start({ id } as never);
    expect((await tasks.state({ id } as never)).status).toBe(RUNNING);
    return { waited };
  };

  /** Exec, Kill (init, SIGKILL → 137) and Delete of a running container. */
  const execKillDelete = async (id: string, waited: Promise<{ exitStatus: number }>): Promise<void> => {
    const f = fifos(q.work, `${id}-x`);
    opened.push(f);
    await tasks.exec({ id, execId: 'x', stdout: f.stdout, stderr: f.stderr, spec: processSpec(['sh', '-c', `echo in-${id}; exit 4`]) } as never);
    const xw = tasks.wait({ id, execId: 'x' } as never) as Promise<{ exitStatus: number }>;
    await tasks.start({ id, execId: 'x' } as never);
    expect((await xw).exitStatus).toBe(4);
    expect((await f.out).toString()).toBe(`in-${id}\n`);
    await tasks.delete({ id, execId: 'x' } as never);
    await tasks.kill({ id, signal: 9 } as never);
    expect((await waited).exitStatus).toBe(137);
    await tasks.delete({ id } as never);
    await expect(tasks.state({ id } as never)).rejects.toMatchObject({ code: Code.NOT_FOUND });
  };

  test('runsc ids: containerd ids never contain the terminator, so none is a prefix of another', () => {
    const ids = ['p1', 'p1-a', 'p1-a-1', 'p1a', 'web', 'web-1', 'web.1', 'web_1'];
    const mapped = ids.map(runscId);
    for (const a of mapped) for (const b of mapped) if (a !== b) expect(b.startsWith(a)).toBe(false);
    expect(mapped.map(containerdId)).toEqual(ids);
    expect(runscId(runscId('p1'))).toBe(runscId('p1'));
  });

  test(`pod ${pod} with containers ${pod}-a, ${pod}-a-1 and ${pod}0: all start, exec, kill, delete`, async () => {
    await rpc(q.controller, 'create', { sandboxId: pod, options: podOptions(pod), netnsPath: '', sandboxer: 'quark' });
    const started = await rpc(q.controller, 'start', { sandboxId: pod });
    const sandboxPid = started.pid as number;
    ({ conn, tasks } = await taskClient(started.address));
    const ids = [`${pod}-a`, `${pod}-a-1`, `${pod}0`];
    const waits = new Map<string, Promise<{ exitStatus: number }>>();
    for (const id of ids) waits.set(id, (await run(id, criBundle(pod, sandboxPid, ['sleep', '1000'], q.work))).waited);
    // one kernel, and runsc names every container by its terminated id
    expect(listed(runscRoot('pods', pod))).toEqual([pod, ...ids].map(runscId).sort());
    for (const id of ids) expect((await tasks.state({ id } as never)).pid).toBe(sandboxPid);
    for (const id of ids) await execKillDelete(id, waits.get(id)!);
    expect(listed(runscRoot('pods', pod))).toEqual([runscId(pod)]);
    await rpc(q.controller, 'stop', { sandboxId: pod, timeoutSecs: 5 });
    expect((await rpc(q.controller, 'wait', { sandboxId: pod })).exitStatus).toBe(0); // catatonit -P ends cleanly on SIGTERM
    await rpc(q.controller, 'shutdown', { sandboxId: pod });
    await until(() => !isRunning(sandboxPid), 5000, 'the pod sandbox gone');
    expect(runscProcesses(runscRoot('pods', pod))).toEqual([]);
    expect(fs.existsSync(runscRoot('pods', pod))).toBe(false);
  });

  test('standalone containers web and web-1 in one namespace: all start, exec, kill, delete', async () => {
    if (!conn) {
      // the pod test did not run (filtered out): any pod's Start gives the task address
      throw new Error('run the whole file: the pod test connects the Task API');
    }
    const ids = ['web', 'web-1'];
    const waits = new Map<string, Promise<{ exitStatus: number }>>();
    for (const id of ids) waits.set(id, (await run(id, createBusyboxBundle({ args: ['sleep', '1000'], parent: q.work }))).waited);
    expect(listed(runscRoot('ns', 'k8s.io'))).toEqual(ids.map(runscId).sort());
    // each is a sandbox (kernel) of its own
    const pids = await Promise.all(ids.map(async (id) => (await tasks.state({ id } as never)).pid as number));
    expect(new Set(pids).size).toBe(2);
    for (const id of ids) await execKillDelete(id, waits.get(id)!);
    expect(listed(runscRoot('ns', 'k8s.io'))).toEqual([]);
    for (const pid of pids) await until(() => !isRunning(pid), 5000, `sandbox ${pid} gone`);
    expect(runscProcesses(runscRoot('ns', 'k8s.io'))).toEqual([]);
  });
});
