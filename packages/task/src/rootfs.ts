// CreateTaskRequest.rootfs: containerd does not mount the rootfs for a shim; the task core mounts it onto
// <bundle>/rootfs and unmounts it on Delete.
import { mount, umount2, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_NOATIME, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_STRICTATIME, SysError } from '@kuasar/sys';
import { Code, TtrpcError } from './errors';

export interface RootfsMount {
  type: string;
  source: string;
  options: string[];
}

const FLAGS: Record<string, [set: number, clear: number]> = {
  ro: [MS_RDONLY, 0], rw: [0, MS_RDONLY], bind: [MS_BIND, 0], rbind: [MS_BIND | MS_REC, 0],
  nosuid: [MS_NOSUID, 0], suid: [0, MS_NOSUID], nodev: [MS_NODEV, 0], dev: [0, MS_NODEV],
  noexec: [MS_NOEXEC, 0], exec: [0, MS_NOEXEC], noatime: [MS_NOATIME, 0], relatime: [MS_RELATIME, 0],
  strictatime: [MS_STRICTATIME, 0], defaults: [0, 0],
};

/** mount(8)-style options → mount(2) flags and the fs-specific data string. */
export function parseMountOptions(options: string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAGS[o];
    if (f) flags = (flags | f[0]) & ~f[1];
    else data.push(o);
  }
  return { flags, data: data.join(',') };
}

/** Mount each entry onto target in order; returns the targets to unmount (in reverse) on Delete. */
export function mountRootfs(mounts: RootfsMount[], target: string): string[] {
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const { flags, data } = parseMountOptions(m.options);
      const type = m.type === 'bind' ? null : m.type;
      mount(m.source, target, type, flags & ~MS_RDONLY | (flags & MS_BIND ? 0 : flags & MS_RDONLY), data || null);
      done.push(target);
      // a bind mount only becomes read-only through a remount
      if (flags & MS_BIND && flags & MS_RDONLY) mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY, null);
    }
  } catch (err) {
    unmountAll(done);
    const msg = err instanceof SysError ? err.message : String(err);
    throw new TtrpcError(Code.FAILED_PRECONDITION, `cannot mount rootfs on ${target}: ${msg}`);
  }
  return done;
}

export function unmountAll(targets: string[]): void {
  for (const t of [...targets].reverse()) {
    try {
      umount2(t, 0);
    } catch (err) {
      if (err instanceof SysError && err.code === 'EINVAL') continue; // not mounted any more
      try {
        umount2(t, MNT_DETACH);
      } catch {
        /* best effort: nothing else can be done here */
      }
    }
  }
}
