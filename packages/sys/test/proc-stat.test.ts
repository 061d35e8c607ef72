import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { isRunning, readProcessStat, waitPid } from '@kuasar/sys';

const children: ChildProcess[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.kill('SIGKILL');
    await once(c, 'exit');
  }
});

function start(cmd: string, args: string[]): ChildProcess {
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(c);
  return c;
}

async function until(ok: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('isRunning', () => {
  test('a live child runs', async () => {
    const c = start('sleep', ['30']);
    await once(c, 'spawn');
    expect(isRunning(c.pid!)).toBe(true);
  });

  test('a zombie does not run, although the pid still exists', async () => {
    // sh forks `sleep 0.1` and becomes `sleep 30`, which never waits: its exited child stays a zombie that neither
    // Node nor pid 1 reaps while the parent lives.
    const parent = start('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30']);
    const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
    const pid = Number(line.toString().trim());
    expect(pid).toBeGreaterThan(0);
    await until(() => readProcessStat(pid)?.state === 'Z');
    let killSucceeds = true;
    try {
      process.kill(pid, 0);
    } catch {
      killSucceeds = false;
    }
    expect(killSucceeds).toBe(true); // what kill(pid, 0) says about it
    expect(isRunning(pid)).toBe(false);

    parent.kill('SIGKILL');
    await once(parent, 'exit');
    // a subreaper flag set by another test in this worker would make the orphan ours: reap it then
    let ppid = 0;
    try {
      ppid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
    } catch {
      /* reaped already */
    }
    if (ppid === process.pid) waitPid(pid, { noHang: true });
  });

  test('an exited and reaped child does not run', async () => {
    const c = start('true', []);
    await once(c, 'exit'); // libuv reaped it: the pid is free
    expect(isRunning(c.pid!)).toBe(false);
  });

  test('a pid above pid_max does not run', () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    expect(isRunning(pidMax + 1)).toBe(false);
  });

  test('this process runs', () => {
    expect(isRunning(process.pid)).toBe(true);
  });

  test.each([0, -1, Number.NaN, 1.5, Number.POSITIVE_INFINITY])('%p is no pid', (pid) => {
    expect(isRunning(pid)).toBe(false);
  });
});
