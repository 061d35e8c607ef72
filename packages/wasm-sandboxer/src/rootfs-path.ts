// Finding a container's module inside its rootfs without ever leaving it: the image's symlinks are resolved as if
// the rootfs were "/" (as chroot would), so a link to "/app/x.wasm" or "../../etc" stays inside the image.
import * as fs from 'node:fs';
import * as path from 'node:path';

const MAX_SYMLINKS = 40; // ELOOP after as many links as Linux follows

export class RootfsPathError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RootfsPathError';
  }
}

/** The host path of `guestPath` (absolute, as the container sees it) under `rootfs`; symlinks stay inside. */
export function resolveInRootfs(rootfs: string, guestPath: string): string {
  const done: string[] = [];
  const todo = guestPath.split('/').filter((p) => p !== '' && p !== '.');
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (part === '..') {
      done.pop();
      continue;
    }
    const host = path.join(rootfs, ...done, part);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch {
      // does not exist (yet): the caller reports it with the guest path
      return path.join(rootfs, ...done, part, ...todo);
    }
    if (!st.isSymbolicLink()) {
      done.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) throw new RootfsPathError(`too many levels of symbolic links in ${guestPath}`);
    const target = fs.readlinkSync(host);
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return path.join(rootfs, ...done);
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * The module `args[0]` names, the way a shell would find a program: a path with a "/" is taken relative to the
 * working directory, a bare name is looked up in $PATH, then in the working directory (runwasi and Kuasar take
 * `rootfs + args[0]`; images with `CMD ["/hello.wasm"]` are the common case).
 */
export function resolveModule(rootfs: string, arg0: string, env: readonly string[], cwd = '/'): { guestPath: string; hostPath: string } {
  if (arg0 === '' || arg0.includes('\0')) throw new RootfsPathError(`invalid module path ${JSON.stringify(arg0)}`);
  const candidates: string[] = [];
  if (arg0.includes('/')) {
    candidates.push(path.posix.resolve(cwd, arg0));
  } else {
    const pathVar = env.find((e) => e.startsWith('PATH='))?.slice(5) ?? '';
    for (const dir of pathVar.split(':')) if (dir.startsWith('/')) candidates.push(path.posix.join(dir, arg0));
    candidates.push(path.posix.resolve(cwd, arg0));
  }
  for (const guestPath of candidates) {
    const hostPath = resolveInRootfs(rootfs, guestPath);
    if (isFile(hostPath)) return { guestPath, hostPath };
  }
  const where = candidates.length > 1 ? ` (looked in ${candidates.join(', ')})` : '';
  throw new RootfsPathError(`module ${arg0} not found in the container's rootfs${where}`);
}
