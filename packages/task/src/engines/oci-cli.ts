// Engine that drives an OCI runtime binary (runc, crun, runsc) the way containerd-shim-runc-v2 does:
// global `--root <root>/<namespace> --log <bundle>/log.json --log-format json`, pid files in the bundle, errors
// taken from the last level=error entry of log.json. It keeps no state that cannot be re-derived from the
// ContainerRef, so containers survive a sandboxer restart without anything to restore here.
import { spawn, type StdioOptions } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync, statSync, openSync, readSync, closeSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, delimiter, join } from 'node:path';
import { listPids } from '@kuasar/sys';
import type { Logger } from 'pino';
import type { ContainerCreate, ContainerRef, Engine, EngineAny, EngineStatus, ProcessStdio } from '../engine';
import type { OciLinuxResources, OciProcess } from '../oci';
import { Code, TtrpcError } from '../errors';
import { cgroupDirsOfPid, readMetrics, readOomKillCount, type CgroupDirs } from '../cgroup-stats';
import { packCgroupMetrics, packRuntimeStats } from '../metrics';

export interface OciCliEngineOptions {
  /** binary name (looked up in PATH) or absolute path; default "runc" */
  binary?: string;
  /** state root; the namespace is appended (`<root>/<namespace>`); default /run/kuasar/<binary name> */
  root?: string;
  /** pass --systemd-cgroup */
  systemdCgroup?: boolean;
  /** more global flags for every call, e.g. ['--network=none'] for runsc (it re-reads its config per command) */
  globalArgs?: string[];
  /** timeout of each runtime call (create/exec get twice this); default 30 s */
  timeoutMs?: number;
  logger?: Logger;
}

/** How `OciCliEngine.run` calls the runtime. */
export interface OciRunOptions {
  stdio?: StdioOptions;
  timeoutMs?: number;
  /** global args are skipped (e.g. `--version`) */
  bare?: boolean;
}

const STATUSES: EngineStatus[] = ['created', 'running', 'paused', 'pausing', 'stopped'];

export class OciCliEngine implements Engine {
  readonly name: string;
  private readonly binaryOption: string;
  private resolved: string | undefined;
  private readonly root: string;
  private readonly systemdCgroup: boolean;
  private readonly extraArgs: string[];
  private readonly timeoutMs: number;
  private readonly logger: Logger | undefined;
  /** cgroup dirs per container, looked up once from the init pid (for the OOM poll and stats) */
  private readonly cgroups = new Map<string, CgroupDirs>();

  constructor(o: OciCliEngineOptions = {}) {
    this.binaryOption = o.binary ?? 'runc';
    this.name = basename(this.binaryOption);
    this.root = o.root ?? `/run/kuasar/${this.name}`;
    this.systemdCgroup = o.systemdCgroup ?? false;
    this.extraArgs = o.globalArgs ?? [];
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.logger = o.logger?.child({ engine: this.name });
  }

