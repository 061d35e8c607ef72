import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sdNotify, SysError } from '@kuasar/sys';
import { closeFd, sock, sockaddrUn, SOCK_DGRAM, SOCK_NONBLOCK, unixSocket } from '../src/unix';

const MSG_DONTWAIT = 0x40;

/** A receiving datagram socket, as systemd would hold it. */
function receiver(name: string): { recv(): string | null; close(): void } {
  const s = sock();
  const fd = unixSocket(SOCK_DGRAM | SOCK_NONBLOCK);
  const addr = sockaddrUn(name);
  if (s.bind(fd, addr, addr.length) !== 0) throw new SysError('bind', s.errno(), name);
  return {
    recv() {
      const buf = Buffer.alloc(512);
      const n = s.recv(fd, buf, buf.length, MSG_DONTWAIT);
      return n < 0 ? null : buf.subarray(0, Number(n)).toString();
    },
    close: () => closeFd(fd),
  };
}

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-notify-'))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('READY=1 arrives on a path socket named by $NOTIFY_SOCKET', () => {
  const p = path.join(dir, 'notify.sock');
  const r = receiver(p);
  const saved = process.env.NOTIFY_SOCKET;
  try {
    process.env.NOTIFY_SOCKET = p;
    expect(r.recv()).toBeNull();
    expect(sdNotify('READY=1')).toBe(true);
    expect(r.recv()).toBe('READY=1');
    expect(sdNotify('STATUS=serving\nMAINPID=1')).toBe(true);
    expect(r.recv()).toBe('STATUS=serving\nMAINPID=1');
  } finally {
    if (saved === undefined) delete process.env.NOTIFY_SOCKET;
    else process.env.NOTIFY_SOCKET = saved;
    r.close();
  }
});

test('abstract @names work', () => {
  const name = `@kuasar-sys-test-${process.pid}`;
  const r = receiver(name);
  try {
    expect(sdNotify('READY=1', name)).toBe(true);
    expect(r.recv()).toBe('READY=1');
  } finally {
    r.close();
  }
});

test('no socket configured returns false; a dead socket is a typed error', () => {
  expect(sdNotify('READY=1', '')).toBe(false);
  expect(() => sdNotify('READY=1', path.join(dir, 'absent.sock'))).toThrow(expect.objectContaining({ syscall: 'sendto', code: 'ENOENT' }));
  expect(() => sdNotify('READY=1', `@kuasar-nobody-${process.pid}`)).toThrow(expect.objectContaining({ code: 'ECONNREFUSED' }));
  expect(() => sdNotify('', path.join(dir, 'x'))).toThrow(TypeError);
});
