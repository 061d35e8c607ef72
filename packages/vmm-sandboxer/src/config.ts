// The [vmm] table of the sandboxer config file, and what it resolves to: the VM every pod gets unless its own
// resources size it differently.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, defineConfig, type ConfigOf } from '@kuasar/sandbox';

/** Where scripts/build-guest.sh leaves the current guest (kernel, initramfs, manifest.json). */
export const GUEST_DIR = '/var/cache/kuasar/guest/current';

export const VMM_CONFIG_SCHEMA = defineConfig({
  qemu: { type: 'string', default: 'qemu-system-x86_64', description: 'QEMU binary (name in PATH or absolute path)' },
  kernel: { type: 'string', default: `${GUEST_DIR}/vmlinux`, description: 'guest kernel (uncompressed vmlinux for microvm)' },
  initrd: { type: 'string', default: `${GUEST_DIR}/initramfs.img`, description: 'guest initramfs with /init and the agent' },
  kernel_params: {
    type: 'string', default: '',
    description: 'kernel command line ("" = the cmdline of manifest.json beside the kernel); kuasar.* params are appended',
  },
  vcpus: { type: 'integer', default: 1, min: 1, max: 64, description: 'vCPUs of a pod without a CPU limit' },
  memory_mib: { type: 'integer', default: 256, min: 64, max: 1048576, description: 'memory of a pod without a memory limit' },
  memory_overhead_mib: {
    type: 'integer', default: 64, min: 0, max: 65536,
    description: 'added to a pod memory limit for the guest kernel, agent and page cache',
  },
  machine: { type: 'string', default: 'microvm,acpi=off', description: 'QEMU -M value' },
  accel: {
    type: 'string', default: 'auto', enum: ['kvm', 'tcg', 'auto'],
    description: 'auto: probe once whether KVM boots the kernel, else TCG',
  },
  accel_probe_timeout_ms: { type: 'integer', default: 3000, min: 100, max: 60000, description: 'how long the KVM probe waits for guest output' },
  share_fs: { type: 'string', default: '9p', enum: ['9p', 'virtiofs'], description: 'how bundles reach the guest' },
  virtiofsd: { type: 'string', default: '/usr/lib/qemu/virtiofsd', description: 'virtiofsd binary (share_fs = "virtiofs")' },
  debug_console: {
    type: 'boolean', default: false,
    description: 'keep kernel messages on the console log and make the agent log verbosely (slower boots under TCG)',
  },
  boot_timeout_ms: { type: 'integer', default: 30000, min: 1000, max: 600000, description: 'launch until the agent says HELLO' },
});

export type VmmConfigTable = ConfigOf<typeof VMM_CONFIG_SCHEMA>;

/** The resolved settings every VM of this sandboxer is built from. */
export interface VmmConfig {
  qemu: string;
  kernel: string;
  initrd: string;
  /** base kernel command line, before the per-VM kuasar.* params */
  kernelParams: string;
  vcpus: number;
  memoryMiB: number;
  memoryOverheadMiB: number;
  machine: string;
  accel: 'kvm' | 'tcg' | 'auto';
  accelProbeTimeoutMs: number;
  shareFs: '9p' | 'virtiofs';
  virtiofsd: string;
  debugConsole: boolean;
  bootTimeoutMs: number;
}

/** Used when neither kernel_params nor a manifest gives a command line: serial console, no reboot loops. */
const FALLBACK_CMDLINE = 'console=ttyS0 reboot=t panic=-1';

function findExecutable(name: string): string | undefined {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      if (fs.statSync(c).isFile()) return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The manifest's cmdline beside the kernel (scripts/build-guest.sh writes one), or undefined. */
export function manifestCmdline(kernel: string): string | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(path.dirname(kernel), 'manifest.json'), 'utf8')) as { cmdline?: unknown };
    return typeof m.cmdline === 'string' && m.cmdline.trim() !== '' ? m.cmdline.trim() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Checks the table's meaning (the framework already checked its types) and resolves paths. Missing files are
 * config errors: a sandboxer that cannot boot any VM should refuse to start rather than fail every pod.
 */
