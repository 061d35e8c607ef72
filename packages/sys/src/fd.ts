import { SysError } from './errors';
import { lazy } from './koffi';

// F_DUPFD_CLOEXEC (linux/fcntl.h): the copy must not leak into processes the sandboxer spawns (relay, loggers).
const F_DUPFD_CLOEXEC = 1030;

const fns = lazy((k, lib) => ({
  errno: () => k.errno(),
  // fcntl is variadic; its one int argument is passed like a fixed one on x86_64.
  fcntl: lib.func('fcntl', 'int', ['int', 'int', 'int']),
}));

/**
 * dup(2) with close-on-exec: a second fd for the same open file description (same offset, same O_APPEND), which
 * stays valid after the original is closed. Node can only reopen through /proc/self/fd, which makes a new
 * description and loses both. The caller owns the copy and closes it with fs.closeSync.
 */
export function dup(fd: number): number {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be a non-negative integer, got ${fd}`);
  const f = fns();
  const copy = f.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw new SysError('fcntl(F_DUPFD_CLOEXEC)', f.errno());
  return copy;
}
