// RunscEngine's bookkeeping of sandbox exits, on real processes (no runsc needed): pids wrap at pid_max (32768 on
// these 2-core nodes), so a new pod's sandbox can get the pid of one that exited earlier in the same process.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { RunscEngine, runscProcesses } from '../src/runsc-engine';
import { tempDir } from './helpers';

/** A `sleep` whose parent shell exits at once, so it re-parents to this process (the engine made it a subreaper). */
function orphanSleep(secs: number): number {
  return Number(execFileSync('sh', ['-c', `sleep ${secs} </dev/null >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' }).trim());
}

function canSetLastPid(): boolean {
  try {
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', fs.readFileSync('/proc/sys/kernel/ns_last_pid'));
    return true;
  } catch {
    return false;
  }
}

/** An orphan sleep with exactly `pid`: ns_last_pid makes the shell take pid-1 and its child pid; retried on races. */
function orphanSleepWithPid(pid: number, secs: number): number | undefined {
  for (let i = 0; i < 200; i++) {
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 2));
    const got = orphanSleep(secs);
    if (got === pid) return got;
    try {
      process.kill(got, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  return undefined;
}

describe('RunscEngine sandbox exits', () => {
  let engine: RunscEngine;
  beforeAll(() => {
    engine = new RunscEngine({ binary: '/nonexistent/runsc', globalArgs: [], root: tempDir('kuasar-runsc-engine-') });
  });
  afterAll(() => engine.close());

  test('reports a sandbox process exit with its status', async () => {
    const pid = orphanSleep(0.05);
    await expect(engine.sandboxExited(pid)).resolves.toBe(0);
    const killed = orphanSleep(30);
    const exited = engine.sandboxExited(killed);
    process.kill(killed, 'SIGTERM');
    await expect(exited).resolves.toBe(128 + 15);
  });

  const reuse = canSetLastPid() ? test : test.skip;
  if (!canSetLastPid()) process.stderr.write('skipping pid reuse test: /proc/sys/kernel/ns_last_pid is not writable here\n');
  reuse('a new sandbox with a reused pid is not taken for the exited one', async () => {
    const first = orphanSleep(0.05);
    await expect(engine.sandboxExited(first)).resolves.toBe(0);
    const second = orphanSleepWithPid(first, 30);
    if (second === undefined) throw new Error(`could not get pid ${first} again in 200 tries (a busy machine?)`);
    const exited = engine.sandboxExited(second);
    const early = await Promise.race([exited.then(() => 'resolved'), new Promise((r) => setTimeout(() => r('pending'), 300))]);
    expect(early).toBe('pending');
    process.kill(second, 'SIGKILL');
    await expect(exited).resolves.toBe(128 + 9);
  });
});

describe('runscProcesses', () => {
  /** A live process whose argv is exactly `argv` (bash's exec -a sets argv[0]; `; :` keeps bash from exec'ing sleep). */
  const fake = (argv: string[]): ChildProcess => spawn('bash', ['-c', `exec -a ${argv[0]} bash -c 'sleep 10; :' ${argv.slice(1).map((a) => `'${a}'`).join(' ')}`], { stdio: 'ignore' });
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => c.kill('SIGKILL')));

  test('finds runsc processes by the exact state dir, in both flag forms, and nothing else', async () => {
    const root = tempDir('kuasar-runsc-procs-');
    const a = `${root}/pods/a`;
    const sandbox = fake(['runsc-sandbox', `--root=${a}`, 'boot']);
    const cli = fake(['/usr/bin/runsc', '--root', a, 'wait', 'c1']);
    const other = fake(['runsc-gofer', `--root=${a}b`, 'gofer']); // pod "ab": a longer dir with the same prefix
    const notRunsc = fake(['sleeper', `--root=${a}`]);
    children.push(sandbox, cli, other, notRunsc);
    const want = [sandbox.pid!, cli.pid!].sort();
    const deadline = Date.now() + 5000;
    let got = runscProcesses(a);
    // exec -a takes a moment to show in /proc/<pid>/cmdline
    while (JSON.stringify([...got].sort()) !== JSON.stringify(want) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      got = runscProcesses(a);
    }
    expect([...got].sort()).toEqual(want);
    expect(runscProcesses(`${a}b`)).toEqual([other.pid]);
    expect(runscProcesses(`${root}/pods/none`)).toEqual([]);
    sandbox.kill('SIGKILL');
    await new Promise((r) => sandbox.once('exit', r));
    expect(runscProcesses(a)).toEqual([cli.pid]);
  });
});
