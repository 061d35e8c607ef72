import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { isChildSubreaper, Reaper, readProcessStat, setChildSubreaper, SysError, waitPid, zombieChildIdentities, zombieChildren, type WaitStatus } from '@kuasar/sys';

/** Starts `sh -c script` in the background of a short-lived sh; returns the orphan's pid. */
function orphan(script: string): number {
  const r = spawnSync('sh', ['-c', `sh -c '${script}' >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  return Number(r.stdout.trim());
}

function nextExit(reaper: Reaper, pid: number): Promise<WaitStatus> {
  return new Promise((resolve) => {
    const on = (p: number, _s: number, info: WaitStatus): void => {
      if (p !== pid) return;
      reaper.off('exit', on);
      resolve(info);
    };
    reaper.on('exit', on);
  });
}

const ppidOf = (pid: number): number => Number(spawnSync('ps', ['-o', 'ppid=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim());

describe('subreaper and reaping', () => {
  let reaper: Reaper;
  beforeAll(() => setChildSubreaper());
  beforeEach(() => (reaper = new Reaper({ pollMs: 200 })));
  afterEach(() => reaper.close());

  test('prctl reports the subreaper flag', () => {
    expect(isChildSubreaper()).toBe(true);
  });

  test('an orphaned grandchild re-parents to us and is reaped with its exit code', async () => {
    const pid = orphan('sleep 0.3; exit 42');
    expect(ppidOf(pid)).toBe(process.pid);
    const exit = nextExit(reaper, pid);
    reaper.track(pid);
    expect(waitPid(pid, { noHang: true })).toBeNull(); // still running
    await expect(exit).resolves.toEqual({ pid, status: 42, exited: true, signal: null });
    expect(reaper.has(pid)).toBe(false);
    expect(() => waitPid(pid, { noHang: true })).toThrow(expect.objectContaining({ code: 'ECHILD' }));
  });

  test('SIGKILL gives 137', async () => {
    const pid = orphan('exec sleep 30');
    reaper.track(pid);
    const exit = nextExit(reaper, pid);
    process.kill(pid, 'SIGKILL');
    await expect(exit).resolves.toEqual({ pid, status: 137, exited: false, signal: 9 });
  });

  test('an exit before track() stays a zombie and is reaped once tracked', async () => {
    const pid = orphan('sleep 0.1; exit 3'); // sleep: outlive the parent sh, which would reap it itself
    await new Promise((r) => setTimeout(r, 400));
    expect(spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim()).toMatch(/^Z/);
    const exit = nextExit(reaper, pid);
    reaper.track(pid);
    await expect(exit).resolves.toMatchObject({ status: 3, exited: true });
  });

  test("libuv's own children keep their exit events while the reaper runs", async () => {
    const tracked = orphan('sleep 0.5; exit 1');
    reaper.track(tracked);
    const seen: number[] = [];
    reaper.on('exit', (pid) => seen.push(pid));
    const child = spawn('sh', ['-c', 'sleep 0.2; exit 7']);
    const [code] = await once(child, 'exit');
    expect(code).toBe(7);
    await nextExit(reaper, tracked);
    expect(seen).toEqual([tracked]);
  });

  test('a tracked pid that vanishes without being ours is reported lost', async () => {
    const child = spawn('true');
    await once(child, 'exit'); // libuv reaped it
    const lost = once(reaper, 'lost');
    reaper.track(child.pid!);
    await expect(lost).resolves.toEqual([child.pid]);
    expect(reaper.size).toBe(0);
  });

  test('a reused pid is never reaped: the tracked process is reported lost, the new one keeps its exit', async () => {
    // pid_max wraps: the tracked process (start time "1", long gone) had the pid a new libuv child now has
    const child = spawn('sh', ['-c', 'sleep 0.3; exit 5']);
    const exits: number[] = [];
    reaper.on('exit', (pid) => exits.push(pid));
    const lost = once(reaper, 'lost');
    reaper.track(child.pid!, '1');
    await expect(lost).resolves.toEqual([child.pid]);
    const [code] = await once(child, 'exit');
    expect(code).toBe(5);
    expect(exits).toEqual([]);
  });

  test('the identity defaults to the process the pid names at track()', async () => {
    const pid = orphan('sleep 0.3; exit 4');
    const exit = nextExit(reaper, pid);
    reaper.track(pid);
    await expect(exit).resolves.toMatchObject({ status: 4 });
  });

  test('zombie children are listed with the start time that tells a reused pid apart', async () => {
    const pid = orphan('sleep 0.2; exit 0');
    const startTime = readProcessStat(pid)!.startTime;
    await new Promise((r) => setTimeout(r, 500));
    expect(zombieChildIdentities().get(pid)).toBe(startTime);
    expect(zombieChildren().has(pid)).toBe(true);
    const exit = nextExit(reaper, pid);
    reaper.track(pid, startTime);
    await exit;
    expect(zombieChildIdentities().has(pid)).toBe(false);
  });

  test('bad pids are refused and non-children give a typed ECHILD', () => {
    expect(() => waitPid(0)).toThrow(RangeError);
    expect(() => waitPid(-1, { noHang: true })).toThrow(RangeError);
    expect(() => waitPid(1.5)).toThrow(RangeError);
    expect(() => reaper.track(-1)).toThrow(RangeError);
    let err: unknown;
    try {
      waitPid(1, { noHang: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SysError);
    expect(err).toMatchObject({ syscall: 'waitpid', code: 'ECHILD', errno: 10 });
  });

  test('close() stops tracking and removes the SIGCHLD listener', () => {
    const before = process.listenerCount('SIGCHLD');
    const pid = orphan('sleep 0.2');
    reaper.track(pid);
    expect(process.listenerCount('SIGCHLD')).toBe(before + 1);
    reaper.close();
    expect(process.listenerCount('SIGCHLD')).toBe(before);
    expect(() => reaper.track(pid)).toThrow(/closed/);
    // reap it ourselves so it does not linger as a zombie
    return new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (waitPid(pid, { noHang: true })) {
          clearInterval(t);
          resolve();
        }
      }, 50);
    });
  });
});
