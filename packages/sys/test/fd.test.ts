import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dup, SysError } from '@kuasar/sys';

describe('dup', () => {
  test('the copy outlives the original and shares its offset and O_APPEND', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-dup-'));
    const file = path.join(dir, 'log');
    fs.writeFileSync(file, 'start\n');
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND);
    const copy = dup(fd);
    try {
      expect(copy).not.toBe(fd);
      fs.writeSync(fd, 'a\n');
      fs.closeSync(fd);
      // one open file description: appends after what the original wrote, even though it is closed now
      fs.writeSync(copy, 'b\n');
      expect(fs.readFileSync(file, 'utf8')).toBe('start\na\nb\n');
      // close-on-exec, so spawned children do not inherit it
      const flags = fs.readFileSync(`/proc/self/fdinfo/${copy}`, 'utf8').match(/^flags:\s+(\d+)/m)![1]!;
      expect(parseInt(flags, 8) & 0o2000000).toBe(0o2000000);
      expect(parseInt(flags, 8) & fs.constants.O_APPEND).toBe(fs.constants.O_APPEND);
    } finally {
      fs.closeSync(copy);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a closed fd is a typed error; bad input is refused', () => {
    expect(() => dup(987654)).toThrow(SysError);
    expect(() => dup(987654)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => dup(-1)).toThrow(RangeError);
    expect(() => dup(1.5)).toThrow(RangeError);
  });
});
