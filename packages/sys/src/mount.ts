import { SysError } from './errors';
import { lazy } from './koffi';

/** mount(2) flags. */
export const MS_RDONLY = 0x1;
export const MS_NOSUID = 0x2;
export const MS_NODEV = 0x4;
export const MS_NOEXEC = 0x8;
export const MS_REMOUNT = 0x20;
export const MS_NOATIME = 0x400;
export const MS_BIND = 0x1000;
export const MS_MOVE = 0x2000;
export const MS_REC = 0x4000;
export const MS_UNBINDABLE = 0x20000;
export const MS_PRIVATE = 0x40000;
export const MS_SLAVE = 0x80000;
export const MS_SHARED = 0x100000;
export const MS_RELATIME = 0x200000;
export const MS_STRICTATIME = 0x1000000;

/** umount2(2) flags. */
export const MNT_FORCE = 0x1;
export const MNT_DETACH = 0x2;
export const MNT_EXPIRE = 0x4;
export const UMOUNT_NOFOLLOW = 0x8;

const fns = lazy((k, lib) => ({
  errno: () => k.errno(),
  mount: lib.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)'),
  umount2: lib.func('int umount2(const char *target, int flags)'),
}));

function assertFlags(flags: number): void {
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xffffffff) throw new RangeError(`invalid mount flags: ${flags}`);
}

/**
 * mount(2) in this process's mount namespace. source/fstype/data may be null where the kernel
 * ignores them (bind, remount, propagation changes).
 */
export function mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null = null): void {
  if (typeof target !== 'string' || target === '') throw new TypeError('mount target must be a non-empty path');
  assertFlags(flags);
  const f = fns();
  if (f.mount(source, target, fstype, flags, data) !== 0) throw new SysError('mount', f.errno(), target);
}

export function umount2(target: string, flags = 0): void {
  if (typeof target !== 'string' || target === '') throw new TypeError('umount target must be a non-empty path');
  assertFlags(flags);
  const f = fns();
  if (f.umount2(target, flags) !== 0) throw new SysError('umount2', f.errno(), target);
}
