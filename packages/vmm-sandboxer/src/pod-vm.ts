// One pod's VM as this process holds it: the QEMU process, the agent channel, and vm.json, the file that lets a
// new sandboxer process find both again. vm.json is the kind's own record (not sandbox.json) because the task core
// recovers its containers before the framework recovers sandboxes, and those containers need their VM first.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger, SandboxExit } from '@kuasar/sandbox';
import { AgentConnection } from './agent';
import type { VmSize } from './config';
import { AGENT_SOCKET, SHARED_DIR, type Vm, type VmIdentity } from './qemu';

export const VM_RECORD = 'vm.json';

/** A process's stdio streams as recorded for re-attaching after a restart. */
export interface StreamRecord {
  /** a process that holds the output FIFOs' write ends across a sandboxer restart (see stdio.ts) */
  holder?: { pid: number; startTime: string };
  stdin?: number;
  stdout?: { id: number; path?: string };
  stderr?: { id: number; path?: string };
}

export interface VmRecord {
  version: 1;
  identity: VmIdentity;
  accel: 'kvm' | 'tcg';
  size: VmSize;
  /** the next stream id to hand out (odd; never reused within the VM's life) */
  nextStream: number;
  /** "<cid>" or "<cid>/<execId>" → its streams */
  processes: Record<string, StreamRecord>;
  /** container id → containerd namespace */
  containers: Record<string, string>;
  bootMs?: number;
}

export function readVmRecord(dir: string): VmRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, VM_RECORD), 'utf8')) as VmRecord;
    if (r.version !== 1 || typeof r.identity?.pid !== 'number' || typeof r.identity.startTime !== 'string') return undefined;
    r.processes ??= {};
    r.containers ??= {};
    return r;
  } catch {
    return undefined;
  }
}

/** Kills the FIFO holders a record lists (their processes are over: the VM is gone). */
export function killHolders(record: VmRecord): void {
  for (const p of Object.values(record.processes)) {
    const h = p.holder;
    if (!h) continue;
    try {
      const stat = fs.readFileSync(`/proc/${h.pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === h.startTime) process.kill(h.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

export class PodVm {
  readonly exited: Promise<SandboxExit>;
  readonly agent: AgentConnection;
  /** Stop has begun: new containers are refused */
  stopping = false;
  private settle!: (e: SandboxExit) => void;
  private done = false;
  private exitListeners: ((status: number) => void)[] = [];

  constructor(
    readonly id: string,
    readonly dir: string,
    readonly vm: Vm,
    readonly record: VmRecord,
    readonly logger: Logger,
  ) {
    this.exited = new Promise((r) => (this.settle = r));
    this.agent = new AgentConnection({ socketPath: path.join(dir, AGENT_SOCKET), logger });
    void vm.exited.then((status) => this.vmExited(status));
  }

  get hasExited(): boolean {
    return this.done;
  }

  get shareDir(): string {
    return path.join(this.dir, SHARED_DIR);
  }

  /** Called once when QEMU is gone (before `exited` resolves). */
  onVmExit(fn: (status: number) => void): void {
    this.exitListeners.push(fn);
  }

  allocStream(): number {
    const id = this.record.nextStream;
    this.record.nextStream += 2;
    return id;
  }

  save(): void {
    const file = path.join(this.dir, VM_RECORD);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.record));
    fs.renameSync(tmp, file);
  }

  private vmExited(status: number): void {
    if (this.done) return;
    this.done = true;
    this.agent.close();
    if (!this.stopping) this.logger.warn({ pid: this.vm.identity.pid, status }, 'QEMU exited; the pod is gone');
    for (const fn of this.exitListeners) {
      try {
        fn(status);
      } catch (err) {
        this.logger.error({ err: (err as Error).message }, 'VM exit listener failed');
      }
    }
    this.settle({ exitStatus: status, exitedAt: new Date() });
  }

  /** Stops watching and talking (the VM keeps running): the sandboxer is closing. */
  detach(): void {
    this.vm.detach();
    this.agent.close();
  }
}

/** Pods by sandbox id: what the sandboxer and the engine share. */
export type PodRegistry = Map<string, PodVm>;
