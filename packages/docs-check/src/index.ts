// Readers for what docs/ promises and what the binaries and schemas actually have. The docs mark the blocks the
// check reads with HTML comments (invisible on GitHub), right under a heading:
//   <!-- flags: runc-sandboxer, kuasarctl list -->  the `--flag`s in the first cell of each table row, until the
//                                                   next heading (prose may mention other commands' flags)
//   <!-- config: runc, wasm -->                     every `a.b.c` config key path in code spans until the next heading
// Subjects are comma-separated: a subject may contain spaces (`kuasarctl config containerd`).
import type { ConfigSchema } from '@kuasar/sandbox';

export interface DocBlock {
  /** 'flags' or 'config' */
  what: string;
  /** The binaries (flags) or kinds (config) the block documents. */
  subjects: string[];
  text: string;
  line: number;
}

const MARKER = /^<!--\s*(flags|config):\s*([^>]*?)\s*-->\s*$/;

export function docBlocks(markdown: string): DocBlock[] {
  const lines = markdown.split('\n');
  const blocks: DocBlock[] = [];
  let open: DocBlock | undefined;
  lines.forEach((line, i) => {
    const m = MARKER.exec(line.trim());
    if (m || /^#{1,6} /.test(line)) open = undefined;
    if (m) {
      open = { what: m[1]!, subjects: m[2]!.split(',').map((x) => x.trim()).filter(Boolean), text: '', line: i + 1 };
      blocks.push(open);
    } else if (open) {
      open.text += `${line}\n`;
    }
  });
  return blocks;
}

/** Contents of the `code spans` in markdown text (fenced blocks excluded). */
export function codeSpans(text: string): string[] {
  const withoutFences = text.replace(/^```[\s\S]*?^```/gm, '');
  return [...withoutFences.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);
}

export function flagsIn(spans: string[]): Set<string> {
  const out = new Set<string>();
  for (const s of spans) for (const m of s.matchAll(/(?:^|[\s,[(|])(--[a-z0-9][a-z0-9-]*)/g)) out.add(m[1]!);
  return out;
}

/** The first cell of every table row (`|` escaped as `\|` stays inside the cell). */
export function firstCells(text: string): string {
  return text
    .split('\n')
    .filter((l) => l.trimStart().startsWith('|'))
    .map((l) => l.trim().slice(1).split(/(?<!\\)\|/)[0] ?? '')
    .join('\n');
}

/** Option flags of a commander --help text: the long names in its Options section. */
export function helpFlags(help: string): Set<string> {
  const section = /\nOptions:\n([\s\S]*?)(?:\n\S|$)/.exec(help)?.[1] ?? '';
  return new Set([...section.matchAll(/^ {2}(?:-[A-Za-z], )?(--[a-z0-9][a-z0-9-]*)/gm)].map((m) => m[1]!));
}

/** Sub-command names of a commander --help text (without `help`). */
export function helpCommands(help: string): string[] {
  const section = /\nCommands:\n([\s\S]*?)(?:\n\S|$)/.exec(help)?.[1] ?? '';
  return [...section.matchAll(/^ {2}([a-z][a-z0-9-]*)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
}

/** Flags a bash script accepts: the `--flag)` / `--flag=*)` arms of its argument `case`. */
export function scriptFlags(script: string): Set<string> {
  return new Set([...script.matchAll(/^\s+(?:-[a-z]\|)?(--[a-z0-9][a-z0-9-]*)(?:=\*)?\)/gm)].map((m) => m[1]!));
}

/** Config key paths (`sandboxer.listen`, `runc.runtime.binary`): leaves, and tables when `tables` is set. */
export function schemaPaths(schema: ConfigSchema, tables = false, prefix = ''): string[] {
  const out: string[] = [];
  for (const [key, spec] of Object.entries(schema)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (spec.type === 'table') {
      if (tables) out.push(name);
      out.push(...schemaPaths(spec.fields, tables, name));
    } else {
      out.push(name);
    }
  }
  return out;
}

/** Dotted key paths in code spans whose first part is one of `roots`. */
export function configPathsIn(spans: string[], roots: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const s of spans) {
    const m = /^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)(?:\s*=.*)?$/.exec(s.trim());
    if (m && roots.includes(m[1]!.split('.')[0]!)) out.add(m[1]!);
  }
  return out;
}

export interface MarkdownLink {
  target: string;
  line: number;
}

/** Inline links and images `[x](target)` outside fenced code, with their line numbers. */
export function markdownLinks(markdown: string): MarkdownLink[] {
  const out: MarkdownLink[] = [];
  let fenced = false;
  markdown.split('\n').forEach((line, i) => {
    if (/^\s*```/.test(line)) fenced = !fenced;
    if (fenced) return;
    const noCode = line.replace(/`[^`]*`/g, '');
    for (const m of noCode.matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ target: m[1]!, line: i + 1 });
  });
  return out;
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
export function headingAnchors(markdown: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const m = !fenced && /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}
