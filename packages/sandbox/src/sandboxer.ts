import type { google } from '@kuasar/api';
import type { SandboxExit } from './exit';
import type { Sandbox } from './sandbox';

export interface SandboxStartResult {
  /** The sandbox's main process (pause/holder/VMM); 0 when the kind has no host process. */
  pid: number;
  /** Returned to containerd by Start; CRI reads `selinux_label`. */
  labels?: Record<string, string>;
}

/**
 * How one kind isolates a pod. The framework owns ids, locking, records on disk, recovery, Wait fan-out and the gRPC
 * mapping; a kind only sets up and tears down isolation. Every method may throw a SandboxError (errors.ts) to choose
 * the status code containerd sees; anything else becomes UNKNOWN.
 */
export interface Sandboxer {
  /**
   * Prepares isolation for a new sandbox (namespaces, cgroup, VM image...). `sandbox.record` is already persisted and
   * `sandbox.dir` exists. On failure the framework calls `shutdown` and removes the dir.
   */
  create(sandbox: Sandbox): Promise<void>;

  /** Starts the sandbox's process. */
  start(sandbox: Sandbox): Promise<SandboxStartResult>;

  /**
   * Resolves when the sandbox's process has exited. The framework calls it once per process lifetime: after a
   * successful `start`, and after `recover` said 'alive' (in a new sandboxer process, where the pid is no child of
   * ours). A rejection is logged and read as an exit with status 255 (containerd's unknown exit code).
   */
  wait(sandbox: Sandbox): Promise<SandboxExit>;

  /**
   * Stops the process: a graceful signal first, then a forced kill after `timeoutSecs` (0 = no grace). Resolving
   * does not mean exited; the framework then awaits the exit reported by `wait`.
   */
  stop(sandbox: Sandbox, timeoutSecs: number): Promise<void>;

  /**
   * Releases everything `create`/`start` set up (unmount, remove cgroups, ...). The process is gone when this is
   * called. Must be idempotent: it also runs for half-created sandboxes and for dead ones found at start-up.
   */
  shutdown(sandbox: Sandbox): Promise<void>;

  /**
   * At start-up, for each persisted sandbox not yet stopped: is it still running? 'alive' re-adopts it (then `wait`
   * is called), 'dead' cleans it up through `shutdown`. Must not kill anything.
   */
  recover(sandbox: Sandbox): Promise<'alive' | 'dead'>;

  /** Resource stats as an Any of `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`. */
  metrics?(sandbox: Sandbox): Promise<google.Any>;

  /** Extra string pairs for a verbose Status (merged into the JSON under `info`). */
  status?(sandbox: Sandbox): Promise<Record<string, unknown>>;

  /** Told after the framework applied and persisted an Update; `fields` as sent (empty = whole record). */
  update?(sandbox: Sandbox, fields: readonly string[]): Promise<void>;

  /**
   * The sandboxer process is stopping gracefully (this is not a Shutdown: sandboxes keep running). Release what the
   * kind holds in this process (timers such as pod-exit polls, reapers, listeners, sockets, connections) so nothing
   * of it keeps the process alive. Called once, after the servers and the task service closed; a failure is logged.
   */
  close?(): void | Promise<void>;
}
