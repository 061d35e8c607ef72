import type { task, google } from '@kuasar/api';
import {
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  SandboxError,
  type Logger,
  type Sandbox,
  type SandboxExit,
  type SandboxStartResult,
  type Sandboxer,
  addPodMember,
  podMembers,
  removeAllPodMembers,
  removePodMember,
  type PodMember,
  sandboxIdOfContainer,
  KILL_WAIT_MS,
  PodExit,
  stopPodMembers,
  removeLostMembers,
  type PodTasks,
} from '@kuasar/sandbox';
import { Reaper } from '@kuasar/sys';
import { Code, TtrpcError, type ContainerRef, type Engine, type OciSpec as TaskOciSpec, type TaskHooks } from '@kuasar/task';
import { DEFAULT_ENGINE_OPTIONS, EngineOptionsError, engineOptionsFromAny, type EngineOptions } from './engine-options';
import { withEngineAnnotation } from './engine-select';
import { killPodCgroup, podMetrics, removePodCgroup } from './pod-cgroup';
import {
  PodNamespaceError,
  inspectPodNamespaces,
  setUpPodNamespaces,
  tearDownPodNamespaces,
  type PodNamespaces,
  type PodTools,
} from './pod-namespaces';
import { PodSettingsError, podSettings, type PodSettings } from './pod-settings';
import { isProcessAlive } from './proc';
import { SpecRewriteError, podSpecContext, rewriteContainerSpec, type OciSpec } from './spec-rewrite';

/**
 * The runc kind: one resident process serves every pod. A pod is a set of namespaces held by bind mounts (plus
 * a catatonit holder when the pod shares its PID namespace), a cgroup parent, and the containers the task core
 * runs in them; there is no pause container and no per-pod shim.
 */

/** CRI marks every container with its pod; containerd 2.x also writes the id to <bundle>/sandbox. */
export { CRI_SANDBOX_ID_ANNOTATION } from '@kuasar/sandbox';
export const SANDBOX_ID_ANNOTATION = 'io.kuasar.sandbox-id';
/** `sandbox` on CRI's pause container, `container` on the others. */
export const CRI_CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';
const SIGKILL = 9;
/** A container of a pod, as recorded when it joined (enough to signal it without the task core's tables). */
export type { PodMember };

export { taskServicePodTasks, type PodTasks } from '@kuasar/sandbox';

/**
 * PodTasks through the engine alone, for wiring where the sandboxer gets the engine but not the task core (the
 * framework builds the core). The core still reaps the processes and reports their exits; this only signals them
 * and watches `state` until the runtime reports the container stopped or gone.
 */
export function enginePodTasks(engine: Engine, pollMs = 100): PodTasks {
  const ref = (m: PodMember): ContainerRef => ({ id: m.id, namespace: m.namespace, bundle: m.bundle });
  const gone = async (m: PodMember): Promise<boolean> => {
    try {
      return (await engine.state(ref(m))).status === 'stopped';
    } catch {
      return true; // the runtime no longer knows it
    }
  };
  return {
    async kill(m, signal) {
      if (await gone(m)) return;
      try {
        await engine.kill(ref(m), undefined, signal, true);
      } catch (err) {
        if (!(await gone(m))) throw err;
      }
    },
    async waitExit(m, signal) {
      while (!(await gone(m))) {
        if (signal.aborted) throw new Error('wait aborted');
        await new Promise((r) => setTimeout(r, pollMs));
      }
    },
    async remove(m) {
      await engine.delete(ref(m), { force: true });
    },
  };
}

/** The kind's state in sandbox.json (`kindState`). */
interface RuncPodState {
  settings: PodSettings;
  engine: EngineOptions;
  namespaces?: PodNamespaces;
}

/** A pod this process knows: its exit, and how its holder is watched. */
class PodRuntime extends PodExit {
  poll: NodeJS.Timeout | undefined;

  constructor(readonly sandbox: Sandbox) {
    super();
  }

  override resolveExit(exitStatus: number): void {
    this.close();
    super.resolveExit(exitStatus);
  }

  close(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }
}

export interface RuncSandboxerOptions {
  logger: Logger;
  /** Engine options from the sandboxer config; a pod's CRI handler options and a task's options override them. */
  engine?: EngineOptions;
  tools?: Partial<PodTools>;
  /** How often a holder that is not our child (after a restart) is checked. Default 1000 ms. */
  holderPollMs?: number;
}

function stateOf(sandbox: Sandbox): RuncPodState {
  const s = sandbox.record.kindState as Partial<RuncPodState>;
  if (!s.settings || !s.engine) throw new InternalError(`sandbox ${sandbox.id} has no runc pod state`);
  return s as RuncPodState;
}

