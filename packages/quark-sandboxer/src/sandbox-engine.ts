import type { Engine } from '@kuasar/task';

/**
 * An Engine that also runs the pod's application kernel: QuarkSandboxer boots it at Controller.Start and the
 * pod's containers then join it. gVisor (RunscEngine) and Quark (QuarkEngine) implement it.
 */
export interface SandboxEngine extends Engine {
  /** Boots the pod's sandbox from `bundle` (config.json written by the caller); returns its host pid. */
  startSandbox(pod: string, bundle: string): Promise<{ pid: number }>;
  /** Resolves with the sandbox process's exit status (255 when it was not ours to reap). */
  sandboxExited(pid: number): Promise<number>;
  /** Signals the sandbox's own init. */
  killSandbox(pod: string, bundle: string, signal: number): Promise<void>;
  /** Kills the sandbox with everything in it and removes its engine state. Idempotent. */
  destroySandbox(pod: string, bundle: string): Promise<void>;
  /** The engine's state dir of a pod: present once startSandbox began. */
  podStateDir(pod: string): string;
  /** Stops timers; sandboxes and containers keep running. */
  close(): void;
}
