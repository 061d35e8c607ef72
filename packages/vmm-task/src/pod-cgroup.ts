// Pod-wide limits inside the guest. Every container's cgroup is /kuasar/<id> (the host's guest-spec puts it there),
// so limits on /kuasar bound the pod as a whole, as the pod cgroup does on a runc node. The VM's own size (vCPUs,
// memory) is fixed at boot; these limits are how a pod is resized within it. Pure, so it is unit-tested on Node.
import { RpcError } from '@kuasar/vmm-protocol';
import type { Params } from './params';

export const POD_CGROUP = '/sys/fs/cgroup/kuasar';
const MAX_I64 = 2 ** 63;

function invalid(message: string): never {
  throw new RpcError('INVALID_ARGUMENT', message);
}

function optionalInteger(o: Params, field: string, what: string, min: number): number | undefined {
  const v = o[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v >= MAX_I64) invalid(`${what} must be an integer >= ${min}`);
  return v;
}

function section(r: Params, field: string): Params {
  const v = r[field];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) invalid(`resources.${field} must be an object`);
  return v as Params;
}

/**
 * The cgroup v2 files (relative to POD_CGROUP) and values for OCI LinuxResources: memory.limit (-1 = unlimited,
 * 0 or absent = unchanged), cpu.quota/period (quota -1 = unlimited), cpu.shares (converted to cpu.weight the way
 * crun and runc convert it).
 */
export function podCgroupWrites(resources: unknown): [file: string, value: string][] {
  if (typeof resources !== 'object' || resources === null || Array.isArray(resources)) invalid('resources must be an object');
  const r = resources as Params;
  const out: [string, string][] = [];
  const memory = section(r, 'memory');
  const limit = optionalInteger(memory, 'limit', 'resources.memory.limit', -1);
  if (limit === -1) out.push(['memory.max', 'max']);
  else if (limit !== undefined && limit > 0) out.push(['memory.max', String(limit)]);
  const cpu = section(r, 'cpu');
  const quota = optionalInteger(cpu, 'quota', 'resources.cpu.quota', -1);
  const period = optionalInteger(cpu, 'period', 'resources.cpu.period', 0);
  if (period !== undefined && period !== 0 && (period < 1000 || period > 1_000_000)) invalid('resources.cpu.period must be 1000..1000000 µs');
  if (quota !== undefined && quota > 0 && quota < 1000) invalid('resources.cpu.quota must be at least 1000 µs');
  if (quota === -1) out.push(['cpu.max', `max ${period || 100_000}`]);
  else if (quota !== undefined && quota > 0) out.push(['cpu.max', `${quota} ${period || 100_000}`]);
  const shares = optionalInteger(cpu, 'shares', 'resources.cpu.shares', 0);
  if (shares !== undefined && shares > 0) {
    const s = Math.min(262144, Math.max(2, shares));
    out.push(['cpu.weight', String(1 + Math.floor(((s - 2) * 9999) / 262142))]);
  }
  return out;
}

/** What a pod cgroup's limit files say, for guest.info (absent files: undefined). */
export function podCgroupLimits(read: (file: string) => string | undefined): { memoryMax?: string; cpuMax?: string; cpuWeight?: string } {
  const v = (f: string) => read(`${POD_CGROUP}/${f}`)?.trim();
  const out: { memoryMax?: string; cpuMax?: string; cpuWeight?: string } = {};
  const m = v('memory.max');
  const c = v('cpu.max');
  const w = v('cpu.weight');
  if (m) out.memoryMax = m;
  if (c) out.cpuMax = c;
  if (w) out.cpuWeight = w;
  return out;
}
