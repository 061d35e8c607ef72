// The vmm kind: one QEMU microVM per pod. The VM is the pod: its kernel, its network (mirrored from the pod netns
// CNI made), its hostname; containers run in it with crun, driven by the guest agent over virtio-serial. The Task
// API stays on the host (VmmEngine), so containerd talks to this one resident process for every pod.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { task, type cri, type google } from '@kuasar/api';
import {
  FailedPreconditionError, InternalError, InvalidArgumentError, SandboxError, StatusCode, addPodMember, podMembers, removeAllPodMembers,
  removePodMember, removeLostMembers, stopPodMembers, taskServicePodTasks, type Logger, type Sandbox, type SandboxExit, type SandboxStartResult, type Sandboxer,
  netnsPathProblem, sandboxIdOfContainer,
} from '@kuasar/sandbox';
import {
  Code, TtrpcError, packCgroupMetrics, readMetrics, resolveCgroupDirs,
  type CgroupDirs, type OciSpec, type TaskHooks, type TaskService,
} from '@kuasar/task';
import { vmSize, type VmmConfig, type VmSize } from './config';
import { DebugSocket } from './debug-socket';
import { PodVm, VM_RECORD, killHolders, readVmRecord, type PodRegistry, type VmRecord } from './pod-vm';
import { GUEST_SHARE_ROOT } from './guest-spec';
import { CONSOLE_LOG, SHARED_DIR, SHARE_TAG, VmError, consoleTail, type Hypervisor } from './qemu';
import { applyWrites, asPodResources, hostCpuWrites, specResources } from './pod-update';
import { mountPointsUnder, unmountShares } from './shares';
import { SANDBOX_ID_ANNOTATION, type VmmEngine } from './vmm-engine';

/** CRI marks every container with its pod; containerd 2.x also writes the id to <bundle>/sandbox. */
export { CRI_SANDBOX_ID_ANNOTATION } from '@kuasar/sandbox';
/** how long QEMU gets to end after SIGTERM */
const QEMU_TERM_MS = 3_000;
/** cgroup v1 controllers QEMU joins (cpuset is left alone: a new cpuset has no CPUs until configured) */
const V1_CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'blkio'];

/** What a pod network provider gives the VM (network.ts: attachPodNetwork). */
export interface PodNetworkAttachment {
  /** QEMU's -netdev/-device args for the taps (QEMU runs in the pod netns) */
  qemuArgs: string[];
  /** the `network` param of guest.setup */
  guest: { interfaces: { name: string; mac: string; mtu: number; addresses: string[] }[]; routes: { dest: string; gateway?: string; device: string }[] };
  links: { tap: string }[];
}

/** Mirrors a CNI pod netns into the VM. Pods without a netns (host network, non-CRI clients) get loopback only. */
export interface PodNetwork {
  attach(netnsPath: string): Promise<PodNetworkAttachment>;
  /** idempotent; finds what attach made from the netns itself */
  detach(netnsPath: string): Promise<void>;
}

/** The kind's state in sandbox.json (`kindState`). */
interface VmmPodState {
  size: VmSize;
  cgroupParent: string;
  ownCgroupParent: boolean;
  hostname?: string;
  netnsPath?: string;
  taps?: string[];
  pid?: number;
  accel?: string;
  bootMs?: number;
}

export interface VmmSandboxerOptions {
  config: VmmConfig;
  hypervisor: Hypervisor;
  logger: Logger;
  network?: PodNetwork;
}

function podResources(config: cri.PodSandboxConfig | undefined): { cpuPeriod: bigint; cpuQuota: bigint; memoryLimitInBytes: bigint } | undefined {
  const r = config?.linux?.resources;
  if (!r) return undefined;
  return { cpuPeriod: r.cpuPeriod, cpuQuota: r.cpuQuota, memoryLimitInBytes: r.memoryLimitInBytes };
}

