// The one place that knows QEMU: its command line, how it is launched (pod netns and cgroup, detached so that it
// outlives a sandboxer restart), how its exit is noticed, and the KVM probe. Everything else talks to a Vm.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from '@kuasar/sandbox';
import type { VmmConfig, VmSize } from './config';
import { isProcessAlive, readProcessStat, type ProcessIdentity } from '@kuasar/sys';

/** Files of one VM, all in its sandbox dir. */
export const AGENT_SOCKET = 'agent.sock';
export const CONSOLE_LOG = 'console.log';
export const PID_FILE = 'qemu.pid';
export const SHARED_DIR = 'shared';
export const VIRTIOFS_SOCKET = 'virtiofs.sock';
/** The 9p/virtiofs tag the guest's /init mounts at /mnt/kuasar (kuasar.9p=<tag>). */
export const SHARE_TAG = 'kuasar';

export class VmError extends Error {
  override readonly name = 'VmError';
  constructor(
    readonly code: 'launch_failed' | 'not_ready' | 'exited' | 'unsupported',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What one VM is made of; everything the command line needs. */
export interface VmSpec {
  id: string;
  /** the sandbox dir: agent.sock, console.log, qemu.pid and shared/ live here */
  dir: string;
  size: VmSize;
  accel: 'kvm' | 'tcg';
  /** base kernel command line; kuasar.* params are appended */
  kernelParams: string;
  /** extra kernel params for this VM (e.g. the network the guest gets) */
  extraParams?: string[];
  /** more QEMU args, e.g. the pod network's -netdev/-device pairs (network.ts) */
  extraArgs?: string[];
}

/** A running QEMU: the pid with its start time names it even after pid reuse. */
/** pid + start time: names one QEMU process even after pid reuse */
export type VmIdentity = ProcessIdentity;

export interface LaunchOptions {
  /** join this network namespace (the pod's, from CNI) */
  netnsPath?: string;
  /** cgroup directories (one per hierarchy) QEMU is moved into before it runs */
  cgroupDirs?: string[];
}

/** A launched VM as the sandboxer holds it. `exited` resolves with QEMU's exit status (255 = unknown). */
export interface Vm {
  readonly identity: VmIdentity;
  readonly exited: Promise<number>;
  kill(signal: NodeJS.Signals): void;
  /** stop watching (the VM keeps running) */
  detach(): void;
}

/** The hypervisor seam: QEMU today; tests and other VMMs plug in here. */
export interface Hypervisor {
  /** which accelerator VMs get (auto: probed once) */
  accel(): Promise<'kvm' | 'tcg'>;
  launch(spec: VmSpec, opts: LaunchOptions): Promise<Vm>;
  /** re-attach to a QEMU started by an earlier sandboxer process; undefined when it is gone */
  adopt(identity: VmIdentity): Vm | undefined;
}

/** A QEMU process of ours; `isAlive` tells whether it still runs (a zombie does not). */
export const isAlive = isProcessAlive;

/** QEMU's command line for a VM (without the binary). Pure: unit-tested. */
export function qemuArgs(cfg: Pick<VmmConfig, 'kernel' | 'initrd' | 'machine' | 'shareFs' | 'debugConsole'>, spec: VmSpec): string[] {
  const dir = spec.dir;
  const mem = `${spec.size.memoryMiB}`;
  // /init mounts 9p tags itself; a virtiofs share is mounted by the agent (guest.setup), as /init knows only 9p
  const params = [spec.kernelParams, cfg.shareFs === '9p' ? `kuasar.9p=${SHARE_TAG}` : ''];
  params.push(cfg.debugConsole ? 'kuasar.debug=1' : 'quiet');
  params.push(...(spec.extraParams ?? []));
  let machine = cfg.machine;
  const args = [
    '-name', `kuasar-${spec.id}`,
    '-accel', spec.accel,
    '-cpu', spec.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(spec.size.vcpus),
    '-m', mem,
    '-nodefaults', '-no-user-config', '-display', 'none',
    // the guest's `reboot -f` (reboot=t) ends QEMU instead of restarting the pod's VM
    '-no-reboot',
    '-serial', 'stdio',
    '-pidfile', path.join(dir, PID_FILE),
    '-kernel', cfg.kernel,
    '-initrd', cfg.initrd,
    '-chardev', `socket,id=agent,path=${path.join(dir, AGENT_SOCKET)},server=on,wait=off`,
    '-device', 'virtio-serial-device',
    '-device', 'virtserialport,chardev=agent,name=agent',
  ];
  if (cfg.shareFs === '9p') {
    args.push(
      '-fsdev', `local,id=share,path=${path.join(dir, SHARED_DIR)},security_model=none`,
      '-device', `virtio-9p-device,fsdev=share,mount_tag=${SHARE_TAG}`,
    );
  } else {
    // virtiofs needs guest RAM shared with virtiofsd, and modern virtio-mmio (virtiofsd panics on legacy)
    args.push(
      '-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
      '-chardev', `socket,id=vfs,path=${path.join(dir, VIRTIOFS_SOCKET)}`,
      '-device', `vhost-user-fs-device,chardev=vfs,tag=${SHARE_TAG}`,
      '-global', 'virtio-mmio.force-legacy=false',
    );
    machine = `${machine},memory-backend=mem`;
  }
  args.push(...(spec.extraArgs ?? []));
  args.unshift('-M', machine);
  args.push('-append', params.filter((p) => p !== '').join(' '));
  return args;
}

// Runs as the VM's process until it execs QEMU (same pid): joins the cgroups first, so QEMU never runs outside
// them, then the netns through nsenter (which execs without forking when only --net is given).
//   $1 nsenter ('' = no netns), $2 netns path, $3.. cgroup.procs files, '--', then QEMU's argv
const LAUNCH_SCRIPT = [
  'set -e',
  'ns="$1"; net="$2"; shift 2',
  'while [ "$1" != "--" ]; do echo $$ > "$1"; shift; done',
  'shift',
  'if [ -n "$ns" ]; then exec "$ns" --net="$net" -- "$@"; fi',
  'exec "$@"',
].join('\n');

/** The last `bytes` of the VM's console log, for errors. */
export function consoleTail(dir: string, bytes = 2048): string {
  const file = path.join(dir, CONSOLE_LOG);
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const len = Math.min(bytes, size);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    return buf.toString('utf8').replace(/\r/g, '');
  } catch {
    return '';
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

class QemuVm implements Vm {
  readonly exited: Promise<number>;
  private poll: NodeJS.Timeout | undefined;
  private settle!: (status: number) => void;
  private done = false;

  constructor(
    readonly identity: VmIdentity,
    child: ChildProcess | undefined,
    pollMs: number,
  ) {
    this.exited = new Promise((r) => (this.settle = r));
    if (child) {
      child.once('exit', (code, signal) => this.finish(code ?? (signal ? 128 + signalNumber(signal) : 255)));
    }
    // after a restart QEMU is not our child: its exit is only visible in /proc (a child is watched here too, in
    // case the exit event is lost when the sandboxer detaches)
    this.poll = setInterval(() => {
      if (!isAlive(this.identity)) this.finish(255);
    }, pollMs);
    this.poll.unref();
  }

  private finish(status: number): void {
    if (this.done) return;
    this.done = true;
    if (this.poll) clearInterval(this.poll);
    this.settle(status);
  }

  kill(signal: NodeJS.Signals): void {
    if (!isAlive(this.identity)) return;
    try {
      process.kill(this.identity.pid, signal);
    } catch {
      // exited meanwhile
    }
  }

  detach(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  return os.constants.signals[signal] ?? 0;
}

export interface QemuOptions {
  config: VmmConfig;
  logger: Logger;
  /** how often a VM's pid is checked (default 500 ms) */
  pollMs?: number;
}

export class Qemu implements Hypervisor {
  private readonly cfg: VmmConfig;
  private readonly logger: Logger;
  private readonly pollMs: number;
  private probed: Promise<'kvm' | 'tcg'> | undefined;

  constructor(o: QemuOptions) {
    this.cfg = o.config;
    this.logger = o.logger.child({ component: 'qemu' });
    this.pollMs = o.pollMs ?? 500;
  }

  accel(): Promise<'kvm' | 'tcg'> {
    if (this.cfg.accel !== 'auto') return Promise.resolve(this.cfg.accel);
    this.probed ??= probeKvm(this.cfg).then((r) => {
      if (r.ok) this.logger.info({ ms: r.ms }, 'accel auto: KVM boots the guest kernel; using kvm');
      else this.logger.warn({ reason: r.reason }, 'accel auto: falling back to TCG emulation (slow)');
      return r.ok ? 'kvm' : 'tcg';
    });
    return this.probed;
  }

  async launch(spec: VmSpec, opts: LaunchOptions): Promise<Vm> {
    fs.mkdirSync(path.join(spec.dir, SHARED_DIR), { recursive: true, mode: 0o700 });
    for (const f of [AGENT_SOCKET, PID_FILE, VIRTIOFS_SOCKET]) fs.rmSync(path.join(spec.dir, f), { force: true });
    let virtiofsd: ChildProcess | undefined;
    if (this.cfg.shareFs === 'virtiofs') virtiofsd = await this.startVirtiofsd(spec);
    const args = qemuArgs(this.cfg, spec);
    const procsFiles = (opts.cgroupDirs ?? []).map((d) => path.join(d, 'cgroup.procs'));
    const argv = [
      '-c', LAUNCH_SCRIPT, 'kuasar-vm',
      opts.netnsPath ? 'nsenter' : '', opts.netnsPath ?? '',
      ...procsFiles, '--', this.cfg.qemu, ...args,
    ];
    const log = fs.openSync(path.join(spec.dir, CONSOLE_LOG), fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, 0o600);
    let child: ChildProcess;
    try {
      // detached: its own session, so neither a terminal's ^C nor the sandboxer's exit reaches it
      child = spawn('/bin/sh', argv, { stdio: ['ignore', log, log], detached: true });
    } finally {
      fs.closeSync(log);
    }
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (e) => reject(new VmError('launch_failed', `cannot start QEMU for ${spec.id}: ${e.message}`, { cause: e })));
    });
    child.unref();
    const stat = readProcessStat(pid);
    const exitedEarly = new Promise<string>((resolve) => child.once('exit', (code, sig) => resolve(sig ?? `exit ${code}`)));
    // the launch script has joined the cgroups and the netns once the pid runs QEMU itself
    const qemuReal = fs.realpathSync(this.cfg.qemu);
    const deadline = Date.now() + 5000;
    for (;;) {
      let exe = '';
      try {
        exe = fs.readlinkSync(`/proc/${pid}/exe`);
      } catch {
        // gone (the race below reports why) or not readable yet
      }
      if (exe === qemuReal) break;
      const how = await Promise.race([exitedEarly, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5))]);
      if (how !== undefined || !stat || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new VmError('launch_failed', `QEMU for ${spec.id} did not start (${how ?? 'no exec within 5 s'}): ${consoleTail(spec.dir, 1024).trim()}`);
      }
    }
    const vm = new QemuVm({ pid, startTime: stat!.startTime }, child, this.pollMs);
    if (virtiofsd) void vm.exited.then(() => virtiofsd.kill('SIGTERM'));
    this.logger.debug({ id: spec.id, pid, argv: [this.cfg.qemu, ...args].join(' ') }, 'QEMU launched');
    return vm;
  }

  adopt(identity: VmIdentity): Vm | undefined {
    if (!isAlive(identity)) return undefined;
    return new QemuVm(identity, undefined, this.pollMs);
  }

  private async startVirtiofsd(spec: VmSpec): Promise<ChildProcess> {
    const socket = path.join(spec.dir, VIRTIOFS_SOCKET);
    // sandbox=chroot: virtiofsd stays in our mount namespace, so the binds made into the share after it started
    // (each container's rootfs) are visible to it; in its own namespace they would not propagate (/ is private
    // here). --rlimit-nofile=0: root without CAP_SYS_RESOURCE cannot raise the fd limit, which virtiofsd would try.
    const args = [`--socket-path=${socket}`, '-o', `source=${path.join(spec.dir, SHARED_DIR)}`, '-o', 'cache=none', '-o', 'sandbox=chroot', '--rlimit-nofile=0'];
    const child = spawn(this.cfg.virtiofsd, args, {
      stdio: ['ignore', 'ignore', 'pipe'], detached: true,
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-2048)));
    const deadline = Date.now() + 5000;
    for (;;) {
      if (fs.existsSync(socket)) break;
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new VmError('launch_failed', `virtiofsd (${this.cfg.virtiofsd}) did not create ${socket}: ${stderr.trim() || 'no output'}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    child.unref();
    return child;
  }
}

/**
 * Whether KVM boots the configured kernel: a throwaway VM must print anything on its serial console within the
 * timeout. On KVM-PVM hosts a stock kernel hangs in KVM_RUN without a byte of output, so silence means no.
 */
export async function probeKvm(cfg: Pick<VmmConfig, 'qemu' | 'kernel' | 'initrd' | 'machine' | 'accelProbeTimeoutMs'>): Promise<{ ok: true; ms: number } | { ok: false; reason: string }> {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
  } catch (err) {
    return { ok: false, reason: `/dev/kvm is not usable: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  const started = Date.now();
  const child = spawn(cfg.qemu, [
    '-M', cfg.machine, '-accel', 'kvm', '-cpu', 'host', '-m', '128', '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none',
    '-no-reboot', '-serial', 'stdio', '-kernel', cfg.kernel, '-initrd', cfg.initrd,
    '-append', 'console=ttyS0 earlyprintk=ttyS0 panic=-1 reboot=t',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr = (stderr + s).slice(-1024)));
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r: { ok: true; ms: number } | { ok: false; reason: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(r);
    };
    const timer = setTimeout(
      () => finish({ ok: false, reason: `a KVM guest printed nothing in ${cfg.accelProbeTimeoutMs} ms (KVM-PVM hosts hang stock kernels)` }),
      cfg.accelProbeTimeoutMs,
    );
    child.stdout?.once('data', () => finish({ ok: true, ms: Date.now() - started }));
    child.once('error', (e) => finish({ ok: false, reason: `cannot run ${cfg.qemu}: ${e.message}` }));
    child.once('exit', (code) => finish({ ok: false, reason: `QEMU with KVM exited (${code}): ${stderr.trim().split('\n').pop() ?? ''}` }));
  });
}
