// @kuasar/shim is a C program (native/thin-shim.c, built by native/build.sh into dist/bin). This module
// states, for the TypeScript side (sandboxers, kuasarctl, tests), the names and paths the binary uses,
// so a sandboxer listens exactly where the shim connects.
import path from 'node:path';

export const SHIM_KINDS = ['runc', 'wasm', 'quark', 'vmm'] as const;
export type ShimKind = (typeof SHIM_KINDS)[number];

const KIND = /^[a-z0-9]{1,32}$/;

function checkKind(kind: string): void {
  if (!KIND.test(kind)) throw new TypeError(`invalid sandboxer kind '${kind}': expected [a-z0-9]{1,32}`);
}

/** `containerd-shim-kuasar-<kind>-v2`: what containerd resolves runtime `io.containerd.kuasar-<kind>.v2` to. */
export function shimBinaryName(kind: string): string {
  checkKind(kind);
  return `containerd-shim-kuasar-${kind}-v2`;
}

/** The containerd runtime_type that selects this shim. */
export function runtimeType(kind: string): string {
  checkKind(kind);
  return `io.containerd.kuasar-${kind}.v2`;
}

/** Where the build puts the binary: <repo>/dist/bin unless `binDir` says otherwise. */
export function shimBinaryPath(kind: string, binDir = path.resolve(__dirname, '../../../dist/bin')): string {
  return path.join(binDir, shimBinaryName(kind));
}

/** `KUASAR_<KIND>_TASK_SOCKET`: overrides the task socket for the shim (containerd passes its env to shims). */
export function taskSocketEnvName(kind: string): string {
  checkKind(kind);
  return `KUASAR_${kind.toUpperCase()}_TASK_SOCKET`;
}

/** The sandboxer task socket the shim connects to, resolved the way the C program does. */
export function taskSocketPath(kind: string, env: NodeJS.ProcessEnv = process.env): string {
  const override = env[taskSocketEnvName(kind)];
  return override ? override : `/run/kuasar-${kind}/task.sock`;
}

/** The systemd unit the shim tells operators to start when the socket does not answer. */
export function sandboxerUnit(kind: string): string {
  checkKind(kind);
  return `kuasar-${kind}-sandboxer.service`;
}
