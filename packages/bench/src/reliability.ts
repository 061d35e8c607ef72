// Churn with crashes: K pods created and removed continuously through containerd 2.1's CRI while the sandboxer is
// SIGKILLed at random moments and started again on the same state dir. Afterwards every pod must be gone through its
// own removal, every container exit reported with its code, and nothing left behind.
import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { cri } from '@kuasar/api';
import { REPO_ROOT, shimEnv, fdCount, leftoverCgroups, leftoverMounts, leftoverProcesses, leftoverSockets, leftoverStateDirs } from '@kuasar/e2e';
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
  /** containerd itself is killed (SIGKILL) and restarted this many times, at random moments of the churn. */
  containerdRestarts?: number;
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
  quick: { pods: 5, durationMs: 60_000, killEveryMs: [4_000, 12_000], downMs: [0, 1_500], containerdRestarts: 1, stepDeadlineMs: 60_000 },
  full: { pods: 20, durationMs: 600_000, killEveryMs: [5_000, 30_000], downMs: [0, 3_000], containerdRestarts: 3, stepDeadlineMs: 90_000 },
};

export interface ChurnReport {
  durationMs: number;
  kills: number;
  /** containerd kill -9 + restarts done in the middle of the load */
  containerdRestarts: number;
  cycles: number;
  podsCreated: number;
  podsRemoved: number;
  /** Pods that vanished before this run removed them (NotFound while it still owned them). */
  podsLost: string[];
  /** Pods or containers whose step never succeeded within stepDeadlineMs: `<pod> <step>: <last error>`. */
  podsStuck: string[];
  /**
   * Pods of a RunPodSandbox attempt that failed (a crash interrupted it) which CRI still listed at the end: NOTREADY,
   * or READY when containerd was killed after its own record was written and its restart recovered the pod (the
   * caller saw only the broken connection). Stopped and removed then, as kubelet's sandbox garbage collection does
   * for sandboxes it did not ask for; their removal must succeed and leave nothing.
   */
  podsCollected: string[];
  /**
   * Sandboxes the sandboxer removed by itself because containerd held no record of them any more: a kill -9 (or a
   * failure) cut off the reply to their Create or Start, so RunPodSandbox failed and containerd dropped them without
   * a Stop or Shutdown (packages/sandbox/src/controller.ts, reconcile). Not pods of this run: none of them was returned.
   */
  sandboxesForgotten: string[];
  /** Pods CRI still lists at the end that nobody may remove (not a failed attempt's), or whose removal failed. */
  podsListedAtEnd: string[];
  containersListedAtEnd: string[];
  exitsReported: number;
  /**
   * Containers that exited while no sandboxer (or no containerd) was running, from just before a kill -9 until the
   * successor answered, and are reported with 255: nobody could read or record their status, the documented restart
   * contract (docs/operations.md). An exit after the restart must keep its real code.
   */
  exitsWhileDown: string[];
  /** Of exitsReported: containers started before a kill -9 that exited after the restart (re-adopted, real code). */
  exitsReadopted: number;
  /** Containers that ended with another exit code than the one they exited with / were killed with. */
  exitsWrong: string[];
  /**
   * StartContainer failed (the sandboxer died while handling it) and CRI reports the container EXITED with reason
   * StartError: the failure was reported to the caller, as kubelet would see it, so this is not a lost exit.
   */
  startErrors: string[];
  /**
   * Containers CRI marked UNKNOWN: containerd restarted between CreateContainer and StartContainer, and the sandboxer
   * was down while containerd's recovery deleted the never-started task. CRI refuses to start them; as kubelet does,
   * the run stops them (StopContainer), which must succeed and end them EXITED.
   */
  containersUnknown: string[];
  /** Errors that a retry got past (the sandboxer was down or recovering), by CRI method. */
  transientErrors: Record<string, number>;
  transientSamples: string[];
  leaks: {
    mounts: string[];
    processes: string[];
    cgroups: string[];
    /** task and runtime state dirs, and sandbox dirs left in the sandboxer's state dir */
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
/**
 * How long the checks wait for the sandboxer to drop sandboxes containerd forgot: it looks each one up 5 s after its
 * last Create/Start or its restart, in rounds 5 s apart (RECONCILE_TIMING in @kuasar/sandbox).
 */
const FORGOTTEN_GRACE_MS = 30_000;
/** Sandbox ids the sandboxer was asked to Create, from its debug log: also those containerd never returned. */
const createdIds = (log: string): string[] => [...new Set([...log.matchAll(/"method":"Create","sandbox":"([0-9a-f]{64})"/g)].map((m) => m[1]!))];
/** Sandbox dirs left in the sandboxer's state dir (every name but the tasks dir, sockets and dot files). */
const sandboxDirs = (dir: string): string[] => {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name !== 'tasks' && !e.name.startsWith('.')).map((e) => path.join(dir, e.name));
  } catch {
    return [];
  }
};

