// A minimal Engine that runs the spec's process as a plain host child of Node (no isolation), reporting exits
// itself through onExit like a wasm or VM engine would. It shows how small an engine is: everything else (IO,
// Wait, events, the process table) is the core's.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import { Code, TtrpcError } from '../../src/errors';
import type { ContainerCreate, ContainerRef, Engine, EngineExit, EngineStatus, ProcessStdio } from '../../src/engine';
import type { OciProcess } from '../../src/oci';

interface Entry {
  init: ContainerCreate;
  child?: ChildProcess;
  status: EngineStatus;
  execs: Map<string, ChildProcess>;
}

export class HostProcessEngine implements Engine {
  readonly name = 'host';
  private listener: ((e: EngineExit) => void) | undefined;
  private readonly containers = new Map<string, Entry>();

  onExit(listener: (e: EngineExit) => void): void {
    this.listener = listener;
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number }> {
    if (init.stdio.terminal) throw new TtrpcError(Code.UNIMPLEMENTED, 'host engine has no terminals');
    this.containers.set(`${c.namespace}/${c.id}`, { init, status: 'created', execs: new Map() });
    return { pid: 0 };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    const e = this.entry(c);
    e.child = this.run(e.init.spec.process ?? {}, e.init.stdio, (status) => {
      e.status = 'stopped';
      this.listener?.({ id: c.id, namespace: c.namespace, status });
    });
    e.status = 'running';
    return { pid: e.child.pid ?? 0 };
  }

  async exec(c: ContainerRef, execId: string, process: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const e = this.entry(c);
    const child = this.run(process, stdio, (status) => this.listener?.({ id: c.id, namespace: c.namespace, execId, status }));
    e.execs.set(execId, child);
    return { pid: child.pid ?? 0 };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    const e = this.entry(c);
    const targets = execId !== undefined ? [e.execs.get(execId)] : all ? [e.child, ...e.execs.values()] : [e.child];
    for (const t of targets) t?.kill(signal);
  }

  async delete(c: ContainerRef): Promise<void> {
    this.containers.delete(`${c.namespace}/${c.id}`);
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    const e = this.entry(c);
    return { status: e.status, pid: e.child?.pid ?? 0 };
  }

  async pids(c: ContainerRef): Promise<number[]> {
    const e = this.entry(c);
    return [e.child, ...e.execs.values()].map((p) => p?.pid ?? 0).filter((p) => p > 0);
  }

  async pause(): Promise<void> {
    throw new TtrpcError(Code.UNIMPLEMENTED, 'host engine cannot pause');
  }
  resume = this.pause;
  update = this.pause;
  stats = this.pause as unknown as Engine['stats'];

  private entry(c: ContainerRef): Entry {
    const e = this.containers.get(`${c.namespace}/${c.id}`);
    if (!e) throw new TtrpcError(Code.NOT_FOUND, `container ${c.id} does not exist`);
    return e;
  }

  private run(p: OciProcess, stdio: ProcessStdio, exited: (status: number) => void): ChildProcess {
    if (stdio.terminal) throw new TtrpcError(Code.UNIMPLEMENTED, 'host engine has no terminals');
    const [cmd, ...args] = p.args ?? [];
    if (!cmd) throw new TtrpcError(Code.INVALID_ARGUMENT, 'no args');
    const child = spawn(cmd, args, { stdio: [stdio.stdin ?? 'ignore', stdio.stdout ?? 'ignore', stdio.stderr ?? 'ignore'] });
    child.on('exit', (code, signal) => exited(code ?? 128 + (signal ? constants.signals[signal] : 0)));
    return child;
  }
}
