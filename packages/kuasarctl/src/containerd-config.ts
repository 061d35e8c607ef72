// The one definition of how containerd registers a Kuasar sandboxer. `kuasarctl config containerd` prints and
// merges it (scripts/install.sh calls that), and `kuasarctl check` tests a config against it, so the text an operator
// pastes and the test that says "registered" cannot drift apart.
import { parse as parseToml } from 'smol-toml';
import { defaultSocket, handlerName, runtimeType, type Kind } from './kinds';

/** containerd 1.6/1.7 (config version 2, shim v2 runtime) or 2.x (config version 3, sandbox proxy plugin). */
export type ContainerdMajor = 1 | 2;

export interface TomlTable {
  /** Key path of the table header, e.g. ['proxy_plugins', 'kuasar-runc']. */
  path: string[];
  values: Record<string, string>;
}

export interface SnippetOptions {
  /** The sandboxer's Controller socket (2.x); default /run/<kind>-sandboxer.sock. */
  socketOf?: (kind: Kind) => string;
}

const CRI_V1 = ['plugins', 'io.containerd.grpc.v1.cri', 'containerd', 'runtimes'];
const CRI_V2 = ['plugins', 'io.containerd.cri.v1.runtime', 'containerd', 'runtimes'];

/** The config version (top-level `version`) each containerd major expects the snippet in. */
export const CONFIG_VERSION: Record<ContainerdMajor, number> = { 1: 2, 2: 3 };

/** The tables that register one kind with one containerd major. */
export function kindTables(kind: Kind, major: ContainerdMajor, opts: SnippetOptions = {}): TomlTable[] {
  const name = handlerName(kind);
  if (major === 1) {
    // containerd resolves the runtime type to the thin shim containerd-shim-kuasar-<kind>-v2 on its PATH.
    return [{ path: [...CRI_V1, name], values: { runtime_type: runtimeType(kind) } }];
  }
  return [
    { path: ['proxy_plugins', name], values: { type: 'sandbox', address: (opts.socketOf ?? defaultSocket)(kind) } },
    { path: [...CRI_V2, name], values: { runtime_type: runtimeType(kind), sandboxer: name } },
  ];
}

const BARE_KEY = /^[A-Za-z0-9_-]+$/;
const tomlKey = (k: string): string => (BARE_KEY.test(k) ? k : JSON.stringify(k));
// JSON string escapes are a subset of TOML basic-string escapes.
const tomlString = (s: string): string => JSON.stringify(s);

export function renderTable(t: TomlTable): string {
  const lines = [`[${t.path.map(tomlKey).join('.')}]`];
  for (const [k, v] of Object.entries(t.values)) lines.push(`  ${tomlKey(k)} = ${tomlString(v)}`);
  return lines.join('\n');
}

const beginMarker = (kind: Kind) => `# BEGIN ${handlerName(kind)}`;
const endMarker = (kind: Kind) => `# END ${handlerName(kind)}`;

/** One kind's block as appended to a config: marked so `--unmerge` can find and remove exactly it. */
export function renderKindBlock(kind: Kind, major: ContainerdMajor, tables: TomlTable[], note: string): string {
  return [`${beginMarker(kind)} (${note})`, ...tables.map(renderTable), endMarker(kind)].join('\n');
}

/** The snippet an operator pastes into containerd's config for these kinds. */
export function containerdSnippet(kinds: readonly Kind[], major: ContainerdMajor, opts: SnippetOptions = {}): string {
  const head =
    major === 1
      ? `# containerd 1.6/1.7 (config version 2): CRI handlers served through containerd-shim-kuasar-<kind>-v2`
      : `# containerd 2.x (config version 3): sandbox proxy plugins plus CRI handlers that select them`;
  const blocks = kinds.map((k) => renderKindBlock(k, major, kindTables(k, major, opts), `kuasar ${k} sandboxer`));
  return `${head}\n${blocks.join('\n\n')}\n`;
}

export class ContainerdConfigError extends Error {
  override readonly name = 'ContainerdConfigError';
  readonly exitCode = 1;
}

export type TomlDoc = Record<string, unknown>;

