// Exit statuses of processes that are not our children, from the kernel's proc connector (a re-adopted container's
// init after a sandboxer restart is one of those).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { ProcExitListener, isChildSubreaper, setChildSubreaper } from '@kuasar/sys';

/** Starts `sh -c script` in the background of a short-lived sh: the returned pid is re-parented away from us. */
function orphan(script: string): number {
  const r = spawnSync('sh', ['-c', `sh -c '${script}' >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  return Number(r.stdout.trim());
}

async function gone(pid: number): Promise<void> {
  for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
  expect(existsSync(`/proc/${pid}`)).toBe(false);
}

describe('ProcExitListener', () => {
  let l: ProcExitListener;
  // Another test file may have made this jest worker a subreaper (the prctl outlives the file): orphans must go to
  // init, as a re-adopted container's init does after a sandboxer restart.
  beforeAll(() => setChildSubreaper(false));
  beforeEach(() => (l = ProcExitListener.open()));
  afterEach(() => l.close());

  test('reports the real exit code of a process we cannot wait for', async () => {
    expect(isChildSubreaper()).toBe(false); // the orphan goes to init, so waitpid() could not see it
    const pid = orphan('sleep 0.3; exit 42');
    l.watch(pid);
    expect(l.take(pid)).toBeUndefined(); // still running
    await gone(pid);
    expect(l.take(pid)).toEqual({ pid, status: 42, exited: true, signal: null });
    expect(l.size).toBe(0); // taken once, then forgotten
  });

  test('reports a killing signal as 128 + signal', async () => {
    const pid = orphan('sleep 30');
    l.watch(pid);
    process.kill(pid, 'SIGKILL');
    await gone(pid);
    expect(l.take(pid)).toEqual({ pid, status: 137, exited: false, signal: 9 });
  });

  test('knows nothing of unwatched pids or of exits before it listened', async () => {
    const before = orphan('exit 3');
    await gone(before);
    const other = orphan('exit 5');
    await gone(other);
    l.watch(before);
    expect(l.take(before)).toBeUndefined();
    expect(l.take(other)).toBeUndefined();
  });

  test('many exits at once are all seen', async () => {
    // 2 s: all 40 must still run when watched, however slowly this loaded machine spawns them.
    const pids = Array.from({ length: 40 }, (_, i) => orphan(`sleep 2; exit ${i + 1}`));
    for (const p of pids) l.watch(p);
    for (const p of pids) await gone(p);
    expect(pids.map((p) => l.take(p)?.status)).toEqual(pids.map((_, i) => i + 1));
    expect(l.overflows).toBe(0);
  });
});