export function resolveVmmConfig(t: VmmConfigTable, opts: { checkFiles?: boolean } = {}): VmmConfig {
  const check = opts.checkFiles ?? true;
  const qemu = findExecutable(t.qemu);
  if (check && !qemu) throw new ConfigError(`[vmm] qemu: ${t.qemu} not found or not executable (apt-get install qemu-system-x86)`);
  for (const [key, file] of [['kernel', t.kernel], ['initrd', t.initrd]] as const) {
    if (!path.isAbsolute(file)) throw new ConfigError(`[vmm] ${key} must be an absolute path, got ${JSON.stringify(file)}`);
    if (check && !fs.existsSync(file)) throw new ConfigError(`[vmm] ${key}: ${file} does not exist (build the guest: bash scripts/build-guest.sh)`);
  }
  if (/\s/.test(t.machine) || t.machine === '') throw new ConfigError(`[vmm] machine must be one QEMU -M value, got ${JSON.stringify(t.machine)}`);
  if (/\bkuasar\./.test(t.kernel_params)) throw new ConfigError('[vmm] kernel_params must not set kuasar.* parameters; the sandboxer sets them');
  let virtiofsd = t.virtiofsd;
  if (t.share_fs === 'virtiofs') {
    const found = findExecutable(t.virtiofsd);
    if (check && !found) throw new ConfigError(`[vmm] share_fs = "virtiofs" needs virtiofsd, but ${t.virtiofsd} is missing; use share_fs = "9p"`);
    virtiofsd = found ?? t.virtiofsd;
  }
  const base = t.kernel_params.trim() !== '' ? t.kernel_params.trim() : manifestCmdline(t.kernel) ?? FALLBACK_CMDLINE;
  return {
    qemu: qemu ?? t.qemu,
    kernel: t.kernel,
    initrd: t.initrd,
    kernelParams: base,
    vcpus: t.vcpus,
    memoryMiB: t.memory_mib,
    memoryOverheadMiB: t.memory_overhead_mib,
    machine: t.machine,
    accel: t.accel as VmmConfig['accel'],
    accelProbeTimeoutMs: t.accel_probe_timeout_ms,
    shareFs: t.share_fs as VmmConfig['shareFs'],
    virtiofsd,
    debugConsole: t.debug_console,
    bootTimeoutMs: t.boot_timeout_ms,
  };
}

/** Pod resources as CRI gives them (PodSandboxConfig.linux.resources/overhead); all optional. */
export interface PodResources {
  cpuPeriod?: bigint;
  cpuQuota?: bigint;
  memoryLimitInBytes?: bigint;
}

export interface VmSize {
  vcpus: number;
  memoryMiB: number;
}

const MIB = 1024n * 1024n;
const MAX_VCPUS = 64;

/** vcpus = ceil(quota/period) (config default without a quota), memory = limit + overhead (config default without a limit). */
export function vmSize(cfg: Pick<VmmConfig, 'vcpus' | 'memoryMiB' | 'memoryOverheadMiB'>, r: PodResources | undefined): VmSize {
  let vcpus = cfg.vcpus;
  const quota = r?.cpuQuota ?? 0n;
  const period = r?.cpuPeriod ?? 0n;
  if (quota > 0n && period > 0n) vcpus = Math.min(MAX_VCPUS, Number((quota + period - 1n) / period));
  let memoryMiB = cfg.memoryMiB;
  const limit = r?.memoryLimitInBytes ?? 0n;
  if (limit > 0n) memoryMiB = Number((limit + MIB - 1n) / MIB) + cfg.memoryOverheadMiB;
  return { vcpus: Math.max(1, vcpus), memoryMiB };
}
