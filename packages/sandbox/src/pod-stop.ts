// What every sandboxer does the same way for a pod's life: settle its exit once (Wait), refuse new containers while
// Stop runs, and end the pod's containers through the task core (SIGTERM, grace period, SIGKILL).
import { task } from '@kuasar/api';
import { Code, TtrpcError, type TaskService } from '@kuasar/task';
import type { Logger } from 'pino';
import type { SandboxExit } from './exit';
import type { PodMember } from './pod-members';

const SIGTERM = 15;
const SIGKILL = 9;
/** After SIGKILL, how long Stop waits for containers to be gone before tearing the pod down anyway. */
export const KILL_WAIT_MS = 5_000;

/** A pod's exit as the Controller's Wait reports it: the first cause to settle it wins, later ones are ignored. */
export class PodExit {
  readonly exited: Promise<SandboxExit>;
  private settle!: (exit: SandboxExit) => void;
  private done = false;
  /** Set by Stop: a container created from now on could escape its kill, so it is refused. */
  stopping = false;

  constructor() {
    this.exited = new Promise((r) => (this.settle = r));
  }

  resolveExit(exitStatus: number): void {
    if (this.done) return;
    this.done = true;
    this.settle({ exitStatus, exitedAt: new Date() });
  }

  get hasExited(): boolean {
    return this.done;
  }

  /** Whether a new container may still join the pod. */
  get accepting(): boolean {
    return !this.done && !this.stopping;
  }
}

/** What Stop needs to end a pod's containers. */
export interface PodTasks {
  /** Signals every process of the container; a container already gone is not an error. */
  kill(m: PodMember, signal: number): Promise<void>;
  /** Resolves when the container's processes have exited (or the container is gone); rejects when `signal` aborts. */
  waitExit(m: PodMember, signal: AbortSignal): Promise<void>;
  /**
   * Forgets a container that outlived its pod (containerd never deleted it, e.g. it lost the task over a restart):
   * its runtime state and task record go with the pod. A container already gone is not an error.
   */
  remove?(m: PodMember): Promise<void>;
}

/** NOT_FOUND: the container or process is gone; FAILED_PRECONDITION: it already exited. Either way nothing to end. */
function isGone(err: unknown): boolean {
  return err instanceof TtrpcError && (err.code === Code.NOT_FOUND || err.code === Code.FAILED_PRECONDITION);
}

/** PodTasks through the Task API core, so the exits Stop causes are reported the normal way. */
export function taskServicePodTasks(service: TaskService): PodTasks {
  return {
    async kill(m, signal) {
      try {
        await service.kill(task.KillRequest.fromPartial({ id: m.id, signal, all: true }), { namespace: m.namespace });
      } catch (err) {
        if (!isGone(err)) throw err;
      }
    },
    async waitExit(m, signal) {
      try {
        await service.wait(task.WaitRequest.fromPartial({ id: m.id }), { namespace: m.namespace, signal });
      } catch (err) {
        if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
      }
    },
    async remove(m) {
      try {
        await service.delete(task.DeleteRequest.fromPartial({ id: m.id }), { namespace: m.namespace });
      } catch (err) {
        if (!(err instanceof TtrpcError && err.code === Code.NOT_FOUND)) throw err;
      }
    },
  };
}

export interface StopPodMembersOptions {
  /** Grace period after SIGTERM; 0 sends SIGKILL at once (CRI's StopPodSandbox timeout). */
  timeoutSecs: number;
  logger: Logger;
  /** How long to wait for the exits after SIGKILL; default KILL_WAIT_MS. */
  killWaitMs?: number;
  /** Runs right after SIGKILL, e.g. to kill what the runtime can no longer signal. */
  afterKill?: () => Promise<unknown>;
}

/**
 * SIGTERM every member, SIGKILL what is left after the grace period, then wait briefly for the exits.
 * Resolves true when every member is gone; false means the caller tears the pod down with something still running.
 */
export async function stopPodMembers(members: PodMember[], tasks: PodTasks, o: StopPodMembersOptions): Promise<boolean> {
  if (members.length === 0) return true;
  const waitAll = async (ms: number): Promise<boolean> => {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), ms);
    try {
      await Promise.all(members.map((m) => tasks.waitExit(m, ac.signal)));
      return true;
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
  const signalAll = (signal: number): Promise<unknown> =>
    Promise.all(members.map((m) => tasks.kill(m, signal).catch((err: Error) => o.logger.warn({ container: m.id, signal, err: err.message }, 'kill failed'))));
  if (o.timeoutSecs > 0) {
    await signalAll(SIGTERM);
    if (await waitAll(o.timeoutSecs * 1000)) return true;
  }
  await signalAll(SIGKILL);
  await o.afterKill?.();
  if (await waitAll(o.killWaitMs ?? KILL_WAIT_MS)) return true;
  o.logger.warn({ containers: members.map((m) => m.id) }, 'containers still running after SIGKILL; tearing the pod down anyway');
  return false;
}

/** Removes containers that outlived their pod (CRI deletes them before Shutdown; these containerd lost). */
export async function removeLostMembers(members: PodMember[], tasks: PodTasks, logger: Logger): Promise<void> {
  for (const m of members) {
    try {
      await tasks.remove?.(m);
    } catch (err) {
      logger.warn({ container: m.id, err: (err as Error).message }, 'cannot remove a container left in the pod');
    }
  }
}
