import { SysError } from './errors';
import { lazy } from './koffi';

const TIOCGWINSZ = 0x5413;
const TIOCSWINSZ = 0x5414;
const O_RDWR = 0o2;
const O_NOCTTY = 0o400;
const O_CLOEXEC = 0o2000000;

const fns = lazy((k, lib) => ({
  errno: () => k.errno(),
  // ioctl is variadic; the one pointer argument is passed like a fixed one on x86_64.
  ioctl: lib.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
  posixOpenpt: lib.func('int posix_openpt(int flags)'),
  grantpt: lib.func('int grantpt(int fd)'),
  unlockpt: lib.func('int unlockpt(int fd)'),
  ptsnameR: lib.func('int ptsname_r(int fd, _Out_ uint8_t *buf, size_t len)'),
  close: lib.func('int close(int fd)'),
}));

export interface Winsize {
  rows: number;
  cols: number;
}

function assertFd(fd: number): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be a non-negative integer, got ${fd}`);
}

function assertDim(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${name} must be an integer in 0..65535, got ${v}`);
}

/** Resizes a terminal (TIOCSWINSZ); the foreground process group gets SIGWINCH. */
export function setWinsize(fd: number, rows: number, cols: number): void {
  assertFd(fd);
  assertDim('rows', rows);
  assertDim('cols', cols);
  const f = fns();
  const ws = new Uint16Array([rows, cols, 0, 0]); // struct winsize: row, col, xpixel, ypixel
  if (f.ioctl(fd, TIOCSWINSZ, ws) !== 0) throw new SysError('ioctl(TIOCSWINSZ)', f.errno());
}

export function getWinsize(fd: number): Winsize {
  assertFd(fd);
  const f = fns();
  const ws = new Uint16Array(4);
  if (f.ioctl(fd, TIOCGWINSZ, ws) !== 0) throw new SysError('ioctl(TIOCGWINSZ)', f.errno());
  return { rows: ws[0], cols: ws[1] };
}

export interface Pty {
  /** Master fd (close-on-exec); the caller owns it. */
  master: number;
  /** Path of the slave side, e.g. /dev/pts/3. */
  slavePath: string;
}

/** Opens a new pseudo-terminal pair's master and names its slave. */
export function openPty(): Pty {
  const f = fns();
  const master = f.posixOpenpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) throw new SysError('posix_openpt', f.errno());
  try {
    if (f.grantpt(master) !== 0) throw new SysError('grantpt', f.errno());
    if (f.unlockpt(master) !== 0) throw new SysError('unlockpt', f.errno());
    const buf = Buffer.alloc(128);
    const rc = f.ptsnameR(master, buf, buf.length);
    if (rc !== 0) throw new SysError('ptsname_r', rc);
    return { master, slavePath: buf.subarray(0, buf.indexOf(0)).toString() };
  } catch (err) {
    f.close(master);
    throw err;
  }
}
