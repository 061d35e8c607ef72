import { ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, rmdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ContainerdBinaries, type ContainerdVersion, findContainerd } from './binaries';

export interface StartOptions {
  version: ContainerdVersion;
  /**
   * TOML added to the generated config (v2 for 1.6/1.7, v3 for 2.1): keys before its first table
   * are placed at top level, tables are appended. It must not repeat a table the generated config
   * already has (see PrivateContainerd.configTables): TOML forbids that, and start() rejects it.
   */
  extraConfig?: string;
  /** How long to wait for `ctr version` to answer. */
  startTimeoutMs?: number;
  /** Parent of the instance's temp dir; default os.tmpdir(). Keep it short: socket paths max 107 bytes. */
  baseDir?: string;
  /**
   * Added to the daemon's environment, which containerd passes on to the shims it starts (e.g. a PATH with a node's
   * thin shims, or the shims' settings). A restart keeps it unless given another.
   */
  env?: NodeJS.ProcessEnv;
}

export interface CtrOptions {
  namespace?: string;
  timeoutMs?: number;
}

export interface CtrResult {
  stdout: string;
  stderr: string;
}

export class ContainerdStartError extends Error {
  override readonly name = 'ContainerdStartError';
}

export class CtrError extends Error {
  override readonly name = 'CtrError';
  constructor(
    readonly args: string[],
    readonly exitCode: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`ctr ${args.join(' ')} failed (exit ${exitCode}): ${stderr.trim() || stdout.trim()}`);
  }
}

// containerd derives these from compiled-in defaults, not from root/state: every release here puts
// shim sockets in /run/containerd/s and the runc shim's runc root in /run/containerd/runc/<ns>, and
// 1.6 also creates /opt/containerd. Other containerds (the system's, other tests) share them, so
// stop() removes only what it can prove is this instance's: shim sockets named after our address,
// and directories that did not exist before start() and are empty again.
const SHARED_ROOTS = ['/run/containerd', '/opt/containerd'];
const SHIM_SOCKET_DIR = '/run/containerd/s';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A test that forgets stop() must not leave a daemon behind when jest's worker exits.
  process.on('exit', () => {
    for (const child of live) if (child.pid) try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  });
}

export class PrivateContainerd {
  readonly grpcAddress: string;
  readonly ttrpcAddress: string;
  readonly root: string;
  readonly state: string;
  readonly configPath: string;
  readonly logPath: string;
  private child: ChildProcess | undefined;
  private exited: Promise<void>;
  private stopped = false;
  /** start()'s env, kept for restarts */
  private env: NodeJS.ProcessEnv = {};
  private finalLog: string | undefined;
  private readonly preexisting: Set<string>;

  private constructor(
    readonly version: ContainerdVersion,
    readonly binaries: ContainerdBinaries,
    /** The instance's temp dir: config, log, sockets, root and state all live under it. */
    readonly dir: string,
  ) {
    this.grpcAddress = path.join(dir, 'c.sock');
    this.ttrpcAddress = `${this.grpcAddress}.ttrpc`;
    this.root = path.join(dir, 'root');
    this.state = path.join(dir, 'state');
    this.configPath = path.join(dir, 'config.toml');
    this.logPath = path.join(dir, 'containerd.log');
    this.preexisting = snapshotShared();
    this.exited = Promise.resolve();
  }

