// Churn with crashes: K pods created and removed continuously through containerd 2.1's CRI while the sandboxer is
// SIGKILLed at random moments and started again on the same state dir. Afterwards every pod must be gone through its
// own removal, every container exit reported with its code, and nothing left behind.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { cri } from '@kuasar/api';
import { fdCount, leftoverCgroups, leftoverMounts, leftoverProcesses, leftoverSockets, leftoverStateDirs } from '@kuasar/e2e';
import { BUSYBOX_IMAGE, CriError, processesMentioning } from '@kuasar/testkit';
import { BenchStack, KUASAR_HANDLER, sleep, type BenchStackOptions } from './stack';

export interface ChurnOptions {
  /** Concurrent pod loops. */
  pods: number;
  /** How long new pod cycles are started; cycles under way then finish. */
  durationMs: number;
  /** Random pause between sandboxer kills: [min, max] ms. */
  killEveryMs: [number, number];
  /** How long the sandboxer stays dead: [min, max] ms. */
  downMs: [number, number];
  /** How long one CRI step may keep failing (sandboxer down, recovering) before the pod counts as stuck. */
  stepDeadlineMs: number;
  progress?: (msg: string) => void;
  stack?: BenchStackOptions;
  /** Where containerd's and the sandboxer's logs are kept when the run finds a failure; default a new /tmp dir. */
  artifactsDir?: string;
  /** Ends the churn early (Ctrl-C): cycles under way finish, then the checks and the cleanup run as usual. */
  signal?: AbortSignal;
}

export const CHURN_SIZES: Record<'quick' | 'full', Omit<ChurnOptions, 'progress' | 'stack'>> = {
  quick: { pods: 5, durationMs: 60_000, killEveryMs: [4_000, 12_000], downMs: [0, 1_500], stepDeadlineMs: 60_000 },
  full: { pods: 20, durationMs: 600_000, killEveryMs: [5_000, 30_000], downMs: [0, 3_000], stepDeadlineMs: 90_000 },
};

export interface ChurnReport {
  durationMs: number;
  kills: number;
  cycles: number;
  podsCreated: number;
  podsRemoved: number;
  /** Pods that vanished before this run removed them (NotFound while it still owned them). */
  podsLost: string[];
  /** Pods or containers whose step never succeeded within stepDeadlineMs: `<pod> <step>: <last error>`. */
  podsStuck: string[];
  /** Pods CRI still lists at the end (a failed RunPodSandbox that left one behind counts here). */
  podsListedAtEnd: string[];
  containersListedAtEnd: string[];
  exitsReported: number;
  /** Containers that ended with another exit code than the one they exited with / were killed with. */
  exitsWrong: string[];
  /**
   * StartContainer failed (the sandboxer died while handling it) and CRI reports the container EXITED with reason
   * StartError: the failure was reported to the caller, as kubelet would see it, so this is not a lost exit.
   */
  startErrors: string[];
  /** Errors that a retry got past (the sandboxer was down or recovering), by CRI method. */
  transientErrors: Record<string, number>;
  transientSamples: string[];
  leaks: {
    mounts: string[];
    processes: string[];
    cgroups: string[];
    stateDirs: string[];
    sockets: string[];
    shims: number[];
  };
  /** fds of the task relay (it outlives every kill) at the start and the end: growth means a leaked connection. */
  relayFds: { start: number; end: number } | undefined;
  sandboxerErrors: string[];
  /** Set when a failure was found: the dir holding containerd.log, sandboxer.log and report.json. */
  artifacts?: string;
}

class StepTimeout extends Error {
  override readonly name = 'StepTimeout';
}

const isCode = (err: unknown, code: number): boolean => err instanceof CriError && err.code === code;
const NOT_FOUND = 5;

