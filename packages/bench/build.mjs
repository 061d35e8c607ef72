// Bundles the two runners (esbuild, like scripts/demo.sh) after a typecheck, so `node dist/<x>.js` runs the tree's code.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = spawnSync(process.execPath, [path.join(here, '../../node_modules/typescript/bin/tsc'), '-p', path.join(here, 'tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
await esbuild.build({
  entryPoints: { bench: path.join(here, 'src/bench-main.ts'), reliability: path.join(here, 'src/reliability-main.ts') },
  outdir: path.join(here, 'dist'),
  bundle: true,
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  // @kuasar/sys loads koffi lazily, and the runners never call into it: its native loader stays out of the bundle
  external: ['koffi'],
});