function toSandboxError(err: unknown): unknown {
  if (err instanceof SandboxError) return err;
  if (err instanceof PodSettingsError || err instanceof EngineOptionsError || err instanceof SpecRewriteError) {
    return new InvalidArgumentError(err.message, { cause: err });
  }
  if (err instanceof PodNamespaceError) {
    if (err.code === 'invalid_argument') return new InvalidArgumentError(err.message, { cause: err });
    if (err.code === 'tool_missing') return new FailedPreconditionError(err.message, { cause: err });
    return new InternalError(err.message, { cause: err });
  }
  return err;
}

export class RuncSandboxer implements Sandboxer {
  private readonly logger: Logger;
  private readonly defaults: EngineOptions;
  private readonly tools: Partial<PodTools>;
  private readonly holderPollMs: number;
  private readonly pods = new Map<string, PodRuntime>();
  /** Reaps holders re-parented to us (the task core makes this process a subreaper); only tracked pids. */
  private readonly reaper = new Reaper();
  private readonly holders = new Map<number, PodRuntime>();
  private tasks: PodTasks | undefined;

  /** Hooks for the task core: containers of a pod join it; others run as standalone tasks. */
  readonly hooks: TaskHooks;

  constructor(o: RuncSandboxerOptions) {
    this.logger = o.logger.child({ component: 'runc-sandboxer' });
    this.defaults = o.engine ?? DEFAULT_ENGINE_OPTIONS;
    this.tools = o.tools ?? {};
    this.holderPollMs = o.holderPollMs ?? 1000;
    this.reaper.on('exit', (pid, status) => this.holderExited(pid, status));
    this.reaper.on('lost', (pid) => this.holderExited(pid, 255));
    this.reaper.on('error', (err) => this.logger.error({ err: err.message }, 'holder reaper error'));
    this.hooks = {
      prepareContainer: (req, spec, ns) => this.prepareContainer(req, spec as OciSpec, ns) as Promise<TaskOciSpec>,
      containerRemoved: (id, ns) => this.containerRemoved(id, ns),
    };
  }

  /** How Stop reaches the pods' containers (enginePodTasks or taskServicePodTasks); without it Stop only tears down. */
  attachTasks(tasks: PodTasks): void {
    this.tasks = tasks;
  }

  // ---- Sandboxer ------------------------------------------------------------------------------------------------

  async create(sandbox: Sandbox): Promise<void> {
    try {
      const r = sandbox.record;
      const settings = podSettings(sandbox.id, r.config, r.netnsPath);
      const engine = engineOptionsFromAny(r.sandbox?.runtime?.options, this.defaults);
      const state: RuncPodState = { settings, engine };
      sandbox.record.kindState = state as unknown as Record<string, unknown>;
      this.pods.set(sandbox.id, new PodRuntime(sandbox));
    } catch (err) {
      throw toSandboxError(err);
    }
  }

  async start(sandbox: Sandbox): Promise<SandboxStartResult> {
    const state = stateOf(sandbox);
    const rt = this.runtime(sandbox);
    let ns: PodNamespaces;
    try {
      ns = await setUpPodNamespaces(
        sandbox.dir,
        {
          id: sandbox.id,
          isolation: state.settings.isolation,
          ...(state.settings.hostname ? { hostname: state.settings.hostname } : {}),
          ...(state.settings.netnsPath ? { netnsPath: state.settings.netnsPath } : {}),
        },
        { tools: this.tools, logger: sandbox.logger },
      );
    } catch (err) {
      throw toSandboxError(err);
    }
    state.namespaces = ns;
    if (ns.holder) {
      // The holder's parent shell has exited: the holder is re-parented to us when we are a subreaper.
      this.holders.set(ns.holder.pid, rt);
      this.reaper.track(ns.holder.pid);
      this.pollHolder(rt, ns);
    }
    // containerd 2.x CRI only stores this pid and builds /proc/<pid>/ns/{net,ipc,uts,pid} paths from it for
    // container specs (container_create.go, WithPodNamespaces); prepareContainer replaces those with the pod's
    // files, so a pod without a holder honestly reports 0.
    return { pid: ns.holder?.pid ?? 0 };
  }

  wait(sandbox: Sandbox): Promise<SandboxExit> {
    return this.runtime(sandbox).exited;
  }