  /** Tables the generated config defines for `version`; extraConfig must not repeat them. */
  static configTables(version: ContainerdVersion): string[] {
    return [...configText(version, '/x').matchAll(/^\s*\[([^\]]+)\]\s*$/gm)].map((m) => normaliseTable(m[1]));
  }

  static async start(opts: StartOptions): Promise<PrivateContainerd> {
    if (!opts || typeof opts !== 'object') throw new TypeError('PrivateContainerd.start: options object required');
    const binaries = findContainerd(opts.version);
    const extra = opts.extraConfig ?? '';
    if (typeof extra !== 'string') throw new TypeError('PrivateContainerd.start: extraConfig must be a string');
    const ours = new Set(PrivateContainerd.configTables(opts.version));
    for (const m of extra.matchAll(/^\s*\[([^\]]+)\]\s*$/gm)) {
      if (ours.has(normaliseTable(m[1]))) {
        throw new ContainerdStartError(`extraConfig repeats table [${m[1]}], which the generated config already defines; use a sub-table or another key`);
      }
    }

    const dir = mkdtempSync(path.join(opts.baseDir ?? os.tmpdir(), 'kctrd-'));
    const ctrd = new PrivateContainerd(opts.version, binaries, dir);
    if (Buffer.byteLength(ctrd.ttrpcAddress) > 107) {
      rmSync(dir, { recursive: true, force: true });
      throw new ContainerdStartError(`socket path ${ctrd.ttrpcAddress} is longer than 107 bytes; use a shorter baseDir`);
    }
    // Keys before extraConfig's first table are top-level (e.g. disabled_plugins); appended after
    // our last table they would silently land inside it, so they go right after `version`.
    const firstTable = extra.search(/^\s*\[/m);
    const topKeys = firstTable < 0 ? extra : extra.slice(0, firstTable);
    const tables = firstTable < 0 ? '' : extra.slice(firstTable);
    const base = configText(opts.version, dir).replace(/^(version = \d)$/m, `$1\n${topKeys.trim()}`);
    writeFileSync(ctrd.configPath, `${base}\n\n${tables}\n`);
    ctrd.env = opts.env ?? {};
    try {
      ctrd.spawn(ctrd.env);
      await ctrd.waitReady(opts.startTimeoutMs ?? 30_000);
    } catch (err) {
      const log = ctrd.logs();
      await ctrd.stop();
      if (err instanceof ContainerdStartError) err.message += `\n--- containerd log ---\n${tail(log, 40)}`;
      throw err;
    }
    return ctrd;
  }

  private spawn(extraEnv: NodeJS.ProcessEnv = {}): void {
    const logFd = openSync(this.logPath, 'a');
    try {
      // The shim is found on PATH: put the one from the same release first.
      const env = { ...process.env, ...extraEnv, PATH: `${path.dirname(this.binaries.shimRuncV2)}:${extraEnv.PATH ?? process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
      this.child = spawn(this.binaries.containerd, ['--config', this.configPath], { stdio: ['ignore', logFd, logFd], env });
    } finally {
      closeSync(logFd);
    }
    const child = this.child;
    live.add(child);
    installExitHook();
    this.exited = new Promise((resolve) => {
      child.once('exit', () => { live.delete(child); resolve(); });
      child.once('error', () => { live.delete(child); resolve(); });
    });
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError = 'socket not created yet';
    let exited = false;
    void this.exited.then(() => { exited = true; });
    while (Date.now() < deadline && !exited) {
      // Before the socket exists ctr would sit in its dial timeout; polling the path is cheaper.
      if (existsSync(this.grpcAddress)) {
        try {
          await this.ctr(['version'], { timeoutMs: 5_000 });
          return;
        } catch (err) {
          lastError = (err as Error).message;
        }
      }
      await sleep(50);
    }
    if (exited) {
      const child = this.child;
      throw new ContainerdStartError(`containerd ${this.version} exited during start (code ${child?.exitCode}, signal ${child?.signalCode})`);
    }
    throw new ContainerdStartError(`containerd ${this.version} did not answer within ${timeoutMs} ms: ${lastError}`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Runs this release's ctr against this instance. Rejects with CtrError on a non-zero exit. */
  ctr(args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
    if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) {
      return Promise.reject(new TypeError('ctr: args must be an array of strings'));
    }
    const full = ['--address', this.grpcAddress, ...(opts.namespace ? ['--namespace', opts.namespace] : []), ...args];
    return new Promise((resolve, reject) => {
      execFile(this.binaries.ctr, full, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (err) {
          const code = typeof (err as NodeJS.ErrnoException).code === 'number' ? ((err as unknown as { code: number }).code) : null;
          reject(new CtrError(args, code, stdout, stderr || err.message));
        } else {
          resolve({ stdout, stderr });
        }
      });
    });
  }

  /** The server version `ctr version` reports, e.g. "1.7.24~ds1" or "2.1.9+ds1". */
  async serverVersion(): Promise<string> {
    const { stdout } = await this.ctr(['version']);
    const server = stdout.split(/^Server:/m)[1] ?? '';
    const m = /^\s*Version:\s*v?(\S+)/m.exec(server);
    if (!m) throw new CtrError(['version'], 0, stdout, 'no server version in output');
    return m[1];
  }

  /** containerd's stdout+stderr so far (kept after stop()). */
  logs(): string {
    if (this.finalLog !== undefined) return this.finalLog;
    try {
      return readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  /**
   * Ends the daemon with `signal` (SIGKILL: a crash) and starts it again on the same root, state and sockets, as a
   * node's containerd restart would: tasks, shims and sandboxers keep running meanwhile. `env` is added to the
   * restarted daemon's (e.g. a PATH with the runtime binaries a node has installed); default: start()'s `env`.
   */
  async restart(signal: NodeJS.Signals = 'SIGKILL', env: NodeJS.ProcessEnv = this.env, startTimeoutMs = 30_000): Promise<void> {
    if (this.stopped) throw new ContainerdStartError('restart: this containerd was stopped');
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      await this.exited;
    }
    this.spawn(env);
    await this.waitReady(startTimeoutMs);
  }

  /**
   * Kills this instance's tasks, stops containerd (SIGTERM, then SIGKILL after graceMs), kills any
   * shim still serving it, unmounts what is left under its dir and removes the dir. Idempotent.
   */
  async stop(graceMs = 5_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const child = this.child;
    const running = child !== undefined && child.exitCode === null && child.signalCode === null;
    const shimSockets = running ? await this.removeTasks() : [];
    if (running && child) {
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const gone = await Promise.race([
        this.exited.then(() => true),
        new Promise<boolean>((r) => { timer = setTimeout(() => r(false), graceMs); }),
      ]);
      clearTimeout(timer);
      if (!gone) {
        child.kill('SIGKILL');
        await this.exited;
      }
    }
    // A shim whose task we could not delete still serves our address; it would outlive us.
    for (const pid of processesMentioning(this.grpcAddress)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* raced with its exit */ }
    }
    this.finalLog = this.logs();
    unmountUnder(this.dir);
    rmSync(this.dir, { recursive: true, force: true });
    for (const sock of shimSockets) {
      try { unlinkSync(sock); } catch { /* the shim removed it */ }
    }
    removeNewEmptyDirs(this.preexisting);
  }

  /** Force-deletes every task; returns the shim socket paths they used (all ours by construction). */
  private async removeTasks(): Promise<string[]> {
    const sockets: string[] = [];
    let namespaces: string[] = [];
    try {
      namespaces = lines((await this.ctr(['namespaces', 'ls', '-q'], { timeoutMs: 10_000 })).stdout);
    } catch {
      return sockets; // containerd is not answering; SIGKILL and the shim sweep handle it
    }
    for (const ns of namespaces) {
      let containers: string[] = [];
      try {
        containers = lines((await this.ctr(['containers', 'ls', '-q'], { namespace: ns, timeoutMs: 10_000 })).stdout);
      } catch { continue; }
      for (const id of containers) {
        // The shim socket name is sha256(<containerd address>/<namespace>/<id>) in every release here.
        sockets.push(path.join(SHIM_SOCKET_DIR, createHash('sha256').update(path.join(this.grpcAddress, ns, id)).digest('hex')));
        try { await this.ctr(['tasks', 'delete', '--force', id], { namespace: ns, timeoutMs: 15_000 }); } catch { /* no task */ }
      }
    }
    return sockets;
  }
}

function configText(version: ContainerdVersion, dir: string): string {
  const q = (s: string): string => JSON.stringify(s);
  const common = [
    `root = ${q(path.join(dir, 'root'))}`,
    `state = ${q(path.join(dir, 'state'))}`,
    `temp = ${q(path.join(dir, 'tmp'))}`,
    '',
    '[grpc]',
    `  address = ${q(path.join(dir, 'c.sock'))}`,
    '',
    '[ttrpc]',
    `  address = ${q(path.join(dir, 'c.sock.ttrpc'))}`,
    '',
  ];
  if (version === '2.1') {
    return [
      'version = 3',
      ...common,
      "[plugins.'io.containerd.internal.v1.opt']",
      `  path = ${q(path.join(dir, 'opt'))}`,
      // NRI is on by default in 2.x with a fixed socket, which two instances would fight over.
      "[plugins.'io.containerd.nri.v1.nri']",
      '  disable = true',
      // root here lacks CAP_SYS_RESOURCE, so a negative oom_score_adj fails with EACCES.
      "[plugins.'io.containerd.cri.v1.runtime']",
      '  restrict_oom_score_adj = true',
      '  netns_mounts_under_state_dir = true',
    ].join('\n');
  }
  const cri = ['[plugins."io.containerd.grpc.v1.cri"]', '  restrict_oom_score_adj = true'];
  if (version === '1.7') cri.push('  netns_mounts_under_state_dir = true');
  return [
    'version = 2',
    ...common,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(path.join(dir, 'opt'))}`,
    ...(version === '1.7' ? ['[plugins."io.containerd.nri.v1.nri"]', '  disable = true'] : []),
    ...cri,
  ].join('\n');
}

function normaliseTable(name: string): string {
  return name.replace(/\s+/g, '').replace(/'/g, '"');
}

function snapshotShared(): Set<string> {
  const seen = new Set<string>();
  const walk = (p: string, depth: number): void => {
    if (!existsSync(p)) return;
    seen.add(p);
    if (depth === 0) return;
    let st;
    try { st = lstatSync(p); } catch { return; }
    if (!st.isDirectory()) return;
    let names: string[] = [];
    try { names = readdirSync(p); } catch { return; }
    for (const n of names) walk(path.join(p, n), depth - 1);
  };
  for (const r of SHARED_ROOTS) walk(r, 3);
  return seen;
}

/** rmdir (never recursive) of directories under SHARED_ROOTS that are new and empty, deepest first. */
function removeNewEmptyDirs(preexisting: Set<string>): void {
  const dirs: string[] = [];
  const walk = (p: string, depth: number): void => {
    let st;
    try { st = lstatSync(p); } catch { return; }
    if (!st.isDirectory()) return;
    if (depth > 0) {
      let names: string[] = [];
      try { names = readdirSync(p); } catch { /* vanished */ }
      for (const n of names) walk(path.join(p, n), depth - 1);
    }
    if (!preexisting.has(p)) dirs.push(p);
  };
  for (const r of SHARED_ROOTS) walk(r, 3);
  for (const d of dirs) {
    try { rmdirSync(d); } catch { /* not empty: someone else uses it */ }
  }
}

/** Mount points under dir from /proc/self/mountinfo, deepest first. */
export function mountsUnder(dir: string): string[] {
  let info = '';
  try { info = readFileSync('/proc/self/mountinfo', 'utf8'); } catch { return []; }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m)
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m === dir || m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

function unmountUnder(dir: string): void {
  for (const m of mountsUnder(dir)) {
    // Lazy, so a busy mount still leaves the tree and rm -rf cannot reach into it.
    spawnSync('umount', ['-l', m], { stdio: 'ignore' });
  }
  const left = mountsUnder(dir);
  if (left.length > 0) throw new Error(`could not unmount ${left.join(', ')}`);
}

/** Pids whose command line contains `needle` as a whole argument (shims get `-address <sock>`). */
export function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (args.includes(needle)) pids.push(Number(name));
    } catch { /* exited */ }
  }
  return pids;
}

function lines(s: string): string[] {
  return s.split('\n').map((l) => l.trim()).filter(Boolean);
}

function tail(s: string, n: number): string {
  return s.split('\n').slice(-n).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
