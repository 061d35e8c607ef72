import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runtimeType, shimBinaryName, taskSocketEnvName } from '@kuasar/shim';
import { criConfig, tomlTable, type CniSetup, type ContainerdVersion, type TomlTable } from '@kuasar/testkit';
import { vmmConfigFile } from './vmm';

export const REPO_ROOT = path.resolve(__dirname, '../../..');

/** One sandboxer binary as the e2e matrix runs it. A new kind adds one entry to SANDBOXERS. */
export interface SandboxerKind {
  kind: string;
  /** Builds what `command` runs (idempotent, fast when up to date). */
  build(): void;
  /** argv before the framework's flags. */
  command(): string[];
}

export class BuildError extends Error {
  override readonly name = 'BuildError';
}

function run(cmd: string, args: string[], cwd = REPO_ROOT, env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new BuildError(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.stdout}`);
}

/** The unbundled-SEA build (esbuild only, ~1 s): the test runs exactly the code in the tree. */
function nodeBundle(pkg: string): SandboxerKind['build'] {
  return () => run(process.execPath, ['scripts/build-bin.mjs', pkg], REPO_ROOT, { KUASAR_NO_SEA: '1' });
}

export const SANDBOXERS: Record<string, SandboxerKind> = {
  runc: {
    kind: 'runc',
    build: nodeBundle('runc-sandboxer'),
    command: () => [process.execPath, path.join(REPO_ROOT, 'packages/runc-sandboxer/dist/main.js')],
  },
  wasm: {
    kind: 'wasm',
    build: nodeBundle('wasm-sandboxer'),
    command: () => [process.execPath, path.join(REPO_ROOT, 'packages/wasm-sandboxer/dist/main.js')],
  },
  vmm: {
    kind: 'vmm',
    build: nodeBundle('vmm-sandboxer'),
    command: () => [process.execPath, path.join(REPO_ROOT, 'packages/vmm-sandboxer/dist/main.js'), '--config', vmmConfigFile()],
  },
  quark: {
    kind: 'quark',
    build: nodeBundle('quark-sandboxer'),
    command: () => [process.execPath, path.join(REPO_ROOT, 'packages/quark-sandboxer/dist/main.js')],
  },
};

/** kuasarctl as an operator runs it, bundled from the tree like the sandboxers. */
export const KUASARCTL = {
  build: nodeBundle('kuasarctl'),
  command: (): string[] => [process.execPath, path.join(REPO_ROOT, 'packages/kuasarctl/dist/main.js')],
};

export interface MatrixEntry {
  containerd: ContainerdVersion;
  sandboxer: keyof typeof SANDBOXERS;
}

/** containerd 2.x reaches the sandboxer as a sandbox proxy plugin; 1.x through the thin shim. */
export function usesShim(version: ContainerdVersion): boolean {
  return version !== '2.1';
}

/** CRI runtime handler name for a kind: kuasar-<kind>. */
export function handlerName(kind: string): string {
  return `kuasar-${kind}`;
}

/** Builds the thin shim into `binDir` (only there, so containerd finds it only where a test put it on PATH). */
export function buildShim(binDir: string): string {
  run('sh', [path.join(REPO_ROOT, 'packages/shim/native/build.sh'), binDir]);
  return binDir;
}

/**
 * The containerd config fragment that registers a sandboxer: for 2.1 a `sandbox` proxy plugin plus a CRI handler
 * with `sandboxer = <plugin>`; for 1.x a handler whose runtime_type resolves to the thin shim.
 */
export function kuasarContainerdConfig(version: ContainerdVersion, kind: string, listen: string, cni?: CniSetup): string {
  const handler = handlerName(kind);
  const rt: TomlTable = { runtime_type: runtimeType(kind) };
  if (!usesShim(version)) rt.sandboxer = handler;
  const cri = criConfig(version, { cni, runtimes: { [handler]: rt } });
  if (!usesShim(version)) return `${cri}\n${tomlTable(`proxy_plugins.${handler}`, { type: 'sandbox', address: listen })}\n`;
  return cri;
}

/** Environment a 1.x containerd must have so its shims find the sandboxer's task socket. */
export function shimEnv(kind: string, taskSocket: string): Record<string, string> {
  return { [taskSocketEnvName(kind)]: taskSocket };
}

export { shimBinaryName };
