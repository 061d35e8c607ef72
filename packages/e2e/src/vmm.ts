// The vmm sandboxer in the e2e matrix: its config names the cached guest (KUASAR_CACHE) and TCG, because the
// project's machines have KVM-PVM only, where `accel = "auto"` would spend its probe timeout on every start.
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';

/** The guest scripts/build-guest.sh cached (kernel, initramfs with the agent, manifest.json); KUASAR_VMM_GUEST overrides. */
export function vmmGuestDir(): string {
  return process.env.KUASAR_VMM_GUEST || path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'current');
}

/** Why vmm pods cannot run here (no QEMU, no guest, or a guest without the agent), or undefined. */
export function vmmSkipReason(): string | undefined {
  const qemu = (process.env.PATH ?? '').split(':').some((d) => fs.existsSync(path.join(d || '.', 'qemu-system-x86_64')));
  if (!qemu) return 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)';
  let manifest: { initramfs?: { agent?: unknown } };
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(vmmGuestDir(), 'manifest.json'), 'utf8')) as typeof manifest;
  } catch {
    return `no cached guest at ${vmmGuestDir()} (bash scripts/build-guest.sh --agent packages/vmm-task/dist)`;
  }
  if (!manifest.initramfs?.agent) return `the guest at ${vmmGuestDir()} has no agent (bash scripts/build-guest.sh --agent packages/vmm-task/dist)`;
  return undefined;
}

let configFile: string | undefined;

/** A [vmm] config file for the e2e sandboxer (written once per test process). */
export function vmmConfigFile(): string {
  if (configFile) return configFile;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ke2e-vmm-'));
  configFile = path.join(dir, 'vmm-sandboxer.toml');
  const g = vmmGuestDir();
  fs.writeFileSync(configFile, `[vmm]\nkernel = "${g}/vmlinux"\ninitrd = "${g}/initramfs.img"\naccel = "tcg"\nboot_timeout_ms = 90000\n`);
  return configFile;
}
