// The wasm kind: a pod is a name and a membership list. There is no pause container, no namespace and no process:
// its containers are modules in worker threads of this process, so a pod costs nothing while idle.
import type { google, task } from '@kuasar/api';
import {
  PodExit, addPodMember, podMembers, removeAllPodMembers, removePodMember, sandboxIdOfContainer, stopPodMembers, taskServicePodTasks,
  type Logger, type PodMember, type Sandbox, type SandboxExit, type SandboxStartResult, type Sandboxer,
} from '@kuasar/sandbox';
import { Code, TtrpcError, type OciSpec, type TaskHooks, type TaskService } from '@kuasar/task';
import { packWasmMetrics, type WasmEngine } from './wasm-engine';

/** CRI marks every container with its pod; containerd 2.x also writes the id to <bundle>/sandbox. */
export { CRI_SANDBOX_ID_ANNOTATION } from '@kuasar/sandbox';
export type { PodMember };

/** A pod this process knows. */
class Pod extends PodExit {
  constructor(readonly sandbox: Sandbox) {
    super();
  }
}

export class WasmSandboxer implements Sandboxer {
  private readonly logger: Logger;
  private readonly pods = new Map<string, Pod>();
  /** "<namespace>/<container>" -> the pod it joined in this process, so its removal touches one pod's records */
  private readonly memberOf = new Map<string, string>();
  private tasks: TaskService | undefined;
  private engine: WasmEngine | undefined;
  readonly hooks: TaskHooks;

  constructor(o: { logger: Logger }) {
    this.logger = o.logger.child({ component: 'wasm-sandboxer' });
    this.hooks = {
      prepareContainer: (req, spec, ns) => this.prepareContainer(req, spec, ns),
      containerRemoved: (id, ns) => this.containerRemoved(id, ns),
    };
  }

  /** Stop reaches the pod's containers through the task core, so their exits are reported the normal way. */
  attachTasks(service: TaskService): void {
    this.tasks = service;
  }

  /** Pod metrics are the sum of the members' usage. */
  attachEngine(engine: WasmEngine): void {
    this.engine = engine;
  }

  async create(sandbox: Sandbox): Promise<void> {
    this.pods.set(sandbox.id, new Pod(sandbox));
  }

  async start(sandbox: Sandbox): Promise<SandboxStartResult> {
    this.pod(sandbox);
    return { pid: 0 };
  }

  wait(sandbox: Sandbox): Promise<SandboxExit> {
    return this.pod(sandbox).exited;
  }

  async stop(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const pod = this.pod(sandbox);
    pod.stopping = true;
    // a module cannot catch a signal, so SIGTERM already ends it (143); SIGKILL is for what SIGTERM missed
    if (this.tasks) await stopPodMembers(this.members(sandbox), taskServicePodTasks(this.tasks), { timeoutSecs, logger: sandbox.logger });
    pod.resolveExit(0);
  }

  async shutdown(sandbox: Sandbox): Promise<void> {
    removeAllPodMembers(sandbox);
    this.pods.delete(sandbox.id);
  }

  /**
   * A pod holds nothing that can die, so every persisted pod is alive again after a restart. Its containers are
   * not: they ran in the old process's threads. The task core reports each of them exited (255) through the normal
   * exit path when it recovers its records, and containerd restarts or removes them.
   */
  async recover(sandbox: Sandbox): Promise<'alive' | 'dead'> {
    this.pods.set(sandbox.id, new Pod(sandbox));
    return 'alive';
  }

  /** The pod's containers summed: linear memory of their running modules (caps added up), module count as pids. */
  async metrics(sandbox: Sandbox): Promise<google.Any> {
    const total = { memoryBytes: 0, limitBytes: 0, modules: 0 };
    for (const m of this.members(sandbox)) {
      const u = this.engine?.usage(m.namespace, m.id);
      if (!u) continue;
      total.memoryBytes += u.memoryBytes;
      total.limitBytes += u.limitBytes;
      total.modules += u.modules;
    }
    return packWasmMetrics(total);
  }

  async status(sandbox: Sandbox): Promise<Record<string, unknown>> {
    return { containers: this.members(sandbox).map((m) => `${m.namespace}/${m.id}`) };
  }

  // ---- task hooks ------------------------------------------------------------------------------------------------


  private prepareContainer(req: task.CreateTaskRequest, spec: OciSpec, namespace: string): OciSpec {
    // no pods at all (`ctr run`): nothing to join, and no bundle read on the start path
    if (this.pods.size === 0) return spec;
    const id = sandboxIdOfContainer(req.bundle, spec);
    const pod = id !== undefined ? this.pods.get(id) : undefined;
    // no pod of ours (ctr run, CRI 1.x's pause task): a standalone task
    if (!pod) return spec;
    if (pod.sandbox.record.state !== 'ready' || !pod.accepting) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${pod.sandbox.id} is not running`);
    }
    // membership on disk: a restarted sandboxer can still stop the pod's containers
    addPodMember(pod.sandbox, { namespace, id: req.id, bundle: req.bundle });
    this.memberOf.set(`${namespace}/${req.id}`, pod.sandbox.id);
    return spec;
  }

  private containerRemoved(id: string, namespace: string): void {
    const key = `${namespace}/${id}`;
    const podId = this.memberOf.get(key);
    this.memberOf.delete(key);
    const pod = podId === undefined ? undefined : this.pods.get(podId);
    if (pod) return removePodMember(pod.sandbox, { namespace, id });
    // joined before a restart, or standalone: any pod's records may hold it
    for (const p of this.pods.values()) removePodMember(p.sandbox, { namespace, id });
  }

  // ---- internals -------------------------------------------------------------------------------------------------

  private pod(sandbox: Sandbox): Pod {
    let pod = this.pods.get(sandbox.id);
    if (!pod) {
      pod = new Pod(sandbox);
      this.pods.set(sandbox.id, pod);
    }
    return pod;
  }

  members(sandbox: Sandbox): PodMember[] {
    return podMembers(sandbox);
  }
}
