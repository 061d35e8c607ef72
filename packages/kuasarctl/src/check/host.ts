// Gathers the facts of this host and runs every check over them. Everything that reads the system lives here; the
// check functions beside it are pure and get the facts as arguments.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { ContainerdMajor } from '../containerd-config';
import { KINDS, configFile, sandboxerBinary, shimBinary, unitName, type Kind } from '../kinds';
import { findExecutable, resolveLocation, searchDirs, type Overrides } from '../locations';
import { checkCgroups, cgroupMounts } from './cgroups';
import { checkContainerdBinaries, checkContainerdConfig, restrictOomScoreAdj } from './containerd';
import { ok, warn, type Finding } from './finding';
import { checkKvm, cpuFlags } from './kvm';
import { checkOomScoreAdj } from './oom';
import { RELAY_USAGE, checkRelay, type RelayFacts } from './relay';
import { checkSocket, checkStateDir, type PathFacts } from './sandboxer';
import { TOOLS, checkTool, type ToolProbe } from './tools';

export interface HostCheckOptions {
  /** Kinds to check; default: the kinds that look installed here. */
  kinds?: Kind[];
  containerdConfig: string;
  containerdVersion?: ContainerdMajor;
  sockets: Overrides;
  dirs: Overrides;
  /** scripts/fetch-debs.sh cache (runsc, newer containerds): ${KUASAR_CACHE:-/var/cache/kuasar}. */
  cacheDir: string;
  etcDir?: string;
  unitDir?: string;
}

const VERSION_TIMEOUT_MS = 10_000;

function runVersion(file: string, args: string[] = ['--version']): Promise<{ output?: string; error?: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: VERSION_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) resolve({ error: err.killed ? `timed out after ${VERSION_TIMEOUT_MS} ms` : `${err.message.split('\n')[0]}` });
      else resolve({ output: `${stdout}${stderr}` });
    });
  });
}

async function probe(file: string | undefined, source?: string): Promise<ToolProbe> {
  if (!file) return { path: undefined };
  const r = await runVersion(file);
  return { path: file, versionOutput: r.output, error: r.error, source };
}

interface CachedBinary {
  key: string;
  version: string;
  path: string;
}

/** Binaries scripts/fetch-debs.sh unpacked: manifest.json is [{key, version, bins: {name: path}}]. */
export function readDebCache(cacheDir: string): CachedBinary[] {
  let entries: unknown;
  try {
    entries = JSON.parse(fs.readFileSync(path.join(cacheDir, 'debs/manifest.json'), 'utf8'));
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  const out: CachedBinary[] = [];
  for (const e of entries as { key?: unknown; version?: unknown; bins?: unknown }[]) {
    if (!e || typeof e.bins !== 'object' || e.bins === null) continue;
    for (const [name, p] of Object.entries(e.bins as Record<string, unknown>)) {
      if (typeof p === 'string') out.push({ key: `${String(e.key)}:${name}`, version: String(e.version), path: p });
    }
  }
  return out;
}

export function pathFacts(p: string): PathFacts {
  try {
    const st = fs.lstatSync(p);
    return { path: p, type: st.isSocket() ? 'socket' : st.isDirectory() ? 'directory' : 'other', mode: st.mode, uid: st.uid };
  } catch {
    return { path: p };
  }
}

export function connectProbe(socket: string, timeoutMs = 2000): Promise<'ok' | string> {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    const done = (r: string) => {
      conn.destroy();
      resolve(r);
    };
    conn.once('connect', () => done('ok'));
    conn.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    conn.setTimeout(timeoutMs, () => done(`no answer within ${timeoutMs} ms`));
  });
}

/**
 * The task relay binary as the sandboxer finds it (next to its executable, else PATH), whether its relay mode runs,
 * and whether the relay socket in the state dir answers.
 */
export async function relayFacts(kind: Kind, stateDir: string, dirs: readonly string[]): Promise<RelayFacts> {
  const sandboxer = findExecutable(sandboxerBinary(kind), dirs);
  const file = (sandboxer && findExecutable(shimBinary(kind), [path.dirname(sandboxer)])) ?? findExecutable(shimBinary(kind), dirs);
  if (!file) return { kind };
  const r = await runVersion(file, ['relay', '--help']);
  const runs = r.error ?? (RELAY_USAGE.test(r.output ?? '') ? 'ok' : 'no relay mode: `relay --help` printed no relay usage');
  const socketPath = path.join(stateDir, 'relay.sock');
  const socket = pathFacts(socketPath).type === 'socket' ? { path: socketPath, connect: await connectProbe(socketPath) } : undefined;
  return { kind, path: file, runs, socket };
}

