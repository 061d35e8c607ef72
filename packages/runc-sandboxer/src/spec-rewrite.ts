import * as fs from 'node:fs';
import * as path from 'node:path';
import type { PodNamespaces } from './pod-namespaces';

/**
 * Rewrites a container's OCI spec (config.json) so that the container joins its pod:
 * the pod's ipc/uts/network/pid namespaces and a cgroup below the pod's cgroup parent.
 */

/** The parts of an OCI runtime spec this module reads or writes; everything else passes through untouched. */
export interface OciNamespace {
  type: string;
  path?: string;
}

export interface OciSpec {
  hostname?: string;
  annotations?: Record<string, string>;
  linux?: {
    namespaces?: OciNamespace[];
    cgroupsPath?: string;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** A namespace as the pod provides it: join a file, use the host's, or (pid only) one per container. */
export type PodNamespaceRef = { path: string } | 'host' | 'container';

export interface PodSpecContext {
  sandboxId: string;
  /** The pid reported to containerd by Start/Status (0 when there is no holder). CRI 2.x builds
   *  `/proc/<pid>/ns/<kind>` paths from it; those are replaced by the pod's own files. */
  reportedPid: number;
  network: { path: string } | 'host';
  ipc: { path: string } | 'host';
  uts: { path: string } | 'host';
  pid: PodNamespaceRef;
  hostname?: string;
  /** cgroupfs path ('/kubepods/besteffort/pod<uid>') or a systemd slice ('kubepods-besteffort-pod<uid>.slice'). */
  cgroupParent: string;
}

export class SpecRewriteError extends Error {
  override readonly name = 'SpecRewriteError';
  readonly code = 'invalid_argument';
}

export interface RewriteOptions {
  /** Whether a namespace path exists; injectable so the function stays pure in tests. Default: fs.existsSync. */
  resolves?: (p: string) => boolean;
}

const OCI_KIND = { network: 'network', ipc: 'ipc', uts: 'uts', pid: 'pid' } as const;
const PROC_NS_RE = /^\/proc\/(\d+)\/ns\/(net|ipc|uts|pid|user|pid_for_children)$/;
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** The pod's view for spec rewriting, from what setUpPodNamespaces recorded. */
export function podSpecContext(ns: PodNamespaces, reportedPid: number, cgroupParent: string): PodSpecContext {
  const ref = (p: string | undefined): { path: string } | 'host' => (p ? { path: p } : 'host');
  let pid: PodNamespaceRef;
  if (ns.isolation.pid === 'pod') {
    if (!ns.paths.pid) throw new SpecRewriteError(`pod ${ns.id} shares its pid namespace but has no pid namespace file`);
    pid = { path: ns.paths.pid };
  } else {
    pid = ns.isolation.pid === 'node' ? 'host' : 'container';
  }
  return {
    sandboxId: ns.id,
    reportedPid,
    network: ref(ns.paths.net),
    ipc: ref(ns.paths.ipc),
    uts: ref(ns.paths.uts),
    pid,
    ...(ns.hostname !== undefined ? { hostname: ns.hostname } : {}),
    cgroupParent,
  };
}

/**
 * Returns a new spec in which the container joins its pod. Rules, per namespace kind:
 * - the pod uses the host's: the entry is removed (no entry = host namespace in OCI);
 * - the pod has a file: a missing entry, an entry without path, a `/proc/<reportedPid>/ns/...` path or a
 *   /proc path that no longer resolves is replaced by the pod's file; any other path that resolves (an explicit
 *   join, CRI's TARGET pid mode, a CRI 1.x pause task's /proc path) is kept;
 * - pid 'container': the container gets a private pid namespace unless it names one that resolves (a /proc path of
 *   a live process: CRI 1.x's pause task, whose pid namespace POD-pid containers join; TARGET); a dead one is dropped.
 * kubelet gives the sandbox and its containers the same pid mode, so in a shared-pid pod a pid entry without
 * path (the OCI default) joins the pod too; only TARGET (a resolving path) differs.
 * A container never escapes to a host namespace its pod does not use. mount/user/cgroup/time entries are kept,
 * except a user namespace of the pod's pid, which this pod kind does not provide.
 * `hostname` is dropped unless the container has a fresh private uts namespace: runc rejects it without a private
 * uts namespace and, in the pod's uts namespace, it would rename the whole pod.
 */
export function rewriteContainerSpec(spec: OciSpec, containerId: string, pod: PodSpecContext, opts: RewriteOptions = {}): OciSpec {
  if (!CONTAINER_ID_RE.test(containerId)) throw new SpecRewriteError(`invalid container id ${JSON.stringify(containerId)}`);
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new SpecRewriteError('spec must be an object');
  const resolves = opts.resolves ?? fs.existsSync;
  const linux = { ...(spec.linux ?? {}) };
  const input = linux.namespaces ?? [];
  if (!Array.isArray(input)) throw new SpecRewriteError('linux.namespaces must be an array');
  const namespaces: OciNamespace[] = input.map((n) => {
    if (n === null || typeof n !== 'object' || typeof n.type !== 'string') throw new SpecRewriteError('invalid linux.namespaces entry');
    return { ...n };
  });

  /** True for a path CRI derived from the pod's reported pid, or a /proc path whose process is gone. */
  const isStalePodPath = (p: string): boolean => {
    const m = PROC_NS_RE.exec(p);
    if (!m) return false;
    return Number(m[1]) === pod.reportedPid || !resolves(p);
  };

  const setKind = (kind: string, want: PodNamespaceRef): void => {
    const i = namespaces.findIndex((n) => n.type === kind);
    const entry = i >= 0 ? namespaces[i] : undefined;
    if (want === 'host') {
      if (i >= 0) namespaces.splice(i, 1);
      return;
    }
    if (want === 'container') {
      // The pod has no namespace of this kind to join, so a /proc path that still resolves names one a live process
      // holds (CRI 1.x's pause task for POD-pid containers, TARGET): kept. A dead one means a namespace of its own.
      if (!entry) namespaces.push({ type: kind });
      else if (entry.path && PROC_NS_RE.test(entry.path) && !resolves(entry.path)) delete entry.path;
      return;
    }
    if (!entry) namespaces.push({ type: kind, path: want.path });
    else if (!entry.path || isStalePodPath(entry.path)) entry.path = want.path;
  };

  setKind(OCI_KIND.network, pod.network);
  setKind(OCI_KIND.ipc, pod.ipc);
  setKind(OCI_KIND.uts, pod.uts);
  setKind(OCI_KIND.pid, pod.pid);

  const user = namespaces.find((n) => n.type === 'user');
  if (user?.path && isStalePodPath(user.path)) {
    throw new SpecRewriteError(`sandbox ${pod.sandboxId} has no user namespace to join (pod user namespaces are not supported)`);
  }

  linux.namespaces = namespaces;
  linux.cgroupsPath = podCgroupsPath(linux.cgroupsPath, containerId, pod.cgroupParent);

  const out: OciSpec = { ...spec, linux };
  const uts = namespaces.find((n) => n.type === OCI_KIND.uts);
  if (out.hostname !== undefined && (!uts || uts.path)) delete out.hostname;
  return out;
}

function isSystemdSlice(parent: string): boolean {
  return !parent.startsWith('/') && parent.endsWith('.slice');
}

/** The container's cgroupsPath below the pod's cgroup parent (cgroupfs 'parent/id' or systemd 'slice:prefix:id'). */
export function podCgroupsPath(current: string | undefined, containerId: string, parent: string): string {
  if (isSystemdSlice(parent)) {
    if (current && current.split(':').length === 3) {
      const [slice, prefix, name] = current.split(':') as [string, string, string];
      return slice === parent ? current : `${parent}:${prefix}:${name}`;
    }
    return `${parent}:kuasar:${containerId}`;
  }
  if (!path.posix.isAbsolute(parent)) throw new SpecRewriteError(`cgroup parent must be absolute or a systemd slice: ${parent}`);
  const normParent = path.posix.normalize(parent).replace(/(.)\/+$/, '$1');
  // A systemd-form path with a cgroupfs parent: the engine runs with --systemd-cgroup; leave it to that.
  if (current && !current.startsWith('/') && current.includes(':')) return current;
  if (current && path.posix.dirname(path.posix.normalize(current)) === normParent) return current;
  return path.posix.join(normParent, containerId);
}

/** The default cgroup parent of a pod whose PodSandboxConfig names none. */
export function defaultCgroupParent(sandboxId: string): string {
  return `/kuasar/${sandboxId}`;
}
