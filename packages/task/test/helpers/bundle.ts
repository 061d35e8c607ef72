// A busybox-static OCI bundle for tests that run real runtimes (runc, crun, runsc).
// Reusable by other packages: `import { createBusyboxBundle } from '../../task/test/helpers/bundle'`.
// bundle.remove() deletes everything it created.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, copyFileSync, symlinkSync, writeFileSync, rmSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface BusyboxBundleOptions {
  /** the container's command (default: sleep 1000) */
  args?: string[];
  terminal?: boolean;
  env?: string[];
  /** cgroupsPath in the spec; default `/kuasar-test/<random>` so leftovers are easy to find */
  cgroupsPath?: string;
  /** omit the pid namespace (the container then shares the host's) */
  hostPid?: boolean;
  /** extra fields merged into `linux` */
  linux?: Record<string, unknown>;
  /** parent directory for the bundle (default os.tmpdir()) */
  parent?: string;
}

export interface BusyboxBundle {
  /** absolute, symlink-free bundle path (runc refuses symlinked rootfs) */
  path: string;
  rootfs: string;
  spec: Record<string, unknown>;
  /** rewrite config.json after changing `spec` */
  writeSpec(): void;
  remove(): void;
}

const BUSYBOX = '/bin/busybox';
let applets: string[] | undefined;

/** rootfs/ with busybox and one symlink per applet (built per bundle, so nothing outlives bundle.remove()). */
function buildRootfs(dir: string): void {
  for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'root']) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync(BUSYBOX, join(dir, 'bin', 'busybox'));
  applets ??= execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).split('\n').filter((a) => a && a !== 'busybox');
  for (const a of applets) {
    try {
      symlinkSync('busybox', join(dir, 'bin', a));
    } catch {
      /* duplicate applet names are harmless */
    }
  }
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\n');
}

export function busyboxSpec(rootfs: string, o: BusyboxBundleOptions = {}): Record<string, unknown> {
  const namespaces = [{ type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }];
  if (!o.hostPid) namespaces.unshift({ type: 'pid' });
  const caps = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE', 'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER',
    'CAP_SETUID', 'CAP_SETGID'];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: o.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args: o.args ?? ['sleep', '1000'],
      env: o.env ?? ['PATH=/bin', 'TERM=xterm'],
      cwd: '/',
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs, readonly: false },
    hostname: 'kuasar',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      cgroupsPath: o.cgroupsPath ?? `/kuasar-test/${Math.random().toString(36).slice(2, 10)}`,
      namespaces,
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      ...o.linux,
    },
  };
}

/** Build `<parent>/kuasar-bundle-XXXX/{config.json,rootfs/}` with busybox and its applet symlinks. */
export function createBusyboxBundle(o: BusyboxBundleOptions = {}): BusyboxBundle {
  const path = realpathSync(mkdtempSync(join(o.parent ?? tmpdir(), 'kuasar-bundle-')));
  const rootfs = join(path, 'rootfs');
  buildRootfs(rootfs);
  const spec = busyboxSpec(rootfs, o);
  const bundle: BusyboxBundle = {
    path,
    rootfs,
    spec,
    writeSpec: () => writeFileSync(join(path, 'config.json'), JSON.stringify(bundle.spec, null, 2)),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
  bundle.writeSpec();
  return bundle;
}
