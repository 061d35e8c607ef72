// The Engine behind the task core for VM pods: every call is forwarded to the guest agent of the container's pod.
// The host keeps the Task API (containerd calls us with host bundles); the guest runs crun on a bundle that this
// engine assembles in the pod's share. Exits arrive as agent events and are reported through onExit.
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  Code, ExitListeners, TtrpcError, packTaskUsage,
  type ContainerCreate, type ContainerRef, type Engine, type EngineAny, type EngineExit, type EngineStatus,
  type OciLinuxResources, type OciProcess, type OciSpec, type ProcessStdio,
} from '@kuasar/task';
import type { EventMessage } from '@kuasar/vmm-protocol';
import type { Logger } from '@kuasar/sandbox';
import { GuestSpecError, guestProcess, guestSpec } from './guest-spec';
import type { PodRegistry, PodVm } from './pod-vm';
import { ShareError, mountShares, unmountShares } from './shares';
import { ProcessPipes } from './stdio';

/** Written into every pod container's spec by the sandboxer's prepareContainer hook. */
export const SANDBOX_ID_ANNOTATION = 'io.kuasar.sandbox-id';
/** How long an exit waits for the process's output to reach the host before it is reported anyway. */
const OUTPUT_DRAIN_MS = 3_000;
/** How long a call waits for a (re)connecting agent. */
const AGENT_WAIT_MS = 30_000;

/** The agent's container.stats reply (from the guest's cgroup v2 files); a field missing or not a number counts as 0. */
interface GuestStats {
  pids: number; pidsLimit: number; memoryUsage: number; memoryLimit: number; memoryAnon: number;
  cpuUsageUsec: number; cpuUserUsec: number; cpuSystemUsec: number;
}

interface ExitEventFields {
  containerId?: unknown;
  execId?: unknown;
  status?: unknown;
  exitedAtMs?: unknown;
}

function processKey(id: string, execId?: string): string {
  return execId ? `${id}/${execId}` : id;
}

export interface VmmEngineOptions {
  pods: PodRegistry;
  logger: Logger;
}

export class VmmEngine implements Engine {
  readonly name = 'vmm';
  private readonly pods: PodRegistry;
  private readonly logger: Logger;
  private readonly exits: ExitListeners;
  /** pumps per pod and process key */
  private readonly pipes = new Map<PodVm, Map<string, ProcessPipes>>();
  /** container → pod, learnt on create or from the bundle after a restart */
  private readonly podOf = new Map<string, string>();
  private readonly oom = new Map<string, bigint>();
  /** per pod: events are handled one at a time, in order, so an ACK covers exactly what was handled */
  private readonly eventChains = new Map<PodVm, Promise<void>>();
  /** exits received before the task core was ready (restart): held, not acked, until activate() */
  private held: { pod: PodVm; event: EventMessage }[] | undefined = [];

  constructor(o: VmmEngineOptions) {
    this.pods = o.pods;
    this.logger = o.logger.child({ component: 'vmm-engine' });
    this.exits = new ExitListeners(this.logger);
  }

  onExit(listener: (e: EngineExit) => void): void {
    this.exits.add(listener);
  }

  /** A pod's agent is up: take its events and re-attach the output of processes recorded in vm.json. */
  attachPod(pod: PodVm): void {
    const table = new Map<string, ProcessPipes>();
    this.pipes.set(pod, table);
    for (const [key, rec] of Object.entries(pod.record.processes)) table.set(key, ProcessPipes.reattach(pod.agent.session, rec, pod.logger));
    for (const cid of Object.keys(pod.record.containers)) this.podOf.set(cid, pod.id);
    pod.agent.onEvent((event) => this.queueEvent(pod, event));
    pod.onVmExit(() => this.vmGone(pod));
  }

