import { SandboxError, StatusCode } from './errors';

export interface SandboxExit {
  exitStatus: number;
  exitedAt: Date;
}

type Waiter = { resolve: (exit: SandboxExit) => void; reject: (err: unknown) => void };

/**
 * The one-time exit of a sandbox, awaited by any number of Wait calls. A waiter whose caller goes away (client
 * cancel) unregisters itself, so long-lived pods do not collect dead closures.
 */
export class ExitSignal {
  private exit: SandboxExit | undefined;
  private readonly waiters = new Set<Waiter>();

  get value(): SandboxExit | undefined {
    return this.exit;
  }

  get waiterCount(): number {
    return this.waiters.size;
  }

  /** First call wins; later calls are ignored (a kind may report an exit that Stop also observed). */
  resolve(exit: SandboxExit): boolean {
    if (this.exit) return false;
    this.exit = exit;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.resolve(exit);
    return true;
  }

  /** Fail every pending waiter without settling the exit (the sandbox went away without an observed exit). */
  abandon(err: unknown): void {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.reject(err);
  }

  wait(signal?: AbortSignal): Promise<SandboxExit> {
    if (this.exit) return Promise.resolve(this.exit);
    if (signal?.aborted) return Promise.reject(cancelled());
    return new Promise<SandboxExit>((resolve, reject) => {
      const onAbort = () => {
        this.waiters.delete(waiter);
        reject(cancelled());
      };
      const waiter: Waiter = {
        resolve: (exit) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(exit);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

function cancelled(): SandboxError {
  return new SandboxError(StatusCode.CANCELLED, 'wait cancelled by the caller');
}
