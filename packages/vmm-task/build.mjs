// Bundles the agent for QuickJS: one classic script (qjs --std runs it with `os` and `std` as
// globals), ES2020 syntax, no Node built-ins. Output: dist/vmm-task.js and dist/kuasar-console (the
// static terminal helper from native/console.c, which the agent runs from its own directory), so
// `bash scripts/build-guest.sh --agent packages/vmm-task/dist` puts both under /agent.
import { execFileSync } from 'node:child_process';
import { build } from 'esbuild';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';

const dir = path.dirname(new URL(import.meta.url).pathname);
// `node build.mjs [OUTDIR]`: tests bundle the current source into a temp dir this way.
const dist = path.resolve(process.argv[2] ?? path.join(dir, 'dist'));
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
await build({
  entryPoints: [path.join(dir, 'src/main.ts')],
  outfile: path.join(dist, 'vmm-task.js'),
  bundle: true,
  format: 'iife',
  platform: 'neutral',
  target: 'es2020',
  // Whitespace and syntax only: stack traces in the guest console keep their names.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  logLevel: 'warning',
  // Each build is byte-identical for identical sources, so the initramfs cache key stays stable.
  banner: { js: '// vmm-task: Kuasar guest agent (bundled by packages/vmm-task/build.mjs)' },
});

// musl, static and stripped: ~80 KB that run in any guest image (glibc's static libc would add ~700 KB).
try {
  execFileSync('musl-gcc', ['-static', '-Os', '-s', '-Wall', '-Wextra', '-Werror', '-o', path.join(dist, 'kuasar-console'), path.join(dir, 'native/console.c')], { stdio: 'inherit' });
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
  throw new Error('musl-gcc not found: apt-get install musl-tools (scripts/install-deps.sh installs it)');
}
