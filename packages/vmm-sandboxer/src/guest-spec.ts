// A container's OCI spec as containerd wrote it for the host, turned into the spec crun runs in the guest: the
// rootfs and bind-mount sources become paths in the share, and whatever names host objects (namespace files,
// cgroup parents, hooks, LSM labels) goes, because the guest has none of them.
import * as path from 'node:path';
import type { OciSpec } from '@kuasar/task';

/** Where the guest's /init mounts the share (tag "kuasar"). */
export const GUEST_SHARE_ROOT = '/mnt/kuasar';

export class GuestSpecError extends Error {
  override readonly name = 'GuestSpecError';
  readonly code = 'invalid_argument';
}

/** One host path that must appear in the share: `<share>/<cid>/<target>`. */
export interface ShareBind {
  source: string;
  /** relative to the container's share dir */
  target: string;
  readonly: boolean;
}

export interface GuestSpec {
  spec: OciSpec;
  /** the guest path of the bundle (config.json, rootfs/) */
  guestBundle: string;
  /** host paths to bind into the share, rootfs first */
  binds: ShareBind[];
}

interface OciMount {
  destination?: unknown;
  source?: unknown;
  type?: unknown;
  options?: unknown;
}

/** The runtime-spec version the guest's crun accepts. */
export const GUEST_OCI_VERSION = '1.0.2';
const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Namespaces the pod shares in the guest: the guest's own (one VM = one pod). */
const POD_SHARED = new Set(['network', 'uts', 'ipc']);

function isBind(m: OciMount): boolean {
  const opts = Array.isArray(m.options) ? (m.options as unknown[]) : [];
  return m.type === 'bind' || opts.includes('bind') || opts.includes('rbind');
}

/**
 * Rules:
 * - root.path → "rootfs" in the guest bundle (`<share>/<cid>/rootfs`, the host rootfs bound there);
 * - bind mounts with absolute host sources → `<guest bundle>/mounts/<n>`, bound from the host source;
 * - network/uts/ipc entries are removed: containers share the VM's, which are the pod's (the VM has the pod's
 *   hostname, interfaces and IPC); `hostname` is dropped with them unless the container keeps a private uts;
 * - any other namespace entry with a path becomes a fresh namespace (host ns files mean nothing in the guest);
 * - cgroupsPath → `/kuasar/<cid>` in the guest's cgroup v2 tree; hooks and LSM labels are removed.
 */
export function guestSpec(spec: OciSpec, containerId: string, hostBundle: string): GuestSpec {
  if (!CONTAINER_ID_RE.test(containerId)) throw new GuestSpecError(`invalid container id ${JSON.stringify(containerId)}`);
  if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new GuestSpecError('spec must be an object');
  const guestBundle = path.posix.join(GUEST_SHARE_ROOT, containerId);
  const out: OciSpec = structuredClone(spec);
  // crun 1.8 refuses any ociVersion but 1.0.x; the fields it knows are the same, newer ones it ignores
  out.ociVersion = GUEST_OCI_VERSION;
  const root = (out.root ?? {}) as { path?: unknown; readonly?: unknown };
  const rootPath = typeof root.path === 'string' && root.path !== '' ? root.path : 'rootfs';
  const hostRootfs = path.resolve(hostBundle, rootPath);
  out.root = { path: 'rootfs', ...(root.readonly === true ? { readonly: true } : {}) };
  const binds: ShareBind[] = [{ source: hostRootfs, target: 'rootfs', readonly: false }];

  const mounts = out.mounts === undefined ? [] : out.mounts;
  if (!Array.isArray(mounts)) throw new GuestSpecError('mounts must be an array');
  out.mounts = (mounts as OciMount[]).map((m, i) => {
    if (m === null || typeof m !== 'object' || typeof m.destination !== 'string') throw new GuestSpecError(`mounts[${i}] needs a destination`);
    if (!isBind(m)) return m;
    if (typeof m.source !== 'string' || !path.isAbsolute(m.source)) {
      throw new GuestSpecError(`bind mount ${m.destination}: source ${JSON.stringify(m.source)} must be an absolute host path`);
    }
    const target = `mounts/${i}`;
    const opts = Array.isArray(m.options) ? (m.options as unknown[]) : [];
    binds.push({ source: m.source, target, readonly: opts.includes('ro') });
    // rbind would try to recurse into the 9p view; the host side already bound what is below
    const options = opts.filter((o) => typeof o === 'string' && o !== 'rbind').concat(opts.includes('bind') ? [] : ['bind']);
    return { ...m, source: path.posix.join(guestBundle, target), type: 'bind', options };
  });

  const linux = { ...((out.linux as Record<string, unknown> | undefined) ?? {}) };
  const nsIn = linux.namespaces === undefined ? [] : linux.namespaces;
  if (!Array.isArray(nsIn)) throw new GuestSpecError('linux.namespaces must be an array');
  const namespaces = (nsIn as { type?: unknown; path?: unknown }[])
    .filter((n) => {
      if (n === null || typeof n !== 'object' || typeof n.type !== 'string') throw new GuestSpecError('invalid linux.namespaces entry');
      return !POD_SHARED.has(n.type);
    })
    .map((n) => ({ type: n.type as string }));
  linux.namespaces = namespaces;
  linux.cgroupsPath = `/kuasar/${containerId}`;
  delete linux.mountLabel;
  out.linux = linux;
  // without a private uts namespace crun refuses a hostname; the VM already carries the pod's
  if (!namespaces.some((n) => n.type === 'uts')) delete out.hostname;
  delete out.hooks;
  const proc = out.process as Record<string, unknown> | undefined;
  if (proc) {
    delete proc.apparmorProfile;
    delete proc.selinuxLabel;
  }
  return { spec: out, guestBundle, binds };
}

/** An exec's OCI process for the guest: LSM labels go (the guest enforces none). */
export function guestProcess<T extends Record<string, unknown>>(p: T): T {
  const out = { ...p };
  delete out.apparmorProfile;
  delete out.selinuxLabel;
  return out;
}
