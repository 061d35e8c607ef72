#!/usr/bin/env node
// Builds testdata/*.wat into testdata/build/*.wasm with wabt's wat2wasm (Debian package `wabt`).
// Only stale outputs are rebuilt, so the tests' globalSetup can call it on every run.
//
// usage: node scripts/build-testdata.mjs [--force]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const TESTDATA = path.join(PKG, 'testdata');
export const BUILD = path.join(TESTDATA, 'build');

export function buildTestdata({ force = false } = {}) {
  fs.mkdirSync(BUILD, { recursive: true });
  const built = [];
  for (const name of fs.readdirSync(TESTDATA).filter((f) => f.endsWith('.wat')).sort()) {
    const src = path.join(TESTDATA, name);
    const out = path.join(BUILD, `${name.slice(0, -'.wat'.length)}.wasm`);
    if (!force && fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs) continue;
    // write to a temporary name: a concurrent reader never sees a half-written module
    const tmp = `${out}.${process.pid}.tmp`;
    const r = spawnSync('wat2wasm', [src, '-o', tmp], { encoding: 'utf8' });
    if (r.error?.code === 'ENOENT') throw new Error('wat2wasm not found: install the Debian package `wabt`');
    if (r.status !== 0) {
      fs.rmSync(tmp, { force: true });
      throw new Error(`wat2wasm ${name} failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr}`);
    }
    fs.renameSync(tmp, out);
    built.push(name);
  }
  return built;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const built = buildTestdata({ force: process.argv.includes('--force') });
    process.stdout.write(`build-testdata: ${built.length ? `built ${built.join(', ')}` : 'up to date'}\n`);
  } catch (err) {
    process.stderr.write(`build-testdata: ${err.message}\n`);
    process.exit(1);
  }
}