export function parseContainerdConfig(text: string, source: string): TomlDoc {
  try {
    return parseToml(text) as TomlDoc;
  } catch (err) {
    throw new ContainerdConfigError(`${source}: invalid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** The top-level `version` of a containerd config; containerd treats a missing one as 1. */
export function configVersion(doc: TomlDoc): number {
  const v = doc.version;
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return 1;
}

function lookup(doc: TomlDoc, path: string[]): unknown {
  let cur: unknown = doc;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

export type TableState = 'present' | 'missing' | 'different';

/** Whether `doc` has the table with these values ('different': the table exists with other values). */
export function tableState(doc: TomlDoc, t: TomlTable): TableState {
  const found = lookup(doc, t.path);
  if (found === undefined) return 'missing';
  if (found === null || typeof found !== 'object' || Array.isArray(found)) return 'different';
  const rec = found as Record<string, unknown>;
  return Object.entries(t.values).every(([k, v]) => rec[k] === v) ? 'present' : 'different';
}

export interface Registration {
  kind: Kind;
  major: ContainerdMajor;
  /** Every table of the snippet is there with its values. */
  registered: boolean;
  /** Tables missing or holding other values, rendered as header lines. */
  problems: string[];
}

export function registration(doc: TomlDoc, kind: Kind, major: ContainerdMajor, opts: SnippetOptions = {}): Registration {
  const problems: string[] = [];
  for (const t of kindTables(kind, major, opts)) {
    const state = tableState(doc, t);
    if (state !== 'present') problems.push(`${renderTable(t).split('\n')[0]} ${state === 'missing' ? 'missing' : 'has other values'}`);
  }
  return { kind, major, registered: problems.length === 0, problems };
}

export interface MergeResult {
  text: string;
  added: Kind[];
  /** Kinds left alone: already registered, or a table of theirs exists with other values (never overwritten). */
  unchanged: { kind: Kind; reason: string }[];
}

/**
 * Appends the blocks of the kinds `text` does not register yet. Pure: the caller does the backup and the write. A
 * table the operator already wrote with other values is reported, never replaced: TOML forbids defining it twice.
 */
export function mergeSnippet(
  text: string,
  source: string,
  kinds: readonly Kind[],
  major: ContainerdMajor,
  opts: SnippetOptions & { note?: string } = {},
): MergeResult {
  const doc = parseContainerdConfig(text, source);
  const version = configVersion(doc);
  const want = CONFIG_VERSION[major];
  if (version !== want) {
    throw new ContainerdConfigError(
      `${source} is config version ${version}, containerd ${major}.x snippets need version ${want}` +
        (major === 2 ? ' (convert it with `containerd config migrate`)' : ''),
    );
  }
  const added: Kind[] = [];
  const unchanged: MergeResult['unchanged'] = [];
  const blocks: string[] = [];
  for (const kind of kinds) {
    const tables = kindTables(kind, major, opts);
    const states = tables.map((t) => tableState(doc, t));
    if (states.every((s) => s === 'present')) {
      unchanged.push({ kind, reason: 'already registered' });
    } else if (states.includes('different')) {
      const bad = tables.filter((_, i) => states[i] === 'different').map((t) => renderTable(t).split('\n')[0]);
      unchanged.push({ kind, reason: `${bad.join(', ')} exists with other values; edit it by hand` });
    } else {
      blocks.push(renderKindBlock(kind, major, tables.filter((_, i) => states[i] === 'missing'), opts.note ?? 'added by kuasarctl'));
      added.push(kind);
    }
  }
  if (blocks.length === 0) return { text, added, unchanged };
  const sep = text === '' || text.endsWith('\n\n') ? '' : text.endsWith('\n') ? '\n' : '\n\n';
  const merged = `${text}${sep}${blocks.join('\n\n')}\n`;
  parseContainerdConfig(merged, `${source} after merging`); // never write a config containerd cannot read
  return { text: merged, added, unchanged };
}

/** Removes the marked blocks of these kinds (what mergeSnippet added); text outside the markers is kept as is. */
export function unmergeSnippet(text: string, kinds: readonly Kind[]): { text: string; removed: Kind[] } {
  const removed: Kind[] = [];
  let out = text;
  for (const kind of kinds) {
    const lines = out.split('\n');
    const begin = lines.findIndex((l) => l.startsWith(`${beginMarker(kind)} `) || l === beginMarker(kind));
    if (begin < 0) continue;
    const end = lines.findIndex((l, i) => i > begin && l === endMarker(kind));
    if (end < 0) throw new ContainerdConfigError(`"${lines[begin]}" has no matching "${endMarker(kind)}"; not touching it`);
    // the blank line that separated the block from what came before goes with it
    const from = begin > 0 && lines[begin - 1] === '' ? begin - 1 : begin;
    lines.splice(from, end - from + 1);
    out = lines.join('\n');
    removed.push(kind);
  }
  return { text: out, removed };
}
