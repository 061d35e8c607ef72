// Where a kind's sandboxer listens and keeps state on this node: a kuasarctl flag wins, then the --listen/--dir of the
// installed systemd unit's ExecStart, then the [sandboxer] table of /etc/kuasar/<kind>-sandboxer.toml, then the
// built-in defaults of @kuasar/sandbox (the same order the sandboxer itself applies).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { UsageError, configFile, defaultSocket, defaultStateDir, isKind, unitName, type Kind } from './kinds';

export interface KindLocation {
  kind: Kind;
  socket: string;
  dir: string;
  /** Where socket/dir came from, for messages. */
  source: 'flag' | 'unit' | 'config' | 'default';
  /** A config file that exists but could not be used. */
  configError?: string;
}

export type Overrides = Partial<Record<Kind, string>>;

/** Parses repeatable `kind=path` flags (`--socket runc=/tmp/r.sock`). */
export function parseOverrides(values: readonly string[], flag: string): Overrides {
  const out: Overrides = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    const kind = v.slice(0, eq);
    const p = v.slice(eq + 1);
    if (eq < 0 || !isKind(kind)) throw new UsageError(`${flag} wants <kind>=<path> with kind one of runc, wasm, quark, vmm; got ${JSON.stringify(v)}`);
    if (!path.isAbsolute(p)) throw new UsageError(`${flag} ${kind}: ${JSON.stringify(p)} is not an absolute path`);
    out[kind] = p;
  }
  return out;
}

/** `--listen`/`--dir` from the unit's ExecStart: they override the config file, so they say where it really runs. */
export function unitFlags(unitText: string): { listen?: string; dir?: string } {
  const exec = /^ExecStart=(.*)$/m.exec(unitText)?.[1] ?? '';
  const words = exec.trim().split(/\s+/);
  const value = (flag: string) => {
    const i = words.findIndex((w) => w === flag || w.startsWith(`${flag}=`));
    if (i < 0) return undefined;
    return words[i].includes('=') ? words[i].slice(flag.length + 1) : words[i + 1];
  };
  return { listen: value('--listen'), dir: value('--dir') };
}

export function resolveLocation(
  kind: Kind,
  sockets: Overrides,
  dirs: Overrides,
  etcDir = '/etc/kuasar',
  unitDir = '/etc/systemd/system',
): KindLocation {
  let socket = defaultSocket(kind);
  let dir = defaultStateDir(kind);
  let source: KindLocation['source'] = 'default';
  let configError: string | undefined;
  const file = configFile(kind, etcDir);
  let text: string | undefined;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    // no config file: the sandboxer runs on its defaults too
  }
  if (text !== undefined) {
    try {
      const table = (parseToml(text) as Record<string, unknown>).sandboxer as Record<string, unknown> | undefined;
      if (typeof table?.listen === 'string') (socket = table.listen), (source = 'config');
      if (typeof table?.dir === 'string') (dir = table.dir), (source = 'config');
    } catch (err) {
      configError = `${file}: ${(err as Error).message.split('\n')[0]}`;
    }
  }
  let unit: string | undefined;
  try {
    unit = fs.readFileSync(path.join(unitDir, unitName(kind)), 'utf8');
  } catch {
    // not installed as a systemd service
  }
  if (unit !== undefined) {
    const f = unitFlags(unit);
    if (f.listen) (socket = f.listen), (source = 'unit');
    if (f.dir) (dir = f.dir), (source = 'unit');
  }
  if (sockets[kind]) (socket = sockets[kind]!), (source = 'flag');
  if (dirs[kind]) (dir = dirs[kind]!), (source = 'flag');
  return { kind, socket, dir, source, configError };
}

/** Directories searched for executables: PATH, then the usual system dirs (root's PATH may lack sbin). */
export function searchDirs(envPath = process.env.PATH ?? ''): string[] {
  const dirs = [...envPath.split(':'), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  return [...new Set(dirs.filter((d) => path.isAbsolute(d)))];
}

export function findExecutable(name: string, dirs: readonly string[] = searchDirs()): string | undefined {
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}
