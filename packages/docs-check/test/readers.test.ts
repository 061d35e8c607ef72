// The readers the docs check relies on: if one of them read nothing, the check would pass vacuously.
import { defineConfig } from '@kuasar/sandbox';
import { codeSpans, configPathsIn, docBlocks, firstCells, flagsIn, headingAnchors, helpCommands, helpFlags, markdownLinks, schemaPaths, scriptFlags } from '../src';

const HELP = `Usage: x [options] [command]

Options:
  -v, --version            print the version and exit
  --listen <socket>        Controller gRPC unix socket (default:
                           /run/x.sock --not-a-flag)
  --log-level <level>      log level
  -h, --help               show this help and exit

Commands:
  list|ls [options]        list
  config                   configure
  help [command]           display help for command
`;

test('helpFlags reads the Options section only, not wrapped descriptions', () => {
  expect([...helpFlags(HELP)]).toEqual(['--version', '--listen', '--log-level', '--help']);
  expect(helpCommands(HELP)).toEqual(['list', 'config']);
});

test('scriptFlags reads the arms of an argument case', () => {
  const script = `case "$1" in\n    --kinds) x ;;\n    --kinds=*) y ;;\n    --dry-run) z ;;\n    -h|--help) usage ;;\n    *) die ;;\nesac\n`;
  expect([...scriptFlags(script)].sort()).toEqual(['--dry-run', '--help', '--kinds']);
});

test('docBlocks scope markers to the next heading; flags and config paths come from code spans', () => {
  const md = [
    '## Sandboxers',
    '<!-- flags: a, kuasarctl config containerd -->',
    '| flag | meaning |',
    '| `--listen <socket>`, `-o, --output <f>` | see `--dir` too |',
    '| `--v <1\\|2>` | x |',
    '```',
    '--fenced',
    '```',
    '### Config',
    '<!-- config: runc -->',
    '| `sandboxer.listen` | `runc.runtime.binary = "crun"` | `other.key` | `not a key` |',
    '## Later',
    '`--outside`',
  ].join('\n');
  const blocks = docBlocks(md);
  expect(blocks.map((b) => [b.what, b.subjects])).toEqual([
    ['flags', ['a', 'kuasarctl config containerd']],
    ['config', ['runc']],
  ]);
  expect([...flagsIn(codeSpans(blocks[0]!.text))]).toEqual(['--listen', '--output', '--dir', '--v']);
  // Only the first cell names the block's flags; the rest is prose.
  expect([...flagsIn(codeSpans(firstCells(blocks[0]!.text)))]).toEqual(['--listen', '--output', '--v']);
  expect([...configPathsIn(codeSpans(blocks[1]!.text), ['sandboxer', 'runc'])]).toEqual(['sandboxer.listen', 'runc.runtime.binary']);
});

test('schemaPaths flattens nested tables', () => {
  const s = defineConfig({ a: { type: 'string', default: '' }, t: { type: 'table', fields: { b: { type: 'boolean', default: false } } } });
  expect(schemaPaths(s)).toEqual(['a', 't.b']);
  expect(schemaPaths(s, true)).toEqual(['a', 't', 't.b']);
});

test('links outside code, and GitHub heading anchors', () => {
  const md = '# Kuasar (TypeScript)\n## What `x` does?\n## Dup\n## Dup\n[a](b.md#c) `[no](x)` ![img](p.png)\n```\n[fenced](y)\n```\n';
  expect(markdownLinks(md).map((l) => l.target)).toEqual(['b.md#c', 'p.png']);
  expect([...headingAnchors(md)]).toEqual(['kuasar-typescript', 'what-x-does', 'dup', 'dup-1']);
});
