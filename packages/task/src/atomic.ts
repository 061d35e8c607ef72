import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';

/** Replace a file so a crash leaves either the old or the new content: temp file, fsync, rename. */
export function writeFileAtomic(path: string, data: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
