import { fail, ok, warn, type Finding } from './finding';

export interface KvmFacts {
  /** /dev/kvm exists. */
  devKvm: boolean;
  /** /dev/kvm can be opened read-write by us (only meaningful when it exists). */
  devKvmAccessible: boolean;
  /** The `flags` of /proc/cpuinfo (first processor). */
  cpuFlags: ReadonlySet<string>;
  /** Names under /sys/module (kvm, kvm_intel, kvm_amd, kvm_pvm...). */
  modules: ReadonlySet<string>;
  /** The kernel config (/proc/config.gz or /boot/config-<release>), when readable. */
  kernelConfig: string | undefined;
}

export type KvmMode = 'none' | 'hardware' | 'pvm';

const configSet = (config: string | undefined, key: string): boolean =>
  config !== undefined && new RegExp(`^${key}=[ym]$`, 'm').test(config);

/**
 * KVM-PVM (a paravirtualised KVM that runs in a guest without VT-x/SVM) looks like ordinary KVM from /dev/kvm, but
 * only PVM-aware guest kernels run on it: stock kernels hang in KVM_RUN. Any one of three signs decides it, so a
 * kernel without /proc/config.gz or with the module renamed is still recognised: the kvm_pvm module is loaded or
 * built in (/sys/module/kvm_pvm), CONFIG_KVM_PVM is set without Intel/AMD KVM, or /dev/kvm exists while the CPU
 * offers neither vmx nor svm (nothing else could back it).
 */
export function kvmMode(f: KvmFacts): { mode: KvmMode; evidence: string[] } {
  if (!f.devKvm) return { mode: 'none', evidence: ['no /dev/kvm'] };
  const evidence: string[] = [];
  if (f.modules.has('kvm_pvm')) evidence.push('/sys/module/kvm_pvm');
  const hwConfig = configSet(f.kernelConfig, 'CONFIG_KVM_INTEL') || configSet(f.kernelConfig, 'CONFIG_KVM_AMD');
  if (configSet(f.kernelConfig, 'CONFIG_KVM_PVM') && !hwConfig) evidence.push('CONFIG_KVM_PVM=y without KVM_INTEL/KVM_AMD');
  const hwFlags = f.cpuFlags.has('vmx') || f.cpuFlags.has('svm');
  if (!hwFlags) evidence.push('no vmx/svm in /proc/cpuinfo');
  const hwModule = f.modules.has('kvm_intel') || f.modules.has('kvm_amd');
  if (hwFlags && hwModule && !f.modules.has('kvm_pvm')) return { mode: 'hardware', evidence: [] };
  if (evidence.length > 0) return { mode: 'pvm', evidence };
  return { mode: 'hardware', evidence: [] };
}

export function checkKvm(f: KvmFacts): Finding {
  const { mode, evidence } = kvmMode(f);
  const tcg = 'the vmm sandboxer can still run guests under TCG (qemu without -enable-kvm), about 1 s per boot with the small kernel';
  if (mode === 'none') {
    const builtIn = configSet(f.kernelConfig, 'CONFIG_KVM') || f.modules.has('kvm');
    return warn(
      'kvm',
      `/dev/kvm not present${builtIn ? ' although KVM is in the kernel' : ''}; ${tcg}`,
      builtIn ? 'mknod /dev/kvm c 10 232 && chmod 600 /dev/kvm (or load kvm_intel/kvm_amd)' : 'enable VT-x/AMD-V (nested virtualisation) for this VM, or use TCG',
    );
  }
  if (!f.devKvmAccessible) {
    return fail('kvm', '/dev/kvm exists but cannot be opened read-write', 'run kuasarctl and the vmm sandboxer as root, or chmod 600 /dev/kvm owned by root');
  }
  if (mode === 'pvm') {
    return warn(
      'kvm',
      `KVM-PVM only (${evidence.join('; ')}): only PVM-aware guest kernels run, stock kernels hang in KVM_RUN, and gVisor's kvm platform hangs too`,
      `boot a PVM-enabled guest kernel, or leave KVM off: ${tcg}; use runsc --platform=systrap`,
    );
  }
  return ok('kvm', `/dev/kvm usable with hardware virtualisation (${f.cpuFlags.has('vmx') ? 'vmx' : 'svm'})`);
}

/** The `flags` line of the first processor in /proc/cpuinfo. */
export function cpuFlags(cpuinfo: string): Set<string> {
  const m = /^flags\s*:\s*(.*)$/m.exec(cpuinfo);
  return new Set(m ? m[1].trim().split(/\s+/) : []);
}
