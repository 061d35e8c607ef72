// The app-kernel kind: one application kernel (a gVisor sandbox) per pod. containerd 2.x runs no pause container,
// so Controller.Start boots the pod's kernel itself with a root container whose only process is catatonit in
// pause mode — a task inside the sandbox, not a host process: the host sees only runsc's own sandbox, gofer and
// stub processes. App containers join that kernel through runsc's multi-container annotations (prepareContainer).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { google } from '@kuasar/api';
import {
  FailedPreconditionError, InternalError, InvalidArgumentError, SandboxError,
  type Logger, type Sandbox, type SandboxExit, type SandboxStartResult, type Sandboxer,
  addPodMember, podMembers, removeAllPodMembers, removePodMember,
  sandboxIdOfContainer, PodExit, stopPodMembers, type PodMember, type PodTasks,
} from '@kuasar/sandbox';
import {
  PodSettingsError, SpecRewriteError, podCgroupsPath, podMetrics, podSettings, removePodCgroup,
  type PodSettings,
} from '@kuasar/runc-sandboxer';
import { Code, TtrpcError, type OciSpec, type TaskHooks } from '@kuasar/task';
import type { task } from '@kuasar/api';
import { isProcessAlive, isRunning, readProcessStat } from '@kuasar/sys';
import { CRI_CONTAINER_TYPE, CRI_SANDBOX_ID, POD_ANNOTATION } from './runsc-engine';
import type { SandboxEngine } from './sandbox-engine';

const SIGTERM = 15;
const SIGKILL = 9;
const ROOT_BUNDLE = 'sandbox';

/** The kind's state in sandbox.json (`kindState`). */
interface QuarkPodState {
  settings: PodSettings;
  /** runsc-sandbox pid and its start time (to tell it from a reused pid after a restart) */
  sandboxPid?: number;
  sandboxStart?: string;
}

export interface QuarkSandboxerOptions {
  logger: Logger;
  engine: SandboxEngine;
  /** static binary run as the root container's init, with -P (catatonit's pause mode) */
  pause: string;
  /**
   * The id the engine's runtime knows a containerd sandbox id by, for the sandbox-id annotation it reads (gVisor:
   * runscId); default: the containerd id.
   */
  runtimeId?: (id: string) => string;
}

function stateOf(sandbox: Sandbox): QuarkPodState {
  const s = sandbox.record.kindState as Partial<QuarkPodState>;
  if (!s.settings) throw new InternalError(`sandbox ${sandbox.id} has no quark pod state`);
  return s as QuarkPodState;
}

function toSandboxError(err: unknown): unknown {
  if (err instanceof SandboxError) return err;
  if (err instanceof PodSettingsError || err instanceof SpecRewriteError) return new InvalidArgumentError(err.message, { cause: err });
  if (err instanceof TtrpcError) {
    if (err.code === Code.FAILED_PRECONDITION) return new FailedPreconditionError(err.message, { cause: err });
    if (err.code === Code.INVALID_ARGUMENT) return new InvalidArgumentError(err.message, { cause: err });
    return new InternalError(err.message, { cause: err });
  }
  return err;
}

/** The pod's root container: catatonit -P, read-only bind-mounted into an empty read-only rootfs. */
export function sandboxSpec(id: string, rootfs: string, pause: string, s: PodSettings): OciSpec {
  const namespaces: { type: string; path?: string }[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  // network=host in runsc: the sandbox uses the host stack of whatever netns it runs in — the pod's
  if (s.netnsPath) namespaces.push({ type: 'network', path: s.netnsPath });
  else if (s.isolation.network === 'pod') namespaces.push({ type: 'network' });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/pause', '-P'],
      env: ['PATH=/'],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: true },
    ...(s.hostname ? { hostname: s.hostname } : {}),
    mounts: [{ destination: '/pause', type: 'bind', source: pause, options: ['rbind', 'ro'] }],
    annotations: { [CRI_CONTAINER_TYPE]: 'sandbox', [CRI_SANDBOX_ID]: id, [POD_ANNOTATION]: id },
    linux: { namespaces, cgroupsPath: podCgroupsPath(undefined, id, s.cgroupParent) },
  } as OciSpec;
}

/** A pod this process knows. */
class PodRuntime extends PodExit {
  constructor(readonly sandbox: Sandbox) {
    super();
  }
}

export class QuarkSandboxer implements Sandboxer {
  private readonly logger: Logger;
  private readonly engine: SandboxEngine;
  private readonly pause: string;
  private readonly runtimeId: (id: string) => string;
  private readonly pods = new Map<string, PodRuntime>();
  private tasks: PodTasks | undefined;
  readonly hooks: TaskHooks;

