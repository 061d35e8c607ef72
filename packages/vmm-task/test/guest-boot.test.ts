// The guest build's output boots (scripts/build-guest.sh, cached kernel + lz4 initramfs) under QEMU TCG
// through the one guest launcher (./guest.ts): /init's ready marker and a shell on the virtio-serial
// port without an agent, and the selftest (qjs evaluates, crun runs a bundle from the 9p share).
// Skipped, with the reason printed, when qemu or the cached guest is missing.
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Guest, manifest, skipReason, sleep, waitFor } from './guest';

const reason = skipReason();
if (reason) console.warn(`guest boot tests skipped: ${reason}`);
const describeGuest = reason ? describe.skip : describe;
// TCG boots in about a second; the margin is for a loaded CI machine.
const READY_TIMEOUT_MS = 30_000;

/** The raw port without an agent: /init serves a shell on it. */
class Port {
  received = '';
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8').on('data', (chunk: string) => (this.received += chunk));
    socket.on('error', () => undefined);
  }

  /** QEMU listens as soon as it starts; retried until then. */
  static async connect(socketPath: string): Promise<Port> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        return await new Promise<Port>((resolve, reject) => {
          const socket = createConnection(socketPath);
          socket.once('connect', () => resolve(new Port(socket)));
          socket.once('error', reject);
        });
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
  }

  send(text: string): void {
    this.socket.write(text);
  }

  waitFor(re: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<RegExpExecArray> {
    return waitFor(() => re.exec(this.received) ?? undefined, timeoutMs, String(re), () => this.received);
  }

  close(): void {
    this.socket.destroy();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A busybox container bundle whose output proves namespaces, cgroup limits and seccomp took effect. */
function writeSelftestBundle(dir: string, marker: string): void {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(path.join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'cat', 'echo', 'mkdir']) symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  const script = [
    'echo "crun-ok $MARKER"',
    'echo "memory.max=$(cat /sys/fs/cgroup/memory.max)"',
    'echo "pids.max=$(cat /sys/fs/cgroup/pids.max)"',
    'echo "uid_map=$(cat /proc/self/uid_map)"',
    'echo "pid=$$"',
    'mkdir /tmp/probe 2>/dev/null && echo "seccomp=mkdir-allowed" || echo "seccomp=mkdir-denied"',
  ].join('; ');
  const idMap = [{ containerID: 0, hostID: 100000, size: 65536 }];
  const config = {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/bin/sh', '-c', script],
      env: ['PATH=/bin', `MARKER=${marker}`],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'selftest',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev'] },
    ],
    linux: {
      uidMappings: idMap,
      gidMappings: idMap,
      namespaces: ['pid', 'network', 'ipc', 'uts', 'mount', 'user', 'cgroup'].map((type) => ({ type })),
      resources: { memory: { limit: 64 * 1024 * 1024 }, pids: { limit: 32 } },
      seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64'],
        syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      },
    },
  };
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
}

describeGuest('microVM guest (QEMU TCG, cached by scripts/build-guest.sh)', () => {
  let guest: Guest | undefined;
  let port: Port | undefined;
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kuasar-guest-'));
  });

  afterEach(() => {
    port?.close();
    guest?.kill();
    port = undefined;
    guest = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  test('boots to the ready marker and answers over virtio-serial, with the 9p share mounted', async () => {
    const m = manifest();
    const secret = randomBytes(8).toString('hex');
    // no agent (even in an image that has one): /init then serves a shell on the port
    guest = new Guest(dir, [], { agent: 'none' });
    writeFileSync(path.join(guest.shareDir, 'secret'), `${secret}\n`);
    port = await Port.connect(guest.socketPath);

    // the whole line: console output arrives in chunks
    const ready = (await guest.waitForConsole(/KUASAR-GUEST-READY [^\r\n]*\r?\n/, READY_TIMEOUT_MS)).trim();
    expect(ready).toContain(`release=${m.kernel.release}`);
    expect(ready).toMatch(/port=\/dev\/vport\d+p\d+/);
    // The same marker reaches the host over the port, so the agent channel works guest→host.
    await port.waitFor(/KUASAR-GUEST-READY/);

    // The shell on the port: host→guest and back.
    port.send('echo "release=$(uname -r)"; echo "secret=$(cat /mnt/kuasar/secret)"; echo END\n');
    await port.waitFor(/END\r?\n/);
    expect(port.received).toContain(`release=${m.kernel.release}\n`);
    expect(port.received).toContain(`secret=${secret}\n`);

    port.send('reboot -f\n');
    expect(await withTimeout(guest.exited, 15_000, 'QEMU exit after reboot -f')).toBe(0);
  }, 60_000);

  test('selftest: qjs evaluates and crun runs a busybox bundle from the 9p share', async () => {
    const m = manifest();
    const nonce = randomBytes(6).toString('hex');
    const marker = randomBytes(6).toString('hex');
    guest = new Guest(dir, ['kuasar.selftest=1', `kuasar.nonce=${nonce}`], { agent: 'none' });
    writeSelftestBundle(path.join(guest.shareDir, 'bundle'), marker);

    await guest.waitForConsole(/KUASAR-SELFTEST-DONE/, 60_000);
    const out = guest.console.replace(/\r/g, '');

    expect(out).toContain(`KUASAR-SELFTEST uname-r=${m.kernel.release}\n`);
    const qjs = /KUASAR-SELFTEST qjs=(\S+) rss-kb=(\d+)/.exec(out);
    expect(qjs?.[1]).toBe(nonce.split('').reverse().join(''));
    expect(Number(qjs?.[2])).toBeGreaterThan(0);

    expect(out).toMatch(/KUASAR-SELFTEST crun-exit=0 bundle=\/mnt\/kuasar\/bundle/);
    expect(out).toContain(`crun-ok ${marker}\n`);
    expect(out).toContain(`memory.max=${64 * 1024 * 1024}\n`);
    expect(out).toContain('pids.max=32\n');
    expect(out).toMatch(/uid_map=\s*0\s+100000\s+65536\n/);
    expect(out).toContain('pid=1\n');
    expect(out).toContain('seccomp=mkdir-denied\n');

    expect(await withTimeout(guest.exited, 15_000, 'QEMU exit after the selftest')).toBe(0);
  }, 90_000);
});
