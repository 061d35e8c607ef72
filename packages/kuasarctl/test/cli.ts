// Runs kuasarctl from the current source, bundled the way scripts/build-bin.mjs bundles it, into a private temp
// dir: packages/kuasarctl/dist is rebuilt by binaries.test.ts in parallel, so sharing it would race.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const ROOT = path.resolve(__dirname, '../../..');

let bundled: string | undefined;

export function kuasarctlBundle(): string {
  if (bundled) return bundled;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-bundle-'));
  const out = path.join(dir, 'main.js');
  // esbuild's sync API runs its service in a child process; it resolves from the repo root's node_modules.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const esbuild = require(require.resolve('esbuild', { paths: [ROOT] })) as typeof import('esbuild');
  esbuild.buildSync({
    entryPoints: [path.join(ROOT, 'packages/kuasarctl/src/main.ts')],
    outfile: out,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    tsconfig: path.join(ROOT, 'tsconfig.base.json'),
    external: ['koffi'], // only the hidden native self-test loads it
    logLevel: 'error',
  });
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  bundled = out;
  return out;
}

export function kuasarctl(args: string[], env: NodeJS.ProcessEnv = process.env): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [kuasarctlBundle(), ...args], { encoding: 'utf8', env, timeout: 60_000 });
}

/** For tests that serve a sandboxer in this process: spawnSync would block the event loop that answers kuasarctl. */
export function kuasarctlAsync(args: string[], input?: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [kuasarctlBundle(), ...args], { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