  async stop(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const rt = this.runtime(sandbox);
    rt.stopping = true;
    await this.stopContainers(sandbox, timeoutSecs);
    // Anything left in the pod's cgroup belongs to no container the task core can still signal (e.g. containerd
    // forgot it and removed its bundle); the pod ending ends it too.
    const swept = await this.sweepPodCgroup(sandbox, KILL_WAIT_MS);
    if (swept.killed.length > 0) sandbox.logger.warn({ pids: swept.killed }, 'killed processes left in the pod cgroup');
    if (swept.left.length > 0) sandbox.logger.warn({ pids: swept.left }, 'processes still in the pod cgroup after SIGKILL');
    const holder = stateOf(sandbox).namespaces?.holder;
    try {
      await tearDownPodNamespaces(sandbox.dir, { logger: sandbox.logger });
    } catch (err) {
      throw toSandboxError(err);
    }
    // The holder is gone now (teardown waits for it); a reaped status, if it came first, wins.
    rt.resolveExit(holder ? 128 + SIGKILL : 0);
  }

  async shutdown(sandbox: Sandbox): Promise<void> {
    const rt = this.pods.get(sandbox.id);
    rt?.close();
    const errors: string[] = [];
    // CRI deletes a pod's containers before Shutdown; members still listed were lost by containerd. A pod made from
    // containerd 1.x's pause task goes when that task is deleted: CRI deletes the other tasks itself once it sees
    // the exits the stop caused, so their records stay for it.
    const lost = sandbox.record.task ? [] : this.members(sandbox);
    if (this.tasks) await removeLostMembers(lost, this.tasks, sandbox.logger);
    try {
      await tearDownPodNamespaces(sandbox.dir, { logger: sandbox.logger });
    } catch (err) {
      errors.push((err as Error).message);
    }
    removeAllPodMembers(sandbox);
    const settings = (sandbox.record.kindState as Partial<RuncPodState>).settings;
    if (settings?.ownCgroupParent) {
      const busy = removePodCgroup(settings.cgroupParent);
      if (busy.length > 0) sandbox.logger.warn({ busy }, 'pod cgroup still in use; left in place');
    }
    for (const [pid, owner] of this.holders) {
      if (owner === rt) {
        this.holders.delete(pid);
        this.reaper.untrack(pid);
      }
    }
    this.pods.delete(sandbox.id);
    if (errors.length > 0) throw new InternalError(`shutdown of ${sandbox.id}: ${errors.join('; ')}`);
  }

  async recover(sandbox: Sandbox): Promise<'alive' | 'dead'> {
    const r = sandbox.record;
    if (!(r.kindState as Partial<RuncPodState>).settings) return 'dead';
    const found = inspectPodNamespaces(sandbox.dir);
    if (r.state === 'created') {
      // Not started: nothing may exist yet. Anything half-made by an interrupted Start is cleaned as dead.
      if (found.state !== 'absent') return 'dead';
      this.pods.set(sandbox.id, new PodRuntime(sandbox));
      return 'alive';
    }
    if (found.state !== 'alive') {
      sandbox.logger.info({ reason: found.state === 'dead' ? found.reason : 'no namespaces' }, 'runc pod is dead');
      return 'dead';
    }
    const rt = new PodRuntime(sandbox);
    this.pods.set(sandbox.id, rt);
    stateOf(sandbox).namespaces = found.record;
    // No longer our child (a new sandboxer process): watch the holder by polling only.
    if (found.record.holder) this.pollHolder(rt, found.record);
    return 'alive';
  }

  async metrics(sandbox: Sandbox): Promise<google.Any> {
    return podMetrics(stateOf(sandbox).settings.cgroupParent);
  }

  async status(sandbox: Sandbox): Promise<Record<string, unknown>> {
    const s = sandbox.record.kindState as Partial<RuncPodState>;
    return {
      isolation: s.settings?.isolation,
      cgroupParent: s.settings?.cgroupParent,
      engine: s.engine?.binary,
      namespaces: s.namespaces?.paths,
      holderPid: s.namespaces?.holder?.pid,
      containers: this.members(sandbox).map((m) => `${m.namespace}/${m.id}`),
    };
  }

  // ---- task hooks -----------------------------------------------------------------------------------------------


