import * as fs from 'node:fs';
import * as path from 'node:path';
import { RootfsPathError, resolveInRootfs, resolveModule } from '../src/rootfs-path';
import { tempDir } from './sandboxer';

let root: string;
beforeAll(() => {
  root = tempDir('rootfs');
  fs.mkdirSync(path.join(root, 'app/bin'), { recursive: true });
  fs.writeFileSync(path.join(root, 'app/bin/m.wasm'), '');
  fs.symlinkSync('/app/bin/m.wasm', path.join(root, 'abs-link'));
  fs.symlinkSync('../../../../etc/passwd', path.join(root, 'app/up-link'));
  fs.symlinkSync('/etc', path.join(root, 'etc-link'));
  fs.symlinkSync('loop-b', path.join(root, 'loop-a'));
  fs.symlinkSync('loop-a', path.join(root, 'loop-b'));
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

test('paths and symlinks resolve as if the rootfs were "/"', () => {
  expect(resolveInRootfs(root, '/app/bin/m.wasm')).toBe(path.join(root, 'app/bin/m.wasm'));
  expect(resolveInRootfs(root, '/abs-link')).toBe(path.join(root, 'app/bin/m.wasm'));
  expect(resolveInRootfs(root, '/../../app/./bin/m.wasm')).toBe(path.join(root, 'app/bin/m.wasm'));
  // links that point out of the image land inside it
  expect(resolveInRootfs(root, '/app/up-link')).toBe(path.join(root, 'etc/passwd'));
  expect(resolveInRootfs(root, '/etc-link/passwd')).toBe(path.join(root, 'etc/passwd'));
  expect(() => resolveInRootfs(root, '/loop-a')).toThrow(/too many levels of symbolic links/);
});

test('args[0] is found like a shell finds a program', () => {
  expect(resolveModule(root, '/abs-link', []).hostPath).toBe(path.join(root, 'app/bin/m.wasm'));
  expect(resolveModule(root, 'm.wasm', ['PATH=/usr/bin:/app/bin']).guestPath).toBe('/app/bin/m.wasm');
  expect(resolveModule(root, 'bin/m.wasm', [], '/app').guestPath).toBe('/app/bin/m.wasm');
  expect(resolveModule(root, 'm.wasm', [], '/app/bin').guestPath).toBe('/app/bin/m.wasm');
  expect(() => resolveModule(root, 'x.wasm', ['PATH=/bin'])).toThrow(/module x\.wasm not found .*\/bin\/x\.wasm, \/x\.wasm/);
  expect(() => resolveModule(root, '/app/up-link', [])).toThrow(RootfsPathError);
  expect(() => resolveModule(root, '', [])).toThrow(/invalid module path/);
  expect(() => resolveModule(root, '/app', [])).toThrow(/not found/); // a directory is not a module
});
