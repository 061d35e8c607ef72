// Boots the guest that scripts/build-guest.sh cached (small kernel + lz4 initramfs) under QEMU TCG,
// the way vmm-sandboxer will: microvm without ACPI, virtio-serial for the agent channel, virtio-9p
// for bundles. Skipped, with the reason printed, when qemu or the cached guest is missing.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

interface GuestManifest {
  cmdline: string;
  kernel: { release: string; size: number };
  initramfs: { size: number; components: Record<string, string> };
}

const GUEST_DIR = path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'current');
const MANIFEST = path.join(GUEST_DIR, 'manifest.json');
// TCG boots in about a second; the margin is for a loaded CI machine.
const READY_TIMEOUT_MS = 30_000;

function findOnPath(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir || '.', bin);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this dir
    }
  }
  return undefined;
}

const qemu = findOnPath('qemu-system-x86_64');
const skipReason = !qemu
  ? 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)'
  : !existsSync(MANIFEST)
    ? `no cached guest at ${GUEST_DIR} (run: bash scripts/build-guest.sh)`
    : !existsSync('/bin/busybox')
      ? '/bin/busybox (busybox-static) is missing; the crun bundle needs it'
      : undefined;
if (skipReason) console.warn(`guest boot tests skipped: ${skipReason}`);
const describeGuest = skipReason ? describe.skip : describe;

/** One QEMU process running the guest; console output is collected as it arrives. */
class Guest {
  console = '';
  readonly exited: Promise<number | null>;
  private readonly proc: ChildProcess;

  constructor(
    readonly dir: string,
    extraCmdline: string[],
  ) {
    const manifest = readManifest();
    mkdirSync(path.join(dir, 'share'), { recursive: true });
    const args = [
      '-M', 'microvm,acpi=off', '-accel', 'tcg', '-m', '256', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio',
      // reboot=t in the guest cmdline + -no-reboot: the guest's `reboot -f` ends QEMU.
      '-no-reboot',
      '-kernel', path.join(GUEST_DIR, 'vmlinux'),
      '-initrd', path.join(GUEST_DIR, 'initramfs.img'),
      '-append', [manifest.cmdline, 'kuasar.9p=share', ...extraCmdline].join(' '),
      '-chardev', `socket,path=${this.socketPath},server=on,wait=off,id=c0`,
      '-device', 'virtio-serial-device',
      '-device', 'virtserialport,chardev=c0,name=agent',
      '-fsdev', `local,id=fs0,path=${this.shareDir},security_model=none`,
      '-device', 'virtio-9p-device,fsdev=fs0,mount_tag=share',
    ];
    this.proc = spawn(qemu as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => (this.console += chunk));
    this.proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (this.console += chunk));
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
  }

  get socketPath(): string {
    return path.join(this.dir, 'agent.sock');
  }

  get shareDir(): string {
    return path.join(this.dir, 'share');
  }

  /** Resolves with the first console line matching `re`; rejects on timeout or QEMU exit. */
  waitForConsole(re: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<string> {
    return waitForText(() => this.console, re, timeoutMs, this.exited, () => this.console);
  }

  /** Connects to the virtio-serial port's host side (QEMU listens as soon as it starts). */
  async connectPort(): Promise<Port> {
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        return await Port.connect(this.socketPath);
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

class Port {
  received = '';
  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8').on('data', (chunk: string) => (this.received += chunk));
  }

  static connect(socketPath: string): Promise<Port> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(socketPath);
      socket.once('connect', () => resolve(new Port(socket)));
      socket.once('error', reject);
    });
  }

  send(text: string): void {
    this.socket.write(text);
  }

  waitFor(re: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<string> {
    return waitForText(() => this.received, re, timeoutMs, undefined, () => this.received);
  }

  close(): void {
    this.socket.destroy();
  }
}

function waitForText(
  text: () => string,
  re: RegExp,
  timeoutMs: number,
  exited: Promise<unknown> | undefined,
  context: () => string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err?: Error, line?: string) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(line as string);
    };
    const check = () => {
      const m = re.exec(text());
      if (m) finish(undefined, m[0]);
    };
    const poll = setInterval(check, 10);
    const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${re}; output so far:\n${context()}`)), timeoutMs);
    exited?.then(() => {
      check();
      finish(new Error(`QEMU exited while waiting for ${re}; output:\n${context()}`));
    });
    check();
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function readManifest(): GuestManifest {
  return JSON.parse(readFileSync(MANIFEST, 'utf8')) as GuestManifest;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** A busybox container bundle whose output proves namespaces, cgroup limits and seccomp took effect. */
function writeBundle(dir: string, marker: string): void {
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
    const manifest = readManifest();
    const secret = randomBytes(8).toString('hex');
    // no agent (even in an image that has one): /init then serves a shell on the port
    guest = new Guest(dir, ['kuasar.agent=/no-agent']);
    writeFileSync(path.join(guest.shareDir, 'secret'), `${secret}\n`);
    port = await guest.connectPort();

    const ready = await guest.waitForConsole(/KUASAR-GUEST-READY [^\r\n]*/);
    expect(ready).toContain(`release=${manifest.kernel.release}`);
    expect(ready).toMatch(/port=\/dev\/vport\d+p\d+/);
    // The same marker reaches the host over the port, so the agent channel works guest→host.
    await port.waitFor(/KUASAR-GUEST-READY/);

    // The shell on the port: host→guest and back.
    port.send('echo "release=$(uname -r)"; echo "secret=$(cat /mnt/share/secret)"; echo END\n');
    await port.waitFor(/END\r?\n/);
    expect(port.received).toContain(`release=${manifest.kernel.release}\n`);
    expect(port.received).toContain(`secret=${secret}\n`);

    port.send('reboot -f\n');
    expect(await withTimeout(guest.exited, 15_000, 'QEMU exit after reboot -f')).toBe(0);
  }, 60_000);

  test('selftest: qjs evaluates and crun runs a busybox bundle from the 9p share', async () => {
    const manifest = readManifest();
    const nonce = randomBytes(6).toString('hex');
    const marker = randomBytes(6).toString('hex');
    guest = new Guest(dir, ['kuasar.selftest=1', `kuasar.nonce=${nonce}`]);
    writeBundle(path.join(guest.shareDir, 'bundle'), marker);

    await guest.waitForConsole(/KUASAR-SELFTEST-DONE/, 60_000);
    const out = guest.console.replace(/\r/g, '');

    expect(out).toContain(`KUASAR-SELFTEST uname-r=${manifest.kernel.release}\n`);
    const qjs = /KUASAR-SELFTEST qjs=(\S+) rss-kb=(\d+)/.exec(out);
    expect(qjs?.[1]).toBe(nonce.split('').reverse().join(''));
    expect(Number(qjs?.[2])).toBeGreaterThan(0);

    expect(out).toMatch(/KUASAR-SELFTEST crun-exit=0 bundle=\/mnt\/share\/bundle/);
    expect(out).toContain(`crun-ok ${marker}\n`);
    expect(out).toContain(`memory.max=${64 * 1024 * 1024}\n`);
    expect(out).toContain('pids.max=32\n');
    expect(out).toMatch(/uid_map=\s*0\s+100000\s+65536\n/);
    expect(out).toContain('pid=1\n');
    expect(out).toContain('seccomp=mkdir-denied\n');

    expect(await withTimeout(guest.exited, 15_000, 'QEMU exit after the selftest')).toBe(0);
  }, 90_000);
});
