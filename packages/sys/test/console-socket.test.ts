import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConsoleSocket, getWinsize, Reaper, sendFd, setChildSubreaper, setWinsize, SysError, TimeoutError } from '@kuasar/sys';

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-console-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('ConsoleSocket with a Node-side sender', () => {
  test('receives the fd sent over SCM_RIGHTS without blocking the event loop', async () => {
    const sockPath = path.join(dir, 'a.sock');
    const cs = ConsoleSocket.listen(sockPath);
    try {
      const file = path.join(dir, 'payload');
      fs.writeFileSync(file, 'hello through SCM_RIGHTS');
      const fd = fs.openSync(file, 'r');
      const received = cs.receiveFd(2000);
      let ticked = false;
      setTimeout(() => {
        ticked = true;
        sendFd(sockPath, fd);
      }, 50);
      const got = await received;
      expect(ticked).toBe(true);
      fs.closeSync(fd);
      expect(got).not.toBe(fd);
      expect(fs.fstatSync(got).ino).toBe(fs.statSync(file).ino);
      const buf = Buffer.alloc(64);
      const n = fs.readSync(got, buf, 0, buf.length, 0);
      expect(buf.subarray(0, n).toString()).toBe('hello through SCM_RIGHTS');
      // received fds are close-on-exec, so spawned children do not inherit the pty
      const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${got}`, 'utf8'))![1];
      expect(parseInt(flags, 8) & 0o2000000).toBe(0o2000000);
      fs.closeSync(got);
    } finally {
      cs.close();
    }
    expect(fs.existsSync(sockPath)).toBe(false);
  });

  test('times out with a typed error and can then still receive', async () => {
    const sockPath = path.join(dir, 'b.sock');
    const cs = ConsoleSocket.listen(sockPath);
    try {
      const t0 = Date.now();
      await expect(cs.receiveFd(150)).rejects.toBeInstanceOf(TimeoutError);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
      const fd = fs.openSync('/dev/null', 'r');
      setImmediate(() => sendFd(sockPath, fd));
      const got = await cs.receiveFd(1000);
      expect(fs.readlinkSync(`/proc/self/fd/${got}`)).toBe('/dev/null');
      fs.closeSync(got);
      fs.closeSync(fd);
    } finally {
      cs.close();
    }
  });

  test('close() rejects a pending receive; bad paths get clear errors', async () => {
    const sockPath = path.join(dir, 'c.sock');
    const cs = ConsoleSocket.listen(sockPath);
    const pending = cs.receiveFd(5000);
    await expect(cs.receiveFd(10)).rejects.toThrow(/already waiting/);
    cs.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(cs.receiveFd(10)).rejects.toThrow(/closed/);

    fs.writeFileSync(path.join(dir, 'taken'), '');
    expect(() => ConsoleSocket.listen(path.join(dir, 'taken'))).toThrow(expect.objectContaining({ syscall: 'bind', code: 'EADDRINUSE' }));
    expect(() => ConsoleSocket.listen(path.join(dir, 'missing', 'x.sock'))).toThrow(SysError);
    expect(() => ConsoleSocket.listen('/tmp/' + 'x'.repeat(120))).toThrow(RangeError);
    expect(() => sendFd(path.join(dir, 'nobody.sock'), 0)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});

describe('ConsoleSocket with real runc', () => {
  const id = `kuasar-sys-${process.pid}`;
  let bundle: string;
  let state: string;

  beforeAll(() => {
    bundle = path.join(dir, 'bundle');
    state = path.join(dir, 'runc-state');
    const bin = path.join(bundle, 'rootfs', 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.copyFileSync('/bin/busybox', path.join(bin, 'busybox'));
    fs.chmodSync(path.join(bin, 'busybox'), 0o755);
    for (const tool of ['sh', 'echo', 'cat', 'ls']) fs.symlinkSync('busybox', path.join(bin, tool));
    // `runc spec` writes a default config with terminal:true and args ["sh"].
    expect(spawnSync('runc', ['spec'], { cwd: bundle }).status).toBe(0);
    setChildSubreaper(); // the container init re-parents to us when runc create exits
  });

  afterAll(() => {
    spawnSync('runc', ['--root', state, 'delete', '-f', id]);
  });

  test('runc create --console-socket hands us a working pty master', async () => {
    const sockPath = path.join(dir, 'runc.sock');
    const cs = ConsoleSocket.listen(sockPath);
    const reaper = new Reaper();
    let master = -1;
    try {
      const pidFile = path.join(dir, 'init.pid');
      const create = spawn('runc', ['--root', state, 'create', '--bundle', bundle, '--console-socket', sockPath, '--pid-file', pidFile, id], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      create.stderr.on('data', (d) => (stderr += d));
      master = await cs.receiveFd(10_000);
      const [code] = await once(create, 'exit');
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      const initPid = Number(fs.readFileSync(pidFile, 'utf8'));
      reaper.track(initPid);
      const exited = new Promise((resolve) => reaper.on('exit', (pid, status) => pid === initPid && resolve(status)));

      setWinsize(master, 30, 100);
      expect(getWinsize(master)).toEqual({ rows: 30, cols: 100 });
      expect(spawnSync('runc', ['--root', state, 'start', id]).status).toBe(0);

      fs.writeSync(master, 'echo hi; stty size\n');
      let out = '';
      const deadline = Date.now() + 10_000;
      const buf = Buffer.alloc(4096);
      while (!/\nhi\r?\n30 100\r?\n/.test(out) && Date.now() < deadline) {
        const n = await new Promise<number>((res, rej) => fs.read(master, buf, 0, buf.length, null, (e, n) => (e ? rej(e) : res(n))));
        out += buf.subarray(0, n).toString();
      }
      expect(out).toMatch(/\nhi\r?\n30 100\r?\n/);

      expect(spawnSync('runc', ['--root', state, 'delete', '-f', id]).status).toBe(0);
      await expect(exited).resolves.toBe(137);
    } finally {
      if (master >= 0) fs.closeSync(master);
      reaper.close();
      cs.close();
    }
  }, 30_000);
});
