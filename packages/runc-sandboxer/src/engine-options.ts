import * as path from 'node:path';
import { anyTypeName, runcOptions, runtimeOptions, unpackAny, type google } from '@kuasar/api';
import { defineConfig } from '@kuasar/sandbox';
import { parse as parseToml } from 'smol-toml';

/**
 * Which OCI runtime binary runs a pod's containers, and how. Three sources, later ones win:
 * the sandboxer's TOML config (`[runtime] binary = "crun"`), then the CRI handler's options that arrive as
 * an Any: `runtimeoptions.v1.Options` whose config_body is the handler's `options` TOML table
 * (`BinaryName = "crun"`), or `containerd.runc.v1.Options` (binary_name) when the handler is runc-typed.
 */

export interface EngineOptions {
  /** 'runc', 'crun', or an absolute path to one of them. */
  binary: string;
  /** --root of the runtime; undefined = the engine's default per namespace. */
  root?: string;
  systemdCgroup: boolean;
  noPivotRoot: boolean;
  noNewKeyring: boolean;
}

export const DEFAULT_ENGINE_OPTIONS: EngineOptions = {
  binary: 'runc',
  systemdCgroup: false,
  noPivotRoot: false,
  noNewKeyring: false,
};

export class EngineOptionsError extends Error {
  override readonly name = 'EngineOptionsError';
  readonly code = 'invalid_argument';
}

const KNOWN_BINARIES = new Set(['runc', 'crun']);
const RUNTIME_OPTIONS_TYPE = 'runtimeoptions.v1.Options';
const RUNC_OPTIONS_TYPE = 'containerd.runc.v1.Options';

function checkBinary(value: unknown, where: string): string {
  if (typeof value !== 'string' || value === '') throw new EngineOptionsError(`${where}: binary must be a non-empty string`);
  // Only the OCI CLIs this sandboxer speaks: an absolute path must still name one of them.
  const base = path.posix.isAbsolute(value) ? path.posix.basename(value) : value;
  if (!KNOWN_BINARIES.has(base) || (!path.posix.isAbsolute(value) && value.includes('/'))) {
    throw new EngineOptionsError(`${where}: unsupported runtime binary ${JSON.stringify(value)} (expected runc or crun)`);
  }
  return value;
}

function checkBool(value: unknown, where: string): boolean {
  if (typeof value !== 'boolean') throw new EngineOptionsError(`${where} must be a boolean`);
  return value;
}

function checkRoot(value: unknown, where: string): string {
  if (typeof value !== 'string' || !path.posix.isAbsolute(value)) throw new EngineOptionsError(`${where} must be an absolute path`);
  return value;
}

function parseTomlText(text: string, where: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new EngineOptionsError(`${where}: invalid TOML: ${(err as Error).message}`);
  }
}

/**
 * The runc kind's table in the framework's config file (`[runc.runtime]`, see sandboxerConfigSchema): the framework
 * checks the types, engineOptionsFromConfig the meaning (which binaries, absolute root).
 */
export const RUNC_CONFIG_SCHEMA = defineConfig({
  runtime: {
    type: 'table',
    description: 'the OCI runtime that runs the containers',
    fields: {
      binary: { type: 'string', default: 'runc', description: 'runc or crun (name in PATH or absolute path)' },
      root: { type: 'string', default: '', description: 'state root of the runtime ("" = /run/kuasar/<binary>)' },
      systemd_cgroup: { type: 'boolean', default: false },
      no_pivot_root: { type: 'boolean', default: false },
      no_new_keyring: { type: 'boolean', default: false },
    },
  },
});

/**
 * The sandboxer config's `[runtime]` table, from TOML text or an already parsed document:
 *   [runtime]
 *   binary = "crun"          # or "runc" (default), or an absolute path
 *   root = "/run/kuasar/runc"
 *   systemd_cgroup = false
 */