  /** The task core has recovered: deliver what the guest replayed meanwhile. */
  activate(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const { pod, event } of held) this.queueEvent(pod, event);
  }

  /** The sandboxer is closing: drop every pump without telling the guest (it keeps the processes and their output). */
  close(): void {
    for (const table of this.pipes.values()) for (const p of table.values()) p.detach();
    this.pipes.clear();
  }

  // ---- Engine -------------------------------------------------------------------------------------------------

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    const sandboxId = init.spec.annotations?.[SANDBOX_ID_ANNOTATION];
    if (!sandboxId) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} is not in a VM pod (a vmm container needs a sandbox)`);
    const pod = this.livePod(sandboxId);
    let g: ReturnType<typeof guestSpec>;
    try {
      g = guestSpec(init.spec, c.id, c.bundle);
    } catch (err) {
      if (err instanceof GuestSpecError) throw new TtrpcError(Code.INVALID_ARGUMENT, err.message);
      throw err;
    }
    if (init.options?.noPivotRoot) g.spec.annotations = { ...(g.spec.annotations ?? {}), 'run.oci.no_pivot_root': 'true' };
    const containerDir = path.join(pod.shareDir, c.id);
    if (fs.existsSync(containerDir)) throw new TtrpcError(Code.ALREADY_EXISTS, `container ${c.id} already has a share in pod ${pod.id}`);
    let pipes: ProcessPipes | undefined;
    try {
      mountShares(containerDir, g.binds);
      fs.writeFileSync(path.join(containerDir, 'config.json'), JSON.stringify(g.spec));
      pipes = ProcessPipes.open(pod.agent.session, init.stdio, () => pod.allocStream(), pod.logger);
      this.track(pod, c, undefined, pipes);
      const r = await pod.agent.call<{ pid: number }>('container.create', { id: c.id, bundle: g.guestBundle, stdio: pipes.guest });
      return { pid: r.pid };
    } catch (err) {
      this.untrack(pod, c.id, undefined);
      pipes?.close();
      try {
        unmountShares(containerDir);
      } catch (e) {
        pod.logger.warn({ id: c.id, err: (e as Error).message }, 'cannot remove the share of a failed create');
      }
      this.forget(pod, c.id);
      if (err instanceof ShareError) throw new TtrpcError(Code.FAILED_PRECONDITION, err.message);
      throw err;
    }
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const pod = await this.podFor(c);
    const r = await pod.agent.call<{ pid: number }>('container.start', { id: c.id });
    return { pid: r.pid };
  }

  async exec(c: ContainerRef, execId: string, process: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const pod = await this.podFor(c);
    const pipes = ProcessPipes.open(pod.agent.session, stdio, () => pod.allocStream(), pod.logger);
    this.track(pod, c, execId, pipes);
    try {
      const r = await pod.agent.call<{ pid: number }>('process.exec', {
        containerId: c.id, execId, process: guestProcess(process as Record<string, unknown>), stdio: pipes.guest,
      });
      return { pid: r.pid };
    } catch (err) {
      this.untrack(pod, c.id, execId);
      pipes.close();
      throw err;
    }
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const pod = await this.podFor(c);
    await pod.agent.call('process.kill', { containerId: c.id, ...(execId ? { execId } : {}), signal, all });
  }

  async delete(c: ContainerRef, opts: { force: boolean }): Promise<void> {
    const sandboxId = this.sandboxOf(c);
    const pod = sandboxId !== undefined ? this.pods.get(sandboxId) : undefined;
    if (pod && !pod.hasExited) {
      try {
        await pod.agent.call('container.delete', { id: c.id, force: opts.force }, AGENT_WAIT_MS);
      } catch (err) {
        if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
      }
    }
    if (pod) {
      for (const key of [...(this.pipes.get(pod)?.keys() ?? [])]) {
        if (key === c.id || key.startsWith(`${c.id}/`)) {
          this.pipes.get(pod)?.get(key)?.close();
          this.pipes.get(pod)?.delete(key);
          delete pod.record.processes[key];
        }
      }
      unmountShares(path.join(pod.shareDir, c.id));
      this.forget(pod, c.id);
    }
    this.podOf.delete(c.id);
    this.oom.delete(c.id);
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    const pod = await this.podFor(c);
    try {
      const r = await pod.agent.call<{ status: string; pid: number }>('container.state', { id: c.id });
      let status: EngineStatus = ['created', 'running', 'paused', 'stopped'].includes(r.status) ? (r.status as EngineStatus) : 'unknown';
      // an exit the guest replayed while the task core was still recovering: report it running so that the core
      // waits for the exit with its real status instead of assuming 255
      if (status === 'stopped' && this.held?.some((h) => h.pod === pod && (h.event as ExitEventFields).containerId === c.id && !(h.event as ExitEventFields).execId)) {
        status = 'running';
      }
      return { status, pid: r.pid };
    } catch (err) {
      if (err instanceof TtrpcError && err.code === Code.NOT_FOUND) return { status: 'stopped', pid: 0 };
      throw err;
    }
  }

  /** The process's terminal is a pty in the guest (the host pty is raw and only carries bytes): size it there. */
  async resize(c: ContainerRef, execId: string | undefined, width: number, height: number): Promise<void> {
    const pod = await this.podFor(c);
    await pod.agent.call('process.resize', { containerId: c.id, ...(execId ? { execId } : {}), width, height });
  }

  async pids(c: ContainerRef): Promise<number[]> {
    const pod = await this.podFor(c);
    return (await pod.agent.call<{ pids: number[] }>('container.pids', { id: c.id })).pids;
  }

  async pause(c: ContainerRef): Promise<void> {
    await (await this.podFor(c)).agent.call('container.pause', { id: c.id });
  }

  async resume(c: ContainerRef): Promise<void> {
    await (await this.podFor(c)).agent.call('container.resume', { id: c.id });
  }

  async update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    await (await this.podFor(c)).agent.call('container.update', { id: c.id, resources });
  }

  async stats(c: ContainerRef): Promise<EngineAny> {
    const s = await (await this.podFor(c)).agent.call<GuestStats>('container.stats', { id: c.id });
    // v2 whatever the host runs: the figures are the guest's, and its kernel mounts a unified hierarchy
    return packTaskUsage('v2', {
      pids: s.pids, pidsLimit: s.pidsLimit, memoryUsage: s.memoryUsage, memoryLimit: s.memoryLimit, memoryRss: s.memoryAnon,
      cpu: { usageUsec: s.cpuUsageUsec, userUsec: s.cpuUserUsec, systemUsec: s.cpuSystemUsec },
    });
  }

  async oomKills(c: ContainerRef): Promise<bigint | undefined> {
    return this.oom.get(c.id) ?? 0n;
  }

  // ---- internals ------------------------------------------------------------------------------------------------

  /** The pod of a container: from create, else (after a restart) from the annotation in its host bundle. */
  private sandboxOf(c: ContainerRef): string | undefined {
    let id = this.podOf.get(c.id);
    if (id === undefined) {
      try {
        const spec = JSON.parse(fs.readFileSync(path.join(c.bundle, 'config.json'), 'utf8')) as OciSpec;
        id = spec.annotations?.[SANDBOX_ID_ANNOTATION];
      } catch {
        id = undefined;
      }
      if (id !== undefined) this.podOf.set(c.id, id);
    }
    return id;
  }

  private livePod(sandboxId: string): PodVm {
    const pod = this.pods.get(sandboxId);
    if (!pod || pod.hasExited) throw new TtrpcError(Code.NOT_FOUND, `VM of sandbox ${sandboxId} is not running`);
    return pod;
  }

  private async podFor(c: ContainerRef): Promise<PodVm> {
    const sandboxId = this.sandboxOf(c);
    if (sandboxId === undefined) throw new TtrpcError(Code.NOT_FOUND, `container ${c.id} belongs to no VM pod`);
    const pod = this.livePod(sandboxId);
    if (!pod.agent.session.ready) {
      try {
        await pod.agent.ready(AGENT_WAIT_MS);
      } catch {
        throw new TtrpcError(Code.UNAVAILABLE, `agent of sandbox ${sandboxId} is not connected`);
      }
    }
    return pod;
  }

  private track(pod: PodVm, c: ContainerRef, execId: string | undefined, pipes: ProcessPipes): void {
    const key = processKey(c.id, execId);
    let table = this.pipes.get(pod);
    if (!table) {
      table = new Map();
      this.pipes.set(pod, table);
    }
    table.get(key)?.close();
    table.set(key, pipes);
    pod.record.processes[key] = pipes.record;
    pod.record.containers[c.id] = c.namespace;
    this.podOf.set(c.id, pod.id);
    pod.save();
  }

  private untrack(pod: PodVm, id: string, execId: string | undefined): void {
    const key = processKey(id, execId);
    this.pipes.get(pod)?.delete(key);
    delete pod.record.processes[key];
    pod.save();
  }

  private forget(pod: PodVm, id: string): void {
    delete pod.record.containers[id];
    if (!pod.hasExited) pod.save();
  }

  private queueEvent(pod: PodVm, event: EventMessage): void {
    if (this.held) {
      this.held.push({ pod, event });
      return;
    }
    const prev = this.eventChains.get(pod) ?? Promise.resolve();
    const next = prev.then(() => this.handleEvent(pod, event)).catch((err: Error) => pod.logger.error({ err: err.message, seq: event.seq }, 'agent event failed'));
    this.eventChains.set(pod, next);
  }

  private async handleEvent(pod: PodVm, event: EventMessage): Promise<void> {
    const e = event as EventMessage & ExitEventFields;
    if (event.type === 'oom' && typeof e.containerId === 'string') {
      this.oom.set(e.containerId, (this.oom.get(e.containerId) ?? 0n) + 1n);
    } else if (event.type === 'exit' && typeof e.containerId === 'string') {
      const execId = typeof e.execId === 'string' && e.execId !== '' ? e.execId : undefined;
      if (execId?.startsWith('debug-')) {
        pod.agent.session.ack(event.seq);
        return;
      }
      const key = processKey(e.containerId, execId);
      const pipes = this.pipes.get(pod)?.get(key);
      // containerd's FIFO readers must see EOF before they hear of the exit
      if (pipes) {
        await pipes.outputDone(OUTPUT_DRAIN_MS);
        pipes.close();
        this.pipes.get(pod)?.delete(key);
        delete pod.record.processes[key];
        pod.save();
      }
      const status = typeof e.status === 'number' ? e.status : 255;
      const exitedAt = typeof e.exitedAtMs === 'number' ? new Date(e.exitedAtMs) : new Date();
      const namespace = pod.record.containers[e.containerId];
      this.exits.emit({ id: e.containerId, ...(namespace ? { namespace } : {}), ...(execId ? { execId } : {}), status, exitedAt });
    }
    pod.agent.session.ack(event.seq);
  }

  /** QEMU is gone: every process of the pod is over (status 255: nobody saw it exit), and its pumps stop. */
  private vmGone(pod: PodVm): void {
    const table = this.pipes.get(pod);
    this.pipes.delete(pod);
    const now = new Date();
    for (const [key, pipes] of table ?? []) {
      pipes.close();
      const [id, execId] = key.split('/') as [string, string | undefined];
      const namespace = pod.record.containers[id];
      this.exits.emit({ id, ...(namespace ? { namespace } : {}), ...(execId ? { execId } : {}), status: 255, exitedAt: now });
    }
    // containers whose init had already exited (no pumps left) need no report; the rest were covered above
    this.eventChains.delete(pod);
  }

}
