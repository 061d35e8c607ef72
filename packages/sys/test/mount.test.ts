import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MNT_DETACH, mount, MS_BIND, MS_RDONLY, MS_REMOUNT, SysError, umount2 } from '@kuasar/sys';

const isMounted = (p: string): boolean => fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === p);

let dir: string;
const mounted: string[] = [];
beforeAll(() => (dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-mount-')))));
afterAll(() => {
  for (const m of mounted.reverse()) if (isMounted(m)) umount2(m, MNT_DETACH);
  fs.rmSync(dir, { recursive: true, force: true });
});

function track(p: string): string {
  mounted.push(p);
  return p;
}

test('tmpfs, bind, read-only remount and umount', () => {
  const a = track(path.join(dir, 'a'));
  const b = track(path.join(dir, 'b'));
  fs.mkdirSync(a);
  fs.mkdirSync(b);
  mount('tmpfs', a, 'tmpfs', 0, 'size=1m,mode=0755');
  expect(isMounted(a)).toBe(true);
  fs.writeFileSync(path.join(a, 'f'), 'on tmpfs');

  mount(a, b, null, MS_BIND);
  expect(fs.readFileSync(path.join(b, 'f'), 'utf8')).toBe('on tmpfs');
  mount(null, b, null, MS_REMOUNT | MS_BIND | MS_RDONLY);
  expect(() => fs.writeFileSync(path.join(b, 'g'), 'x')).toThrow(expect.objectContaining({ code: 'EROFS' }));
  fs.writeFileSync(path.join(a, 'g'), 'still writable through a');

  umount2(b);
  expect(isMounted(b)).toBe(false);
  umount2(a, MNT_DETACH);
  expect(isMounted(a)).toBe(false);
  expect(fs.readdirSync(a)).toEqual([]);
});

test('errors carry syscall, errno and code', () => {
  let err: unknown;
  try {
    mount('tmpfs', path.join(dir, 'nope'), 'tmpfs', 0);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(SysError);
  expect(err).toMatchObject({ syscall: 'mount', code: 'ENOENT', errno: 2, path: path.join(dir, 'nope') });
  expect(() => umount2(dir)).toThrow(expect.objectContaining({ syscall: 'umount2', code: 'EINVAL' }));
  expect(() => mount('x', dir, 'no-such-fs', 0)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  expect(() => mount(null, '', null, MS_BIND)).toThrow(TypeError);
  expect(() => mount(null, dir, null, -1)).toThrow(RangeError);
});

test('a bind mount of /proc/<pid>/ns/ipc keeps the namespace after the process dies', async () => {
  const child = spawn('unshare', ['--ipc', '--uts', 'sleep', '5'], { stdio: 'ignore' });
  const exited = once(child, 'exit');
  const own = fs.readlinkSync('/proc/self/ns/ipc');
  let ns = own;
  for (let i = 0; i < 100 && ns === own; i++) {
    await new Promise((r) => setTimeout(r, 10));
    ns = fs.readlinkSync(`/proc/${child.pid}/ns/ipc`);
  }
  expect(ns).not.toBe(own);
  const inode = Number(/^ipc:\[(\d+)\]$/.exec(ns)![1]);

  const holder = track(path.join(dir, 'ipc'));
  fs.writeFileSync(holder, '');
  mount(`/proc/${child.pid}/ns/ipc`, holder, null, MS_BIND);
  child.kill('SIGKILL');
  await exited;
  expect(fs.existsSync(`/proc/${child.pid}`)).toBe(false);

  expect(Number(spawnSync('stat', ['-L', '-c', '%i', holder], { encoding: 'utf8' }).stdout.trim())).toBe(inode);
  const enter = spawnSync('nsenter', [`--ipc=${holder}`, 'readlink', '/proc/self/ns/ipc'], { encoding: 'utf8' });
  expect(enter.status).toBe(0);
  expect(enter.stdout.trim()).toBe(ns);

  umount2(holder);
  expect(spawnSync('nsenter', [`--ipc=${holder}`, 'true']).status).not.toBe(0);
});
