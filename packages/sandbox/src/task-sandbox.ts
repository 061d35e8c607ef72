// containerd 1.6/1.7 have no sandbox API: CRI runs a pod's pause container as an ordinary task of the thin shim's
// runtime, and every app container joins the pod through the /proc/<pause pid>/ns/* paths CRI writes into its spec.
// For a kind that opts in (SandboxerSpec.sandboxFromPauseTask) the framework turns that task into a sandbox:
//   pause Create  → Controller Create + Start from the pause's OCI spec (a PodSandboxConfig read back from it), then
//                   the kind's prepareContainer sees a sandbox of its own, exactly as for a 2.x pod
//   created       → the sandbox's pid is the pause's (it holds the pause's own namespaces, e.g. the pod's pid one)
//   pause exit    → the sandbox exits with the pause's status (Controller Wait)
//   pause Delete  → what is left of the pod is ended and the sandbox removed (Controller Shutdown semantics)
// containerd keeps seeing the pause as a plain task: its Task API replies and events do not change.
import { cri, dateFromTimestamp, packAny } from '@kuasar/api';
import { Code, TtrpcError, type ContainerRef, type OciSpec, type TaskHooks, type TaskService } from '@kuasar/task';
import type { Logger } from 'pino';
import { POD_SANDBOX_CONFIG_TYPE, type CreateParams, type SandboxController } from './controller';
import { messageOf, statusCodeOf } from './errors';
import { CRI_SANDBOX_ID_ANNOTATION } from './pod-members';
import type { Sandbox } from './sandbox';

export const CRI_CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';
const CRI_SANDBOX_NAME = 'io.kubernetes.cri.sandbox-name';
const CRI_SANDBOX_NAMESPACE = 'io.kubernetes.cri.sandbox-namespace';
const CRI_SANDBOX_UID = 'io.kubernetes.cri.sandbox-uid';
const CRI_SANDBOX_LOG_DIRECTORY = 'io.kubernetes.cri.sandbox-log-directory';

interface SpecNamespace {
  type: string;
  path?: string;
}

/** CRI's pause container: container-type `sandbox`, and (when CRI names it) the pod id is its own id. */
export function isPauseTask(id: string, spec: OciSpec): boolean {
  const a = spec.annotations ?? {};
  if (a[CRI_CONTAINER_TYPE_ANNOTATION] !== 'sandbox') return false;
  const pod = a[CRI_SANDBOX_ID_ANNOTATION];
  return pod === undefined || pod === id;
}

/**
 * The Controller Create a CRI 1.x pause spec stands for. CRI 1.x builds that spec from the PodSandboxConfig
 * (sandbox_run_linux.go), so the config is read back from it:
 * - network: no network entry = host (NODE); a path = the netns CRI made for CNI; an entry without path = a new one;
 * - ipc: no entry = host, else the pod's;
 * - pid: no entry = host; otherwise the pause gets a pid namespace of its own. Whether kubelet shares it (POD) or not
 *   (CONTAINER) is not in the spec; app containers say so themselves (POD ones name /proc/<pause pid>/ns/pid), so
 *   the pod is CONTAINER and the pause task holds the pid namespace the POD ones join;
 * - user: an entry = a pod user namespace;
 * - hostname, sysctls, annotations (name, namespace, uid, log directory) as CRI set them;
 * - cgroup parent: the directory of the pause's cgroupsPath, except containerd's default `/<namespace>/<id>`
 *   (no cgroup_parent given), which leaves the choice to the kind, as on 2.x.
 */
export function sandboxParamsFromPauseSpec(id: string, namespace: string, spec: OciSpec): CreateParams {
  const linux = (spec.linux ?? {}) as { namespaces?: SpecNamespace[]; cgroupsPath?: string; sysctl?: Record<string, string> };
  const namespaces = Array.isArray(linux.namespaces) ? linux.namespaces : [];
  const entry = (type: string): SpecNamespace | undefined => namespaces.find((n) => n && n.type === type);
  const mode = (type: string, present: cri.NamespaceMode): cri.NamespaceMode => (entry(type) ? present : cri.NamespaceMode.NODE);
  const net = entry('network');
  const a = spec.annotations ?? {};
  const config = cri.PodSandboxConfig.fromPartial({
    metadata: { name: a[CRI_SANDBOX_NAME] ?? id, namespace: a[CRI_SANDBOX_NAMESPACE] ?? '', uid: a[CRI_SANDBOX_UID] ?? '', attempt: 0 },
    hostname: typeof spec.hostname === 'string' ? spec.hostname : '',
    logDirectory: a[CRI_SANDBOX_LOG_DIRECTORY] ?? '',
    annotations: a,
    linux: {
      cgroupParent: cgroupParentOf(linux.cgroupsPath, namespace, id),
      sysctls: linux.sysctl ?? {},
      securityContext: {
        namespaceOptions: {
          network: mode('network', cri.NamespaceMode.POD),
          ipc: mode('ipc', cri.NamespaceMode.POD),
          pid: mode('pid', cri.NamespaceMode.CONTAINER),
          ...(entry('user') ? { usernsOptions: { mode: cri.NamespaceMode.POD } } : {}),
        },
      },
    },
  });
  return {
    sandboxId: id,
    options: packAny(POD_SANDBOX_CONFIG_TYPE, cri.PodSandboxConfig, config),
    netnsPath: net?.path ?? '',
    annotations: { ...a },
    task: { namespace, id },
  };
}

