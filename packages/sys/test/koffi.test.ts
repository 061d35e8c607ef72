import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KOFFI_ASSET_NAME, koffiNativePath, loadKoffi, NativeLoadError } from '@kuasar/sys';
import { loadNative, writeNativeCache } from '../src/koffi';

const ROOT = path.resolve(__dirname, '../../..');
const SRC = path.resolve(__dirname, '../src/index.ts');
let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-koffi-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Bundles entry source (which imports @kuasar/sys as SYS) the way the SEA bundler will: koffi stays external. */
function bundle(name: string, source: string): string {
  const entry = path.join(dir, `${name}.ts`);
  const out = path.join(dir, `${name}.js`);
  fs.writeFileSync(entry, source.replaceAll('SYS', JSON.stringify(SRC)));
  // esbuild is a root devDependency; koffi must stay a runtime require for the non-SEA path.
  require(require.resolve('esbuild', { paths: [ROOT] })).buildSync({
    entryPoints: [entry], outfile: out, bundle: true, platform: 'node', format: 'cjs', target: 'node20', external: ['koffi'],
    nodePaths: [path.join(ROOT, 'packages/sys/node_modules')], logLevel: 'error',
  });
  return out;
}

test('koffi loads once and the native path points at the prebuilt module', () => {
  const k = loadKoffi();
  expect(k.version).toBe('3.3.4');
  expect(loadKoffi()).toBe(k);
  expect(KOFFI_ASSET_NAME).toBe('koffi.node');
  const native = koffiNativePath();
  expect(native).toMatch(/@koromix\/koffi-linux-x64\/linux_x64\/koffi\.node$/);
  expect(fs.statSync(native).size).toBeGreaterThan(100_000);
  // the raw native module (what a SEA gets) is the full API
  const raw = loadNative(native);
  expect(raw.version).toBe('3.3.4');
  expect(typeof raw.load).toBe('function');
  expect(() => loadNative('/bin/true')).toThrow(NativeLoadError);
});

test('the native cache is content-addressed, private, and written once', () => {
  const bytes = fs.readFileSync(koffiNativePath());
  const cache = path.join(dir, 'cache');
  const file = writeNativeCache(bytes, [cache]);
  expect(path.dirname(file)).toBe(cache);
  expect(path.basename(file)).toMatch(/^koffi-[0-9a-f]{16}\.node$/);
  expect(fs.statSync(cache).mode & 0o777).toBe(0o700);
  expect(fs.readFileSync(file).equals(bytes)).toBe(true);
  const ino = fs.statSync(file).ino;
  expect(writeNativeCache(bytes, [cache])).toBe(file);
  expect(fs.statSync(file).ino).toBe(ino); // not rewritten
  expect(fs.readdirSync(cache)).toEqual([path.basename(file)]); // no temp files left

  const open = path.join(dir, 'open');
  fs.mkdirSync(open, { mode: 0o777 });
  fs.chmodSync(open, 0o777);
  const fallback = path.join(dir, 'fallback');
  expect(path.dirname(writeNativeCache(bytes, [open, fallback]))).toBe(fallback);
  expect(() => writeNativeCache(bytes, [open])).toThrow(NativeLoadError);
});

test('importing @kuasar/sys does not load koffi until a syscall is used', () => {
  const out = bundle('lazy', `
    const t0 = process.hrtime.bigint();
    const sys = require(SYS);
    const t1 = process.hrtime.bigint();
    const before = Object.keys(require.cache).some((k) => k.includes('/node_modules/koffi/'));
    sys.setChildSubreaper();
    const t2 = process.hrtime.bigint();
    const sub = sys.isChildSubreaper();
    const child = require('node:child_process').spawn('sleep', ['5']);
    const N = 100000;
    const t3 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) if (sys.waitPid(child.pid, { noHang: true }) !== null) throw new Error('exited?');
    const t4 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) try { sys.waitPid(3999999, { noHang: true }); } catch {}
    const t5 = process.hrtime.bigint();
    child.kill();
    console.log(JSON.stringify({ before, sub, importMs: Number(t1 - t0) / 1e6, firstCallMs: Number(t2 - t1) / 1e6,
      waitpidRunningUs: Number(t4 - t3) / 1e3 / N, waitpidEchildUs: Number(t5 - t4) / 1e3 / 1000 }));
  `);
  const r = JSON.parse(execFileSync(process.execPath, [out], { encoding: 'utf8' }));
  expect(r).toMatchObject({ before: false, sub: true });
  console.log('costs (bundled, plain node):', r);
});

test('a single-executable application loads koffi from its SEA asset', () => {
  const out = bundle('sea-main', `
    const sys = require(SYS);
    const sea = require('node:sea');
    const t0 = process.hrtime.bigint();
    sys.setChildSubreaper();
    const firstCallMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const k = sys.loadKoffi();
    console.log(JSON.stringify({ firstCallMs, sea: sea.isSea(), subreaper: sys.isChildSubreaper(), version: k.version,
      natives: require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => l.endsWith('.node')).map((l) => l.split(/\\s+/).pop()) }));
  `);
  const config = path.join(dir, 'sea-config.json');
  const blob = path.join(dir, 'sea.blob');
  fs.writeFileSync(config, JSON.stringify({ main: out, output: blob, disableExperimentalSEAWarning: true, assets: { [KOFFI_ASSET_NAME]: koffiNativePath() } }));
  execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: 'pipe' });
  const bin = path.join(dir, 'sea-bin');
  fs.copyFileSync(process.execPath, bin);
  const postject = require.resolve('postject/dist/cli.js', { paths: [ROOT] });
  execFileSync(process.execPath, [postject, bin, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'pipe' });
  const run = spawnSync(bin, [], { encoding: 'utf8', cwd: '/' }); // cwd '/': no node_modules to fall back on
  expect(run.stderr).toBe('');
  const r = JSON.parse(run.stdout);
  expect(r).toMatchObject({ sea: true, subreaper: true, version: '3.3.4' });
  console.log('SEA first syscall (koffi from asset, cache warm) ms:', r.firstCallMs);
  expect(new Set(r.natives).size).toBe(1);
  expect(r.natives[0]).toMatch(/\/\.native\/koffi-[0-9a-f]{16}\.node$|kuasar-native-0\/koffi-[0-9a-f]{16}\.node$/);
}, 120_000);
