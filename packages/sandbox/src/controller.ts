import { existsSync } from 'node:fs';
import { anyTypeName, cri, google, timestampFromDate, types, unpackAny } from '@kuasar/api';
import { cgroupDirsOfPid, packCgroupMetrics, readMetrics } from '@kuasar/task';
import type { Logger } from 'pino';
import {
  AlreadyExistsError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  messageOf,
} from './errors';
import { ContainerdSandboxView, type SandboxView } from './containerd-view';
import type { SandboxExit } from './exit';
import { validateSandboxId } from './id';
import { KeyedMutex } from './lock';
import { hostPlatform } from './platform';
import { Sandbox, type SandboxRecord, type SandboxTaskRef, recordFromJSON, recordToJSON } from './sandbox';
import type { Sandboxer } from './sandboxer';
import type { SandboxStore } from './store';

export const POD_SANDBOX_CONFIG_TYPE = 'runtime.v1.PodSandboxConfig';
/** containerd's exit status for "we do not know how it ended". */
export const UNKNOWN_EXIT_STATUS = 255;
/** How long Stop waits for the exit beyond the kind's own timeout before giving up. */
const STOP_EXIT_GRACE_MS = 10_000;

/** The task API endpoint handed to containerd by Start/Status (`ttrpc+unix://<dir>/task.sock`, version 3). */
export interface TaskEndpoint {
  address: string;
  version: number;
}

export interface CreateParams {
  sandboxId: string;
  rootfs?: types.Mount[];
  options?: google.Any;
  netnsPath?: string;
  annotations?: Record<string, string>;
  sandbox?: types.Sandbox;
  /** The task the sandbox is made from (task-sandbox.ts); it then lives and ends with that task. */
  task?: SandboxTaskRef;
}

export interface StartResult {
  pid: number;
  createdAt: Date;
  labels: Record<string, string>;
  address: string;
  version: number;
}

export interface StatusResult {
  sandboxId: string;
  pid: number;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  info: Record<string, string>;
  createdAt: Date;
  exitedAt: Date | undefined;
  address: string;
  version: number;
}

/** How often and how long sandboxes whose Create or Start reply may have been lost are checked against containerd. */
export interface ReconcileTiming {
  /** A sandbox is first looked up this long after its last Create/Start (or the restart that found it). */
  afterMs: number;
  /** Between two rounds of look-ups while any sandbox is in doubt. */
  everyMs: number;
  /** Still held by containerd this long after: containerd has it for good (it drops a failed one within a moment). */
  settleMs: number;
}

export const RECONCILE_TIMING: ReconcileTiming = { afterMs: 5_000, everyMs: 5_000, settleMs: 120_000 };

export interface RecoveryReport {
  adopted: string[];
  cleaned: string[];
  corrupt: string[];
  failed: string[];
}

/**
 * The Controller's semantics, independent of the wire: one Sandbox object per id, mutations serialised per id,
 * every state change persisted before it is acknowledged.
 */
export class SandboxController {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly locks = new KeyedMutex();
  /**
   * Sandboxes made through the Controller that containerd has not addressed since their Create/Start, by when that
   * was: their reply may have been lost (kill -9 of the sandboxer, a failed Start), and then containerd 2.x deletes its
   * record and never calls Stop or Shutdown. Checked against containerd's sandbox store (reconcile).
   */
  private readonly doubtful = new Map<string, number>();
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<string[]> | undefined;

  constructor(
    private readonly kind: Sandboxer,
    private readonly store: SandboxStore,
    private readonly logger: Logger,
    private readonly endpoint: TaskEndpoint,
    /** containerd's view of its sandboxes; by default from CONTAINERD_ADDRESS/TTRPC_ADDRESS, none without them. */
    private readonly view: SandboxView | undefined = ContainerdSandboxView.fromEnv(),
    private readonly timing: ReconcileTiming = RECONCILE_TIMING,
  ) {}

  /** Sandboxes currently known (tests, diagnostics). */
  ids(): string[] {
    return [...this.sandboxes.keys()];
  }

  /** The sandbox with this id, or undefined (no validation, no error): for lookups from engines and hooks. */
  find(id: string): Sandbox | undefined {
    return this.sandboxes.get(id);
  }

