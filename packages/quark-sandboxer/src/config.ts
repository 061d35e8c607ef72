// The [quark] table of the sandboxer config, checked against what this host can really run: a choice that cannot
// work (gVisor's netstack on a kernel hit by gVisor #10704, the kvm platform on a KVM-PVM host, a runsc without
// systrap) is refused at start-up with the reason, instead of pods that hang or fail later.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, defineConfig, type ConfigOf } from '@kuasar/sandbox';

export const QUARK_CONFIG_SCHEMA = defineConfig({
  engine: { type: 'string', default: 'runsc', enum: ['runsc', 'quark'], description: 'application kernel: gVisor runsc (tested) or Quark (untested adapter)' },
  runsc: { type: 'string', default: '', description: 'runsc binary ("" = the trixie build cached by scripts/fetch-debs.sh, else runsc in PATH)' },
  platform: { type: 'string', default: 'systrap', enum: ['systrap', 'ptrace', 'kvm'] },
  network: { type: 'string', default: 'host', enum: ['host', 'none', 'sandbox'], description: 'host: the pod netns with the host stack; none: loopback only' },
  root: { type: 'string', default: '', description: 'runsc state root ("" = <dir>/.runsc)' },
  flags: { type: 'string[]', default: [], description: 'extra global runsc flags, e.g. ["--debug"]' },
  pause: { type: 'string', default: '/usr/bin/catatonit', description: 'static binary the pod root container runs (with -P) inside the sandbox' },
  exit_poll_ms: { type: 'integer', default: 500, min: 50, max: 60_000, description: 'how often app containers are checked for exits' },
  quark: { type: 'string', default: 'quark', description: 'QuarkContainer binary (engine = "quark")' },
});
export type QuarkConfig = ConfigOf<typeof QUARK_CONFIG_SCHEMA>;

export type RunscPlatform = 'systrap' | 'ptrace' | 'kvm';
export type RunscNetwork = 'host' | 'none' | 'sandbox';

/** What the runsc engine runs with, after every check. */
export interface RunscSettings {
  binary: string;
  platform: RunscPlatform;
  network: RunscNetwork;
  /** global flags derived from the settings plus the extra ones */
  globalArgs: string[];
  version: RunscVersion;
}

export interface RunscVersion {
  /** `runsc --version` first line, e.g. "runsc version 0.0~20240729.0" */
  text: string;
  /** gVisor snapshot date (YYYYMMDD) when the version names one */
  date?: number;
  /** Go toolchain the binary was built with (from its build info), e.g. "go1.24.4" */
  go?: string;
}

/** Facts about the host that decide which runsc choices can work. */
export interface HostFacts {
  /** /dev/kvm is KVM-PVM (gVisor's kvm platform hangs in KVM_RUN there) */
  kvmPvm: boolean;
  kvm: boolean;
  /**
   * A fresh network namespace shows /proc/sys/net/core/rmem_default: runsc then believes it runs in the root netns
   * and refuses --network=sandbox (gVisor #10704).
   */
  netnsHasRmemDefault: boolean;
}

const MANAGED_FLAGS = ['--root', '--platform', '--network', '--log', '--log-format', '--debug-log'];
/** Snapshots before systrap landed (mid 2023) only have ptrace (bookworm's 2022 build). */
const FIRST_SYSTRAP_DATE = 20230601;
/** This gVisor source hard-codes Go runtime offsets valid up to Go 1.24; sid rebuilt it with a newer Go and it panics. */
const NEWEST_GO_MINOR = 24;

export function detectHost(): HostFacts {
  const unshare = spawnSync('unshare', ['--net', 'test', '-e', '/proc/sys/net/core/rmem_default'], { stdio: 'ignore', timeout: 5000 });
  return {
    kvm: fs.existsSync('/dev/kvm'),
    kvmPvm: fs.existsSync('/sys/module/kvm_pvm'),
    // unshare failing (no CAP_SYS_ADMIN) tells nothing; only a clean "exists" counts
    netnsHasRmemDefault: unshare.status === 0,
  };
}

/** The runsc that scripts/fetch-debs.sh cached ($KUASAR_CACHE/debs/manifest.json), if any. */
export function cachedRunsc(cache = process.env['KUASAR_CACHE'] ?? '/var/cache/kuasar'): string | undefined {
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(cache, 'debs', 'manifest.json'), 'utf8')) as { key?: string; bins?: Record<string, string> }[];
    const p = manifest.find((m) => m.key === 'runsc')?.bins?.['runsc'];
    return p && fs.existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

