// The seam between the task core and whatever actually runs containers (an OCI runtime CLI, a wasm runtime, a VM
// agent). An engine only runs and signals processes; the core owns the Task API semantics, the process table, IO,
// exit reaping, events, persistence and recovery.
import type { google } from '@kuasar/api';
import type { Logger } from 'pino';
import type { OciLinuxResources, OciProcess, OciSpec } from './oci';

/**
 * Which container an engine call is about. Engines get the namespace and bundle on every call so they can stay
 * stateless (e.g. `runc --root <root>/<namespace>`, `<bundle>/log.json`): after a sandboxer restart the core
 * re-adopts containers and the engine needs nothing restored.
 */
export interface ContainerRef {
  id: string;
  namespace: string;
  bundle: string;
}

/**
 * The process's stdio. Non-terminal: file descriptors the core opened (FIFO/file/pipe ends) that the process
 * gets as fds 0/1/2; absent means /dev/null. The core keeps ownership and closes its copies once the process
 * was started (after `start` for the init, after `exec` for an exec), so an engine may use them in `create` or
 * in `start`. Terminal: the engine must make the runtime send the pty master to `consoleSocket` (SCM_RIGHTS).
 */
export type ProcessStdio =
  | { terminal: false; stdin?: number; stdout?: number; stderr?: number }
  | { terminal: true; consoleSocket: string };

/** Runtime options from CreateTaskRequest.options (containerd.runc.v1.Options) that an engine may honour. */
export interface RuntimeOptions {
  noPivotRoot?: boolean;
  noNewKeyring?: boolean;
}

export interface ContainerCreate {
  /** the spec as it will run (after the sandboxer's prepareContainer hook); already written to config.json */
  spec: OciSpec;
  stdio: ProcessStdio;
  options?: RuntimeOptions;
}

/** created/running/paused/stopped as `runc state` reports them; anything else is 'unknown' */
export type EngineStatus = 'created' | 'running' | 'paused' | 'pausing' | 'stopped' | 'unknown';

/** An exit the engine observed itself (engines whose processes are not host children of the sandboxer). */
export interface EngineExit {
  id: string;
  /** the container's namespace; without it the exit applies to that id in every namespace */
  namespace?: string;
  /** undefined for the container's init process */
  execId?: string;
  /** exit code, or 128+signal */
  status: number;
  exitedAt?: Date;
}

/**
 * The exit listeners of an engine that reports its own exits (Engine.onExit): a listener that throws is logged and
 * never keeps the exit from the others.
 */
export class ExitListeners {
  private readonly listeners: ((e: EngineExit) => void)[] = [];

  constructor(private readonly logger: Logger) {}

  add(listener: (e: EngineExit) => void): void {
    this.listeners.push(listener);
  }

  emit(e: EngineExit): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.logger.error({ id: e.id, err: (err as Error).message }, 'exit listener failed');
      }
    }
  }
}

/** google.protobuf.Any as the wire layer carries it */
export type EngineAny = google.Any;

export interface Engine {
  /** for logs and errors, e.g. "runc" */
  readonly name: string;
  /**
   * create the container with its init process stopped before the user program runs; returns its pid (0 if none)
   * and, optionally, host pids of runtime helpers (e.g. gVisor's gofer) that re-parent to the sandboxer: the core
   * reaps those without reporting them, so they do not linger as zombies.
   */
  create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number; helpers?: number[] }>;
  /** run the init's user program */
  start(c: ContainerRef): Promise<{ pid: number }>;
  /** start an additional process in the running container */
  exec(c: ContainerRef, execId: string, process: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }>;
  /** signal the init (execId undefined; `all` = every process of the container) or one exec */
  kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void>;
  /** remove the container's runtime state; a container that is already gone is not an error */
  delete(c: ContainerRef, opts: { force: boolean }): Promise<void>;
  state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }>;
  pids(c: ContainerRef): Promise<number[]>;
  /** optional capabilities throw TtrpcError(Code.UNIMPLEMENTED, ...) */
  pause(c: ContainerRef): Promise<void>;
  resume(c: ContainerRef): Promise<void>;
  update(c: ContainerRef, resources: OciLinuxResources): Promise<void>;
  /** cgroups v1/v2 Metrics (or another metrics message) packed as Any */
  stats(c: ContainerRef): Promise<EngineAny>;
  /**
   * Present only on engines whose processes are NOT host children of the sandboxer (wasm, VM agent): they report
   * exits through this listener. Without it the core reaps the returned host pids itself (subreaper + Reaper).
   */
  onExit?(listener: (exit: EngineExit) => void): void;
  /**
   * Present only on engines whose terminals live elsewhere (a VM's guest): the host pty the core holds is not the
   * process's terminal, so the engine forwards the new size. Without it the core sets the size on its console fd.
   */
  resize?(c: ContainerRef, execId: string | undefined, width: number, height: number): Promise<void>;
  /** optional: OOM kill counter of the container, polled by the core to publish TaskOOM */
  oomKills?(c: ContainerRef): Promise<bigint | undefined>;
  /**
   * Optional: the sandboxer is stopping gracefully. Release what the engine holds in this process (timers, reapers,
   * signal listeners, connections) so nothing of it outlives the sandboxer's close(); containers keep running.
   */
  close?(): void | Promise<void>;
}
