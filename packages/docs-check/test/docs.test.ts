// docs/ against the code: every flag of every binary's --help is documented in docs/configuration.md and every
// documented flag exists; the same for every config key of the framework and kind schemas; the shipped configs
// parse; relative links resolve.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseSandboxerConfig, sandboxerConfigSchema, type ConfigSchema } from '@kuasar/sandbox';
import {
  codeSpans,
  configPathsIn,
  docBlocks,
  firstCells,
  flagsIn,
  headingAnchors,
  helpCommands,
  helpFlags,
  markdownLinks,
  schemaPaths,
  scriptFlags,
} from '../src';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '../../..');
const DOCS = path.join(ROOT, 'docs');
const CONFIGURATION = path.join(DOCS, 'configuration.md');
const KINDS = ['runc', 'wasm', 'quark', 'vmm'] as const;
// Every command takes -h/--help; configuration.md says so once instead of in every table.
const UNDOCUMENTED_EVERYWHERE = new Set(['--help']);

/** Newest mtime under a directory (the sources a bundle was built from). */
function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

/** The dev bundle of a binary, rebuilt when missing or older than its sources or the framework's CLI. */
function bundle(pkg: string): string {
  const main = path.join(ROOT, 'packages', pkg, 'dist', 'main.js');
  const sources = Math.max(newest(path.join(ROOT, 'packages', pkg, 'src')), newest(path.join(ROOT, 'packages/sandbox/src')));
  if (!fs.existsSync(main) || fs.statSync(main).mtimeMs < sources) {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts/build-bin.mjs'), pkg], {
      cwd: ROOT,
      env: { ...process.env, KUASAR_NO_SEA: '1' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  return main;
}

function help(main: string, args: string[] = []): string {
  // Wide columns keep commander from wrapping option lines.
  return execFileSync(process.execPath, [main, ...args, '--help'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '200' } });
}

/** The kind's config schema, exported by its package as <KIND>_CONFIG_SCHEMA; {} while the kind has none. */
function kindSchema(kind: string): ConfigSchema {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require(`@kuasar/${kind}-sandboxer`) as Record<string, unknown>;
  const schema = mod[`${kind.toUpperCase()}_CONFIG_SCHEMA`] as ConfigSchema | undefined;
  if (!schema) {
    // A kind that serves reads a config table: then its schema must be exported, or this check would go blind.
    const main = fs.readFileSync(path.join(ROOT, 'packages', `${kind}-sandboxer`, 'src', 'main.ts'), 'utf8');
    expect({ kind, servesWithoutExportedSchema: /runSandboxer\(/.test(main) }).toEqual({ kind, servesWithoutExportedSchema: false });
  }
  return schema ?? {};
}

const difference = <T>(a: Iterable<T>, b: Set<T>) => [...a].filter((x) => !b.has(x)).sort();

describe('flags: --help of every binary versus docs/configuration.md', () => {
  // binary name -> flags its --help lists (kuasarctl's sub-commands as "kuasarctl <sub>").
  const actual = new Map<string, Set<string>>();
  let documented: Map<string, Set<string>>;

  beforeAll(() => {
    for (const kind of KINDS) actual.set(`${kind}-sandboxer`, helpFlags(help(bundle(`${kind}-sandboxer`))));
    const ctl = bundle('kuasarctl');
    const walk = (args: string[]) => {
      const text = help(ctl, args);
      actual.set(['kuasarctl', ...args].join(' '), helpFlags(text));
      for (const sub of helpCommands(text)) walk([...args, sub]);
    };
    walk([]);
    for (const script of ['install.sh', 'uninstall.sh']) {
      // A script's flags include those of the scripts/lib/*.sh files it sources.
      const text = fs.readFileSync(path.join(ROOT, 'scripts', script), 'utf8');
      const sourced = [...text.matchAll(/^\. .*\/lib\/([a-z-]+\.sh)"?$/gm)].map((m) => fs.readFileSync(path.join(ROOT, 'scripts/lib', m[1]!), 'utf8'));
      expect(sourced.length).toBeGreaterThan(0);
      actual.set(`scripts/${script}`, scriptFlags([text, ...sourced].join('\n')));
    }
    documented = new Map();
    for (const block of docBlocks(fs.readFileSync(CONFIGURATION, 'utf8')).filter((b) => b.what === 'flags')) {
      for (const subject of block.subjects) {
        const set = documented.get(subject) ?? new Set<string>();
        for (const f of flagsIn(codeSpans(firstCells(block.text)))) set.add(f);
        documented.set(subject, set);
      }
    }
  });

  test('the binaries were found and read', () => {
    expect([...actual.keys()]).toEqual(
      expect.arrayContaining(['runc-sandboxer', 'wasm-sandboxer', 'kuasarctl list', 'kuasarctl check', 'kuasarctl config containerd', 'scripts/install.sh']),
    );
    expect(actual.get('runc-sandboxer')).toContain('--listen');
    expect(actual.get('kuasarctl check')).toContain('--containerd-config');
    expect(actual.get('scripts/install.sh')).toContain('--kinds');
  });

  test('every flag in --help is documented', () => {
    const missing: Record<string, string[]> = {};
    for (const [binary, flags] of actual) {
      const gap = difference(flags, documented.get(binary) ?? new Set()).filter((f) => !UNDOCUMENTED_EVERYWHERE.has(f));
      if (gap.length > 0) missing[binary] = gap;
    }
    expect(missing).toEqual({});
  });

  test('every documented flag exists', () => {
    const extra: Record<string, string[]> = {};
    for (const [binary, flags] of documented) {
      const have = actual.get(binary);
      if (!have) {
        extra[binary] = ['(no such binary or command)'];
        continue;
      }
      const gap = difference(flags, have);
      if (gap.length > 0) extra[binary] = gap;
    }
    expect(extra).toEqual({});
  });
});

describe('config keys: framework and kind schemas versus docs/configuration.md', () => {
  const blocks = () => docBlocks(fs.readFileSync(CONFIGURATION, 'utf8')).filter((b) => b.what === 'config');

  test.each(KINDS)('[sandboxer], [metrics] and [%s] keys are documented, and nothing else', (kind) => {
    const schema = sandboxerConfigSchema(kind, kindSchema(kind));
    const roots = Object.keys(schema);
    const documented = new Set<string>();
    for (const b of blocks().filter((x) => x.subjects.includes(kind))) for (const p of configPathsIn(codeSpans(b.text), roots)) documented.add(p);
    const leaves = schemaPaths(schema);
    expect(leaves).toEqual(expect.arrayContaining(['sandboxer.listen', 'metrics.listen']));
    expect({ kind, undocumented: difference(leaves, documented) }).toEqual({ kind, undocumented: [] });
    expect({ kind, unknown: difference(documented, new Set(schemaPaths(schema, true))) }).toEqual({ kind, unknown: [] });
  });
});

describe('shipped configs in packaging/config', () => {
  // Commented `key = value` and `[table]` lines document the defaults: uncommented they must still parse.
  const uncomment = (text: string) => text.replace(/^# ((?:[a-z_]+ = .*)|(?:\[[a-z_.]+\]))$/gm, '$1');

  test.each(KINDS)('%s-sandboxer.toml parses against its schema, as shipped and uncommented', (kind) => {
    const text = fs.readFileSync(path.join(ROOT, 'packaging/config', `${kind}-sandboxer.toml`), 'utf8');
    const schema = kindSchema(kind);
    const shipped = parseSandboxerConfig(kind, schema, text, `${kind}-sandboxer.toml`);
    const spelledOut = parseSandboxerConfig(kind, schema, uncomment(text), `${kind}-sandboxer.toml (uncommented)`);
    expect(spelledOut).toEqual(shipped);
    expect(shipped.sandboxer.listen).toBe(`/run/${kind}-sandboxer.sock`);
  });
});

describe('links', () => {
  const files = [path.join(ROOT, 'README.md'), ...fs.readdirSync(DOCS).filter((f) => f.endsWith('.md')).map((f) => path.join(DOCS, f))];

  test('docs/ has the pages issue 6 asks for', () => {
    const pages = fs.readdirSync(DOCS);
    for (const p of ['architecture.md', 'configuration.md', 'containerd.md', 'kubernetes.md', 'troubleshooting.md', 'operations.md']) {
      expect(pages).toContain(p);
    }
    for (const kind of KINDS) expect(pages).toContain(`${kind}-sandboxer.md`);
  });

  test('every relative link in README.md and docs/*.md resolves (files and #anchors)', () => {
    const broken: string[] = [];
    let checked = 0;
    for (const file of files) {
      const text = fs.readFileSync(file, 'utf8');
      for (const { target, line } of markdownLinks(text)) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        checked += 1;
        const [rel, anchor] = target.split('#', 2) as [string, string | undefined];
        const dest = rel === '' ? file : path.resolve(path.dirname(file), decodeURIComponent(rel));
        const where = `${path.relative(ROOT, file)}:${line} ${target}`;
        if (!fs.existsSync(dest)) {
          broken.push(`${where} (no such file)`);
          continue;
        }
        if (anchor && dest.endsWith('.md') && !headingAnchors(fs.readFileSync(dest, 'utf8')).has(anchor)) {
          broken.push(`${where} (no such heading)`);
        }
      }
    }
    expect(checked).toBeGreaterThan(20);
    expect(broken).toEqual([]);
  });
});