function cgroupParentOf(cgroupsPath: string | undefined, namespace: string, id: string): string {
  if (!cgroupsPath) return '';
  // systemd driver: "slice:prefix:name"
  const parts = cgroupsPath.split(':');
  if (parts.length === 3 && !cgroupsPath.startsWith('/')) return parts[0]!;
  if (cgroupsPath === `/${namespace}/${id}`) return '';
  const slash = cgroupsPath.lastIndexOf('/');
  return slash > 0 ? cgroupsPath.slice(0, slash) : '';
}

function ttrpcError(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  return new TtrpcError(statusCodeOf(err) as number as Code, messageOf(err));
}

/**
 * The bridge between the task core and the Controller for pause tasks. `controller` is read on every call: the task
 * core serves (and recovers) before the Controller exists.
 */
export class TaskSandboxes {
  private readonly logger: Logger;

  constructor(
    private readonly controller: () => SandboxController | undefined,
    logger: Logger,
  ) {
    this.logger = logger.child({ component: 'task-sandbox' });
  }

  /** The sandbox made from this task, if any. */
  sandboxOf(c: Pick<ContainerRef, 'id' | 'namespace'>): Sandbox | undefined {
    const s = this.controller()?.find(c.id);
    return s?.record.task?.id === c.id && s.record.task.namespace === c.namespace ? s : undefined;
  }

  /** `inner` (the kind's hooks) with pause tasks turned into sandboxes around it. */
  hooks(inner: TaskHooks = {}): TaskHooks {
    return {
      ...inner,
      prepareContainer: async (req, spec, namespace) => {
        if (isPauseTask(req.id, spec)) await this.createFromPause(req.id, namespace, spec);
        return inner.prepareContainer ? inner.prepareContainer(req, spec, namespace) : spec;
      },
      containerCreated: async (c, init) => {
        await inner.containerCreated?.(c, init);
        if (this.sandboxOf(c)) await this.controller()!.setTaskPid(c.id, init.pid);
      },
      containerExited: async (c, exit) => {
        await inner.containerExited?.(c, exit);
        if (this.sandboxOf(c)) this.controller()!.taskExited(c.id, exit);
      },
      containerRemoved: async (id, namespace) => {
        await inner.containerRemoved?.(id, namespace);
        if (this.sandboxOf({ id, namespace })) await this.controller()!.removeTaskSandbox(id);
      },
    };
  }

  private async createFromPause(id: string, namespace: string, spec: OciSpec): Promise<void> {
    const controller = this.controller();
    if (!controller) throw new TtrpcError(Code.UNAVAILABLE, 'the sandboxer is still starting; retry');
    // a sandbox made through the Controller (2.x) that also runs a pause container: the kind decides
    if (controller.find(id)) return;
    const log = this.logger.child({ sandbox: id, namespace });
    try {
      await controller.create(sandboxParamsFromPauseSpec(id, namespace, spec));
    } catch (err) {
      throw ttrpcError(err);
    }
    try {
      await controller.start(id);
    } catch (err) {
      await controller.removeTaskSandbox(id).catch((e) => log.warn({ err: messageOf(e) }, 'removing the half-made sandbox failed'));
      throw ttrpcError(err);
    }
    log.info('CRI pause task became a sandbox');
  }

  /**
   * After a restart: the sandboxes made from tasks against what the task core recovered. A task that is gone takes
   * its sandbox with it; one that exited while nobody watched ends it.
   */
  async reconcile(service: TaskService): Promise<void> {
    const controller = this.controller();
    if (!controller) return;
    for (const id of controller.ids()) {
      const task = controller.find(id)?.record.task;
      if (!task) continue;
      let state;
      try {
        state = await service.state({ id: task.id, execId: '' }, { namespace: task.namespace });
      } catch (err) {
        if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
        this.logger.info({ sandbox: id }, 'the task of this sandbox is gone; removing the sandbox');
        await controller.removeTaskSandbox(id).catch((e) => this.logger.warn({ sandbox: id, err: messageOf(e) }, 'removing the sandbox failed'));
        continue;
      }
      if (state.pid > 0) await controller.setTaskPid(id, state.pid);
      if (state.exitedAt) controller.taskExited(id, { exitStatus: state.exitStatus, exitedAt: dateFromTimestamp(state.exitedAt) });
    }
  }
}