export async function runChurn(o: ChurnOptions): Promise<ChurnReport> {
  const progress = o.progress ?? ((): void => undefined);
  if (!(o.pods >= 1) || !(o.durationMs > 0)) throw new RangeError('runChurn: pods >= 1 and durationMs > 0 required');
  const stack = await BenchStack.start({ logLevel: 'debug', ...o.stack });
  const sbLogStart = stack.sb.rawLogs().length;
  const report: ChurnReport = {
    durationMs: 0, kills: 0, containerdRestarts: 0, cycles: 0, podsCreated: 0, podsRemoved: 0, podsLost: [], podsStuck: [], podsCollected: [], sandboxesForgotten: [], podsListedAtEnd: [],
    containersListedAtEnd: [], exitsReported: 0, exitsWhileDown: [], exitsReadopted: 0, exitsWrong: [], startErrors: [], containersUnknown: [], transientErrors: {}, transientSamples: [],
    leaks: { mounts: [], processes: [], cgroups: [], stateDirs: [], sockets: [], shims: [] }, relayFds: undefined, sandboxerErrors: [],
  };
  const ids: string[] = [];
  /** names of RunPodSandbox attempts that did not return a pod id */
  const failedAttempts = new Set<string>();
  const relayStart = stack.sb.relayPid();
  const relayFdsStart = relayStart === undefined ? undefined : fdCount(relayStart);
  const t0 = Date.now();
  const end = t0 + o.durationMs;
  let restarting: Promise<void> = Promise.resolve();
  let ctrdRestarting: Promise<void> = Promise.resolve();
  /**
   * [kill -9 sent, successor answering] per kill of the sandboxer or of containerd; an open one ends at Infinity.
   * An exit containerd received but had not recorded when it was killed is reported 255 after its restart, as with
   * its own runc-v2 shims (the task was already deleted): the same contract as a sandboxer crash.
   */
  const downs: { from: number; to: number }[] = [];
  // The old sandboxer may have taken an exit without passing it on (or persisting it) when it was killed.
  const DOWN_MARGIN_MS = 1000;
  const wasDown = (from: number, to: number): boolean => downs.some((d) => from <= d.to && to >= d.from - DOWN_MARGIN_MS);
  const readopted = (startedAt: number, exitedAt: number): boolean => downs.some((d) => startedAt < d.from && exitedAt > d.to);

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
        await ctrdRestarting;
        await sleep(200);
      }
    }
  }

  async function cycle(worker: number, n: number): Promise<void> {
    // Half the containers exit by themselves with a chosen code; the others run until StopPodSandbox kills them.
    const selfExit = n % 2 === 0;
    const code = randomInt(1, 120);
    const logDirectory = stack.logDir();
    const marker = path.join(logDirectory, 'exit');
    // A self-exiting container touches a host-visible file just before it exits: its mtime says when the exit was.
    const command = selfExit ? ['sh', '-c', `sleep ${(randomInt(0, 4000) / 1000).toFixed(3)}; touch /marker/exit; exit ${code}`] : ['sleep', '3600'];
    const uid = randomBytes(6).toString('hex');
    let attempt = 0;
    const podConfig = (): cri.PodSandboxConfig => cri.PodSandboxConfig.fromPartial({
      // A fresh name per attempt: a RunPodSandbox that failed half-way must not block the retry with "name reserved".
      metadata: { name: `churn-${worker}-${n}-${attempt}`, uid: `${uid}-${attempt}`, namespace: 'default', attempt: 0 },
      logDirectory,
      linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
    });
    let cfg = podConfig();
    const podId = await step('RunPodSandbox', async () => {
      attempt++;
      cfg = podConfig();
      const name = cfg.metadata!.name;
      failedAttempts.add(name);
      const id = await stack.client.runPodSandbox(cfg, KUASAR_HANDLER);
      failedAttempts.delete(name);
      return id;
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
        mounts: [{ containerPath: '/marker', hostPath: logDirectory }],
        linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
      }, cfg), lost);
      ids.push(containerId);
      where = 'StartContainer';
      let startFailed: string | undefined;
      let unknown = false;
      await step('StartContainer', async () => {
        try {
          await stack.client.startContainer(containerId);
        } catch (err) {
          lost(err);
          if (/CONTAINER_UNKNOWN/.test((err as Error).message)) {
            // kubelet's answer to an UNKNOWN container: stop it, then make a new one (here: end the cycle)
            unknown = true;
            startFailed = (err as Error).message.split('\n')[0]!.slice(0, 200);
            return;
          }
          // CRI moves a container whose start failed to EXITED (StartError); a start whose reply was lost (a retry
          // then finds it RUNNING) took effect: it is RUNNING or EXITED with its own code, and checked like any other.
          const st = await stack.client.containerStatus(containerId).catch(() => undefined);
          if (st?.state === cri.ContainerState.CONTAINER_EXITED && st.reason === 'StartError') {
            startFailed = (err as Error).message.split('\n')[0]!.slice(0, 200);
            return;
          }
          if (st?.state === cri.ContainerState.CONTAINER_RUNNING || st?.state === cri.ContainerState.CONTAINER_EXITED) return;
          throw err;
        }
      });
      const startedAt = Date.now();
      const startError = async (): Promise<boolean> => {
        if (startFailed === undefined) return false;
        if (unknown) {
          await step('StopContainer', () => stack.client.stopContainer(containerId, 0));
          const st = await step('ContainerStatus', () => stack.client.containerStatus(containerId));
          if (st.state === cri.ContainerState.CONTAINER_EXITED) report.containersUnknown.push(`${containerId}: ${startFailed}`);
          else report.exitsWrong.push(`${containerId}: UNKNOWN, then ${cri.containerStateToJSON(st.state)} after StopContainer`);
          return true;
        }
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
        const exitedAt = ((): number | undefined => { try { return statSync(marker).mtimeMs; } catch { return undefined; } })();
        if (st.exitCode === code) {
          report.exitsReported++;
          if (exitedAt !== undefined && readopted(startedAt, exitedAt)) report.exitsReadopted++;
        } else if (st.exitCode === 255 && exitedAt !== undefined && wasDown(exitedAt, exitedAt)) report.exitsWhileDown.push(`${containerId}: exit ${code} while the sandboxer was down`);
        else report.exitsWrong.push(`${containerId}: exited with ${st.exitCode}, expected ${code} (reason ${st.reason || '-'}; ${exitedAt === undefined ? 'no exit marker' : `exited ${Math.round(exitedAt - t0)} ms in, sandboxer down ${downs.map((d) => `${Math.round(d.from - t0)}-${Math.round(d.to - t0)}`).join(',')}`})`);
      }
      where = 'StopPodSandbox';
      const stopFrom = Date.now();
      await step('StopPodSandbox', () => stack.client.stopPodSandbox(podId), lost);
      const stopTo = Date.now();
      if (!selfExit && !(await startError())) {
        where = 'ContainerStatus after stop';
        const st = await step('ContainerStatus', () => stack.client.containerStatus(containerId));
        // StopPodSandbox stops containers with no grace: SIGKILL.
        if (st.state === cri.ContainerState.CONTAINER_EXITED && st.exitCode === 137) {
          report.exitsReported++;
          if (readopted(startedAt, stopFrom)) report.exitsReadopted++;
        } else if (st.state === cri.ContainerState.CONTAINER_EXITED && st.exitCode === 255 && wasDown(stopFrom, stopTo)) report.exitsWhileDown.push(`${containerId}: killed by StopPodSandbox while the sandboxer was down`);
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
      const down = { from: Date.now(), to: Infinity };
      downs.push(down);
      try {
        await stack.sb.kill('SIGKILL');
        report.kills++;
        progress(`kill -9 #${report.kills} of the sandboxer (${report.cycles} cycles so far)`);
        await sleep(randomInt(o.downMs[0], o.downMs[1] + 1));
        await stack.sb.restart();
        down.to = Date.now();
      } finally {
        release();
      }
    }
  }

  /** containerd restarts at random moments spread over the run (kill -9, then the same root, state and sockets). */
  async function containerdRestarter(): Promise<void> {
    const n = o.containerdRestarts ?? 0;
    for (let i = 0; i < n; i++) {
      const at = t0 + ((i + 0.2 + Math.random() * 0.6) / n) * o.durationMs;
      await sleep(Math.max(0, at - Date.now()));
      if (o.signal?.aborted || Date.now() >= end) return;
      let release!: () => void;
      ctrdRestarting = new Promise((r) => { release = r; });
      try {
        // as on a node, the thin shim is on containerd's PATH: 2.1 resolves each task's runtime binary on reload
        const down = { from: Date.now(), to: Infinity };
        downs.push(down);
        await stack.ctrd.restart('SIGKILL', { PATH: `${shimDir()}:${process.env.PATH ?? '/usr/bin:/bin'}`, ...shimEnv('runc', path.join(stack.sbDir, 'relay.sock')) });
        down.to = Date.now();
        report.containerdRestarts++;
        progress(`containerd kill -9 + restart #${report.containerdRestarts} (${report.cycles} cycles so far)`);
      } finally {
        release();
      }
    }
  }

  try {
    const ticker = setInterval(() => progress(`${Math.round((Date.now() - t0) / 1000)} s: ${report.cycles} cycles, ${report.podsRemoved} pods removed, ${report.kills} kills, ${report.podsStuck.length} stuck`), 10_000);
    try {
      await Promise.all([killer(), containerdRestarter(), ...Array.from({ length: o.pods }, (_, w) => worker(w))]);
    } finally {
      clearInterval(ticker);
    }
    report.durationMs = Date.now() - t0;
    if (!stack.sb.running) await stack.sb.restart();

    for (const p of await stack.client.listPodSandbox()) {
      const what = `${p.id} ${p.metadata?.name} ${cri.podSandboxStateToJSON(p.state)}`;
      if (!ids.includes(p.id) && failedAttempts.has(p.metadata?.name ?? '')) {
        ids.push(p.id);
        try {
          await stack.client.stopPodSandbox(p.id);
          await stack.client.removePodSandbox(p.id);
          report.podsCollected.push(what);
          continue;
        } catch (err) {
          report.podsListedAtEnd.push(`${what}: removal failed: ${(err as Error).message.split('\n')[0]}`);
          continue;
        }
      }
      report.podsListedAtEnd.push(what);
    }
    report.containersListedAtEnd = (await stack.client.listContainers()).map((c) => `${c.id} ${cri.containerStateToJSON(c.state)}`);
    for (const p of await stack.client.listPodSandbox()) if (!ids.includes(p.id)) ids.push(p.id);
    // Every sandbox the sandboxer was asked for, also those whose Create/Start reply a kill cut off.
    for (const id of createdIds(stack.sb.rawLogs().slice(sbLogStart))) if (!ids.includes(id)) ids.push(id);
    // Processes take a moment to be reaped after RemovePodSandbox returns; forgotten sandboxes a few rounds of look-ups.
    const relay = stack.sb.relayPid();
    const deadline = Date.now() + FORGOTTEN_GRACE_MS;
    let procs = leftoverProcesses(stack.sb.pid, ids, [relay ?? -1]);
    while ((procs.length > 0 || sandboxDirs(stack.sbDir).length > 0) && Date.now() < deadline) {
      await sleep(200);
      procs = leftoverProcesses(stack.sb.pid, ids, [relay ?? -1]);
    }
    report.sandboxesForgotten = [...new Set([...stack.sb.rawLogs().slice(sbLogStart).matchAll(/"sandbox":"([0-9a-f]{64})"[^\n]*"msg":"containerd holds no record of this sandbox/g)].map((m) => m[1]!))];
    report.leaks = {
      processes: procs,
      mounts: [...leftoverMounts([stack.sbDir, path.join(stack.ctrd.dir, 'state')], ids), ...leftoverMounts([stack.ctrd.root], ids).filter((m) => /\/(rootfs|shm|netns|sandboxes)\b/.test(m))],
      cgroups: leftoverCgroups(ids),
      stateDirs: [...leftoverStateDirs([path.join(stack.sbDir, 'tasks'), '/run/kuasar/runc', '/run/kuasar/crun'], ids), ...sandboxDirs(stack.sbDir)],
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

/** Where the thin shim (also the task relay) is: KUASAR_TASK_RELAY when it names one, else the build's dist/bin. */
function shimDir(): string {
  const chosen = process.env.KUASAR_TASK_RELAY;
  return chosen && path.isAbsolute(chosen) ? path.dirname(chosen) : path.join(REPO_ROOT, 'dist/bin');
}

/** Human summary of a report (also the "counts" the issue asks for). */
export function churnSummary(r: ChurnReport): string {
  const leakCounts = Object.entries(r.leaks).map(([k, v]) => `${k} ${v.length}`).join(', ');
  const transient = Object.entries(r.transientErrors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  return [
    `churn: ${(r.durationMs / 1000).toFixed(0)} s, ${r.kills} sandboxer kill -9 + restart, ${r.containerdRestarts} containerd kill -9 + restart, ${r.cycles} pod cycles`,
    `pods: ${r.podsCreated} created, ${r.podsRemoved} removed cleanly, ${r.podsLost.length} lost, ${r.podsStuck.length} stuck, ${r.podsCollected.length} left by an interrupted RunPodSandbox and garbage-collected, ${r.podsListedAtEnd.length} still listed (containers listed: ${r.containersListedAtEnd.length})`,
    `sandboxes containerd forgot (Create/Start reply cut off by a kill) and the sandboxer removed by itself: ${r.sandboxesForgotten.length}`,
    `container exits: ${r.exitsReported} reported with the right code (${r.exitsReadopted} of them re-adopted across a restart), ${r.exitsWhileDown.length} while the sandboxer was down (255, documented), ${r.startErrors.length} StartError after a crash during StartContainer, ${r.containersUnknown.length} UNKNOWN after a containerd restart (stopped), ${r.exitsWrong.length} wrong or missing`,
    // Reported, not a failure: now and then the relay ends with a containerd connection still open that containerd
    // itself holds, from reloading tasks after its restart ("cleaning leaked shim process"; the relay already closes
    // the connections of a failed reload Connect). See packages/shim/README.md.
    `leaks: ${leakCounts}${r.relayFds ? `; task relay fds ${r.relayFds.start} → ${r.relayFds.end}${r.relayFds.end > r.relayFds.start ? ' (MORE than at the start)' : ''}` : ''}`,
    `retried errors: ${transient}; sandboxer error log lines: ${r.sandboxerErrors.length}`,
    ...[...r.podsLost.map((x) => `LOST ${x}`), ...r.exitsWhileDown.slice(0, 5).map((x) => `DOWN ${x}`), ...r.podsStuck.map((x) => `STUCK ${x}`), ...r.exitsWrong.map((x) => `EXIT ${x}`), ...r.podsListedAtEnd.map((x) => `LISTED ${x}`)].slice(0, 40),
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
  // The restart contract (docs/operations.md): every container's end is accounted for: its real code, 255 for an
  // exit while nothing could see it, or a StartError for a start the crash interrupted.
  check('containers whose end is not accounted for', r.podsCreated - r.exitsReported - r.exitsWhileDown.length - r.startErrors.length - r.containersUnknown.length - r.exitsWrong.length - r.podsStuck.length - r.podsLost.length);
  for (const [k, v] of Object.entries(r.leaks)) check(`leaked ${k}`, v.length);
  if (r.podsCreated === 0) out.push('no pod was created');
  return out;
}