  get(id: string): Sandbox {
    validateSandboxId(id);
    const sandbox = this.sandboxes.get(id);
    if (!sandbox) throw new NotFoundError(`sandbox ${id} not found`);
    return sandbox;
  }

  async create(params: CreateParams): Promise<void> {
    const id = params.sandboxId;
    validateSandboxId(id);
    const { config, options } = decodeOptions(params.options);
    await this.locks.run(id, async () => {
      if (this.sandboxes.has(id)) throw new AlreadyExistsError(`sandbox ${id} already exists`);
      const dir = await this.store.createDir(id);
      const record: SandboxRecord = {
        id,
        state: 'created',
        netnsPath: params.netnsPath ?? '',
        annotations: { ...(params.annotations ?? {}) },
        rootfs: params.rootfs ?? [],
        config,
        options,
        sandbox: params.sandbox,
        createdAt: new Date(),
        pid: 0,
        startedAt: undefined,
        labels: {},
        exit: undefined,
        kindState: {},
        ...(params.task ? { task: { ...params.task } } : {}),
      };
      const sandbox = new Sandbox(record, dir, this.logger.child({ sandbox: id }));
      try {
        // Persist before the kind acts: a crash in between leaves a record that recovery hands to the kind to clean.
        await this.persist(sandbox);
        await this.kind.create(sandbox);
        await this.persist(sandbox);
      } catch (err) {
        sandbox.logger.error({ err: messageOf(err) }, 'create failed; cleaning up');
        await this.kind.shutdown(sandbox).catch((e) => sandbox.logger.error({ err: messageOf(e) }, 'cleanup after failed create'));
        await this.store.remove(id).catch((e) => sandbox.logger.error({ err: messageOf(e) }, 'removing state dir'));
        throw err;
      }
      this.sandboxes.set(id, sandbox);
      this.doubt(sandbox);
      sandbox.logger.info({ netns: record.netnsPath, hasConfig: config !== undefined }, 'sandbox created');
    });
  }

  async start(id: string): Promise<StartResult> {
    validateSandboxId(id);
    return this.locks.run(id, async () => {
      const sandbox = this.get(id);
      const r = sandbox.record;
      if (r.state !== 'created') throw new FailedPreconditionError(`sandbox ${id} is ${r.state}, not created`);
      // Whether it succeeds or not, containerd may never see the answer: the look-up clock restarts here.
      this.doubt(sandbox);
      const started = await this.kind.start(sandbox);
      r.state = 'ready';
      r.pid = started.pid;
      r.startedAt = new Date();
      r.labels = { ...(started.labels ?? {}) };
      // Watch before persisting: if the write fails the process still runs, and Stop/Shutdown need its exit.
      this.watchExit(sandbox);
      await this.persist(sandbox);
      this.doubt(sandbox);
      sandbox.logger.info({ pid: r.pid }, 'sandbox started');
      return { pid: r.pid, createdAt: r.startedAt, labels: r.labels, ...this.endpoint };
    });
  }

  /** Blocks until the sandbox has exited; `signal` ends the wait early (client gone) without side effects. */
  async wait(id: string, signal?: AbortSignal): Promise<SandboxExit> {
    const sandbox = this.get(id);
    this.claim(sandbox);
    return sandbox.exitSignal.wait(signal);
  }

  async stop(id: string, timeoutSecs: number): Promise<void> {
    validateSandboxId(id);
    this.claimById(id);
    await this.locks.run(id, async () => this.stopLocked(this.get(id), timeoutSecs));
  }

