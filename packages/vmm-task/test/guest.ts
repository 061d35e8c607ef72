// The one QEMU launcher of the guest tests: boots the cached guest (scripts/build-guest.sh) under TCG
// as vmm-sandboxer does (microvm without ACPI, virtio-serial port "agent", 9p share "kuasar" at
// /mnt/kuasar), with this package's agent or none, and gives the test a host-side Session over the
// virtio-serial chardev socket (HostLink) or the console text.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { accessSync, constants, copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import path from 'node:path';
import { type EventMessage, Session } from '@kuasar/vmm-protocol';

export const GUEST_DIR = path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'current');
const MANIFEST = path.join(GUEST_DIR, 'manifest.json');

function findOnPath(bin: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const candidate = path.join(dir || '.', bin);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export const qemu = findOnPath('qemu-system-x86_64');

/**
 * Where the agent comes from: "share" (default) bundles the current source into the 9p share and
 * boots with kuasar.agent=, so a test always runs the code under test without rebuilding the
 * initramfs; "initramfs" uses the one baked in by `build-guest.sh --agent` (KUASAR_TEST_AGENT=initramfs).
 */
export const agentSource = process.env.KUASAR_TEST_AGENT === 'initramfs' ? 'initramfs' : 'share';

export function skipReason(): string | undefined {
  if (!qemu) return 'qemu-system-x86_64 not found (apt-get install qemu-system-x86)';
  if (!existsSync(MANIFEST)) return `no cached guest at ${GUEST_DIR} (run: bash scripts/build-guest.sh)`;
  if (!existsSync('/bin/busybox')) return '/bin/busybox (busybox-static) is missing; the container rootfs needs it';
  if (agentSource === 'initramfs' && !manifest().initramfs.agent) return `the cached initramfs has no agent (run: bash scripts/build-guest.sh --agent packages/vmm-task/dist)`;
  return undefined;
}

export interface Manifest {
  cmdline: string;
  kernel: { release: string };
  initramfs: { size: number; agent: string | null };
}

export function manifest(): Manifest {
  return JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest;
}

export class Guest {
  console = '';
  readonly startedAt = Date.now();
  readonly exited: Promise<number | null>;
  private readonly proc: ChildProcess;

  /**
   * `agent`: where the agent comes from (default `agentSource`); "none" boots without one even from an
   * image that has one, so /init serves a shell on the port (and kuasar.selftest=1 works either way).
   */
  constructor(readonly dir: string, extraCmdline: string[] = [], opts: { agent?: 'share' | 'initramfs' | 'none' } = {}) {
    const m = manifest();
    const agent = opts.agent ?? agentSource;
    mkdirSync(this.shareDir, { recursive: true });
    mkdirSync(this.extraDir, { recursive: true });
    const cmdline = [m.cmdline, 'kuasar.9p=kuasar', ...extraCmdline];
    if (agent === 'none') cmdline.push('kuasar.agent=/no-agent');
    if (agent === 'share') {
      execFileSync(process.execPath, [path.join(__dirname, '..', 'build.mjs'), path.join(this.shareDir, '.agent')], { stdio: 'inherit' });
      cmdline.push('kuasar.agent=/mnt/kuasar/.agent/vmm-task.js');
    }
    const args = [
      '-M', 'microvm,acpi=off', '-accel', 'tcg', '-m', '256', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
      '-kernel', path.join(GUEST_DIR, 'vmlinux'),
      '-initrd', path.join(GUEST_DIR, 'initramfs.img'),
      '-append', cmdline.join(' '),
      '-chardev', `socket,path=${this.socketPath},server=on,wait=off,id=c0`,
      '-device', 'virtio-serial-device',
      '-device', 'virtserialport,chardev=c0,name=agent',
      '-fsdev', `local,id=fs0,path=${this.shareDir},security_model=none`,
      '-device', 'virtio-9p-device,fsdev=fs0,mount_tag=kuasar',
      // A second share that /init does not mount, for guest.setup to mount.
      '-fsdev', `local,id=fs1,path=${this.extraDir},security_model=none`,
      '-device', 'virtio-9p-device,fsdev=fs1,mount_tag=extra',
    ];
    this.proc = spawn(qemu as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.setEncoding('utf8').on('data', (c: string) => (this.console += c));
    this.proc.stderr?.setEncoding('utf8').on('data', (c: string) => (this.console += c));
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
  }

  get socketPath(): string {
    return path.join(this.dir, 'agent.sock');
  }

  get shareDir(): string {
    return path.join(this.dir, 'shared');
  }

  get extraDir(): string {
    return path.join(this.dir, 'extra');
  }

  /** Guest uptime (s) printed by /init and by the agent when each became ready. */
  uptimes(): { init?: number; agent?: number } {
    const at = (re: RegExp) => {
      const m = re.exec(this.console);
      return m ? Number(m[1]) : undefined;
    };
    return { init: at(/KUASAR-GUEST-READY uptime=([\d.]+)/), agent: at(/KUASAR-AGENT-READY uptime=([\d.]+)/) };
  }

  /** The first console match of `re`; rejects on timeout, or when QEMU exits without printing it. */
  async waitForConsole(re: RegExp, timeoutMs: number): Promise<string> {
    let gone = false;
    void this.exited.then(() => (gone = true));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.console);
      if (m) return m[0];
      if (gone) throw new Error(`QEMU exited while waiting for ${re}; console:\n${this.console.slice(-4000)}`);
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${re}; console:\n${this.console.slice(-4000)}`);
      await sleep(10);
    }
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** A host connection: one Session (kept across reconnects by the caller if wanted) over one socket. */
export class HostLink {
  readonly events: EventMessage[] = [];
  private socket: Socket | undefined;

  constructor(readonly session: Session = new Session({ role: 'host', requestTimeoutMs: 90_000 })) {
    session.onEvent((e) => this.events.push(e));
  }

  async connect(socketPath: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        this.socket = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(20);
      }
    }
    const socket = this.socket;
    this.session.attach({ write: (b) => void socket.write(b) });
    socket.on('data', (chunk) => this.session.receive(chunk));
    socket.on('close', () => this.session.detach());
    socket.on('error', () => {});
  }

  /** Raw bytes straight onto the channel (garbage tests). */
  writeRaw(bytes: Uint8Array): void {
    this.socket?.write(bytes);
  }

  disconnect(): void {
    this.socket?.destroy();
    this.socket = undefined;
    this.session.detach();
  }

  waitEvent(pred: (e: EventMessage) => boolean, timeoutMs: number, what: string, consoleText: () => string): Promise<EventMessage> {
    return waitFor(() => this.events.find(pred), timeoutMs, what, consoleText);
  }
}

export async function waitFor<T>(get: () => T | undefined, timeoutMs: number, what: string, context: () => string = () => ''): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n--- guest console ---\n${context().slice(-4000)}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Bundle <share>/<id>/{config.json,rootfs} with busybox, in the layout of vmm-protocol.md. */
export function writeBundle(shareDir: string, id: string, args: string[], extra: { env?: string[]; memoryLimit?: number; terminal?: boolean } = {}): string {
  const bundle = path.join(shareDir, id);
  const rootfs = path.join(bundle, 'rootfs');
  for (const d of ['bin', 'proc', 'dev', 'tmp']) mkdirSync(path.join(rootfs, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'cat', 'echo', 'sleep', 'printf', 'uname', 'head', 'tty', 'stty']) symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  const config = {
    ociVersion: '1.0.2',
    process: { terminal: extra.terminal === true, ...(extra.terminal ? { consoleSize: { height: 25, width: 80 } } : {}), user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin', ...(extra.env ?? [])], cwd: '/', noNewPrivileges: true },
    root: { path: 'rootfs', readonly: true },
    hostname: id,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev'] },
      // The container's own pty instance: crun opens its /dev/ptmx for a terminal process.
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    ],
    linux: {
      namespaces: ['pid', 'ipc', 'uts', 'mount'].map((type) => ({ type })),
      resources: { memory: { limit: extra.memoryLimit ?? 64 * 1024 * 1024 }, pids: { limit: 64 } },
    },
  };
  writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(config));
  return `/mnt/kuasar/${id}`;
}

/** Size of the current initramfs image and whether it carries an agent (for the report line). */
export function imageInfo(): string {
  const m = manifest();
  let count = '';
  try {
    count = execFileSync('sh', ['-c', `lz4 -dc ${path.join(GUEST_DIR, 'initramfs.img')} | cpio -it 2>/dev/null | grep -c '^agent/'`], { encoding: 'utf8' }).trim();
  } catch {
    count = '0';
  }
  return `initramfs ${m.initramfs.size} bytes, agent files in image: ${count}`;
}