export async function runChurn(o: ChurnOptions): Promise<ChurnReport> {
  const progress = o.progress ?? ((): void => undefined);
  if (!(o.pods >= 1) || !(o.durationMs > 0)) throw new RangeError('runChurn: pods >= 1 and durationMs > 0 required');
  const stack = await BenchStack.start({ logLevel: 'debug', ...o.stack });
  const sbLogStart = stack.sb.rawLogs().length;
  const report: ChurnReport = {
    durationMs: 0, kills: 0, cycles: 0, podsCreated: 0, podsRemoved: 0, podsLost: [], podsStuck: [], podsListedAtEnd: [],
    containersListedAtEnd: [], exitsReported: 0, exitsWrong: [], startErrors: [], transientErrors: {}, transientSamples: [],
    leaks: { mounts: [], processes: [], cgroups: [], stateDirs: [], sockets: [], shims: [] }, relayFds: undefined, sandboxerErrors: [],
  };
  const ids: string[] = [];
  const relayStart = stack.sb.relayPid();
  const relayFdsStart = relayStart === undefined ? undefined : fdCount(relayStart);
  const t0 = Date.now();
  const end = t0 + o.durationMs;
  let restarting: Promise<void> = Promise.resolve();

  /** Runs a CRI step until it succeeds; each failure is counted as transient until the deadline. */
  async function step<T>(what: string, fn: () => Promise<T>, done?: (err: unknown) => T | undefined): Promise<T> {
    const deadline = Date.now() + o.stepDeadlineMs;
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        const settled = done?.(err);
        if (settled !== undefined) return settled;
        report.transientErrors[what] = (report.transientErrors[what] ?? 0) + 1;
        if (report.transientSamples.length < 20) report.transientSamples.push(`${what}: ${(err as Error).message.split('\n')[0]!.slice(0, 200)}`);
        if (Date.now() > deadline) throw new StepTimeout(`${what}: ${(err as Error).message.split('\n')[0]}`);
        await restarting;
        await sleep(200);
      }
    }
  }

  async function cycle(worker: number, n: number): Promise<void> {
    // Half the containers exit by themselves with a chosen code; the others run until StopPodSandbox kills them.
    const selfExit = n % 2 === 0;
    const code = randomInt(1, 120);
    const command = selfExit ? ['sh', '-c', `sleep ${(randomInt(0, 2000) / 1000).toFixed(3)}; exit ${code}`] : ['sleep', '3600'];
    const logDirectory = stack.logDir();
    const uid = randomBytes(6).toString('hex');
    let attempt = 0;
    const podConfig = (): cri.PodSandboxConfig => cri.PodSandboxConfig.fromPartial({
      // A fresh name per attempt: a RunPodSandbox that failed half-way must not block the retry with "name reserved".
      metadata: { name: `churn-${worker}-${n}-${attempt}`, uid: `${uid}-${attempt}`, namespace: 'default', attempt: 0 },
      logDirectory,
      linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
    });
    let cfg = podConfig();
    const podId = await step('RunPodSandbox', () => {
      attempt++;
      cfg = podConfig();
      return stack.client.runPodSandbox(cfg, KUASAR_HANDLER);
    });
    ids.push(podId);
    report.podsCreated++;
    let where = 'PodSandboxStatus';
    try {
      const lost = (err: unknown): never | undefined => {
        if (isCode(err, NOT_FOUND) && /sandbox|pod/i.test((err as Error).message)) {
          report.podsLost.push(`${podId} (${where}): ${(err as Error).message.split('\n')[0]}`);
          throw err;
        }
        return undefined;
      };
      await step('PodSandboxStatus', async () => {
        const st = await stack.client.podSandboxStatus(podId);
        if (st.status?.state !== cri.PodSandboxState.SANDBOX_READY) throw new Error(`pod ${podId} is ${cri.podSandboxStateToJSON(st.status?.state ?? -1)}`);
      }, lost);
      where = 'CreateContainer';
      let cattempt = 0;
      const containerId = await step('CreateContainer', () => stack.client.createContainer(podId, {
        metadata: { name: 'main', attempt: cattempt++ }, image: { image: BUSYBOX_IMAGE }, command, logPath: `main-${cattempt}.log`,
        linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
      }, cfg), lost);
      ids.push(containerId);
      where = 'StartContainer';
      let startFailed: string | undefined;
      await step('StartContainer', async () => {
        try {
          await stack.client.startContainer(containerId);
        } catch (err) {
          lost(err);
          // CRI moves a container whose start failed to EXITED (StartError); a start whose reply was lost leaves it
          // RUNNING or EXITED with its own code. Either way it is no longer startable.
          const st = await stack.client.containerStatus(containerId).catch(() => undefined);
          if (st && st.state !== cri.ContainerState.CONTAINER_CREATED && st.state !== cri.ContainerState.CONTAINER_UNKNOWN) {
            startFailed = (err as Error).message.split('\n')[0]!.slice(0, 200);
            return;
          }
          throw err;
        }
      });
      const startError = async (): Promise<boolean> => {
        if (startFailed === undefined) return false;
        const st = await step('ContainerStatus', () => stack.client.containerStatus(containerId));
        if (st.state === cri.ContainerState.CONTAINER_EXITED && st.reason === 'StartError') report.startErrors.push(`${containerId}: ${startFailed}`);
        else report.exitsWrong.push(`${containerId}: StartContainer failed (${startFailed}) but CRI reports ${cri.containerStateToJSON(st.state)} ${st.exitCode} (${st.reason || '-'})`);
        return true;
      };
      if (selfExit && !(await startError())) {
        where = 'ContainerStatus EXITED';
        const st = await step('ContainerStatus', async () => {
          const s = await stack.client.containerStatus(containerId);
          if (s.state !== cri.ContainerState.CONTAINER_EXITED) throw new Error(`container ${containerId} is ${cri.containerStateToJSON(s.state)}`);
          return s;
        });
        if (st.exitCode === code) report.exitsReported++;
        else report.exitsWrong.push(`${containerId}: exited with ${st.exitCode}, expected ${code} (reason ${st.reason || '-'})`);
      }
      where = 'StopPodSandbox';
      await step('StopPodSandbox', () => stack.client.stopPodSandbox(podId), lost);
      if (!selfExit && !(await startError())) {
        where = 'ContainerStatus after stop';
        const st = await step('ContainerStatus', () => stack.client.containerStatus(containerId));
        // StopPodSandbox stops containers with no grace: SIGKILL.
        if (st.state === cri.ContainerState.CONTAINER_EXITED && st.exitCode === 137) report.exitsReported++;
        else report.exitsWrong.push(`${containerId}: ${cri.containerStateToJSON(st.state)} with ${st.exitCode} after StopPodSandbox, expected EXITED 137`);
      }
      where = 'RemovePodSandbox';
      await step('RemovePodSandbox', () => stack.client.removePodSandbox(podId));
      await step('PodSandboxStatus gone', async () => {
        try {
          await stack.client.podSandboxStatus(podId);
        } catch (err) {
          if (isCode(err, NOT_FOUND)) return;
          throw err;
        }
        throw new Error(`pod ${podId} still listed after RemovePodSandbox`);
      });
      report.podsRemoved++;
    } catch (err) {
      if (!report.podsLost.some((l) => l.startsWith(podId))) report.podsStuck.push(`${podId} at ${where}: ${(err as Error).message.split('\n')[0]}`);
    }
  }

  async function worker(w: number): Promise<void> {
    for (let n = 0; Date.now() < end && !o.signal?.aborted; n++) {
      await cycle(w, n);
      report.cycles++;
    }
  }

  async function killer(): Promise<void> {
    for (;;) {
      const wait = randomInt(o.killEveryMs[0], o.killEveryMs[1] + 1);
      if (Date.now() + wait >= end) return;
      await sleep(wait);
      if (o.signal?.aborted) return;
      let release!: () => void;
      restarting = new Promise((r) => { release = r; });
      try {
        await stack.sb.kill('SIGKILL');
        report.kills++;
        progress(`kill -9 #${report.kills} of the sandboxer (${report.cycles} cycles so far)`);
        await sleep(randomInt(o.downMs[0], o.downMs[1] + 1));
        await stack.sb.restart();
      } finally {
        release();
      }
    }
  }

  try {
    const ticker = setInterval(() => progress(`${Math.round((Date.now() - t0) / 1000)} s: ${report.cycles} cycles, ${report.podsRemoved} pods removed, ${report.kills} kills, ${report.podsStuck.length} stuck`), 10_000);
    try {
      await Promise.all([killer(), ...Array.from({ length: o.pods }, (_, w) => worker(w))]);
    } finally {
      clearInterval(ticker);
    }
    report.durationMs = Date.now() - t0;
    if (!stack.sb.running) await stack.sb.restart();

    report.podsListedAtEnd = (await stack.client.listPodSandbox()).map((p) => `${p.id} ${p.metadata?.name} ${cri.podSandboxStateToJSON(p.state)}`);
    report.containersListedAtEnd = (await stack.client.listContainers()).map((c) => `${c.id} ${cri.containerStateToJSON(c.state)}`);
    for (const p of await stack.client.listPodSandbox()) if (!ids.includes(p.id)) ids.push(p.id);
    // Processes take a moment to be reaped after RemovePodSandbox returns.
    const relay = stack.sb.relayPid();
    const deadline = Date.now() + 10_000;
    let procs = leftoverProcesses(stack.sb.pid, ids, [relay ?? -1]);
    while (procs.length > 0 && Date.now() < deadline) {
      await sleep(200);
      procs = leftoverProcesses(stack.sb.pid, ids, [relay ?? -1]);
    }
    report.leaks = {
      processes: procs,
      mounts: [...leftoverMounts([stack.sbDir, path.join(stack.ctrd.dir, 'state')], ids), ...leftoverMounts([stack.ctrd.root], ids).filter((m) => /\/(rootfs|shm|netns|sandboxes)\b/.test(m))],
      cgroups: leftoverCgroups(ids),
      stateDirs: leftoverStateDirs([path.join(stack.sbDir, 'tasks'), '/run/kuasar/runc', '/run/kuasar/crun'], ids),
      sockets: [...leftoverSockets(stack.sbDir, [stack.sb.taskSocket, path.join(stack.sbDir, 'relay.sock')]), ...leftoverSockets(path.join(stack.ctrd.dir, 'state'))],
      shims: processesMentioning(stack.ctrd.grpcAddress),
    };
    if (relayStart !== undefined && relay === relayStart) report.relayFds = { start: relayFdsStart!, end: fdCount(relay) };
    report.sandboxerErrors = stack.sb.rawLogs().slice(sbLogStart).split('\n').filter((l) => /"level":(50|60|"error"|"fatal")/.test(l)).slice(0, 50);
    return report;
  } finally {
    const sbLog = stack.sb.rawLogs(); // stop() removes the stack's dir
    await stack.stop();
    if (churnFailures(report).length > 0) {
      const dir = o.artifactsDir ?? mkdtempSync('/tmp/kbench-churn-');
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'containerd.log'), stack.ctrd.logs());
      writeFileSync(path.join(dir, 'sandboxer.log'), sbLog);
      writeFileSync(path.join(dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
      report.artifacts = dir;
    }
  }
}

