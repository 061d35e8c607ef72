import { cri, google, types } from '@kuasar/api';
import type { Logger } from 'pino';
import { ExitSignal, type SandboxExit } from './exit';

/** created: Create done, no process yet · ready: Start done, process running · stopped: the process exited. */
export type SandboxState = 'created' | 'ready' | 'stopped';

/** Everything the framework knows about one sandbox; persisted as `<dir>/<id>/sandbox.json`. */
export interface SandboxRecord {
  id: string;
  state: SandboxState;
  /** Network namespace made by CRI (empty for host-network pods). */
  netnsPath: string;
  annotations: Record<string, string>;
  rootfs: types.Mount[];
  /** The CRI PodSandboxConfig decoded from Create's options (hostname, dns, cgroup_parent, namespaces, resources). */
  config: cri.PodSandboxConfig | undefined;
  /** Create's options when they are not a PodSandboxConfig, kept as sent. */
  options: google.Any | undefined;
  /** containerd's Sandbox record (runtime, spec, labels, extensions); Update edits it. */
  sandbox: types.Sandbox | undefined;
  createdAt: Date;
  pid: number;
  startedAt: Date | undefined;
  /** Labels returned by Start (e.g. selinux_label). */
  labels: Record<string, string>;
  exit: SandboxExit | undefined;
  /**
   * The kind's own JSON state (holder pid, namespace paths, VM ids...). The kind mutates it in create/start/stop/
   * update; the framework persists it after each of those returns.
   */
  kindState: Record<string, unknown>;
  /**
   * The task this sandbox was made from: CRI's pause container on containerd 1.6/1.7, which arrives through the task
   * API (task-sandbox.ts). The sandbox lives and ends with that task. Absent for sandboxes made through the Controller.
   */
  task?: SandboxTaskRef;
  /**
   * containerd addressed the sandbox after its Start (Wait, Status, Stop...), or its own sandbox store was seen to
   * hold it long after: containerd knows it, and will Stop and Shut it down. Until then the Create or Start reply may
   * have been lost, leaving a sandbox containerd forgot (controller.ts, reconcile).
   */
  claimed?: boolean;
}

/** A container of the task core, by containerd namespace and id. */
export interface SandboxTaskRef {
  namespace: string;
  id: string;
}

/** One sandbox as the kind sees it: the live record plus its private dir and logger. */
export class Sandbox {
  readonly exitSignal = new ExitSignal();

  constructor(
    readonly record: SandboxRecord,
    /** `<dir>/<id>`, mode 0700, for the kind's own files (removed at Shutdown). */
    readonly dir: string,
    readonly logger: Logger,
  ) {}

  get id(): string {
    return this.record.id;
  }
}

export const RECORD_VERSION = 1;

/** The record as JSON: protobuf parts through ts-proto's JSON mapping (bigints as strings, Any values base64). */
export function recordToJSON(r: SandboxRecord): unknown {
  return {
    version: RECORD_VERSION,
    id: r.id,
    state: r.state,
    netnsPath: r.netnsPath,
    annotations: r.annotations,
    rootfs: r.rootfs.map((m) => types.Mount.toJSON(m)),
    config: r.config ? cri.PodSandboxConfig.toJSON(r.config) : undefined,
    options: r.options ? google.Any.toJSON(r.options) : undefined,
    sandbox: r.sandbox ? types.Sandbox.toJSON(r.sandbox) : undefined,
    createdAt: r.createdAt.toISOString(),
    pid: r.pid,
    startedAt: r.startedAt?.toISOString(),
    labels: r.labels,
    exit: r.exit ? { exitStatus: r.exit.exitStatus, exitedAt: r.exit.exitedAt.toISOString() } : undefined,
    kindState: r.kindState,
    task: r.task ? { namespace: r.task.namespace, id: r.task.id } : undefined,
    claimed: r.claimed === true ? true : undefined,
  };
}

/** Parses a persisted record; throws with a reason for anything that does not look like one. */
export function recordFromJSON(id: string, data: unknown): SandboxRecord {
  const o = asObject(data, 'record');
  if (o.version !== RECORD_VERSION) throw new Error(`unsupported record version ${JSON.stringify(o.version)}`);
  if (o.id !== id) throw new Error(`record id ${JSON.stringify(o.id)} does not match its dir ${JSON.stringify(id)}`);
  if (o.state !== 'created' && o.state !== 'ready' && o.state !== 'stopped') {
    throw new Error(`bad state ${JSON.stringify(o.state)}`);
  }
  if (typeof o.pid !== 'number' || !Number.isInteger(o.pid) || o.pid < 0) throw new Error(`bad pid ${JSON.stringify(o.pid)}`);
  const exitObj = o.exit === undefined ? undefined : asObject(o.exit, 'exit');
  return {
    id,
    state: o.state,
    netnsPath: typeof o.netnsPath === 'string' ? o.netnsPath : '',
    annotations: stringMap(o.annotations, 'annotations'),
    rootfs: Array.isArray(o.rootfs) ? o.rootfs.map((m) => types.Mount.fromJSON(m)) : [],
    config: o.config === undefined ? undefined : cri.PodSandboxConfig.fromJSON(asObject(o.config, 'config')),
    options: o.options === undefined ? undefined : google.Any.fromJSON(asObject(o.options, 'options')),
    sandbox: o.sandbox === undefined ? undefined : types.Sandbox.fromJSON(asObject(o.sandbox, 'sandbox')),
    createdAt: date(o.createdAt, 'createdAt'),
    pid: o.pid,
    startedAt: o.startedAt === undefined ? undefined : date(o.startedAt, 'startedAt'),
    labels: stringMap(o.labels, 'labels'),
    exit: exitObj
      ? { exitStatus: integer(exitObj.exitStatus, 'exit.exitStatus'), exitedAt: date(exitObj.exitedAt, 'exit.exitedAt') }
      : undefined,
    kindState: o.kindState === undefined ? {} : asObject(o.kindState, 'kindState'),
    ...(o.task === undefined ? {} : { task: taskRef(o.task) }),
    ...(o.claimed === true ? { claimed: true } : {}),
  };
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what} is not an object`);
  return v as Record<string, unknown>;
}

function taskRef(v: unknown): SandboxTaskRef {
  const o = asObject(v, 'task');
  if (typeof o.namespace !== 'string' || o.namespace === '' || typeof o.id !== 'string' || o.id === '') {
    throw new Error('task needs a namespace and an id');
  }
  return { namespace: o.namespace, id: o.id };
}

function stringMap(v: unknown, what: string): Record<string, string> {
  if (v === undefined) return {};
  const o = asObject(v, what);
  for (const [k, val] of Object.entries(o)) {
    if (typeof val !== 'string') throw new Error(`${what}.${k} is not a string`);
  }
  return o as Record<string, string>;
}

function date(v: unknown, what: string): Date {
  const d = typeof v === 'string' ? new Date(v) : undefined;
  if (!d || Number.isNaN(d.getTime())) throw new Error(`${what} is not a date`);
  return d;
}

function integer(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new Error(`${what} is not an integer`);
  return v;
}
