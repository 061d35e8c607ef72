import * as fs from 'node:fs';
import { getWinsize, openPty, setWinsize, SysError } from '@kuasar/sys';

describe('terminal window size', () => {
  test('set on the master is seen on both ends of a real pty', () => {
    const { master, slavePath } = openPty();
    expect(slavePath).toMatch(/^\/dev\/pts\/\d+$/);
    const slave = fs.openSync(slavePath, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    try {
      setWinsize(master, 40, 132);
      expect(getWinsize(master)).toEqual({ rows: 40, cols: 132 });
      expect(getWinsize(slave)).toEqual({ rows: 40, cols: 132 });
      setWinsize(master, 24, 80);
      expect(getWinsize(slave)).toEqual({ rows: 24, cols: 80 });
      // the pair really is connected
      fs.writeSync(slave, 'ping\n');
      const buf = Buffer.alloc(16);
      expect(buf.subarray(0, fs.readSync(master, buf)).toString()).toBe('ping\r\n');
    } finally {
      fs.closeSync(slave);
      fs.closeSync(master);
    }
  });

  test('errors are typed and bad input is refused', () => {
    const file = fs.openSync('/proc/self/status', 'r');
    try {
      expect(() => getWinsize(file)).toThrow(expect.objectContaining({ code: 'ENOTTY', syscall: 'ioctl(TIOCGWINSZ)' }));
    } finally {
      fs.closeSync(file);
    }
    expect(() => setWinsize(987654, 1, 1)).toThrow(SysError);
    expect(() => setWinsize(987654, 1, 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => setWinsize(0, 70000, 1)).toThrow(RangeError);
    expect(() => setWinsize(0, 10, -1)).toThrow(RangeError);
    expect(() => getWinsize(-1)).toThrow(RangeError);
  });
});
