// What a container's guest bundle is made of on the host: `<sandbox dir>/shared/<cid>/` holds config.json and bind
// mounts of the host rootfs and of the spec's bind-mount sources. QEMU serves that dir to the guest (9p/virtiofs),
// so the binds must exist before crun runs in the guest and go before the host rootfs is unmounted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MNT_DETACH, MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, SysError, mount, umount2 } from '@kuasar/sys';
import type { ShareBind } from './guest-spec';

export class ShareError extends Error {
  override readonly name = 'ShareError';
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below dir, deepest and most recent first (the order to unmount them in). */
export function mountPointsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const hits: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4];
    if (mp === undefined) continue;
    const p = unescapeMountinfo(mp);
    if (p === dir || p.startsWith(prefix)) hits.push(p);
  }
  return hits.map((p, i) => ({ p, i })).sort((a, b) => b.p.length - a.p.length || b.i - a.i).map(({ p }) => p);
}

/**
 * Bind every source into `containerDir`; on failure what was mounted is undone. Targets are created as the
 * source's kind (a file bind needs a file, e.g. CRI's /etc/hosts).
 */
export function mountShares(containerDir: string, binds: ShareBind[]): void {
  fs.mkdirSync(containerDir, { recursive: true, mode: 0o755 });
  try {
    for (const b of binds) {
      const target = path.join(containerDir, b.target);
      if (!target.startsWith(`${containerDir}/`)) throw new ShareError(`share target ${b.target} escapes ${containerDir}`);
      let st: fs.Stats;
      try {
        st = fs.statSync(b.source);
      } catch (err) {
        throw new ShareError(`bind source ${b.source} is not accessible: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
      fs.mkdirSync(path.dirname(target), { recursive: true });
      if (st.isDirectory()) fs.mkdirSync(target, { recursive: true });
      else fs.closeSync(fs.openSync(target, 'a'));
      mount(b.source, target, null, MS_BIND | MS_REC);
      if (b.readonly) mount(null, target, null, MS_REMOUNT | MS_BIND | MS_RDONLY);
    }
  } catch (err) {
    unmountShares(containerDir);
    if (err instanceof ShareError) throw err;
    throw new ShareError(`cannot share into ${containerDir}: ${err instanceof SysError ? err.message : String(err)}`, { cause: err });
  }
}

/** Unmounts everything below `containerDir` and removes it. Idempotent. */
export function unmountShares(containerDir: string): void {
  for (const mp of mountPointsUnder(containerDir)) {
    try {
      umount2(mp, MNT_DETACH);
    } catch (err) {
      if (!(err instanceof SysError && (err.code === 'EINVAL' || err.code === 'ENOENT'))) throw err;
    }
  }
  // only now: with a bind still in place, rm would delete the container's files through it
  if (mountPointsUnder(containerDir).length === 0) fs.rmSync(containerDir, { recursive: true, force: true });
}
