import { types } from '@kuasar/api';

// Node's process.arch → the GOARCH names containerd's platform matching expects.
const GO_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le', // Node reports 'ppc64' on ppc64le Linux, the only ppc64 Linux it supports
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** The platform of this host in containerd's (Go's) vocabulary, e.g. linux/amd64. */
export function hostPlatform(): types.Platform {
  const arch = GO_ARCH[process.arch] ?? process.arch;
  const variant = process.arch === 'arm' ? `v${(process.config.variables as { arm_version?: string }).arm_version ?? '7'}` : '';
  return types.Platform.fromPartial({ os: process.platform, architecture: arch, variant });
}
