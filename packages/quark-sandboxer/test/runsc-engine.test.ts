// RunscEngine's bookkeeping of sandbox exits, on real processes (no runsc needed): pids wrap at pid_max (32768 on
// these 2-core nodes), so a new pod's sandbox can get the pid of one that exited earlier in the same process.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { RunscEngine } from '../src/runsc-engine';
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