  constructor(o: QuarkSandboxerOptions) {
    this.logger = o.logger.child({ component: 'quark-sandboxer' });
    this.engine = o.engine;
    this.pause = o.pause;
    this.runtimeId = o.runtimeId ?? ((id) => id);
    this.hooks = {
      prepareContainer: (req, spec, ns) => this.prepareContainer(req, spec, ns),
      containerRemoved: (id, ns) => this.containerRemoved(id, ns),
    };
  }

  /** How Stop reaches the pod's app containers (runc-sandboxer's taskServicePodTasks). */
  attachTasks(tasks: PodTasks): void {
    this.tasks = tasks;
  }

  async create(sandbox: Sandbox): Promise<void> {
    try {
      const r = sandbox.record;
      const settings = podSettings(sandbox.id, r.config, r.netnsPath);
      sandbox.record.kindState = { settings } as unknown as Record<string, unknown>;
      this.pods.set(sandbox.id, new PodRuntime(sandbox));
    } catch (err) {
      throw toSandboxError(err);
    }
  }

  async start(sandbox: Sandbox): Promise<SandboxStartResult> {
    const state = stateOf(sandbox);
    const rt = this.runtime(sandbox);
    const bundle = path.join(sandbox.dir, ROOT_BUNDLE);
    const rootfs = path.join(bundle, 'rootfs');
    fs.mkdirSync(rootfs, { recursive: true, mode: 0o755 });
    fs.writeFileSync(path.join(rootfs, 'pause'), ''); // bind-mount target in the read-only rootfs
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(sandboxSpec(sandbox.id, rootfs, this.pause, state.settings)));
    let pid: number;
    try {
      ({ pid } = await this.engine.startSandbox(sandbox.id, bundle));
    } catch (err) {
      throw toSandboxError(err);
    }
    state.sandboxPid = pid;
    const start = readProcessStat(pid)?.startTime;
    if (start) state.sandboxStart = start;
    void this.engine.sandboxExited(pid).then((status) => {
      if (!rt.hasExited) sandbox.logger.info({ pid, status }, 'pod sandbox exited');
      rt.resolveExit(status);
    });
    // CRI builds /proc/<pid>/ns paths from this pid: the sandbox's own namespaces (prepareContainer drops them for
    // app containers, which live in the sandbox's kernel and need none of the host's)
    return { pid };
  }

  wait(sandbox: Sandbox): Promise<SandboxExit> {
    return this.runtime(sandbox).exited;
  }

  async stop(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const rt = this.runtime(sandbox);
    rt.stopping = true;
    await this.stopContainers(sandbox, timeoutSecs);
    const bundle = path.join(sandbox.dir, ROOT_BUNDLE);
    // catatonit -P exits on SIGTERM; the kernel (sandbox) goes with its root container
    await this.engine.killSandbox(sandbox.id, bundle, SIGTERM).catch(() => undefined);
    const pid = stateOf(sandbox).sandboxPid ?? 0;
    const gone = await Promise.race([rt.exited.then(() => true), delay(2000).then(() => false)]);
    if (!gone) {
      await this.engine.destroySandbox(sandbox.id, bundle);
      // a reaped status, when it comes in time, wins over the one we assume for a killed sandbox
      await Promise.race([rt.exited, delay(1000)]);
      if (!isRunning(pid)) rt.resolveExit(128 + SIGKILL);
    }
  }

  async shutdown(sandbox: Sandbox): Promise<void> {
    const errors: string[] = [];
    try {
      await this.engine.destroySandbox(sandbox.id, path.join(sandbox.dir, ROOT_BUNDLE));
    } catch (err) {
      errors.push((err as Error).message);
    }
    removeAllPodMembers(sandbox);
    fs.rmSync(path.join(sandbox.dir, ROOT_BUNDLE), { recursive: true, force: true });
    const settings = (sandbox.record.kindState as Partial<QuarkPodState>).settings;
    if (settings?.ownCgroupParent) {
      const busy = removePodCgroup(settings.cgroupParent);
      if (busy.length > 0) sandbox.logger.warn({ busy }, 'pod cgroup still in use; left in place');
    }
    this.pods.get(sandbox.id)?.resolveExit(255);
    this.pods.delete(sandbox.id);
    if (errors.length > 0) throw new InternalError(`shutdown of ${sandbox.id}: ${errors.join('; ')}`);
  }

  async recover(sandbox: Sandbox): Promise<'alive' | 'dead'> {
    const r = sandbox.record;
    const s = r.kindState as Partial<QuarkPodState>;
    if (!s.settings) return 'dead';
    if (r.state === 'created') {
      // an interrupted Start may have left a half-made sandbox: clean it as dead
      if (fs.existsSync(this.engine.podStateDir(sandbox.id))) return 'dead';
      this.pods.set(sandbox.id, new PodRuntime(sandbox));
      return 'alive';
    }
    const pid = s.sandboxPid ?? 0;
    if (s.sandboxStart !== undefined ? !isProcessAlive({ pid, startTime: s.sandboxStart }) : !isRunning(pid)) {
      sandbox.logger.info({ pid }, 'pod sandbox is gone');
      return 'dead';
    }
    const rt = new PodRuntime(sandbox);
    this.pods.set(sandbox.id, rt);
    void this.engine.sandboxExited(pid).then((status) => rt.resolveExit(status));
    return 'alive';
  }

  async metrics(sandbox: Sandbox): Promise<google.Any> {
    // the pod's cgroup parent holds the sandbox cgroup (runsc-sandbox, gofers, stubs): the pod's real host cost
    return podMetrics(stateOf(sandbox).settings.cgroupParent);
  }

  async status(sandbox: Sandbox): Promise<Record<string, unknown>> {
    const s = sandbox.record.kindState as Partial<QuarkPodState>;
    return {
      engine: 'runsc',
      sandboxPid: s.sandboxPid,
      cgroupParent: s.settings?.cgroupParent,
      netns: s.settings?.netnsPath,
      containers: this.members(sandbox).map((m) => `${m.namespace}/${m.id}`),
    };
  }

  // ---- task hooks --------------------------------------------------------------------------------------------------

  private async prepareContainer(req: task.CreateTaskRequest, spec: OciSpec, namespace: string): Promise<OciSpec> {
    const sandboxId = sandboxIdOfContainer(req.bundle, spec);
    const rt = sandboxId !== undefined ? this.pods.get(sandboxId) : undefined;
    if (!rt) {
      // not one of our pods (ctr run; containerd 1.x CRI, whose pause container is a task): runsc's own annotations,
      // if any, decide (no container type = a sandbox of its own)
      if (sandboxId !== undefined) this.logger.info({ id: req.id, sandbox: sandboxId }, 'sandbox is not a quark pod of this sandboxer; running the container standalone');
      return this.joinByRuntimeId(spec);
    }
    const sandbox = rt.sandbox;
    if (sandbox.record.state !== 'ready' || !rt.accepting) {
      throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${sandbox.id} is not running`);
    }
    if (req.id === sandbox.id) throw new TtrpcError(Code.ALREADY_EXISTS, `container id ${req.id} is the pod's own sandbox id`);
    const settings = stateOf(sandbox).settings;
    const linux = { ...((spec.linux as Record<string, unknown> | undefined) ?? {}) } as { namespaces?: { type: string; path?: string }[]; cgroupsPath?: string };
    // The container lives in the pod's application kernel: host namespace paths (CRI's /proc/<sandbox pid>/ns/…)
    // mean nothing to it; the kinds stay so the sentry gives it its own pid/mount views.
    if (Array.isArray(linux.namespaces)) linux.namespaces = linux.namespaces.map((n) => ({ type: n.type }));
    try {
      linux.cgroupsPath = podCgroupsPath(linux.cgroupsPath, req.id, settings.cgroupParent);
    } catch (err) {
      throw new TtrpcError(Code.INVALID_ARGUMENT, (err as Error).message);
    }
    const out: OciSpec = {
      ...spec,
      linux,
      annotations: { ...(spec.annotations ?? {}), [CRI_CONTAINER_TYPE]: 'container', [CRI_SANDBOX_ID]: this.runtimeId(sandbox.id), [POD_ANNOTATION]: sandbox.id },
    } as OciSpec;
    delete (out as { hostname?: string }).hostname; // the kernel's hostname is the pod's
    addPodMember(sandbox, { namespace, id: req.id, bundle: req.bundle });
    return out;
  }

  /**
   * runsc finds the sandbox a subcontainer joins by the exact runsc id in its `io.kubernetes.cri.sandbox-id`
   * annotation, and runsc ids are not containerd ids (runscId). CRI 1.x's pause container arrives as a task of no
   * pod of ours and runs as the runsc id of its containerd id, so its app containers' annotation must name that.
   * A sandbox's own annotation (container type `sandbox` or none) is left alone.
   */
  private joinByRuntimeId(spec: OciSpec): OciSpec {
    const sandbox = spec.annotations?.[CRI_SANDBOX_ID];
    if ((spec.annotations?.[CRI_CONTAINER_TYPE] ?? 'sandbox') === 'sandbox' || !sandbox || this.runtimeId(sandbox) === sandbox) return spec;
    return { ...spec, annotations: { ...spec.annotations, [CRI_SANDBOX_ID]: this.runtimeId(sandbox) } };
  }

  private containerRemoved(id: string, namespace: string): void {
    for (const rt of this.pods.values()) removePodMember(rt.sandbox, { namespace, id });
  }

  // ---- internals ---------------------------------------------------------------------------------------------------

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

  /** SIGTERM every app container, SIGKILL what is left after the timeout, then wait briefly for the exits. */
  private async stopContainers(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    if (this.tasks) await stopPodMembers(this.members(sandbox), this.tasks, { timeoutSecs, logger: sandbox.logger });
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