export function engineOptionsFromConfig(config: string | Record<string, unknown> | undefined, base: EngineOptions = DEFAULT_ENGINE_OPTIONS): EngineOptions {
  if (config === undefined) return { ...base };
  const doc = typeof config === 'string' ? parseTomlText(config, 'sandboxer config') : config;
  const table = doc['runtime'];
  if (table === undefined) return { ...base };
  if (table === null || typeof table !== 'object' || Array.isArray(table)) throw new EngineOptionsError('[runtime] must be a table');
  const t = table as Record<string, unknown>;
  const out = { ...base };
  for (const [key, value] of Object.entries(t)) {
    switch (key) {
      case 'binary':
        out.binary = checkBinary(value, '[runtime] binary');
        break;
      case 'root':
        if (value === '') delete out.root;
        else out.root = checkRoot(value, '[runtime] root');
        break;
      case 'systemd_cgroup':
        out.systemdCgroup = checkBool(value, '[runtime] systemd_cgroup');
        break;
      case 'no_pivot_root':
        out.noPivotRoot = checkBool(value, '[runtime] no_pivot_root');
        break;
      case 'no_new_keyring':
        out.noNewKeyring = checkBool(value, '[runtime] no_new_keyring');
        break;
      default:
        throw new EngineOptionsError(`[runtime] has unknown key ${JSON.stringify(key)}`);
    }
  }
  return out;
}

/**
 * A CRI handler's options table (config_body) as containerd's runc options spell it. Keys other
 * runtimes' tables use are ignored: one handler table may serve several tools.
 */
export function engineOptionsFromHandlerToml(text: string, base: EngineOptions): EngineOptions {
  const doc = parseTomlText(text, 'runtime handler options');
  const out = { ...base };
  if (doc['BinaryName'] !== undefined && doc['BinaryName'] !== '') out.binary = checkBinary(doc['BinaryName'], 'BinaryName');
  if (doc['Root'] !== undefined && doc['Root'] !== '') out.root = checkRoot(doc['Root'], 'Root');
  if (doc['SystemdCgroup'] !== undefined) out.systemdCgroup = checkBool(doc['SystemdCgroup'], 'SystemdCgroup');
  if (doc['NoPivotRoot'] !== undefined) out.noPivotRoot = checkBool(doc['NoPivotRoot'], 'NoPivotRoot');
  if (doc['NoNewKeyring'] !== undefined) out.noNewKeyring = checkBool(doc['NoNewKeyring'], 'NoNewKeyring');
  return out;
}

/**
 * Options from an Any (CreateTaskRequest.options, or the sandbox record's runtime.options).
 * An empty or absent Any keeps base.
 */
export function engineOptionsFromAny(any: google.Any | undefined, base: EngineOptions): EngineOptions {
  if (!any || (any.typeUrl === '' && any.value.length === 0)) return { ...base };
  const name = anyTypeName(any);
  if (name === RUNTIME_OPTIONS_TYPE) {
    const opts = unpackAny(any, runtimeOptions.Options);
    if (opts.configPath !== '') {
      throw new EngineOptionsError(`runtimeoptions config_path is not supported (${opts.configPath}); put the options in the handler's options table`);
    }
    const body = Buffer.from(opts.configBody).toString('utf8');
    return body.trim() === '' ? { ...base } : engineOptionsFromHandlerToml(body, base);
  }
  if (name === RUNC_OPTIONS_TYPE) {
    const o = unpackAny(any, runcOptions.Options);
    const out = { ...base };
    if (o.binaryName !== '') out.binary = checkBinary(o.binaryName, 'binary_name');
    if (o.root !== '') out.root = checkRoot(o.root, 'root');
    if (o.systemdCgroup) out.systemdCgroup = true;
    if (o.noPivotRoot) out.noPivotRoot = true;
    if (o.noNewKeyring) out.noNewKeyring = true;
    return out;
  }
  throw new EngineOptionsError(`unsupported runtime options type ${JSON.stringify(any.typeUrl)}`);
}
