import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { isRunning } from '@kuasar/sys';

/** How to start one sandboxer binary (the runc one today; others join with their own command). */
export interface SandboxerProcessOptions {
  /** Kind, for messages and the default task socket name: runc, wasm, ... */
  kind: string;
  /** argv[0..] before the flags, e.g. [process.execPath, '<repo>/packages/runc-sandboxer/dist/main.js']. */
  command: string[];
  /** Controller gRPC socket (--listen). */
  listen: string;
  /** State dir (--dir); the task server listens on <dir>/task.sock. */
  dir: string;
  /** containerd's ttrpc socket, for events (env TTRPC_ADDRESS). */
  ttrpcAddress: string;
  /** JSON logs (stderr) are appended here; kept across restarts. */
  logPath: string;
  config?: string;
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  env?: NodeJS.ProcessEnv;
  /** How long start() waits for both sockets to answer; default 20 s. */
  readyTimeoutMs?: number;
}

export class SandboxerStartError extends Error {
  override readonly name = 'SandboxerStartError';
}

/** One parsed pino line of the sandboxer's log. */
export interface SandboxerLogLine {
  level: string;
  msg?: string;
  time?: string;
  [key: string]: unknown;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test that fails before stop() must not leave a resident sandboxer behind when jest's worker exits.
  process.on('exit', () => {
    for (const c of live) if (c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  });
}

/** Resolves when something accepts a connection on the unix socket `p`. */
export function socketAnswers(p: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const timer = setTimeout(() => { s.destroy(); resolve(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(timer); s.destroy(); resolve(true); });
    s.once('error', () => { clearTimeout(timer); resolve(false); });
  });
}

/**
 * A sandboxer run as a real child process, the way systemd would run it: private sockets and state dir, events to
 * a private containerd. It can be killed (SIGKILL, like a crash) and started again on the same dir.
 */
export class SandboxerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** Exit code/signal of the last run, once it ended. */
  lastExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  private constructor(readonly opts: SandboxerProcessOptions) {}

  static async start(opts: SandboxerProcessOptions): Promise<SandboxerProcess> {
    if (!opts || !Array.isArray(opts.command) || opts.command.length === 0) throw new TypeError('SandboxerProcess: command required');
    for (const k of ['listen', 'dir', 'logPath'] as const) {
      if (typeof opts[k] !== 'string' || !path.isAbsolute(opts[k])) throw new TypeError(`SandboxerProcess: ${k} must be an absolute path`);
    }
    if (Buffer.byteLength(path.join(opts.dir, 'task.sock')) > 107) throw new TypeError(`SandboxerProcess: ${opts.dir}/task.sock is too long for a unix socket`);
    const sb = new SandboxerProcess(opts);
    await sb.run();
    return sb;
  }

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined;
  }

  get taskSocket(): string {
    return path.join(this.opts.dir, 'task.sock');
  }

  get running(): boolean {
    const c = this.child;
    return c !== undefined && c.exitCode === null && c.signalCode === null;
  }

  private async run(): Promise<void> {
    if (this.running) throw new SandboxerStartError(`${this.opts.kind}-sandboxer is already running (pid ${this.child?.pid})`);
    const o = this.opts;
    mkdirSync(path.dirname(o.logPath), { recursive: true });
    const logFd = openSync(o.logPath, 'a');
    const [bin, ...pre] = o.command;
    const args = [...pre, '--listen', o.listen, '--dir', o.dir, '--log-level', o.logLevel ?? 'debug', ...(o.config ? ['--config', o.config] : [])];
    try {
      this.child = spawn(bin!, args, { stdio: ['ignore', logFd, logFd], env: { ...process.env, ...o.env, TTRPC_ADDRESS: o.ttrpcAddress } });
    } finally {
      closeSync(logFd);
    }
    const child = this.child;
    live.add(child);
    installExitHook();
    this.lastExit = undefined;
    this.exited = new Promise((resolve) => {
      const done = (): void => {
        live.delete(child);
        this.lastExit = { code: child.exitCode, signal: child.signalCode };
        resolve();
      };
      child.once('exit', done);
      child.once('error', done);
    });
    const deadline = Date.now() + (o.readyTimeoutMs ?? 20_000);
    while (Date.now() < deadline) {
      if (!this.running) {
        await this.exited;
        throw new SandboxerStartError(`${o.kind}-sandboxer exited during start (${JSON.stringify(this.lastExit)})\n${this.logTail(30)}`);
      }
      if ((await socketAnswers(o.listen)) && (await socketAnswers(this.taskSocket))) return;
      await sleep(50);
    }
    await this.kill('SIGKILL');
    throw new SandboxerStartError(`${o.kind}-sandboxer did not answer on ${o.listen} and ${this.taskSocket} in time\n${this.logTail(30)}`);
  }

  /** Signals the process and waits for it to end (SIGKILL = a crash: pods and containers stay). */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.child!.kill(signal);
    await this.exited;
  }

  /** Starts it again on the same dir and sockets (after kill or stop). */
  async restart(): Promise<void> {
    await this.kill('SIGKILL');
    await this.run();
  }

  /** Graceful stop (SIGTERM; SIGKILL after graceMs). Pods keep running: this is a sandboxer restart, not a teardown. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.child!.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const gone = await Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => { timer = setTimeout(() => r(false), graceMs); })]);
    clearTimeout(timer);
    if (!gone) await this.kill('SIGKILL');
  }

  /**
   * The task relay the sandboxer started (a separate process that keeps containerd's task connections open across
   * sandboxer restarts), if one is running.
   */
  relayPid(): number | undefined {
    try {
      const pid = Number(readFileSync(path.join(this.opts.dir, 'relay.pid'), 'utf8').trim());
      return isRunning(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Stops the sandboxer and its task relay: the end of the node's kuasar, not a restart. */
  async stopAll(graceMs = 5000): Promise<void> {
    await this.stop(graceMs);
    const relay = this.relayPid();
    if (relay === undefined) return;
    process.kill(relay, 'SIGTERM');
    const end = Date.now() + graceMs;
    while (Date.now() < end) {
      if (!isRunning(relay)) return; // the relay is no child of ours: its zombie waits for a lazy pid 1
      await sleep(25);
    }
    try { process.kill(relay, 'SIGKILL'); } catch { /* gone */ }
  }

  rawLogs(): string {
    try {
      return readFileSync(this.opts.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /** Every JSON line so far (all runs); lines that are not JSON (a crash trace) come back as level "raw". */
  logs(): SandboxerLogLine[] {
    return this.rawLogs().split('\n').filter(Boolean).map((l) => {
      try {
        const j = JSON.parse(l) as SandboxerLogLine;
        if (j && typeof j === 'object') return j;
      } catch { /* not JSON */ }
      return { level: 'raw', msg: l };
    });
  }

  logTail(n: number): string {
    return this.rawLogs().split('\n').slice(-n).join('\n');
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
