// containerd's Controller.Update with a new sandbox spec: the pod's resources change while its VM runs. What is
// real: the host cgroup QEMU runs in (CPU: quota, period, shares throttle the vCPU threads) and the pod cgroup in
// the guest (agent guest.updatePod: memory and CPU limits over all its containers). What is not: the VM's vCPUs
// and memory, fixed at boot (no hotplug). The host's memory limit is left alone, because QEMU holds all guest RAM
// it ever touched: a host limit below the VM's size would get QEMU, and so the whole pod, OOM-killed.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { google } from '@kuasar/api';
import { InvalidArgumentError } from '@kuasar/sandbox';
import type { CgroupDirs } from '@kuasar/task';
import type { PodResources } from './config';

/** containerd's type URL for an OCI runtime spec in an Any (JSON). */
export const OCI_SPEC_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

/** OCI LinuxResources, as far as a VM pod uses them. */
export interface PodLimits {
  cpuQuota?: number;
  cpuPeriod?: number;
  cpuShares?: number;
  memoryLimit?: number;
}

function num(o: Record<string, unknown>, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new InvalidArgumentError(`${where}.${key} must be an integer, got ${JSON.stringify(v)}`);
  return v;
}

function objectAt(o: Record<string, unknown>, key: string, where: string): Record<string, unknown> | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new InvalidArgumentError(`${where}.${key} must be an object`);
  return v as Record<string, unknown>;
}

/**
 * linux.resources of the sandbox spec (an Any holding OCI spec JSON), checked, with the numbers a VM pod uses.
 * undefined: no spec, or a spec without resources (nothing to change).
 */
export function specResources(spec: google.Any | undefined): { resources: Record<string, unknown>; limits: PodLimits } | undefined {
  if (!spec || (spec.typeUrl === '' && spec.value.length === 0)) return undefined;
  if (spec.typeUrl !== OCI_SPEC_TYPE_URL) throw new InvalidArgumentError(`sandbox spec must be an OCI runtime spec (${OCI_SPEC_TYPE_URL}), got ${JSON.stringify(spec.typeUrl)}`);
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(spec.value).toString('utf8'));
  } catch {
    throw new InvalidArgumentError('sandbox spec is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new InvalidArgumentError('sandbox spec is not a JSON object');
  const linux = objectAt(doc as Record<string, unknown>, 'linux', 'spec');
  const resources = linux && objectAt(linux, 'resources', 'spec.linux');
  if (!resources) return undefined;
  const cpu = objectAt(resources, 'cpu', 'spec.linux.resources') ?? {};
  const memory = objectAt(resources, 'memory', 'spec.linux.resources') ?? {};
  const limits: PodLimits = {};
  const set = (k: keyof PodLimits, v: number | undefined) => {
    if (v !== undefined) limits[k] = v;
  };
  set('cpuQuota', num(cpu, 'quota', 'spec.linux.resources.cpu'));
  set('cpuPeriod', num(cpu, 'period', 'spec.linux.resources.cpu'));
  set('cpuShares', num(cpu, 'shares', 'spec.linux.resources.cpu'));
  set('memoryLimit', num(memory, 'limit', 'spec.linux.resources.memory'));
  // the kernel's bounds, checked here so that a bad value changes nothing rather than half of the limits
  const { cpuQuota: q, cpuPeriod: p, cpuShares: sh, memoryLimit: m } = limits;
  if (q !== undefined && q !== 0 && q !== -1 && q < 1000) throw new InvalidArgumentError('spec.linux.resources.cpu.quota must be -1, 0 or at least 1000 µs');
  if (p !== undefined && p !== 0 && (p < 1000 || p > 1_000_000)) throw new InvalidArgumentError('spec.linux.resources.cpu.period must be 1000..1000000 µs');
  if (sh !== undefined && sh < 0) throw new InvalidArgumentError('spec.linux.resources.cpu.shares must not be negative');
  if (m !== undefined && m < -1) throw new InvalidArgumentError('spec.linux.resources.memory.limit must be -1, 0 or a byte count');
  return { resources, limits };
}

/** For vmSize: what the pod would need were it started now. */
export function asPodResources(l: PodLimits): PodResources {
  return {
    ...(l.cpuQuota !== undefined && l.cpuQuota > 0 ? { cpuQuota: BigInt(l.cpuQuota) } : {}),
    ...(l.cpuPeriod !== undefined && l.cpuPeriod > 0 ? { cpuPeriod: BigInt(l.cpuPeriod) } : {}),
    ...(l.memoryLimit !== undefined && l.memoryLimit > 0 ? { memoryLimitInBytes: BigInt(l.memoryLimit) } : {}),
  };
}

/** The CPU files of QEMU's host cgroup and their values: v1 cpu controller, or cgroup v2 cpu.max/cpu.weight. */
export function hostCpuWrites(dirs: CgroupDirs, l: PodLimits): [file: string, value: string][] {
  const out: [string, string][] = [];
  const period = l.cpuPeriod !== undefined && l.cpuPeriod > 0 ? l.cpuPeriod : 100_000;
  const quotaSet = l.cpuQuota !== undefined && l.cpuQuota !== 0;
  const sharesSet = l.cpuShares !== undefined && l.cpuShares > 0;
  if (dirs.mode === 'v1') {
    const cpu = dirs.v1['cpu'];
    if (!cpu) return out;
    if (quotaSet) {
      out.push([path.join(cpu, 'cpu.cfs_period_us'), String(period)]);
      out.push([path.join(cpu, 'cpu.cfs_quota_us'), String(l.cpuQuota! < 0 ? -1 : l.cpuQuota)]);
    }
    if (sharesSet) out.push([path.join(cpu, 'cpu.shares'), String(l.cpuShares)]);
    return out;
  }
  if (!dirs.unified) return out;
  if (quotaSet) out.push([path.join(dirs.unified, 'cpu.max'), `${l.cpuQuota! < 0 ? 'max' : l.cpuQuota} ${period}`]);
  if (sharesSet) {
    const s = Math.min(262144, Math.max(2, l.cpuShares!));
    out.push([path.join(dirs.unified, 'cpu.weight'), String(1 + Math.floor(((s - 2) * 9999) / 262142))]);
  }
  return out;
}

/** Writes them in order; the first failure names the file. */
export function applyWrites(writes: [string, string][]): void {
  for (const [file, value] of writes) {
    try {
      fs.writeFileSync(file, value);
    } catch (err) {
      throw new Error(`cannot write ${value} to ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}