  /** Absolute path of the runtime binary; FAILED_PRECONDITION naming the path when it is missing. */
  binary(): string {
    if (this.resolved) return this.resolved;
    const b = this.binaryOption;
    if (b.includes('/')) {
      try {
        accessSync(b, constants.X_OK);
      } catch {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `OCI runtime binary ${b} does not exist or is not executable`);
      }
      this.resolved = b;
      return b;
    }
    const dirs = (process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter);
    for (const d of dirs) {
      const p = join(d, b);
      try {
        accessSync(p, constants.X_OK);
        this.resolved = p;
        return p;
      } catch {
        /* next */
      }
    }
    throw new TtrpcError(Code.FAILED_PRECONDITION, `OCI runtime binary "${b}" not found in PATH (${dirs.join(':')})`);
  }

  async create(c: ContainerRef, init: ContainerCreate): Promise<{ pid: number; helpers?: number[] }> {
    const pidFile = join(c.bundle, 'init.pid');
    const args = ['create', '--bundle', c.bundle, '--pid-file', pidFile];
    if (init.stdio.terminal) args.push('--console-socket', init.stdio.consoleSocket);
    if (init.options?.noPivotRoot) args.push('--no-pivot');
    if (init.options?.noNewKeyring) args.push('--no-new-keyring');
    args.push(c.id);
    rmQuiet(pidFile);
    await this.run(c, args, { stdio: stdioFor(init.stdio), timeoutMs: this.timeoutMs * 2 });
    const pid = readPidFile(pidFile);
    return this.name === 'runsc' ? { pid, helpers: runscHelpers(c.bundle, pid) } : { pid };
  }

  async start(c: ContainerRef): Promise<{ pid: number }> {
    await this.run(c, ['start', c.id]);
    return { pid: readPidFile(join(c.bundle, 'init.pid')) };
  }

  async exec(c: ContainerRef, execId: string, proc: OciProcess, stdio: ProcessStdio): Promise<{ pid: number }> {
    const pidFile = execPidFile(c, execId);
    // --process takes a file; it lives beside the pid file and goes away as soon as the runtime has read it
    const processFile = join(c.bundle, `.${execId}.process.json`);
    writeFileSync(processFile, JSON.stringify(proc), { mode: 0o600 });
    const args = ['exec', '--process', processFile, '--detach', '--pid-file', pidFile];
    if (stdio.terminal) args.push('--console-socket', stdio.consoleSocket);
    args.push(c.id);
    rmQuiet(pidFile);
    try {
      await this.run(c, args, { stdio: stdioFor(stdio), timeoutMs: this.timeoutMs * 2 });
    } finally {
      rmQuiet(processFile);
    }
    return { pid: readPidFile(pidFile) };
  }

  async kill(c: ContainerRef, execId: string | undefined, signal: number, all: boolean): Promise<void> {
    if (execId !== undefined) {
      // execs are signalled directly like runc-v2 does; the core never signals a process it has already reaped,
      // so the pid cannot have been reused
      const pid = readPidFile(execPidFile(c, execId));
      try {
        process.kill(pid, signal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') throw new TtrpcError(Code.NOT_FOUND, 'process already finished');
        throw err;
      }
      return;
    }
    const args = ['kill'];
    if (all) args.push('--all');
    args.push(c.id, String(signal));
    await this.run(c, args);
  }

  async delete(c: ContainerRef, opts: { force: boolean }): Promise<void> {
    this.cgroups.delete(key(c));
    const args = ['delete'];
    if (opts.force) args.push('--force');
    args.push(c.id);
    try {
      await this.run(c, args);
    } catch (err) {
      if (err instanceof TtrpcError && err.code === Code.NOT_FOUND) return;
      // runsc removes its state files even when its wait for the container's gofer times out, e.g. because the
      // gofer is a zombie of an init that reaps lazily (after a sandboxer restart the gofer is not ours to reap):
      // a container the runtime no longer knows is deleted, whatever the call said
      if (await this.forgotten(c)) {
        this.logger?.warn({ id: c.id, err: (err as Error).message }, 'runtime delete reported an error but removed the container');
        return;
      }
      throw err;
    }
  }

  /** True when the runtime no longer knows the container (its `state` answers NOT_FOUND). */
  private async forgotten(c: ContainerRef): Promise<boolean> {
    try {
      await this.run(c, ['state', c.id], { stdio: ['ignore', 'pipe', 'pipe'] });
      return false;
    } catch (err) {
      return err instanceof TtrpcError && err.code === Code.NOT_FOUND;
    }
  }

  async state(c: ContainerRef): Promise<{ status: EngineStatus; pid: number }> {
    const out = await this.run(c, ['state', c.id], { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = parseJson<{ status?: string; pid?: number }>(out, `${this.name} state`);
    const status = STATUSES.includes(s.status as EngineStatus) ? (s.status as EngineStatus) : 'unknown';
    return { status, pid: s.pid ?? 0 };
  }

  async pids(c: ContainerRef): Promise<number[]> {
    const out = await this.run(c, ['ps', '--format', 'json', c.id], { stdio: ['ignore', 'pipe', 'pipe'] });
    return parseJson<number[] | null>(out, `${this.name} ps`) ?? [];
  }

  async pause(c: ContainerRef): Promise<void> {
    await this.run(c, ['pause', c.id]);
  }

  async resume(c: ContainerRef): Promise<void> {
    await this.run(c, ['resume', c.id]);
  }

  async update(c: ContainerRef, resources: OciLinuxResources): Promise<void> {
    // a file rather than `--resources -`: crun reopens /dev/stdin, which fails on the socketpair Node gives a child
    const file = join(c.bundle, '.update-resources.json');
    writeFileSync(file, JSON.stringify(resources), { mode: 0o600 });
    try {
      await this.run(c, ['update', '--resources', file, c.id]);
    } finally {
      rmQuiet(file);
    }
  }

  async stats(c: ContainerRef): Promise<EngineAny> {
    if (this.name === 'runsc') {
      // gVisor's cgroups hold the sandbox, not the container: ask the runtime (one JSON line)
      const out = await this.run(c, ['events', '--stats', c.id], { stdio: ['ignore', 'pipe', 'pipe'] });
      const line = out.split('\n').find((l) => l.trim() !== '') ?? '{}';
      return packRuntimeStats(parseJson<{ data?: unknown }>(line, 'runsc events --stats').data);
    }
    return packCgroupMetrics(readMetrics(await this.cgroupDirs(c)));
  }

  async oomKills(c: ContainerRef): Promise<bigint | undefined> {
    if (this.name === 'runsc') return undefined;
    return readOomKillCount(await this.cgroupDirs(c));
  }

  /** `<binary> --version` first line, for Connect/logs */
  async version(): Promise<string> {
    const out = await this.run(undefined, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'], bare: true });
    return out.split('\n')[0] ?? '';
  }

  private async cgroupDirs(c: ContainerRef): Promise<CgroupDirs> {
    const cached = this.cgroups.get(key(c));
    if (cached) return cached;
    // the init pid file is cheaper than `state` and is what create wrote; fall back to asking the runtime
    let pid = 0;
    try {
      pid = readPidFile(join(c.bundle, 'init.pid'));
    } catch {
      pid = (await this.state(c)).pid;
    }
    const dirs = pid > 0 ? cgroupDirsOfPid(pid) : undefined;
    if (!dirs) throw new TtrpcError(Code.FAILED_PRECONDITION, `container ${c.id} has no running process to read cgroups from`);
    this.cgroups.set(key(c), dirs);
    return dirs;
  }

  private globalArgs(c: ContainerRef): string[] {
    // runc fails every command when it cannot open --log; a bundle containerd removed must not make the container
    // unreachable (it could never be killed or deleted again)
    const log = existsSync(c.bundle) ? ['--log', join(c.bundle, 'log.json'), '--log-format', 'json'] : [];
    const g = ['--root', join(this.root, c.namespace), ...log];
    if (this.systemdCgroup) g.push('--systemd-cgroup');
    return [...g, ...this.extraArgs];
  }

  /**
   * Run the runtime with this engine's global flags for `c`; resolves with stdout when captured. Every call has a
   * timeout. Public for engines built on this one (runsc's multi-container engine runs its own start/exec/wait).
   */
  run(c: ContainerRef | undefined, args: string[], o: OciRunOptions = {}): Promise<string> {
    const bin = this.binary();
    const argv = c && !o.bare ? [...this.globalArgs(c), ...args] : args;
    const logFile = c && existsSync(c.bundle) ? join(c.bundle, 'log.json') : undefined;
    const logOffset = logFile ? fileSize(logFile) : 0;
    const timeoutMs = o.timeoutMs ?? this.timeoutMs;
    const stdio = o.stdio ?? ['ignore', 'ignore', 'pipe'];
    const started = process.hrtime.bigint();
    return new Promise<string>((resolve, reject) => {
      const child = spawn(bin, argv, { stdio });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      if (child.stdin) {
        child.stdin.on('error', () => undefined);
        child.stdin.end();
      }
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new TtrpcError(Code.FAILED_PRECONDITION, `cannot run OCI runtime ${bin}: ${err.code ?? err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        this.logger?.debug({ args, code, signal, ms }, 'oci runtime call');
        if (timedOut) {
          reject(new TtrpcError(Code.DEADLINE_EXCEEDED, `${this.name} ${args[0]} timed out after ${timeoutMs} ms`));
          return;
        }
        if (code === 0) {
          resolve(stdout);
          return;
        }
        const reason = (logFile && lastLoggedError(logFile, logOffset)) || stderr.trim() || `exit status ${code ?? signal}`;
        reject(runtimeError(this.name, args[0] ?? '', reason, c && join(this.root, c.namespace, c.id)));
      });
    });
  }
}

/**
 * gVisor's gofer (and any other runsc-* helper of this bundle) is left to us by `runsc create`; runsc delete
 * waits for it to die, which a zombie never does, so the core must reap it. Found by parent pid and its
 * `--bundle=<bundle>` argument.
 */
function runscHelpers(bundle: string, initPid: number): number[] {
  const out: number[] = [];
  for (const pid of listPids()) {
    if (pid === initPid) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== process.pid) continue;
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv.includes(`--bundle=${bundle}`)) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

function key(c: ContainerRef): string {
  return `${c.namespace}/${c.id}`;
}

function execPidFile(c: ContainerRef, execId: string): string {
  return join(c.bundle, `${execId}.pid`);
}

// Zero-copy stdio: the runtime inherits the fds the core opened (FIFO write ends, an append-mode log file, the
// read end of the stdin pipe) and hands them on to the container process, so container output never passes
// through Node. Missing entries become /dev/null; in terminal mode the pty replaces all three.
function stdioFor(s: ProcessStdio): StdioOptions {
  if (s.terminal) return ['ignore', 'ignore', 'pipe'];
  return [s.stdin ?? 'ignore', s.stdout ?? 'ignore', s.stderr ?? 'ignore'];
}

export function readPidFile(path: string): number {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new TtrpcError(Code.NOT_FOUND, `pid file ${path} does not exist`);
  }
  const pid = Number.parseInt(text.trim(), 10);
  if (!Number.isInteger(pid) || pid <= 0) throw new TtrpcError(Code.INTERNAL, `pid file ${path} holds no pid: "${text.trim()}"`);
  return pid;
}

function rmQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* absent */
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** The message of the last `"level":"error"` entry written to log.json since `offset`. */
export function lastLoggedError(path: string, offset: number): string | undefined {
  if (!existsSync(path)) return undefined;
  let text: string;
  try {
    const fd = openSync(path, 'r');
    try {
      const size = statSync(path).size;
      const start = size >= offset ? offset : 0;
      const buf = Buffer.alloc(Math.min(size - start, 1 << 20));
      readSync(fd, buf, 0, buf.length, size - buf.length);
      text = buf.toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (!line.includes('"error"')) continue;
    try {
      const e = JSON.parse(line) as { level?: string; msg?: string };
      if (e.level === 'error' && e.msg) last = e.msg;
    } catch {
      /* partial line */
    }
  }
  return last;
}

/** Map a runtime's error text to a google.rpc code the way containerd's callers expect it. */
export function runtimeError(runtime: string, command: string, reason: string, stateDir?: string): TtrpcError {
  const msg = `${runtime} ${command} failed: ${reason}`;
  // crun reports an unknown container as a missing file or directory under its state dir `<root>/<id>`
  if (stateDir && reason.includes(stateDir) && /No such file or directory/.test(reason)) {
    return new TtrpcError(Code.NOT_FOUND, msg);
  }
  if (/does not exist|not found|no such container/i.test(reason) && !/config\.json|bundle|executable file/i.test(reason)) {
    return new TtrpcError(Code.NOT_FOUND, msg);
  }
  if (command === 'kill' && /not running|process already finished|no such process/i.test(reason)) {
    return new TtrpcError(Code.NOT_FOUND, `process already finished (${msg})`);
  }
  if (/already exists|is already in use/i.test(reason)) return new TtrpcError(Code.ALREADY_EXISTS, msg);
  if (/not running|is paused|not paused|is stopped|cannot (start|exec|pause|resume)|status is/i.test(reason)) {
    return new TtrpcError(Code.FAILED_PRECONDITION, msg);
  }
  return new TtrpcError(Code.UNKNOWN, msg);
}

function parseJson<T>(text: string, what: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new TtrpcError(Code.INTERNAL, `${what} printed invalid JSON: ${text.slice(0, 200)}`);
  }
}
