import * as path from 'node:path';
import { cri } from '@kuasar/api';
import type { PodIsolation } from './pod-namespaces';
import { defaultCgroupParent } from './spec-rewrite';

/**
 * What a runc pod is, decided once at Create from CRI's PodSandboxConfig and the netns CRI made:
 * how each namespace kind is isolated, the hostname, and the cgroup parent.
 */
export interface PodSettings {
  isolation: PodIsolation;
  hostname?: string;
  netnsPath?: string;
  cgroupParent: string;
  /** True when the cgroup parent is our default (/kuasar/<id>): then we also remove it. */
  ownCgroupParent: boolean;
}

export class PodSettingsError extends Error {
  override readonly name = 'PodSettingsError';
  readonly code = 'invalid_argument';
}

/** Without a PodSandboxConfig (a non-CRI client): a private pod, containers with their own pid namespaces. */
const NON_CRI_ISOLATION: PodIsolation = { network: 'pod', pid: 'container', ipc: 'pod' };

function podOrNode(mode: cri.NamespaceMode, kind: string): 'pod' | 'node' {
  switch (mode) {
    case cri.NamespaceMode.NODE:
      return 'node';
    case cri.NamespaceMode.POD:
    case cri.NamespaceMode.CONTAINER: // not used by kubelet for these kinds; the pod still gets one namespace
      return 'pod';
    default:
      throw new PodSettingsError(`unsupported ${kind} namespace mode ${cri.namespaceModeToJSON(mode)}`);
  }
}

/** CRI pid semantics: POD = one pid namespace for the pod (shareProcessNamespace), CONTAINER = one per container. */
function pidMode(mode: cri.NamespaceMode): PodIsolation['pid'] {
  switch (mode) {
    case cri.NamespaceMode.POD:
      return 'pod';
    case cri.NamespaceMode.CONTAINER:
      return 'container';
    case cri.NamespaceMode.NODE:
      return 'node';
    default:
      // TARGET names another container's pid namespace: a container-level mode, never a pod's.
      throw new PodSettingsError(`unsupported pod pid namespace mode ${cri.namespaceModeToJSON(mode)}`);
  }
}

function checkCgroupParent(parent: string): string {
  const systemd = !parent.startsWith('/') && parent.endsWith('.slice');
  if (!systemd && !path.posix.isAbsolute(parent)) throw new PodSettingsError(`cgroup_parent must be absolute or a systemd slice: ${parent}`);
  if (parent.split('/').includes('..') || parent.includes('\0')) throw new PodSettingsError(`invalid cgroup_parent ${JSON.stringify(parent)}`);
  return parent;
}

export function podSettings(sandboxId: string, config: cri.PodSandboxConfig | undefined, netnsPath: string): PodSettings {
  const linux = config?.linux;
  const ns = linux?.securityContext?.namespaceOptions;
  let isolation: PodIsolation;
  if (!config) {
    isolation = { ...NON_CRI_ISOLATION };
  } else {
    // proto3: an absent NamespaceOption reads as all-POD, exactly what CRI means by it.
    isolation = {
      network: podOrNode(ns?.network ?? cri.NamespaceMode.POD, 'network'),
      pid: pidMode(ns?.pid ?? cri.NamespaceMode.POD),
      ipc: podOrNode(ns?.ipc ?? cri.NamespaceMode.POD, 'ipc'),
    };
  }
  if (ns?.usernsOptions && ns.usernsOptions.mode === cri.NamespaceMode.POD) {
    throw new PodSettingsError('pod user namespaces are not supported by the runc sandboxer');
  }
  if (isolation.network === 'node' && netnsPath !== '') {
    throw new PodSettingsError(`a host-network pod cannot have a netns (${netnsPath})`);
  }
  const parent = linux?.cgroupParent ?? '';
  return {
    isolation,
    ...(config?.hostname && isolation.network === 'pod' ? { hostname: config.hostname } : {}),
    ...(netnsPath !== '' ? { netnsPath } : {}),
    cgroupParent: parent === '' ? defaultCgroupParent(sandboxId) : checkCgroupParent(parent),
    ownCgroupParent: parent === '',
  };
}