function inPath(name: string): string | undefined {
  for (const d of (process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(path.delimiter)) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** The Go version recorded in a Go binary's build info (the "\xff Go buildinf:" header, inline-string format). */
export function goVersionOf(binary: string): string | undefined {
  let data: Buffer;
  try {
    data = fs.readFileSync(binary);
  } catch {
    return undefined;
  }
  const at = data.indexOf(Buffer.from('\xff Go buildinf:', 'latin1'));
  if (at < 0 || (data[at + 15]! & 2) === 0) return undefined; // pre-1.18 pointer format: too old to matter here
  let off = at + 32;
  let len = 0;
  for (let shift = 0; shift < 35; shift += 7) {
    const b = data[off++]!;
    len |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) break;
  }
  const v = data.subarray(off, off + len).toString('latin1');
  return /^go\d/.test(v) ? v : undefined;
}

export function runscVersion(binary: string): RunscVersion {
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) {
    throw new ConfigError(`[quark] runsc ${binary} does not run: ${r.error?.message ?? (r.stderr.trim() || `exit status ${r.status}`)}`);
  }
  const text = r.stdout.split('\n')[0]?.trim() ?? '';
  const m = /(?:0\.0~|release-)(\d{8})/.exec(text);
  const go = goVersionOf(binary);
  return { text, ...(m ? { date: Number(m[1]) } : {}), ...(go ? { go } : {}) };
}

/** Warnings for a runsc build known to be broken or limited; empty when it is the one known to work. */
export function runscWarnings(v: RunscVersion): string[] {
  const out: string[] = [];
  const minor = v.go ? Number(/^go1\.(\d+)/.exec(v.go)?.[1]) : NaN;
  if (v.date === 20240729 && minor > NEWEST_GO_MINOR) {
    out.push(`runsc ${v.text} was built with ${v.go}, newer than this gVisor snapshot supports (≤ go1.${NEWEST_GO_MINOR}): ` +
      `this is Debian sid's broken build (ptrace panics, systrap panics under load); use trixie's 0.0~20240729.0-4+b7 (scripts/fetch-debs.sh)`);
  }
  return out;
}

/** Resolves and checks the runsc choices of the [quark] table; throws ConfigError naming what cannot work and why. */
export function runscSettings(c: QuarkConfig, host: HostFacts = detectHost()): RunscSettings {
  const binary = c.runsc !== '' ? c.runsc : (cachedRunsc() ?? inPath('runsc'));
  if (!binary) throw new ConfigError('[quark] no runsc: run scripts/fetch-debs.sh (trixie build) or set [quark] runsc = "/path/to/runsc"');
  if (!path.isAbsolute(binary)) throw new ConfigError(`[quark] runsc must be an absolute path, got ${JSON.stringify(binary)}`);
  // the task core's OCI CLI engine recognises gVisor (stats from `events --stats`, gofer reaping) by this name
  if (path.basename(binary) !== 'runsc') throw new ConfigError(`[quark] runsc binary must be named "runsc", got ${binary}`);
  const platform = c.platform as RunscPlatform;
  const network = c.network as RunscNetwork;
  if (platform === 'kvm') {
    if (!host.kvm) throw new ConfigError('[quark] platform = "kvm" needs /dev/kvm, which this host does not have; use "systrap"');
    if (host.kvmPvm) {
      throw new ConfigError('[quark] platform = "kvm" cannot work here: /dev/kvm is KVM-PVM (/sys/module/kvm_pvm), where gVisor\'s kvm platform hangs in KVM_RUN; use "systrap" or "ptrace"');
    }
  }
  if (network === 'sandbox' && host.netnsHasRmemDefault) {
    throw new ConfigError('[quark] network = "sandbox" cannot work on this kernel: /proc/sys/net/core/rmem_default exists in every network namespace, ' +
      'so runsc thinks the pod runs in the root netns and refuses ("cannot run with network enabled in root network namespace", gVisor #10704); ' +
      'use network = "host" (the pod netns with the host stack) or "none"');
  }
  for (const f of c.flags) {
    const name = f.split('=')[0]!;
    if (!f.startsWith('-')) throw new ConfigError(`[quark] flags: ${JSON.stringify(f)} is not a flag`);
    if (MANAGED_FLAGS.includes(name.replace(/^-+/, '--'))) throw new ConfigError(`[quark] flags: ${name} is set by the sandboxer (use the [quark] keys instead)`);
  }
  if (!fs.existsSync(binary)) throw new ConfigError(`[quark] runsc ${binary} does not exist`);
  const version = runscVersion(binary);
  if (platform === 'systrap' && version.date !== undefined && version.date < FIRST_SYSTRAP_DATE) {
    throw new ConfigError(`[quark] ${version.text} predates the systrap platform (bookworm's build); use trixie's runsc or platform = "ptrace"`);
  }
  return { binary, platform, network, globalArgs: [`--platform=${platform}`, `--network=${network}`, ...c.flags], version };
}
