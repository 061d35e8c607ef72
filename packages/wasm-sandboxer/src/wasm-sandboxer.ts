// The wasm kind: a pod is a name and a membership list. There is no pause container, no namespace and no process:
// its containers are modules in worker threads of this process, so a pod costs nothing while idle.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { task } from '@kuasar/api';
import type { google } from '@kuasar/api';
import { sandboxIdOfContainer, type Logger, type Sandbox, type SandboxExit, type SandboxStartResult, type Sandboxer } from '@kuasar/sandbox';
import { Code, TtrpcError, type OciSpec, type TaskHooks, type TaskService } from '@kuasar/task';
import { packWasmMetrics, type WasmEngine } from './wasm-engine';

/** CRI marks every container with its pod; containerd 2.x also writes the id to <bundle>/sandbox. */
export { CRI_SANDBOX_ID_ANNOTATION } from '@kuasar/sandbox';
const MEMBERS_DIR = 'containers';
const SIGTERM = 15;
const SIGKILL = 9;
/** how long Stop waits for the containers' exits after SIGKILL (a killed module is reported within ~250 ms) */
const KILL_WAIT_MS = 5_000;

/** A container of a pod, as recorded on disk when it joined. */
export interface PodMember {
  namespace: string;
  id: string;
}

/** A pod this process knows. */
class Pod {
  readonly exited: Promise<SandboxExit>;
  private settle!: (e: SandboxExit) => void;
  done = false;
  /** set by Stop: a container created from now on could escape its kill */
  stopping = false;

  constructor(readonly sandbox: Sandbox) {
    this.exited = new Promise((r) => (this.settle = r));
  }

  resolveExit(exitStatus: number): void {
    if (this.done) return;
    this.done = true;
    this.settle({ exitStatus, exitedAt: new Date() });
  }
}

export class WasmSandboxer implements Sandboxer {
  private readonly logger: Logger;
  private readonly pods = new Map<string, Pod>();
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
    const members = this.members(sandbox);
    const tasks = this.tasks;
    if (members.length > 0 && tasks) {
      // a module cannot catch a signal, so SIGTERM already ends it (143); SIGKILL is for what SIGTERM missed
      if (timeoutSecs > 0) await this.signalAll(tasks, members, SIGTERM);
      await this.signalAll(tasks, members, SIGKILL);
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), KILL_WAIT_MS);
      try {
        await Promise.all(members.map((m) => this.waitExit(tasks, m, ac.signal)));
      } catch {
        sandbox.logger.warn('containers still running after SIGKILL');
      } finally {
        clearTimeout(timer);
      }
    }
    pod.resolveExit(0);
  }

  async shutdown(sandbox: Sandbox): Promise<void> {
    fs.rmSync(path.join(sandbox.dir, MEMBERS_DIR), { recursive: true, force: true });
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
    const id = sandboxIdOfContainer(req.bundle, spec);
    const pod = id !== undefined ? this.pods.get(id) : undefined;
    // no pod of ours (ctr run, CRI 1.x's pause task): a standalone task
    if (!pod) return spec;
    if (pod.sandbox.record.state !== 'ready' || pod.done || pod.stopping) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${pod.sandbox.id} is not running`);
    }
    // membership on disk: a restarted sandboxer can still stop the pod's containers
    fs.mkdirSync(path.join(pod.sandbox.dir, MEMBERS_DIR), { recursive: true, mode: 0o700 });
    fs.writeFileSync(this.memberFile(pod.sandbox, { namespace, id: req.id }), '');
    return spec;
  }

  private containerRemoved(id: string, namespace: string): void {
    for (const pod of this.pods.values()) fs.rmSync(this.memberFile(pod.sandbox, { namespace, id }), { force: true });
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

  // '~' never appears in containerd identifiers, so "<namespace>~<id>" is unambiguous
  private memberFile(sandbox: Sandbox, m: PodMember): string {
    return path.join(sandbox.dir, MEMBERS_DIR, `${m.namespace}~${m.id}`);
  }

  members(sandbox: Sandbox): PodMember[] {
    let names: string[];
    try {
      names = fs.readdirSync(path.join(sandbox.dir, MEMBERS_DIR));
    } catch {
      return [];
    }
    return names.map((n) => n.split('~')).filter((p) => p.length === 2).map(([namespace, id]) => ({ namespace: namespace!, id: id! }));
  }

  private async signalAll(tasks: TaskService, members: PodMember[], signal: number): Promise<void> {
    await Promise.all(
      members.map(async (m) => {
        try {
          await tasks.kill(task.KillRequest.fromPartial({ id: m.id, signal, all: true }), { namespace: m.namespace });
        } catch (err) {
          // already exited (NOT_FOUND "process already finished") or deleted: nothing to stop
          if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) {
            this.logger.warn({ container: m.id, signal, err: (err as Error).message }, 'kill failed');
          }
        }
      }),
    );
  }

  private async waitExit(tasks: TaskService, m: PodMember, signal: AbortSignal): Promise<void> {
    try {
      await tasks.wait(task.WaitRequest.fromPartial({ id: m.id }), { namespace: m.namespace, signal });
    } catch (err) {
      if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
    }
  }
}
