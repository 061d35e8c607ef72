import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  ImageBuildError, PrivateContainerd, WASM_IMAGE, WASM_IMAGE_MODULES, WASM_IMAGE_OUTPUT, buildOciArchive, containerdAvailability,
  importImage, wasmImage, wasmImageSpec, wat2wasm, type ContainerdVersion,
} from '../src';

jest.setTimeout(120_000);
// testkit compiles without the DOM lib; Node has the global
declare const WebAssembly: { validate(bytes: Uint8Array): boolean };

let tmp = '';
beforeAll(() => { tmp = mkdtempSync(path.join(os.tmpdir(), 'kwasm-')); });
afterAll(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

function untar(archive: Buffer): string {
  const dir = mkdtempSync(path.join(tmp, 'x-'));
  const r = spawnSync('tar', ['-x', '-C', dir, '-f', '-'], { input: archive });
  if (r.status !== 0) throw new Error(`tar -x failed: ${r.stderr.toString()}`);
  return dir;
}

/** Runs a module with Node's own WASI in a child process: an engine independent of the sandboxer. */
function runWasi(module: Buffer): { stdout: string; stderr: string; status: number | null } {
  const file = path.join(tmp, `m-${Math.random().toString(36).slice(2)}.wasm`);
  writeFileSync(file, module);
  const script = `const { WASI } = require('node:wasi'); const fs = require('node:fs');
    const wasi = new WASI({ version: 'preview1', args: ['/m.wasm'], returnOnExit: true });
    const m = new WebAssembly.Module(fs.readFileSync(${JSON.stringify(file)}));
    process.exitCode = wasi.start(new WebAssembly.Instance(m, wasi.getImportObject()));`;
  const r = spawnSync(process.execPath, ['--no-warnings', '-e', script], { encoding: 'utf8', timeout: 10_000 });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

test('the image: CMD ["/hello.wasm"], one layer holding every module, each valid wasm', () => {
  const spec = wasmImageSpec();
  expect(spec.name).toBe(WASM_IMAGE);
  expect(spec.config).toEqual({ Cmd: ['/hello.wasm'] });
  const dir = untar(buildOciArchive(spec).archive);
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
  const blob = (d: string): Buffer => readFileSync(path.join(dir, 'blobs/sha256', d.slice(7)));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString());
  const config = JSON.parse(blob(manifest.config.digest).toString());
  expect(config.config.Cmd).toEqual(['/hello.wasm']);
  const layer = untar(gunzipSync(blob(manifest.layers[0].digest)));
  for (const file of Object.keys(WASM_IMAGE_MODULES)) {
    const bytes = readFileSync(path.join(layer, file));
    expect(bytes.subarray(0, 4)).toEqual(Buffer.from('\0asm'));
    expect(WebAssembly.validate(bytes)).toBe(true);
  }
});

test.each(['hello.wasm', 'fail.wasm'])('%s writes and exits as WASM_IMAGE_OUTPUT says (run by node:wasi)', (file) => {
  const r = runWasi(wat2wasm(WASM_IMAGE_MODULES[file]!));
  const want = WASM_IMAGE_OUTPUT[file]!;
  expect({ stdout: r.stdout, stderr: r.stderr, status: r.status }).toEqual({ stdout: want.stdout, stderr: want.stderr, status: want.exitCode });
});

test('wat2wasm: cached by text, clear errors for bad text', () => {
  const cache = path.join(tmp, 'cache');
  const a = wat2wasm('(module)', cache);
  expect(a).toEqual(wat2wasm('(module)', cache));
  expect(() => wat2wasm('(module (func $f (result i32)))', cache)).toThrow(ImageBuildError);
  expect(() => wat2wasm('(module (func $f (result i32)))', cache)).toThrow(/wat2wasm failed/);
  expect(() => wat2wasm('', cache)).toThrow(/empty/);
});

test('the archive is reproducible', () => {
  expect(wasmImage().tarPath).toBe(wasmImage().tarPath);
  expect(buildOciArchive(wasmImageSpec()).archive).toEqual(buildOciArchive(wasmImageSpec()).archive);
});

describe.each(['1.7', '2.1'] as ContainerdVersion[])('ctr images import into containerd %s', (version) => {
  const maybe = 'bins' in containerdAvailability(version) ? test : test.skip;
  maybe('the image is listed under its name and digest, and its rootfs holds /hello.wasm', async () => {
    const img = wasmImage();
    const c = await PrivateContainerd.start({ version });
    try {
      await importImage(c, img.tarPath, { namespace: 'default' });
      const { stdout } = await c.ctr(['images', 'ls'], { namespace: 'default' });
      const line = stdout.split('\n').find((l) => l.startsWith(`${WASM_IMAGE} `));
      expect(line).toContain(img.manifestDigest);
      // unpacked into the snapshotter: mount it and look
      const mnt = mkdtempSync(path.join(tmp, 'mnt-'));
      await c.ctr(['images', 'mount', WASM_IMAGE, mnt], { namespace: 'default' });
      try {
        expect(readFileSync(path.join(mnt, 'hello.wasm'))).toEqual(wat2wasm(WASM_IMAGE_MODULES['hello.wasm']!));
      } finally {
        await c.ctr(['images', 'unmount', '--rm', mnt], { namespace: 'default' });
      }
    } finally {
      await c.stop();
    }
  });
});