/** Human summary of a report (also the "counts" the issue asks for). */
export function churnSummary(r: ChurnReport): string {
  const leakCounts = Object.entries(r.leaks).map(([k, v]) => `${k} ${v.length}`).join(', ');
  const transient = Object.entries(r.transientErrors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  return [
    `churn: ${(r.durationMs / 1000).toFixed(0)} s, ${r.kills} sandboxer kill -9 + restart, ${r.cycles} pod cycles`,
    `pods: ${r.podsCreated} created, ${r.podsRemoved} removed cleanly, ${r.podsLost.length} lost, ${r.podsStuck.length} stuck, ${r.podsListedAtEnd.length} still listed (containers listed: ${r.containersListedAtEnd.length})`,
    `container exits: ${r.exitsReported} reported with the right code, ${r.startErrors.length} StartError after a crash during StartContainer, ${r.exitsWrong.length} wrong or missing`,
    `leaks: ${leakCounts}${r.relayFds ? `; task relay fds ${r.relayFds.start} → ${r.relayFds.end}` : ''}`,
    `retried errors: ${transient}; sandboxer error log lines: ${r.sandboxerErrors.length}`,
    ...[...r.podsLost.map((x) => `LOST ${x}`), ...r.podsStuck.map((x) => `STUCK ${x}`), ...r.exitsWrong.map((x) => `EXIT ${x}`), ...r.podsListedAtEnd.map((x) => `LISTED ${x}`)].slice(0, 40),
    ...Object.entries(r.leaks).flatMap(([k, v]) => (v as unknown[]).slice(0, 10).map((x) => `LEAK ${k}: ${String(x)}`)),
    ...(r.artifacts ? [`logs and report kept in ${r.artifacts}`] : []),
  ].join('\n');
}

/** What makes a run fail: every count that must be zero, by name. */
export function churnFailures(r: ChurnReport): string[] {
  const out: string[] = [];
  const check = (what: string, n: number): void => { if (n > 0) out.push(`${n} ${what}`); };
  check('pods lost', r.podsLost.length);
  check('pods stuck', r.podsStuck.length);
  check('pods still listed', r.podsListedAtEnd.length);
  check('containers still listed', r.containersListedAtEnd.length);
  check('container exits wrong or missing', r.exitsWrong.length);
  for (const [k, v] of Object.entries(r.leaks)) check(`leaked ${k}`, v.length);
  if (r.podsCreated === 0) out.push('no pod was created');
  return out;
}