  private async stopLocked(sandbox: Sandbox, timeoutSecs: number): Promise<void> {
    const r = sandbox.record;
    if (r.state === 'stopped') return;
    if (r.state === 'created') {
      // Nothing runs yet: the sandbox is stopped by definition, and waiters learn so.
      this.recordExit(sandbox, { exitStatus: 0, exitedAt: new Date() });
      await this.persist(sandbox);
      return;
    }
    sandbox.logger.info({ timeoutSecs }, 'stopping sandbox');
    await this.kind.stop(sandbox, timeoutSecs);
    const limitMs = Math.min(timeoutSecs * 1000 + STOP_EXIT_GRACE_MS, 2 ** 31 - 1);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), limitMs);
    try {
      await sandbox.exitSignal.wait(ac.signal);
    } catch {
      throw new DeadlineExceededError(`sandbox ${r.id} did not exit within ${limitMs} ms of stop`);
    } finally {
      clearTimeout(timer);
    }
    await this.persist(sandbox);
  }

  async status(id: string, verbose: boolean): Promise<StatusResult> {
    const sandbox = this.get(id);
    this.claim(sandbox);
    const r = sandbox.record;
    const info: Record<string, string> = {};
    if (verbose) {
      // A kind that cannot describe itself must not make Status fail: CRI needs the state above all.
      const kindInfo = this.kind.status
        ? await this.kind.status(sandbox).catch((err: unknown) => ({ error: messageOf(err) }))
        : undefined;
      info.info = JSON.stringify(verboseInfo(r, kindInfo));
    }
    const ready = r.state === 'ready';
    return {
      sandboxId: id,
      pid: r.pid,
      state: ready ? 'SANDBOX_READY' : 'SANDBOX_NOTREADY',
      info,
      createdAt: r.startedAt ?? r.createdAt,
      exitedAt: r.exit?.exitedAt,
      address: ready ? this.endpoint.address : '',
      version: ready ? this.endpoint.version : 0,
    };
  }

  /** Removes every trace: stops a running sandbox first, then kind cleanup, then the state dir. */
  async shutdown(id: string): Promise<void> {
    validateSandboxId(id);
    await this.locks.run(id, async () => {
      const sandbox = this.get(id);
      await this.removeLocked(sandbox);
      sandbox.logger.info('sandbox shut down');
    });
  }

  // ---- sandboxes made from a task (task-sandbox.ts) ------------------------------------------------------------------

  /** The task's init exists: its pid is the sandbox's (what Status reports). */
  async setTaskPid(id: string, pid: number): Promise<void> {
    await this.locks.run(id, async () => {
      const sandbox = this.sandboxes.get(id);
      if (!sandbox || sandbox.record.pid === pid) return;
      sandbox.record.pid = pid;
      await this.persist(sandbox);
    });
  }

  /** The task the sandbox was made from exited: so did the sandbox, with the task's status. */
  taskExited(id: string, exit: SandboxExit): void {
    const sandbox = this.sandboxes.get(id);
    if (sandbox) this.onExit(sandbox, exit);
  }

  /**
   * The task the sandbox was made from is gone: end what is left of the pod (the kind's stop, with no grace), then
   * remove the sandbox like Shutdown does. A sandbox already gone is not an error.
   */
  async removeTaskSandbox(id: string): Promise<void> {
    await this.locks.run(id, async () => {
      const sandbox = this.sandboxes.get(id);
      if (!sandbox) return;
      // the task's exit, when it came, is already recorded; record one first so the kind's stop cannot supply it
      this.recordExit(sandbox, { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: new Date() });
      if (sandbox.record.startedAt) {
        await this.kind.stop(sandbox, 0).catch((err) => sandbox.logger.warn({ err: messageOf(err) }, 'stopping what is left of the pod failed'));
      }
      await this.kind.shutdown(sandbox);
      await this.store.remove(id);
      this.sandboxes.delete(id);
      sandbox.logger.info('sandbox removed with its task');
    });
  }

  platform(id: string): types.Platform {
    this.claim(this.get(id));
    return hostPlatform();
  }

  async metrics(id: string): Promise<types.Metric> {
    const sandbox = this.get(id);
    this.claim(sandbox);
    // CRI's ListPodSandboxStats asks about every sandbox, ready or not, and fails as a whole on any error other
    // than NOT_FOUND/UNAVAILABLE; "nothing to measure" must therefore be NOT_FOUND.
    if (sandbox.record.state !== 'ready') throw new NotFoundError(`sandbox ${id} is ${sandbox.record.state}: no metrics`);
    const data = this.kind.metrics ? await this.kind.metrics(sandbox) : pidCgroupMetrics(sandbox);
    return types.Metric.fromPartial({ timestamp: timestampFromDate(new Date()), id, data });
  }

  /** Applies containerd's field paths (core/metadata/sandbox.go): labels[.k], extensions[.k], spec, runtime. */
  async update(id: string, update: types.Sandbox | undefined, fields: readonly string[]): Promise<void> {
    validateSandboxId(id);
    if (!update) throw new InvalidArgumentError('update carries no sandbox');
    this.claimById(id);
    await this.locks.run(id, async () => {
      const sandbox = this.get(id);
      const current = sandbox.record.sandbox ?? types.Sandbox.fromPartial({ sandboxId: id });
      const next: types.Sandbox = { ...current, labels: { ...current.labels }, extensions: { ...current.extensions } };
      const paths = fields.length > 0 ? fields : ['labels', 'extensions', 'spec', 'runtime'];
      if (fields.length === 0 && current.runtime && update.runtime && current.runtime.name !== update.runtime.name) {
        throw new InvalidArgumentError('sandbox.runtime.name is immutable');
      }
      for (const path of paths) {
        if (path.startsWith('labels.')) {
          const key = path.slice('labels.'.length);
          if (key in update.labels) next.labels[key] = update.labels[key];
          else delete next.labels[key];
        } else if (path.startsWith('extensions.')) {
          const key = path.slice('extensions.'.length);
          if (key in update.extensions) next.extensions[key] = update.extensions[key];
          else delete next.extensions[key];
        } else if (path === 'labels') next.labels = { ...update.labels };
        else if (path === 'extensions') next.extensions = { ...update.extensions };
        else if (path === 'spec') next.spec = update.spec;
        else if (path === 'runtime') next.runtime = update.runtime;
        else throw new InvalidArgumentError(`cannot update ${JSON.stringify(path)} field on sandbox ${id}`);
      }
      next.updatedAt = timestampFromDate(new Date());
      sandbox.record.sandbox = next;
      await this.persist(sandbox);
      if (this.kind.update) {
        await this.kind.update(sandbox, fields);
        await this.persist(sandbox);
      }
      sandbox.logger.info({ fields }, 'sandbox updated');
    });
  }

  /**
   * Loads every record under the state dir and asks the kind about each: live sandboxes are re-adopted, dead ones
   * cleaned up, corrupt records moved aside. Never throws for one bad sandbox.
   */
  async recover(): Promise<RecoveryReport> {
    const report: RecoveryReport = { adopted: [], cleaned: [], corrupt: [], failed: [] };
    const entries = await this.store.list((id, data) => void recordFromJSON(id, data));
    for (const entry of entries) {
      const log = this.logger.child({ sandbox: entry.id });
      if (entry.kind === 'corrupt') {
        log.error({ error: entry.error, movedTo: entry.movedTo }, 'recovery: corrupt sandbox record moved aside');
        report.corrupt.push(entry.id);
        continue;
      }
      if (entry.kind === 'missing') {
        // A crash between mkdir and the first write; an empty dir is safe to drop, anything else is left for a human.
        const removed = await this.store.removeIfEmpty(entry.id);
        log.warn({ removed }, 'recovery: sandbox dir without a record');
        continue;
      }
      const sandbox = new Sandbox(recordFromJSON(entry.id, entry.data), this.store.dirOf(entry.id), log);
      try {
        await this.recoverOne(sandbox, report);
      } catch (err) {
        log.error({ err: messageOf(err) }, 'recovery failed; record left on disk');
        report.failed.push(entry.id);
      }
    }
    this.logger.info(report, 'recovery done');
    return report;
  }

  private async recoverOne(sandbox: Sandbox, report: RecoveryReport): Promise<void> {
    const r = sandbox.record;
    const verdict = r.state === 'stopped' ? 'dead' : await this.kind.recover(sandbox);
    if (verdict === 'alive') {
      this.sandboxes.set(r.id, sandbox);
      this.doubt(sandbox);
      if (r.state === 'ready') this.watchExit(sandbox);
      sandbox.logger.info({ state: r.state, pid: r.pid }, 'recovery: sandbox alive, re-adopted');
      report.adopted.push(r.id);
      return;
    }
    sandbox.logger.info({ state: r.state, pid: r.pid }, 'recovery: sandbox dead, cleaning up');
    try {
      await this.kind.shutdown(sandbox);
      await this.store.remove(r.id);
      report.cleaned.push(r.id);
    } catch (err) {
      // Keep it known as stopped so containerd's Stop/Shutdown can retry the cleanup.
      sandbox.logger.error({ err: messageOf(err) }, 'recovery: cleanup failed; keeping the sandbox as stopped');
      r.state = 'stopped';
      r.exit ??= { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: new Date() };
      sandbox.exitSignal.resolve(r.exit);
      this.sandboxes.set(r.id, sandbox);
      this.doubt(sandbox);
      report.failed.push(r.id);
    }
  }

  // ---- sandboxes containerd forgot -----------------------------------------------------------------------------------

  /** Sandboxes whose Create/Start reply containerd may not have received (nothing addressed them since). */
  doubtfulIds(): string[] {
    return [...this.doubtful.keys()];
  }

  /** A Controller sandbox containerd has not claimed: look it up once timing.afterMs has passed. */
  private doubt(sandbox: Sandbox): void {
    if (sandbox.record.task || sandbox.record.claimed || !this.view) return;
    this.doubtful.set(sandbox.id, Date.now());
    this.scheduleReconcile();
  }

  private claimById(id: string): void {
    const sandbox = this.sandboxes.get(id);
    if (sandbox) this.claim(sandbox);
  }

  /**
   * containerd addressed the sandbox after Create/Start: its CRI holds it (it calls Wait/Status only for pods it
   * stored, after the last step that can still fail). Persisted, so a restart does not put it in doubt again.
   */
  private claim(sandbox: Sandbox): void {
    if (sandbox.record.claimed || sandbox.record.task) return;
    sandbox.record.claimed = true;
    this.doubtful.delete(sandbox.id);
    void this.locks
      .run(sandbox.id, async () => {
        if (this.sandboxes.get(sandbox.id) === sandbox) await this.persist(sandbox);
      })
      .catch((err) => sandbox.logger.warn({ err: messageOf(err) }, 'persisting the claim failed'));
  }

  private scheduleReconcile(): void {
    if (this.reconcileTimer || this.reconciling || this.doubtful.size === 0) return;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileTimer = undefined;
      void this.reconcile().finally(() => this.scheduleReconcile());
    }, this.timing.everyMs);
    // Never what keeps a sandboxer (or a test) alive.
    this.reconcileTimer.unref();
  }

  /**
   * One round: asks containerd about each sandbox in doubt for at least timing.afterMs. One it holds no record of in
   * any namespace is removed like Shutdown would (containerd drops its record only after its Create/Start failed, and
   * never calls about it again); one it holds past timing.settleMs is claimed; no answer (containerd down, 1.6 with no
   * sandbox store) leaves it for the next round. Returns the ids removed.
   */
  async reconcile(): Promise<string[]> {
    if (this.reconciling) return this.reconciling;
    this.reconciling = this.reconcileRound().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  private async reconcileRound(): Promise<string[]> {
    const view = this.view;
    const asked = Date.now();
    const due = [...this.doubtful].filter(([, since]) => asked - since >= this.timing.afterMs);
    if (!view || due.length === 0) return [];
    let answers: Map<string, boolean>;
    try {
      answers = await view.lookup(due.map(([id]) => id));
    } catch (err) {
      this.logger.warn({ err: messageOf(err) }, 'asking containerd about sandboxes in doubt failed');
      return [];
    }
    const removed: string[] = [];
    for (const [id, since] of due) {
      const known = answers.get(id);
      const sandbox = this.sandboxes.get(id);
      // claimed, shut down or started again while containerd was asked: that answer is about the past
      if (known === undefined || !sandbox || this.doubtful.get(id) !== since) continue;
      if (known) {
        if (asked - since >= this.timing.settleMs) this.claim(sandbox);
        continue;
      }
      try {
        await this.locks.run(id, async () => {
          if (this.sandboxes.get(id) !== sandbox || this.doubtful.get(id) !== since) return;
          sandbox.logger.warn({ state: sandbox.record.state, pid: sandbox.record.pid }, 'containerd holds no record of this sandbox (its Create/Start reply was lost): removing it');
          // As Shutdown: a ready one is stopped first; a created one (no start recorded) only gets the kind's cleanup.
          await this.removeLocked(sandbox);
          removed.push(id);
        });
      } catch (err) {
        sandbox.logger.error({ err: messageOf(err) }, 'removing a sandbox containerd forgot failed; retrying in the next round');
      }
    }
    return removed;
  }

  private async removeLocked(sandbox: Sandbox): Promise<void> {
    if (sandbox.record.state === 'ready') await this.stopLocked(sandbox, 0);
    await this.kind.shutdown(sandbox);
    await this.store.remove(sandbox.id);
    this.sandboxes.delete(sandbox.id);
    this.doubtful.delete(sandbox.id);
    sandbox.exitSignal.abandon(new NotFoundError(`sandbox ${sandbox.id} was shut down`));
  }

  private watchExit(sandbox: Sandbox): void {
    this.kind.wait(sandbox).then(
      (exit) => this.onExit(sandbox, exit),
      (err) => {
        sandbox.logger.error({ err: messageOf(err) }, 'waiting for the sandbox failed; treating it as exited');
        this.onExit(sandbox, { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: new Date() });
      },
    );
  }

  private onExit(sandbox: Sandbox, exit: SandboxExit): void {
    if (!this.recordExit(sandbox, exit)) return;
    sandbox.logger.info({ exitStatus: exit.exitStatus }, 'sandbox exited');
    // Persist under the id's lock, after whatever operation is running (a Stop holding the lock waits for this exit).
    void this.locks
      .run(sandbox.id, async () => {
        if (this.sandboxes.get(sandbox.id) === sandbox) await this.persist(sandbox);
      })
      .catch((err) => sandbox.logger.error({ err: messageOf(err) }, 'persisting the exit failed'));
  }

  private recordExit(sandbox: Sandbox, exit: SandboxExit): boolean {
    const r = sandbox.record;
    if (r.exit) return false;
    r.state = 'stopped';
    r.exit = exit;
    sandbox.exitSignal.resolve(exit);
    return true;
  }

  private async persist(sandbox: Sandbox): Promise<void> {
    await this.store.write(sandbox.id, recordToJSON(sandbox.record));
  }
}