  private async prepareContainer(req: task.CreateTaskRequest, spec: OciSpec, namespace: string): Promise<OciSpec> {
    const sandboxId = sandboxIdOfContainer(req.bundle, spec);
    const rt = sandboxId !== undefined ? this.pods.get(sandboxId) : undefined;
    const log = this.logger.child({ id: req.id, namespace, sandbox: sandboxId });
    try {
      if (!rt) {
        // No pod of ours (ctr run, a pod another sandboxer serves): a standalone task with the namespaces its spec
        // asks for. containerd 1.x CRI's pause task is not one: the framework made it a pod before calling us.
        if (sandboxId !== undefined) log.debug('container of a pod this sandboxer does not know; running it standalone');
        return withEngineAnnotation(spec, engineOptionsFromAny(req.options, this.defaults));
      }
      const sandbox = rt.sandbox;
      // containerd 1.x: the pod was made from this very task (the framework's task-sandbox.ts). The pause joins the
      // pod's namespaces like any container and keeps the pid namespace CRI gave it, which the pod's POD-pid
      // containers join through /proc/<pause pid>/ns/pid; it is the pod itself, not one of its members.
      const isPodTask = sandbox.record.task?.id === req.id && sandbox.record.task.namespace === namespace;
      if (sandbox.record.state !== 'ready' || !rt.accepting) {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${sandbox.id} is not running`);
      }
      const state = stateOf(sandbox);
      if (!state.namespaces) throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${sandbox.id} has no namespaces`);
      const engine = engineOptionsFromAny(req.options, state.engine);
      const ctx = podSpecContext(state.namespaces, sandbox.record.pid, state.settings.cgroupParent);
      const out = rewriteContainerSpec(spec, req.id, ctx);
      out.annotations = { ...(out.annotations ?? {}), [SANDBOX_ID_ANNOTATION]: sandbox.id };
      if (!isPodTask) addPodMember(sandbox, { namespace, id: req.id, bundle: req.bundle });
      log.debug({ engine: engine.binary, podTask: isPodTask }, 'container joins its pod');
      return withEngineAnnotation(out, engine);
    } catch (err) {
      if (err instanceof TtrpcError) throw err;
      if (err instanceof EngineOptionsError || err instanceof SpecRewriteError) throw new TtrpcError(Code.INVALID_ARGUMENT, err.message);
      throw err;
    }
  }

  private containerRemoved(id: string, namespace: string): void {
    for (const rt of this.pods.values()) removePodMember(rt.sandbox, { namespace, id });
  }

  // ---- internals ------------------------------------------------------------------------------------------------

  private runtime(sandbox: Sandbox): PodRuntime {
    let rt = this.pods.get(sandbox.id);
    if (!rt) {
      rt = new PodRuntime(sandbox);
      this.pods.set(sandbox.id, rt);
    }
    return rt;
  }

  private members(sandbox: Sandbox): PodMember[] {
    return podMembers(sandbox);
  }

  /** SIGTERM every container, SIGKILL what is left after the timeout, then wait briefly for the exits. */
  private async stopContainers(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const members = this.members(sandbox);
    if (members.length === 0) return;
    if (!this.tasks) {
      sandbox.logger.warn({ containers: members.length }, 'no task core attached; containers are not stopped');
      return;
    }
    // a container the runtime can no longer signal (its bundle is gone) is still in the pod cgroup
    await stopPodMembers(members, this.tasks, { timeoutSecs, logger: sandbox.logger, afterKill: () => this.sweepPodCgroup(sandbox, 0) });
  }

  /**
   * killPodCgroup, but only on a cgroup that is the pod's alone: our default /kuasar/<id>, or a parent named after
   * the pod's uid as kubelet names pod cgroups (pod<uid>, with '_' for '-' under systemd). A shared parent a client
   * passed (say "/") is never swept.
   */
  private sweepPodCgroup(sandbox: Sandbox, waitMs: number): Promise<{ killed: number[]; left: number[] }> {
    const settings = stateOf(sandbox).settings;
    const uid = sandbox.record.config?.metadata?.uid ?? '';
    const last = settings.cgroupParent.split('/').filter(Boolean).pop() ?? '';
    const podsOwn = settings.ownCgroupParent || (uid !== '' && (last.includes(`pod${uid}`) || last.includes(`pod${uid.replace(/-/g, '_')}`)));
    if (!podsOwn) return Promise.resolve({ killed: [], left: [] });
    return killPodCgroup(settings.cgroupParent, waitMs);
  }

  private holderExited(pid: number, status: number): void {
    const rt = this.holders.get(pid);
    if (!rt) return;
    this.holders.delete(pid);
    if (!rt.hasExited) rt.sandbox.logger.info({ pid, status }, 'pod holder exited');
    rt.resolveExit(status);
  }

  /**
   * Poll as well as reap: after a restart the holder is not our child, and a holder re-parented to init (we were
   * not a subreaper) is never ours. A zombie counts as exited.
   */
  private pollHolder(rt: PodRuntime, ns: PodNamespaces): void {
    const holder = ns.holder;
    if (!holder) return;
    rt.poll = setInterval(() => {
      if (isProcessAlive(holder)) return;
      // A zombie child of ours: reap it now so its real status (not 255) is reported.
      if (this.reaper.has(holder.pid)) this.reaper.check();
      if (!rt.hasExited) rt.sandbox.logger.info({ pid: holder.pid }, 'pod holder is gone; exit status unknown');
      rt.resolveExit(255);
    }, this.holderPollMs);
    rt.poll.unref();
  }

  /** Stops timers and the reaper; pods keep running (this is not a Shutdown). */
  close(): void {
    for (const rt of this.pods.values()) rt.close();
    this.reaper.close();
  }
}
