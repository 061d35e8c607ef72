// A tiny real sandboxer kind for the tests: the sandbox is a `sleep` process in its own session. Nothing in the
// framework is replaced; only the isolation is trivial.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import type { google } from '@kuasar/api';
import { cgroupDirsOfPid, packCgroupMetrics, readMetrics } from '@kuasar/task';
import type { Sandbox, SandboxExit, Sandboxer, SandboxStartResult } from '../src';

const CONTROLLERS = ['pids', 'memory'];
const IGNORE_TERM_ANNOTATION = 'test.kuasar.io/ignore-sigterm';

export class SleepKind implements Sandboxer {
  readonly calls: Array<{ op: string; id: string }> = [];
  private readonly children = new Map<string, ChildProcess>();
  private readonly inFlight = new Map<string, number>();
  /** Highest number of kind calls seen running at once for one id (the framework must keep it at 1). */
  maxInFlightPerId = 0;
  /** Highest number of kind calls seen running at once across all ids. */
  maxInFlightTotal = 0;
  private total = 0;

  constructor(
    private readonly delayMs = 0,
    options: { kindMetrics?: boolean } = {},
  ) {
    // Without its own reader the framework measures the sandbox pid's cgroup.
    if (options.kindMetrics === false) this.metrics = undefined;
  }

  private async track<T>(op: string, id: string, fn: () => Promise<T>): Promise<T> {
    this.calls.push({ op, id });
    const n = (this.inFlight.get(id) ?? 0) + 1;
    this.inFlight.set(id, n);
    this.total += 1;
    this.maxInFlightPerId = Math.max(this.maxInFlightPerId, n);
    this.maxInFlightTotal = Math.max(this.maxInFlightTotal, this.total);
    try {
      if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
      return await fn();
    } finally {
      this.inFlight.set(id, (this.inFlight.get(id) ?? 1) - 1);
      this.total -= 1;
    }
  }

  create(sandbox: Sandbox): Promise<void> {
    return this.track('create', sandbox.id, async () => {
      await fs.writeFile(path.join(sandbox.dir, 'kind-file'), 'x');
      // A cgroup per sandbox, as a real kind would make under the pod's cgroup parent.
      const cgroup = `kuasar-test-${sandbox.id.slice(0, 20)}-${process.pid}-${Date.now()}`;
      for (const c of CONTROLLERS) await fs.mkdir(path.join('/sys/fs/cgroup', c, cgroup));
      sandbox.record.kindState.cgroup = cgroup;
    });
  }

  start(sandbox: Sandbox): Promise<SandboxStartResult> {
    return this.track('start', sandbox.id, async () => {
      const ignoreTerm = sandbox.record.annotations[IGNORE_TERM_ANNOTATION] === 'true';
      // An ignored SIGTERM survives exec, so `sleep` itself ignores it.
      const cgroup = sandbox.record.kindState.cgroup as string;
      const join = CONTROLLERS.map((c) => `echo $$ > /sys/fs/cgroup/${c}/${cgroup}/cgroup.procs`).join('; ');
      const script = `${join}; ${ignoreTerm ? "trap '' TERM; " : ''}exec sleep 1000`;
      const child = spawn('/bin/sh', ['-c', script], { detached: true, stdio: 'ignore' });
      await once(child, 'spawn');
      child.unref();
      const pid = child.pid!;
      // Ready only once the shell has joined the cgroups, set its traps and exec'd sleep.
      while (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'sleep') await new Promise((r) => setTimeout(r, 5));
      this.children.set(sandbox.id, child);
      sandbox.record.kindState.pid = pid;
      sandbox.record.kindState.startTime = startTimeOf(pid);
      return { pid, labels: { selinux_label: 'test_label' } };
    });
  }

  wait(sandbox: Sandbox): Promise<SandboxExit> {
    const child = this.children.get(sandbox.id);
    if (child) {
      return new Promise((resolve) => {
        const done = (code: number | null, signal: NodeJS.Signals | null) =>
          resolve({ exitStatus: code ?? 128 + signalNumber(signal), exitedAt: new Date() });
        if (child.exitCode !== null || child.signalCode !== null) done(child.exitCode, child.signalCode);
        else child.once('exit', done);
      });
    }
    // Re-adopted: not our child, so poll /proc until the process (same start time) is gone.
    return new Promise((resolve) => {
      const timer = setInterval(() => {
        if (!this.isAlive(sandbox)) {
          clearInterval(timer);
          resolve({ exitStatus: 255, exitedAt: new Date() });
        }
      }, 20);
    });
  }

  stop(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    return this.track('stop', sandbox.id, async () => {
      const pid = sandbox.record.pid;
      signal(pid, timeoutSecs > 0 ? 'SIGTERM' : 'SIGKILL');
      if (timeoutSecs > 0) {
        const timer = setTimeout(() => signal(pid, 'SIGKILL'), timeoutSecs * 1000);
        void this.wait(sandbox).then(() => clearTimeout(timer));
      }
    });
  }

  shutdown(sandbox: Sandbox): Promise<void> {
    return this.track('shutdown', sandbox.id, async () => {
      if (this.isAlive(sandbox)) signal(sandbox.record.pid, 'SIGKILL');
      this.children.delete(sandbox.id);
      const cgroup = sandbox.record.kindState.cgroup as string | undefined;
      if (cgroup) for (const c of CONTROLLERS) await rmdirRetry(path.join('/sys/fs/cgroup', c, cgroup));
    });
  }

  recover(sandbox: Sandbox): Promise<'alive' | 'dead'> {
    return this.track('recover', sandbox.id, async () => {
      // Not started yet: alive as long as what create made is still there.
      if (sandbox.record.state === 'created') {
        return existsSync(`/sys/fs/cgroup/pids/${sandbox.record.kindState.cgroup}`) ? 'alive' : 'dead';
      }
      return this.isAlive(sandbox) ? 'alive' : 'dead';
    });
  }

  /** The sandbox's own cgroup, read with the task core's cgroup reader (v1/hybrid here). */
  metrics?(sandbox: Sandbox): Promise<google.Any> {
    return this.track('metrics', sandbox.id, async () => {
      const dirs = cgroupDirsOfPid(sandbox.record.pid);
      if (!dirs) throw new Error('process gone');
      return packCgroupMetrics(readMetrics(dirs));
    });
  }

  async status(sandbox: Sandbox): Promise<Record<string, unknown>> {
    return { alive: this.isAlive(sandbox) };
  }

  /** Simulates this sandboxer process dying: it stops observing its children (they keep running). */
  forgetChildren(): void {
    for (const child of this.children.values()) child.removeAllListeners('exit');
    this.children.clear();
  }

  private isAlive(sandbox: Sandbox): boolean {
    const pid = sandbox.record.pid;
    if (!pid) return false;
    const start = startTimeOf(pid);
    return start !== undefined && start === sandbox.record.kindState.startTime;
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function signalNumber(sig: NodeJS.Signals | null): number {
  return sig ? require('node:os').constants.signals[sig] : 0;
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks); undefined when gone or a zombie. */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return fields[19];
  } catch {
    return undefined;
  }
}

// A cgroup can be busy for a moment after its last process died.
async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await fs.rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY' || i >= 50) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
