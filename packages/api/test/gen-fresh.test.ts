// The committed src/gen must be exactly what scripts/gen-api.mjs produces from protos/ today.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '../../..');
const committed = path.join(root, 'packages/api/src/gen');
const hasProtoc = spawnSync('protoc', ['--version']).status === 0;
if (!hasProtoc) console.log('gen-fresh.test: skipped, `protoc` is not on PATH (apt-get install protobuf-compiler)');

function listFiles(dir: string, base = dir): string[] {
  return readdirSync(dir).sort().flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? listFiles(full, base) : [path.relative(base, full)];
  });
}

(hasProtoc ? test : test.skip)('src/gen matches a fresh `pnpm gen`', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'kuasar-gen-'));
  try {
    execFileSync(process.execPath, [path.join(root, 'scripts/gen-api.mjs'), tmp], { cwd: root, stdio: 'pipe' });
    const fresh = listFiles(tmp);
    expect(listFiles(committed)).toEqual(fresh);
    const stale = fresh.filter((f) => !readFileSync(path.join(tmp, f)).equals(readFileSync(path.join(committed, f))));
    expect(stale).toEqual([]); // run `pnpm gen` at the repo root and commit the result
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}, 60_000);