function readText(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function kernelConfig(): string | undefined {
  try {
    return gunzipSync(fs.readFileSync('/proc/config.gz')).toString('utf8');
  } catch {
    return readText(`/boot/config-${os.release()}`);
  }
}

/** Kinds with any trace on this node: executable, unit, config, socket or state dir. */
export function installedKinds(opts: HostCheckOptions, dirs = searchDirs()): Kind[] {
  const etc = opts.etcDir ?? '/etc/kuasar';
  const units = opts.unitDir ?? '/etc/systemd/system';
  return KINDS.filter((kind) => {
    const loc = resolveLocation(kind, opts.sockets, opts.dirs, etc, units);
    return (
      findExecutable(sandboxerBinary(kind), dirs) !== undefined ||
      fs.existsSync(path.join(units, unitName(kind))) ||
      fs.existsSync(configFile(kind, etc)) ||
      fs.existsSync(loc.socket) ||
      fs.existsSync(loc.dir)
    );
  });
}

export async function checkHost(opts: HostCheckOptions): Promise<Finding[]> {
  const dirs = searchDirs();
  const etc = opts.etcDir ?? '/etc/kuasar';
  const detected = opts.kinds === undefined;
  const kinds = opts.kinds ?? installedKinds(opts, dirs);
  const findings: Finding[] = [];

  if (kinds.length === 0) {
    findings.push(
      warn('sandboxers', 'no Kuasar sandboxer is installed on this node (no executable, unit, config, socket or state dir)', 'scripts/install.sh --kinds runc (or pass --kinds to check a kind anyway)'),
    );
  } else {
    findings.push(ok('sandboxers', `${detected ? 'installed' : 'checking'}: ${kinds.join(', ')}`));
  }

  // OCI runtimes and VMMs; runsc also from the fetch-debs cache, which holds the one build that works here.
  const cache = readDebCache(opts.cacheDir);
  const probes = new Map<string, ToolProbe>();
  await Promise.all(
    TOOLS.map(async (t) => {
      let p = await probe(findExecutable(t.name, dirs));
      const cached = cache.find((c) => c.key.endsWith(`:${t.name}`));
      if (!p.path && cached && fs.existsSync(cached.path)) p = await probe(cached.path, `fetch-debs cache, Debian ${cached.version}`);
      probes.set(t.name, p);
    }),
  );
  for (const t of TOOLS) findings.push(checkTool(t, probes.get(t.name)!, kinds, probes));

  findings.push(
    checkKvm({
      devKvm: fs.existsSync('/dev/kvm'),
      devKvmAccessible: (() => {
        try {
          fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
          return true;
        } catch {
          return false;
        }
      })(),
      cpuFlags: cpuFlags(readText('/proc/cpuinfo') ?? ''),
      modules: new Set((() => {
        try {
          return fs.readdirSync('/sys/module').filter((m) => m.startsWith('kvm'));
        } catch {
          return [];
        }
      })()),
      kernelConfig: kernelConfig(),
    }),
  );

  const mounts = cgroupMounts(readText('/proc/self/mountinfo') ?? '');
  const unified = mounts.find((m) => m.fsType === 'cgroup2');
  const controllers = unified ? readText(path.join(unified.mountPoint, 'cgroup.controllers')) : undefined;
  findings.push(checkCgroups({ mounts, unifiedControllers: controllers?.trim().split(/\s+/).filter(Boolean) }));

  // containerd: the one on PATH serves the node; cached ones are listed for information.
  const containerdProbes = await Promise.all([
    probe(findExecutable('containerd', dirs)),
    ...cache.filter((c) => c.key.endsWith(':containerd')).map((c) => probe(c.path, 'fetch-debs cache')),
  ]);
  const binaries = checkContainerdBinaries(containerdProbes);
  findings.push(binaries.finding);
  const major = opts.containerdVersion ?? binaries.major;
  let text: string | undefined;
  let readError: string | undefined;
  try {
    text = fs.readFileSync(opts.containerdConfig, 'utf8');
  } catch (err) {
    readError = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
  const locations = kinds.map((k) => resolveLocation(k, opts.sockets, opts.dirs, etc, opts.unitDir));
  const config = checkContainerdConfig({
    path: opts.containerdConfig,
    text,
    readError,
    major,
    kinds,
    shimPaths: new Map(kinds.map((k) => [k, findExecutable(shimBinary(k), dirs)])),
    snippet: { socketOf: (k) => locations.find((l) => l.kind === k)?.socket ?? `/run/${k}-sandboxer.sock` },
  });
  findings.push(...config.findings);
  findings.push(checkOomScoreAdj(readText('/proc/self/status') ?? '', config.doc ? restrictOomScoreAdj(config.doc) : undefined));

  for (const loc of locations) {
    if (loc.configError) findings.push(warn(`config/${loc.kind}`, `cannot parse ${loc.configError}`, `fix ${configFile(loc.kind, etc)}`));
    const socket = pathFacts(loc.socket);
    const facts = {
      kind: loc.kind,
      socket,
      connect: socket.type === 'socket' ? await connectProbe(loc.socket) : undefined,
      stateDir: pathFacts(loc.dir),
    };
    findings.push(checkSocket(facts), checkStateDir(facts), checkRelay(await relayFacts(loc.kind, loc.dir, dirs)));
  }
  return findings;
}