const PROCESS_STATUS = { created: 'created', ready: 'running', stopped: 'stopped' } as const;

/**
 * CRI json.Unmarshals `info["info"]` into its podsandbox SandboxInfo (setUpdatedResources), so every key it knows
 * must have its Go type or PodSandboxStatus fails. Only pid/processStatus/netNamespaceClosed/runtimeType are set;
 * the full record (whose ts-proto JSON differs from Go's protobuf JSON) goes under a key CRI ignores.
 */
function verboseInfo(r: SandboxRecord, kindInfo: unknown): Record<string, unknown> {
  return {
    pid: r.pid,
    processStatus: PROCESS_STATUS[r.state],
    netNamespaceClosed: r.netnsPath !== '' && !existsSync(r.netnsPath),
    runtimeType: r.sandbox?.runtime?.name ?? '',
    kuasar: { record: recordToJSON(r), kind: kindInfo },
  };
}

/** CRI sends the PodSandboxConfig as Any{type_url "runtime.v1.PodSandboxConfig"} (either URL form). */
function decodeOptions(options: google.Any | undefined): { config?: cri.PodSandboxConfig; options?: google.Any } {
  if (!options || (options.typeUrl === '' && options.value.length === 0)) return {};
  if (anyTypeName(options) !== POD_SANDBOX_CONFIG_TYPE) return { options };
  try {
    return { config: unpackAny(options, cri.PodSandboxConfig, POD_SANDBOX_CONFIG_TYPE) };
  } catch (err) {
    throw new InvalidArgumentError(`options: ${messageOf(err)}`);
  }
}

/** Without a kind-specific reader: the cgroup stats of the sandbox's main process (v1/hybrid or v2). */
function pidCgroupMetrics(sandbox: Sandbox): google.Any {
  const pid = sandbox.record.pid;
  if (pid <= 0) throw new NotFoundError(`sandbox ${sandbox.id} has no host process to measure`);
  const dirs = cgroupDirsOfPid(pid);
  if (!dirs) throw new NotFoundError(`sandbox ${sandbox.id}: process ${pid} is gone`);
  return packCgroupMetrics(readMetrics(dirs));
}