/** 'kubepods-besteffort-pod1.slice' → '/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice' */
export function cgroupfsPath(parent: string): string {
  if (parent.startsWith('/')) return path.posix.normalize(parent);
  if (!parent.endsWith('.slice')) throw new InvalidArgumentError(`cgroup_parent must be absolute or a systemd slice: ${parent}`);
  const parts = parent.slice(0, -'.slice'.length).split('-').filter(Boolean);
  const out: string[] = [];
  let prefix = '';
  for (const p of parts) {
    prefix = prefix === '' ? p : `${prefix}-${p}`;
    out.push(`${prefix}.slice`);
  }
  return `/${out.join('/')}`;
}

/** The parent's directories in every hierarchy here, as if a process sat in it. */
function cgroupDirsOf(parent: string): CgroupDirs {
  const cg = cgroupfsPath(parent);
  const self = fs.readFileSync('/proc/self/cgroup', 'utf8');
  const asIf = self.split('\n').filter((l) => l !== '').map((l) => l.replace(/^(\d+:[^:]*:).*$/, `$1${cg}`)).join('\n');
  return resolveCgroupDirs(asIf, fs.readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The directories QEMU joins: chosen v1 controllers and the unified hierarchy. */
/**
 * Removes an (empty) cgroup dir; undefined when done or already gone, else the errno code. A QEMU that was just
 * killed stays in cgroup.procs until it is reaped, so EBUSY is retried for a moment.
 */
async function removeCgroupDir(dir: string): Promise<string | undefined> {
  for (let attempt = 0; ; attempt++) {
    try {
      fs.rmdirSync(dir);
      return undefined;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      if (code === 'ENOENT') return undefined;
      if (code !== 'EBUSY' || attempt >= CGROUP_BUSY_RETRIES) return code;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
const CGROUP_BUSY_RETRIES = 60;

function joinDirs(dirs: CgroupDirs): string[] {
  const out = new Set<string>();
  for (const c of V1_CONTROLLERS) if (dirs.v1[c]) out.add(dirs.v1[c]!);
  if (dirs.unified) out.add(dirs.unified);
  return [...out];
}

function resolvConf(dns: cri.DNSConfig | undefined): string | undefined {
  if (!dns || (dns.servers.length === 0 && dns.searches.length === 0 && dns.options.length === 0)) return undefined;
  const lines = dns.servers.map((s) => `nameserver ${s}`);
  if (dns.searches.length > 0) lines.push(`search ${dns.searches.join(' ')}`);
  if (dns.options.length > 0) lines.push(`options ${dns.options.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

function stateOf(sandbox: Sandbox): VmmPodState {
  const s = sandbox.record.kindState as Partial<VmmPodState>;
  if (!s.size || !s.cgroupParent) throw new InternalError(`sandbox ${sandbox.id} has no vmm pod state`);
  return s as VmmPodState;
}

export class VmmSandboxer implements Sandboxer {
  readonly pods: PodRegistry = new Map();
  readonly hooks: TaskHooks;
  private readonly cfg: VmmConfig;
  private readonly hv: Hypervisor;
  private readonly logger: Logger;
  private readonly network: PodNetwork | undefined;
  private engine: VmmEngine | undefined;
  private tasks: TaskService | undefined;
  private debug: DebugSocket | undefined;

  constructor(o: VmmSandboxerOptions) {
    this.cfg = o.config;
    this.hv = o.hypervisor;
    this.logger = o.logger.child({ component: 'vmm-sandboxer' });
    this.network = o.network;
    this.hooks = {
      prepareContainer: (req, spec, ns) => this.prepareContainer(req, spec, ns),
      containerRemoved: (id, ns) => this.containerRemoved(id, ns),
    };
  }

  attachEngine(engine: VmmEngine): void {
    this.engine = engine;
  }

  /** Stop reaches the pod's containers through the task core, so their exits are reported the normal way. */
  attachTasks(service: TaskService): void {
    this.tasks = service;
  }

  /**
   * Before the task core recovers its containers: re-attach to every VM still running under `stateDir`, so that
   * the containers find their agent. Dead ones are left to the framework's recovery (recover() says 'dead').
   */
  preload(stateDir: string): void {
    let names: string[];
    try {
      names = fs.readdirSync(stateDir);
    } catch {
      return;
    }
    for (const id of names) {
      const dir = path.join(stateDir, id);
      const rec = readVmRecord(dir);
      if (!rec) continue;
      const vm = this.hv.adopt(rec.identity);
      if (!vm) {
        // the VM died while no sandboxer watched it; recover() will call it dead and Shutdown cleans the rest
        killHolders(rec);
        continue;
      }
      const pod = new PodVm(id, dir, vm, rec, this.logger.child({ sandbox: id }));
      this.pods.set(id, pod);
      this.engine?.attachPod(pod);
      this.logger.info({ sandbox: id, pid: rec.identity.pid }, 'VM still running; re-attached');
    }
  }

  // ---- Sandboxer ------------------------------------------------------------------------------------------------

  async create(sandbox: Sandbox): Promise<void> {
    const r = sandbox.record;
    const ns = r.config?.linux?.securityContext?.namespaceOptions;
    if (ns?.usernsOptions && ns.usernsOptions.mode === 2 /* POD */) throw new InvalidArgumentError('pod user namespaces are not supported by the vmm sandboxer');
    const parent = r.config?.linux?.cgroupParent ?? '';
    if (parent !== '') cgroupfsPath(parent); // validates
    if (parent.split('/').includes('..')) throw new InvalidArgumentError(`invalid cgroup_parent ${JSON.stringify(parent)}`);
    const state: VmmPodState = {
      size: vmSize(this.cfg, podResources(r.config)),
      cgroupParent: parent === '' ? `/kuasar/${sandbox.id}` : parent,
      ownCgroupParent: parent === '',
      ...(r.config?.hostname ? { hostname: r.config.hostname } : {}),
      ...(r.netnsPath ? { netnsPath: r.netnsPath } : {}),
    };
    if (state.hostname !== undefined && (Buffer.byteLength(state.hostname) > 64 || !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(state.hostname))) {
      throw new InvalidArgumentError(`invalid hostname ${JSON.stringify(state.hostname)}`);
    }
    const netnsProblem = state.netnsPath === undefined ? undefined : netnsPathProblem(state.netnsPath);
    if (netnsProblem) throw new InvalidArgumentError(netnsProblem);
    r.kindState = state as unknown as Record<string, unknown>;
  }

  async start(sandbox: Sandbox): Promise<SandboxStartResult> {
    const state = stateOf(sandbox);
    const log = sandbox.logger;
    const launchedAt = Date.now();
    const accel = await this.hv.accel();
    let net: PodNetworkAttachment | undefined;
    if (state.netnsPath && this.network) {
      net = await this.network.attach(state.netnsPath).catch((err: Error) => {
        throw new InternalError(`pod network for ${sandbox.id}: ${err.message}`, { cause: err });
      });
      state.taps = net.links.map((l) => l.tap);
    }
    const dirs = cgroupDirsOf(state.cgroupParent);
    const join = joinDirs(dirs);
    for (const d of join) fs.mkdirSync(d, { recursive: true });
    let vm;
    try {
      vm = await this.hv.launch(
        {
          id: sandbox.id,
          dir: sandbox.dir,
          size: state.size,
          accel,
          kernelParams: this.cfg.kernelParams,
          ...(net ? { extraArgs: net.qemuArgs } : {}),
        },
        { ...(state.netnsPath ? { netnsPath: state.netnsPath } : {}), cgroupDirs: join },
      );
    } catch (err) {
      if (state.netnsPath && net) await this.network?.detach(state.netnsPath).catch(() => undefined);
      if (err instanceof VmError) throw new InternalError(err.message, { cause: err });
      throw err;
    }
    const record: VmRecord = { version: 1, identity: vm.identity, accel, size: state.size, nextStream: 1, processes: {}, containers: {} };
    const pod = new PodVm(sandbox.id, sandbox.dir, vm, record, log);
    pod.save();
    this.pods.set(sandbox.id, pod);
    this.engine?.attachPod(pod);
    state.pid = vm.identity.pid;
    state.accel = accel;
    try {
      const hello = await Promise.race([
        pod.agent.ready(this.cfg.bootTimeoutMs),
        pod.exited.then((e) => {
          throw new VmError('exited', `QEMU exited (status ${e.exitStatus}) before the agent was ready`);
        }),
      ]);
      const bootMs = Date.now() - launchedAt;
      state.bootMs = bootMs;
      record.bootMs = bootMs;
      log.info({ pid: vm.identity.pid, accel, vcpus: state.size.vcpus, memoryMiB: state.size.memoryMiB, bootMs, kernel: hello.kernelRelease }, 'VM ready');
      if (net) log.debug({ network: net.guest }, 'guest network');
      // both at once: the agent runs `date` for the clock while it takes the setup request off the port
      await Promise.all([pod.agent.call('guest.setTime', { unixMs: Date.now() }), pod.agent.call('guest.setup', {
        hostname: state.hostname ?? sandbox.id.slice(0, 63),
        hosts: `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${state.hostname ? `127.0.1.1\t${state.hostname}\n` : ''}`,
        ...(resolvConf(sandbox.record.config?.dnsConfig) ? { resolvConf: resolvConf(sandbox.record.config?.dnsConfig) } : {}),
        // a 9p share /init already mounted (kuasar.9p=kuasar); virtiofs is the agent's to mount
        shares: this.cfg.shareFs === 'virtiofs' ? [{ tag: SHARE_TAG, mountPoint: GUEST_SHARE_ROOT, fs: 'virtiofs' }] : [],
        // QEMU already gave each NIC its veth's MAC (-device ...,mac=); changing it in the guest needs AF_PACKET
        ...(net ? { network: { interfaces: net.guest.interfaces.map(({ mac: _mac, ...i }) => i), routes: net.guest.routes } } : {}),
      })]);
      pod.save();
    } catch (err) {
      pod.stopping = true;
      vm.kill('SIGKILL');
      await Promise.race([pod.exited, new Promise((r) => setTimeout(r, 2000))]);
      const tail = consoleTail(sandbox.dir, 2048).trim();
      const why = err instanceof Error ? err.message : String(err);
      throw new SandboxError(
        err instanceof TtrpcError ? StatusCode.INTERNAL : StatusCode.DEADLINE_EXCEEDED,
        `VM of sandbox ${sandbox.id} did not become ready: ${why}; guest console (${path.join(sandbox.dir, CONSOLE_LOG)}) ends with:\n${tail || '(empty)'}`,
      );
    }
    return { pid: vm.identity.pid };
  }

  wait(sandbox: Sandbox): Promise<SandboxExit> {
    const pod = this.pods.get(sandbox.id);
    if (!pod) return Promise.resolve({ exitStatus: 255, exitedAt: new Date() });
    return pod.exited;
  }

  async stop(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const pod = this.pods.get(sandbox.id);
    if (!pod) return;
    pod.stopping = true;
    if (!pod.hasExited) await this.stopContainers(sandbox, timeoutSecs);
    // the guest holds nothing that must be flushed to the host: its disks are the host's files (9p)
    pod.vm.kill('SIGTERM');
    const ended = await Promise.race([pod.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), QEMU_TERM_MS))]);
    if (!ended) pod.vm.kill('SIGKILL');
  }

  async shutdown(sandbox: Sandbox): Promise<void> {
    const pod = this.pods.get(sandbox.id);
    const errors: string[] = [];
    if (pod && !pod.hasExited) {
      pod.stopping = true;
      pod.vm.kill('SIGKILL');
      await Promise.race([pod.exited, new Promise((r) => setTimeout(r, 5000))]);
    }
    // CRI deletes a pod's containers before Shutdown; members still listed were lost by containerd
    if (this.tasks) await removeLostMembers(podMembers(sandbox), taskServicePodTasks(this.tasks), sandbox.logger);
    removeAllPodMembers(sandbox);
    const shared = path.join(sandbox.dir, SHARED_DIR);
    try {
      for (const entry of fs.existsSync(shared) ? fs.readdirSync(shared) : []) unmountShares(path.join(shared, entry));
      if (mountPointsUnder(shared).length === 0) fs.rmSync(shared, { recursive: true, force: true });
    } catch (err) {
      errors.push(`shares: ${(err as Error).message}`);
    }
    const s = sandbox.record.kindState as Partial<VmmPodState>;
    if (this.network && s.netnsPath) {
      await this.network.detach(s.netnsPath).catch((err: Error) => errors.push(`network: ${err.message}`));
    }
    if (s.ownCgroupParent && s.cgroupParent) {
      for (const d of joinDirs(cgroupDirsOf(s.cgroupParent))) {
        const code = await removeCgroupDir(d);
        if (code) errors.push(`cgroup ${d}: ${code}`);
      }
    }
    const rec = readVmRecord(sandbox.dir);
    if (rec) killHolders(rec);
    fs.rmSync(path.join(sandbox.dir, VM_RECORD), { force: true });
    this.pods.delete(sandbox.id);
    if (errors.length > 0) throw new InternalError(`shutdown of ${sandbox.id}: ${errors.join('; ')}`);
  }

  async recover(sandbox: Sandbox): Promise<'alive' | 'dead'> {
    const r = sandbox.record;
    const pod = this.pods.get(sandbox.id);
    if (r.state === 'created') {
      // not started: a VM (or its record) here is the remains of an interrupted Start
      if (pod || fs.existsSync(path.join(sandbox.dir, VM_RECORD))) return 'dead';
      return 'alive';
    }
    if (!pod || pod.hasExited) {
      sandbox.logger.info('VM is gone');
      return 'dead';
    }
    return 'alive';
  }

  async metrics(sandbox: Sandbox): Promise<google.Any> {
    return packCgroupMetrics(readMetrics(cgroupDirsOf(stateOf(sandbox).cgroupParent)));
  }

  async status(sandbox: Sandbox): Promise<Record<string, unknown>> {
    const s = sandbox.record.kindState as Partial<VmmPodState>;
    const pod = this.pods.get(sandbox.id);
    return {
      vmPid: pod?.vm.identity.pid ?? s.pid,
      accel: s.accel,
      vcpus: s.size?.vcpus,
      memoryMiB: s.size?.memoryMiB,
      bootMs: s.bootMs,
      agent: pod?.agent.hello ? { version: pod.agent.hello.agent, kernel: pod.agent.hello.kernelRelease, connected: pod.agent.session.ready } : undefined,
      network: s.taps ? { taps: s.taps } : s.netnsPath ? 'none (no pod network provider)' : 'loopback only',
      containers: podMembers(sandbox).map((m) => `${m.namespace}/${m.id}`),
    };
  }

  /**
   * Update of the sandbox spec's linux.resources (see pod-update.ts). Before Start the VM is sized from it; on a
   * running VM the limits go to QEMU's host cgroup (CPU) and the guest's pod cgroup, and a pod that now needs more
   * vCPUs or memory than its VM has gets UNIMPLEMENTED (no hotplug) after the limits were applied.
   */
  async update(sandbox: Sandbox, fields: readonly string[]): Promise<void> {
    if (fields.length > 0 && !fields.includes('spec')) return;
    const found = specResources(sandbox.record.sandbox?.spec);
    if (!found) return;
    const state = stateOf(sandbox);
    const wanted = vmSize(this.cfg, asPodResources(found.limits));
    const pod = this.pods.get(sandbox.id);
    if (!pod) {
      if (sandbox.record.state !== 'created') throw new FailedPreconditionError(`sandbox ${sandbox.id} has no running VM to update`);
      state.size = wanted;
      sandbox.logger.info({ vcpus: wanted.vcpus, memoryMiB: wanted.memoryMiB }, 'VM size updated before start');
      return;
    }
    if (pod.hasExited || pod.stopping) throw new FailedPreconditionError(`sandbox ${sandbox.id} is not running`);
    try {
      applyWrites(hostCpuWrites(cgroupDirsOf(state.cgroupParent), found.limits));
    } catch (err) {
      throw new InternalError(`sandbox ${sandbox.id}: QEMU's cgroup: ${(err as Error).message}`, { cause: err });
    }
    let guest: Record<string, unknown>;
    try {
      guest = await pod.agent.call('guest.updatePod', { resources: found.resources });
    } catch (err) {
      const code = err instanceof TtrpcError ? (err.code as StatusCode) : StatusCode.INTERNAL;
      throw new SandboxError(code, `sandbox ${sandbox.id}: ${(err as Error).message}`, { cause: err });
    }
    sandbox.logger.info({ limits: found.limits, guest }, 'pod resources updated');
    if (wanted.vcpus > state.size.vcpus || wanted.memoryMiB > state.size.memoryMiB) {
      throw new SandboxError(StatusCode.UNIMPLEMENTED,
        `sandbox ${sandbox.id}: the new limits were applied, but its VM keeps ${state.size.vcpus} vCPU(s) and ${state.size.memoryMiB} MiB ` +
        `(it would now be sized ${wanted.vcpus} vCPU(s), ${wanted.memoryMiB} MiB): the vmm sandboxer does not hotplug CPUs or memory`);
    }
  }

  // ---- task hooks -----------------------------------------------------------------------------------------------


  private prepareContainer(req: task.CreateTaskRequest, spec: OciSpec, namespace: string): OciSpec {
    const sandboxId = sandboxIdOfContainer(req.bundle, spec);
    const pod = sandboxId !== undefined ? this.pods.get(sandboxId) : undefined;
    if (!pod) {
      throw new TtrpcError(Code.FAILED_PRECONDITION,
        `container ${req.id}: ${sandboxId === undefined ? 'names no sandbox' : `sandbox ${sandboxId} is not a VM pod of this sandboxer`}; vmm containers run only inside their pod's VM`);
    }
    if (pod.hasExited || pod.stopping) throw new TtrpcError(Code.FAILED_PRECONDITION, `sandbox ${pod.id} is not running`);
    addPodMember({ dir: pod.dir }, { namespace, id: req.id, bundle: req.bundle });
    return { ...spec, annotations: { ...(spec.annotations ?? {}), [SANDBOX_ID_ANNOTATION]: pod.id } };
  }

  private containerRemoved(id: string, namespace: string): void {
    for (const pod of this.pods.values()) removePodMember({ dir: pod.dir }, { namespace, id });
  }

  // ---- internals ------------------------------------------------------------------------------------------------

  /** SIGTERM every container, SIGKILL what is left after the timeout, then wait briefly for the exits. */
  private async stopContainers(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    if (this.tasks) await stopPodMembers(podMembers(sandbox), taskServicePodTasks(this.tasks), { timeoutSecs, logger: sandbox.logger });
  }

  /** `kuasarctl exec`'s socket; without it (another process holds the path) pods still run, only exec is missing. */
  async serveDebug(socketPath: string): Promise<void> {
    try {
      this.debug = await DebugSocket.listen(socketPath, this.pods, this.logger);
    } catch (err) {
      this.logger.error({ socket: socketPath, err: (err as Error).message }, 'debug socket unavailable; kuasarctl exec will not work');
    }
  }

  /** Stops watching VMs; they keep running (this is not a Shutdown). */
  close(): void {
    void this.debug?.close();
    this.engine?.close();
    for (const pod of this.pods.values()) pod.detach();
  }
}

