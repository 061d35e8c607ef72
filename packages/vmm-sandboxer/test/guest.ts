// Shared by the tests that boot real guests: where the cached guest is, and why a test must be skipped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger, type Logger } from '@kuasar/sandbox';
import { VMM_CONFIG_SCHEMA, resolveVmmConfig, type VmmConfig } from '../src/config';
import { configDefaults } from '@kuasar/sandbox';

export const GUEST_DIR = path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'current');
const MANIFEST = path.join(GUEST_DIR, 'manifest.json');

export interface GuestManifest {
  cmdline: string;
  kernel: { release: string };
  initramfs: { agent: unknown };
}

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => {
    try {
      fs.accessSync(path.join(d || '.', bin), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export function readManifest(): GuestManifest | undefined {
  try {
    return JSON.parse(fs.readFileSync(MANIFEST, 'utf8')) as GuestManifest;
  } catch {
    return undefined;
  }
}

/** Why QEMU tests cannot run here, or undefined. */
export function qemuSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (bind mounts, cgroups)';
  if (!onPath('qemu-system-x86_64')) return 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)';
  if (!readManifest()) return `no cached guest at ${GUEST_DIR} (run: bash scripts/build-guest.sh)`;
  return undefined;
}

/** Why tests that need the guest agent cannot run, or undefined. */
export function agentSkipReason(): string | undefined {
  const q = qemuSkipReason();
  if (q) return q;
  const m = readManifest()!;
  if (!m.initramfs.agent) return `the cached guest has no agent (manifest.json initramfs.agent is null): rebuild it with bash scripts/build-guest.sh once vmm-task is built`;
  if (!fs.existsSync('/bin/busybox')) return '/bin/busybox (busybox-static) is missing; the test rootfs needs it';
  return undefined;
}

/** The sandboxer config tests use: TCG (this host's KVM is PVM-only), generous boot timeout for a loaded CI box. */
export function testConfig(over: Partial<VmmConfig> = {}): VmmConfig {
  const t = configDefaults(VMM_CONFIG_SCHEMA);
  t.kernel = path.join(GUEST_DIR, 'vmlinux');
  t.initrd = path.join(GUEST_DIR, 'initramfs.img');
  t.accel = 'tcg';
  t.boot_timeout_ms = 60_000;
  return { ...resolveVmmConfig(t), ...over };
}

export function testLogger(): Logger {
  return createLogger({ level: (process.env.KUASAR_TEST_LOG as 'debug' | undefined) ?? 'fatal', kind: 'vmm' });
}
