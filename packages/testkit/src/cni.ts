import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ContainerdVersion } from './binaries';
import { PAUSE_IMAGE } from './oci-image';

/** Debian's containernetworking-plugins. */
export const CNI_BIN_DIR = '/usr/lib/cni';

export class CniSetupError extends Error {
  override readonly name = 'CniSetupError';
}

/** A per-instance CNI network: bridge + host-local IPAM on a private /24, plus loopback. */
export interface CniSetup {
  /** Directory holding the .conflist (containerd's cni conf_dir). */
  confDir: string;
  binDir: string;
  networkName: string;
  /** Linux bridge the plugin creates in the host namespace on first ADD. */
  bridge: string;
  /** e.g. "10.88.37.0/24"; the bridge gets .1, pods get .2 and up. */
  subnet: string;
  gateway: string;
  /** host-local's lease store (kept out of the shared /var/lib/cni/networks). */
  ipamDataDir: string;
  /** Deletes the bridge and the dirs. Call after containerd has torn its pods down. */
  cleanup(): void;
}

export interface CniOptions {
  /** Parent of the instance dir; default os.tmpdir(). */
  baseDir?: string;
  /** Third octet of 10.88.X.0/24; default a random one not already routed on this host. */
  octet?: number;
}

function routedV4(): string {
  const r = spawnSync('ip', ['-o', '-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
  const a = spawnSync('ip', ['-o', '-4', 'addr'], { encoding: 'utf8' });
  return `${r.stdout ?? ''}\n${a.stdout ?? ''}`;
}

function pickOctet(): number {
  const used = routedV4();
  for (let i = 0; i < 64; i++) {
    const x = 1 + (randomBytes(1)[0] % 254);
    if (!used.includes(`10.88.${x}.`)) return x;
  }
  throw new CniSetupError('no free 10.88.X.0/24 subnet found');
}

/** Writes the conflist for a fresh private network. Needs the bridge, host-local and loopback plugins. */
export function createCniSetup(opts: CniOptions = {}): CniSetup {
  for (const p of ['bridge', 'host-local', 'loopback']) {
    if (!existsSync(path.join(CNI_BIN_DIR, p))) throw new CniSetupError(`${CNI_BIN_DIR}/${p} missing; install containernetworking-plugins`);
  }
  const octet = opts.octet ?? pickOctet();
  if (!Number.isInteger(octet) || octet < 0 || octet > 255) throw new CniSetupError(`subnet octet ${octet} is not 0..255`);
  const dir = mkdtempSync(path.join(opts.baseDir ?? os.tmpdir(), 'kcni-'));
  const confDir = path.join(dir, 'net.d');
  const ipamDataDir = path.join(dir, 'ipam');
  mkdirSync(confDir);
  mkdirSync(ipamDataDir);
  const tag = randomBytes(3).toString('hex');
  const networkName = `kuasar-${tag}`;
  const bridge = `kbr${tag}`; // ≤ 15 bytes (IFNAMSIZ)
  const subnet = `10.88.${octet}.0/24`;
  const gateway = `10.88.${octet}.1`;
  const conflist = {
    cniVersion: '1.0.0',
    name: networkName,
    plugins: [
      {
        type: 'bridge',
        bridge,
        isGateway: true,
        // No masquerade: pods talk only to the host and each other, nothing leaves the machine.
        ipMasq: false,
        hairpinMode: false,
        ipam: { type: 'host-local', dataDir: ipamDataDir, ranges: [[{ subnet, gateway }]] },
      },
      { type: 'loopback' },
    ],
  };
  writeFileSync(path.join(confDir, '10-kuasar.conflist'), `${JSON.stringify(conflist, null, 2)}\n`);
  let cleaned = false;
  return {
    confDir,
    binDir: CNI_BIN_DIR,
    networkName,
    bridge,
    subnet,
    gateway,
    ipamDataDir,
    cleanup() {
      if (cleaned) return;
      cleaned = true;
      if (existsSync(`/sys/class/net/${bridge}`)) spawnSync('ip', ['link', 'del', bridge], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// containerd CRI config fragments, for PrivateContainerd.start({extraConfig}).

export type TomlValue = string | number | boolean | string[] | number[] | TomlTable;
export interface TomlTable {
  [key: string]: TomlValue;
}

export interface CriConfigOptions {
  /** Extra handlers: name → the runtime table (nested objects become sub-tables, e.g. options). */
  runtimes?: Record<string, TomlTable>;
  cni?: Pick<CniSetup, 'confDir' | 'binDir'>;
  /** Sandbox (pause) image; default our local PAUSE_IMAGE. */
  sandboxImage?: string;
}

const BARE_KEY = /^[A-Za-z0-9_-]+$/;
const tomlKey = (k: string): string => (BARE_KEY.test(k) ? k : JSON.stringify(k));

function tomlScalar(v: TomlValue, where: string): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`${where}: number must be finite`);
    return String(v);
  }
  if (Array.isArray(v)) return `[${(v as (string | number)[]).map((x) => tomlScalar(x, where)).join(', ')}]`;
  throw new TypeError(`${where}: unsupported TOML value`);
}

/** Serialises `table` under header `name`: scalars first, then sub-tables (TOML needs that order). */
export function tomlTable(name: string, table: TomlTable): string {
  if (!table || typeof table !== 'object' || Array.isArray(table)) throw new TypeError(`[${name}] must be an object`);
  const lines = [`[${name}]`];
  const subs: string[] = [];
  for (const [k, v] of Object.entries(table)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) subs.push(tomlTable(`${name}.${tomlKey(k)}`, v));
    else lines.push(`  ${tomlKey(k)} = ${tomlScalar(v, `${name}.${k}`)}`);
  }
  return [lines.join('\n'), ...subs].join('\n\n');
}

/** The CRI plugin's table prefix per config version. */
export function criRuntimeTable(version: ContainerdVersion): string {
  return version === '2.1' ? `plugins.'io.containerd.cri.v1.runtime'` : `plugins."io.containerd.grpc.v1.cri"`;
}

/**
 * CRI settings for a test containerd: local sandbox image, overlayfs, no registry mirrors, CNI
 * from `cni`, plus extra runtime handlers. `restrict_oom_score_adj = true` is already in
 * PrivateContainerd's generated config (root here lacks CAP_SYS_RESOURCE).
 *
 * PrivateContainerd already defines the CRI plugin's own table, and TOML forbids reopening a
 * table, so on 1.6/1.7 the keys that live directly in it are given as dotted top-level keys;
 * containerd's TOML reader (go-toml v1) merges those into the later table.
 */
export function criConfig(version: ContainerdVersion, opts: CriConfigOptions = {}): string {
  const sandboxImage = opts.sandboxImage ?? PAUSE_IMAGE;
  const rt = criRuntimeTable(version);
  const out: string[] = [];
  if (version === '2.1') {
    out.push(tomlTable(`plugins.'io.containerd.cri.v1.images'`, { snapshotter: 'overlayfs', pinned_images: { sandbox: sandboxImage }, registry: { config_path: '' } }));
    if (opts.cni) out.push(tomlTable(`${rt}.cni`, { bin_dirs: [opts.cni.binDir], conf_dir: opts.cni.confDir, max_conf_num: 1 }));
  } else if (version === '1.6' || version === '1.7') {
    out.push([
      `${rt}.sandbox_image = ${JSON.stringify(sandboxImage)}`,
      `${rt}.containerd.snapshotter = "overlayfs"`,
      `${rt}.registry.config_path = ""`,
    ].join('\n'));
    if (opts.cni) out.push(tomlTable(`${rt}.cni`, { bin_dir: opts.cni.binDir, conf_dir: opts.cni.confDir, max_conf_num: 1 }));
  } else {
    throw new TypeError(`criConfig: unknown containerd version '${String(version)}'`);
  }
  const runtimes = { ...(opts.runtimes ?? {}) };
  // 1.x's TOML decoder replaces the whole runtimes map instead of merging into the defaults, so
  // without this the default handler would vanish and the CRI plugin would refuse to load.
  if (version !== '2.1' && Object.keys(runtimes).length > 0 && !('runc' in runtimes)) {
    runtimes.runc = { runtime_type: 'io.containerd.runc.v2' };
  }
  for (const [handler, table] of Object.entries(runtimes)) {
    if (!handler) throw new TypeError('criConfig: empty runtime handler name');
    out.push(tomlTable(`${rt}.containerd.runtimes.${tomlKey(handler)}`, table));
  }
  return `${out.join('\n\n')}\n`;
}
