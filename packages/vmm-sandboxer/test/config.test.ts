import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, configDefaults, parseSandboxerConfig } from '@kuasar/sandbox';
import { GUEST_DIR, VMM_CONFIG_SCHEMA, resolveVmmConfig, vmSize } from '../src/config';

function table(text: string) {
  return parseSandboxerConfig('vmm', VMM_CONFIG_SCHEMA, text).kind;
}

describe('[vmm] config', () => {
  it('defaults to the cached guest, TCG-or-KVM auto, 9p, 1 vCPU / 256 MiB', () => {
    const t = configDefaults(VMM_CONFIG_SCHEMA);
    expect(t.kernel).toBe(`${GUEST_DIR}/vmlinux`);
    expect(t.initrd).toBe(`${GUEST_DIR}/initramfs.img`);
    expect([t.accel, t.share_fs, t.machine, t.vcpus, t.memory_mib]).toEqual(['auto', '9p', 'microvm,acpi=off', 1, 256]);
  });

  it('takes the kernel command line from manifest.json beside the kernel unless kernel_params is set', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-cfg-'));
    try {
      for (const f of ['vmlinux', 'initramfs.img']) fs.writeFileSync(path.join(dir, f), '');
      fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ cmdline: 'console=ttyS0 tsc_early_khz=2500000' }));
      const t = { ...configDefaults(VMM_CONFIG_SCHEMA), kernel: path.join(dir, 'vmlinux'), initrd: path.join(dir, 'initramfs.img') };
      expect(resolveVmmConfig(t, { checkFiles: false }).kernelParams).toBe('console=ttyS0 tsc_early_khz=2500000');
      expect(resolveVmmConfig({ ...t, kernel_params: 'console=ttyS0 quiet' }, { checkFiles: false }).kernelParams).toBe('console=ttyS0 quiet');
      fs.rmSync(path.join(dir, 'manifest.json'));
      expect(resolveVmmConfig(t, { checkFiles: false }).kernelParams).toBe('console=ttyS0 reboot=t panic=-1');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects what cannot boot, naming the key', () => {
    expect(() => table('[vmm]\naccel = "hvf"\n')).toThrow(/"vmm.accel" must be one of "kvm", "tcg", "auto"/);
    expect(() => table('[vmm]\nshare_fs = "nfs"\n')).toThrow(ConfigError);
    expect(() => table('[vmm]\nvcpus = 0\n')).toThrow(/at least 1/);
    expect(() => table('[vmm]\nmemry_mib = 1\n')).toThrow(/unknown key "vmm.memry_mib"/);
    const t = configDefaults(VMM_CONFIG_SCHEMA);
    expect(() => resolveVmmConfig({ ...t, qemu: '/nonexistent/qemu' })).toThrow(/qemu: \/nonexistent\/qemu not found/);
    expect(() => resolveVmmConfig({ ...t, kernel: 'vmlinux' }, { checkFiles: false })).toThrow(/kernel must be an absolute path/);
    expect(() => resolveVmmConfig({ ...t, kernel: '/nonexistent/vmlinux' })).toThrow(/kernel: \/nonexistent\/vmlinux does not exist/);
    expect(() => resolveVmmConfig({ ...t, kernel_params: 'kuasar.9p=x' }, { checkFiles: false })).toThrow(/must not set kuasar/);
    expect(() => resolveVmmConfig({ ...t, share_fs: 'virtiofs', virtiofsd: '/nonexistent/virtiofsd' })).toThrow(/needs virtiofsd, but \/nonexistent\/virtiofsd is missing/);
  });
});

describe('vmSize', () => {
  const cfg = { vcpus: 1, memoryMiB: 256, memoryOverheadMiB: 64 };
  it('uses the config without pod resources', () => {
    expect(vmSize(cfg, undefined)).toEqual({ vcpus: 1, memoryMiB: 256 });
    expect(vmSize(cfg, { cpuPeriod: 0n, cpuQuota: 0n, memoryLimitInBytes: 0n })).toEqual({ vcpus: 1, memoryMiB: 256 });
  });
  it('vcpus = ceil(quota/period), memory = limit + overhead', () => {
    expect(vmSize(cfg, { cpuPeriod: 100000n, cpuQuota: 150000n })).toEqual({ vcpus: 2, memoryMiB: 256 });
    expect(vmSize(cfg, { cpuPeriod: 100000n, cpuQuota: 50000n })).toEqual({ vcpus: 1, memoryMiB: 256 });
    expect(vmSize(cfg, { memoryLimitInBytes: 128n * 1024n * 1024n })).toEqual({ vcpus: 1, memoryMiB: 192 });
    expect(vmSize(cfg, { memoryLimitInBytes: 100_000_000n })).toEqual({ vcpus: 1, memoryMiB: 96 + 64 });
    expect(vmSize(cfg, { cpuPeriod: 100000n, cpuQuota: 100000n * 1000n }).vcpus).toBe(64);
  });
});
