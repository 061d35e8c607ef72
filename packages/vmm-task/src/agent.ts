// The guest agent's request handlers: containers run by crun in the guest, their stdio relayed over
// protocol streams, exits and OOM kills reported as events through the session's replay ring.
import { RpcError, type Session } from '@kuasar/vmm-protocol';
import { Console } from './console';
import * as crun from './crun';
import { networkCommands, parseNetwork } from './network';
import * as p from './params';
import * as platform from './platform';
import { POD_CGROUP, podCgroupLimits, podCgroupWrites } from './pod-cgroup';
import { ProcessIo } from './stdio';

export const AGENT_VERSION = '0.1.0';
// After a process exits, its output may still be draining from the pipe; the exit event waits for
// EOF, but not forever (a daemonised grandchild can hold the pipe open).
const OUTPUT_GRACE_MS = 2000;
const OOM_POLL_MS = 2000;

interface Proc {
  containerId: string;
  execId?: string;
  pid: number;
  io: ProcessIo;
  exitStatus?: number;
  console?: Console;
}

interface Container {
  id: string;
  bundle: string;
  init: Proc;
  execs: Map<string, Proc>;
  started: boolean;
  cgroup?: string;
  oomKills: number;
}

/**
 * What `crun start` does for a guest spec, without a crun process (about 0.5 s under TCG): open the created init's
 * exec FIFO for writing, unlink it and write one byte, upon which the init execs the container's process. crun's
 * other start steps do not apply here (poststart hooks: the host strips hooks; sd-notify: never set), and its state
 * reads the same afterwards ("running" = no exec FIFO). false: no waiting init (it died, or crun changed how it
 * starts), so the caller runs `crun start` for crun's own error.
 */
function startThroughFifo(id: string): boolean {
  const fifo = crun.execFifo(id);
  let fd: number;
  try {
    fd = platform.openFifoWriter(fifo); // ENXIO without a reader: the init is gone
  } catch {
    return false;
  }
  try {
    platform.remove(fifo);
    return platform.write(fd, new Uint8Array(1)) === 1;
  } finally {
    platform.close(fd);
  }
}

export class Agent {
  private readonly containers = new Map<string, Container>();
  private readonly debugProcs = new Map<number, Proc>();
  private oomTimer: unknown;

  constructor(private readonly session: Session) {
    platform.mkdirs(crun.STATE_DIR);
    const h = (method: string, fn: (params: p.Params) => unknown) =>
      session.handle(method, (params) => fn(params) as Record<string, unknown> | Promise<Record<string, unknown>>);
    h('guest.info', () => this.info());
    h('guest.setTime', (q) => this.setTime(q));
    h('guest.setup', (q) => this.setup(q));
    h('guest.updatePod', (q) => this.updatePod(q));
    h('container.create', (q) => this.create(q));
    h('container.start', (q) => this.start(q));
    h('process.exec', (q) => this.exec(q));
    h('process.kill', (q) => this.kill(q));
    h('process.resize', (q) => this.resize(q));
    h('process.closeStdin', (q) => this.closeStdin(q));
    h('container.delete', (q) => this.delete(q));
    h('container.state', (q) => this.state(q));
    h('container.pids', (q) => this.pids(q));
    h('container.pause', (q) => this.simple('pause', q));
    h('container.resume', (q) => this.simple('resume', q));
    h('container.update', (q) => this.update(q));
    h('container.stats', (q) => this.stats(q));
    h('debug.exec', (q) => this.debugExec(q));
    h('debug.resize', (q) => this.debugResize(q));
  }

  // --- guest ------------------------------------------------------------------------------------

  info(): Record<string, unknown> {
    return {
      uptimeMs: uptimeMs(),
      kernelRelease: (platform.readText('/proc/sys/kernel/osrelease') ?? '').trim(),
      // Wall clock of the guest, so the host can check guest.setTime took (microvm has no RTC).
      timeMs: Date.now(),
      agentRssKb: statusField('/proc/self/status', 'VmRSS'),
      memAvailableKb: statusField('/proc/meminfo', 'MemAvailable'),
      containers: this.containers.size,
      podCgroup: podCgroupLimits(platform.readText),
    };
  }

  /** Pod-wide limits on the parent of every container's cgroup (see pod-cgroup.ts). */
  private updatePod(q: p.Params): Record<string, unknown> {
    const writes = podCgroupWrites(q.resources);
    platform.mkdirs(POD_CGROUP);
    for (const [file, value] of writes) {
      try {
        platform.writeText(`${POD_CGROUP}/${file}`, value);
      } catch (err) {
        throw new RpcError('INTERNAL', `cannot set ${file} = ${value} on the pod cgroup: ${(err as Error).message}`);
      }
    }
    return podCgroupLimits(platform.readText);
  }

  private async setTime(q: p.Params): Promise<Record<string, unknown>> {
    const ms = p.int(q, 'unixMs', 0, Number.MAX_SAFE_INTEGER);
    const r = await platform.run(['date', '-u', '-s', `@${Math.floor(ms / 1000)}`]);
    if (r.status !== 0) throw new RpcError('INTERNAL', `date -s failed with status ${crun.exitCode(r.status)}`);
    return {};
  }

  private async setup(q: p.Params): Promise<Record<string, unknown>> {
    const hostname = p.optionalStr(q, 'hostname');
    if (hostname !== undefined && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(hostname)) throw new RpcError('INVALID_ARGUMENT', `bad hostname ${JSON.stringify(hostname)}`);
    const hosts = p.optionalStr(q, 'hosts');
    const resolvConf = p.optionalStr(q, 'resolvConf');
    const shares = q.shares === undefined ? [] : (q.shares as unknown[]);
    if (!Array.isArray(shares)) throw new RpcError('INVALID_ARGUMENT', 'shares must be an array');
    const mounts = shares.map((s, i) => {
      const o = (s ?? {}) as p.Params;
      const tag = p.str(o, 'tag');
      if (!/^[A-Za-z0-9_.-]{1,31}$/.test(tag)) throw new RpcError('INVALID_ARGUMENT', `shares[${i}].tag is not a 9p tag`);
      const fs = o.fs === undefined || o.fs === null ? '9p' : o.fs;
      if (fs !== '9p' && fs !== 'virtiofs') throw new RpcError('INVALID_ARGUMENT', `shares[${i}].fs must be "9p" or "virtiofs"`);
      return { tag, mountPoint: p.absPath(o, 'mountPoint'), fs };
    });
    const net = q.network === undefined || q.network === null ? undefined : parseNetwork(q.network);

    if (hostname !== undefined) {
      platform.writeText('/proc/sys/kernel/hostname', hostname);
      platform.writeText('/etc/hostname', `${hostname}\n`);
    }
    if (hosts !== undefined) platform.writeText('/etc/hosts', hosts);
    if (resolvConf !== undefined) platform.writeText('/etc/resolv.conf', resolvConf);
    for (const m of mounts) {
      if (isMounted(m.mountPoint)) continue; // idempotent: a reconnecting host may repeat setup
      platform.mkdirs(m.mountPoint);
      const argv = m.fs === 'virtiofs'
        ? ['mount', '-t', 'virtiofs', m.tag, m.mountPoint]
        : ['mount', '-t', '9p', '-o', 'trans=virtio,version=9p2000.L,msize=262144', m.tag, m.mountPoint];
      await must(argv, `mount ${m.fs} ${m.tag}`);
    }
    if (net) for (const argv of networkCommands(net)) await must(argv, argv.join(' '), /File exists/);
    return {};
  }

  // --- containers -------------------------------------------------------------------------------

  private async create(q: p.Params): Promise<Record<string, unknown>> {
    const id = p.id(q, 'id');
    const bundle = p.absPath(q, 'bundle');
    const stdio = this.stdio(q);
    if (this.containers.has(id)) throw new RpcError('ALREADY_EXISTS', `container ${id} exists`);
    if (!platform.exists(`${bundle}/config.json`)) throw new RpcError('NOT_FOUND', `${bundle}/config.json does not exist`);
    // crun makes the pty only if the spec asks for one; a mismatch would leave the helper waiting.
    if (stdio.terminal && !specWantsTerminal(`${bundle}/config.json`)) throw new RpcError('INVALID_ARGUMENT', 'stdio.terminal is set but the bundle\'s process.terminal is not');
    const pidFile = `${crun.STATE_DIR}/${id}.pid`;
    const log = logFile(id);
    // Reserve the id while crun runs, so a concurrent create of the same id fails fast.
    const io = new ProcessIo(this.session, stdio);
    const init: Proc = { containerId: id, pid: 0, io };
    const c: Container = { id, bundle, init, execs: new Map(), started: false, oomKills: 0 };
    this.containers.set(id, c);
    try {
      platform.remove(pidFile);
      const socket = stdio.terminal ? await this.attachConsole(init, `${crun.STATE_DIR}/${id}`) : undefined;
      const status = await spawnAndWait(crun.createArgv(id, bundle, pidFile, log, socket), io, init.console !== undefined);
      if (status !== 0) throw new RpcError('INTERNAL', `crun create ${id}: ${crunError(log, status)}`);
      init.pid = readPid(pidFile);
    } catch (err) {
      init.console?.stop();
      io.destroy();
      this.containers.delete(id);
      throw err;
    }
    io.started();
    c.cgroup = crun.cgroupPath(platform.readText(`/proc/${init.pid}/cgroup`) ?? '');
    platform.onExit(init.pid, (st) => this.exited(init, st));
    this.ensureOomWatch();
    return { pid: init.pid };
  }

  private async start(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'id');
    if (c.started) throw new RpcError('FAILED_PRECONDITION', `container ${c.id} already started`);
    if (c.init.exitStatus !== undefined) throw new RpcError('FAILED_PRECONDITION', `container ${c.id} has exited`);
    if (!startThroughFifo(c.id)) {
      const log = logFile(c.id);
      const r = await platform.run(crun.startArgv(c.id, log));
      if (r.status !== 0) throw new RpcError('INTERNAL', `crun start ${c.id}: ${crunError(log, r.status)}`);
    }
    c.started = true;
    return { pid: c.init.pid };
  }

  private async exec(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'containerId');
    const execId = p.id(q, 'execId');
    const spec = p.obj(q, 'process');
    const stdio = this.stdio(q);
    const terminal = stdio.terminal || spec.terminal === true;
    stdio.terminal = terminal;
    if (c.execs.has(execId)) throw new RpcError('ALREADY_EXISTS', `exec ${execId} exists in ${c.id}`);
    if (c.init.exitStatus !== undefined) throw new RpcError('FAILED_PRECONDITION', `container ${c.id} has exited`);
    const base = `${crun.STATE_DIR}/${c.id}.exec.${execId}`;
    platform.writeText(`${base}.json`, JSON.stringify({ ...spec, terminal }));
    platform.remove(`${base}.pid`);
    const io = new ProcessIo(this.session, stdio);
    const proc: Proc = { containerId: c.id, execId, pid: 0, io };
    c.execs.set(execId, proc);
    const log = logFile(c.id);
    try {
      const socket = terminal ? await this.attachConsole(proc, base) : undefined;
      const status = await spawnAndWait(crun.execArgv(c.id, `${base}.json`, `${base}.pid`, log, socket), io, terminal);
      if (status !== 0) throw new RpcError('INTERNAL', `crun exec ${c.id}/${execId}: ${crunError(log, status)}`);
      proc.pid = readPid(`${base}.pid`);
    } catch (err) {
      proc.console?.stop();
      io.destroy();
      c.execs.delete(execId);
      throw err;
    } finally {
      platform.remove(`${base}.json`);
    }
    io.started();
    platform.onExit(proc.pid, (st) => this.exited(proc, st));
    return { pid: proc.pid };
  }

  private async kill(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'containerId');
    const execId = p.optionalId(q, 'execId');
    const sig = p.signal(q, 'signal');
    const all = p.bool(q, 'all');
    const proc = this.process(c, execId);
    if (all && !execId) {
      const log = logFile(c.id);
      const r = await platform.run(crun.killArgv(c.id, sig, true, log));
      if (r.status !== 0) throw new RpcError('INTERNAL', `crun kill --all ${c.id}: ${crunError(log, r.status)}`);
      return {};
    }
    if (proc.exitStatus !== undefined) throw new RpcError('NOT_FOUND', `process ${execId ?? c.id} has exited`);
    // Signalling the pid directly saves a crun fork (~0.1 s under TCG); the agent reaps this pid, so
    // it cannot have been reused while exitStatus is unset.
    platform.kill(proc.pid, sig);
    return {};
  }

  private resize(q: p.Params): Record<string, unknown> {
    const c = this.container(q, 'containerId');
    const proc = this.process(c, p.optionalId(q, 'execId'));
    const width = p.int(q, 'width', 0, 65535);
    const height = p.int(q, 'height', 0, 65535);
    if (!proc.console) throw new RpcError('FAILED_PRECONDITION', 'process has no terminal');
    proc.console.resize(width, height);
    return {};
  }

  /** Starts the terminal helper on the process's pipes; returns the console socket for crun. */
  private async attachConsole(proc: Proc, base: string): Promise<string> {
    const socket = `${base}.console.sock`;
    proc.console = await Console.start(base, proc.io.child, { socket });
    return socket;
  }

  private closeStdin(q: p.Params): Record<string, unknown> {
    const c = this.container(q, 'containerId');
    this.process(c, p.optionalId(q, 'execId')).io.closeStdin();
    return {};
  }

  private async delete(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'id');
    const force = p.bool(q, 'force');
    if (c.init.exitStatus === undefined && !force && c.started) throw new RpcError('FAILED_PRECONDITION', `container ${c.id} is running`);
    const log = logFile(c.id);
    const r = await platform.run(crun.deleteArgv(c.id, force || !c.started, log));
    if (r.status !== 0 && !/does not exist/.test(platform.readText(log) ?? '')) {
      throw new RpcError('INTERNAL', `crun delete ${c.id}: ${crunError(log, r.status)}`);
    }
    for (const proc of [c.init, ...c.execs.values()]) {
      proc.console?.stop();
      proc.io.destroy();
    }
    this.containers.delete(c.id);
    platform.remove(log);
    platform.remove(`${crun.STATE_DIR}/${c.id}.pid`);
    return {};
  }

  private async state(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'id');
    if (c.init.exitStatus !== undefined) return { status: 'stopped', pid: c.init.pid, exitStatus: crun.exitCode(c.init.exitStatus) };
    const log = logFile(c.id);
    const r = await platform.run(crun.stateArgv(c.id, log));
    if (r.status !== 0) throw new RpcError('INTERNAL', `crun state ${c.id}: ${crunError(log, r.status)}`);
    return crun.parseState(r.stdout) as unknown as Record<string, unknown>;
  }

  private pids(q: p.Params): Record<string, unknown> {
    const c = this.container(q, 'id');
    if (!c.cgroup) return { pids: c.init.exitStatus === undefined ? [c.init.pid] : [] };
    return { pids: crun.parseProcs(platform.readText(`${c.cgroup}/cgroup.procs`) ?? '') };
  }

  private async simple(cmd: 'pause' | 'resume', q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'id');
    const log = logFile(c.id);
    const r = await platform.run(crun.simpleArgv(cmd, c.id, log));
    if (r.status !== 0) throw new RpcError('FAILED_PRECONDITION', `crun ${cmd} ${c.id}: ${crunError(log, r.status)}`);
    return {};
  }

  private async update(q: p.Params): Promise<Record<string, unknown>> {
    const c = this.container(q, 'id');
    const resources = p.obj(q, 'resources');
    const file = `${crun.STATE_DIR}/${c.id}.resources.json`;
    platform.writeText(file, JSON.stringify(resources));
    const log = logFile(c.id);
    try {
      const r = await platform.run(crun.updateArgv(c.id, file, log));
      if (r.status !== 0) throw new RpcError('INTERNAL', `crun update ${c.id}: ${crunError(log, r.status)}`);
    } finally {
      platform.remove(file);
    }
    return {};
  }

  private stats(q: p.Params): Record<string, unknown> {
    const c = this.container(q, 'id');
    if (!c.cgroup) throw new RpcError('FAILED_PRECONDITION', `container ${c.id} has no cgroup`);
    const read = (f: string) => platform.readText(`${c.cgroup}/${f}`);
    const cpu = crun.parseKeyValues(read('cpu.stat') ?? '');
    const mem = crun.parseKeyValues(read('memory.stat') ?? '');
    const events = crun.parseKeyValues(read('memory.events') ?? '');
    return {
      cpuUsageUsec: cpu.usage_usec ?? 0,
      cpuUserUsec: cpu.user_usec ?? 0,
      cpuSystemUsec: cpu.system_usec ?? 0,
      memoryUsage: crun.parseLimit(read('memory.current')) ?? 0,
      memoryLimit: crun.parseLimit(read('memory.max')) ?? 0,
      memoryFile: mem.file ?? 0,
      memoryAnon: mem.anon ?? 0,
      oomKills: events.oom_kill ?? 0,
      pids: crun.parseLimit(read('pids.current')) ?? 0,
      pidsLimit: crun.parseLimit(read('pids.max')) ?? 0,
    };
  }

  // --- debug ------------------------------------------------------------------------------------

  private async debugExec(q: p.Params): Promise<Record<string, unknown>> {
    const argv = p.strArray(q, 'argv');
    if (argv.length === 0) throw new RpcError('INVALID_ARGUMENT', 'argv must not be empty');
    const stdio = this.stdio(q);
    stdio.terminal = stdio.terminal || p.bool(q, 'terminal');
    const io = new ProcessIo(this.session, stdio);
    // the exec id, not the pid, names the command in its exit event: guest pids wrap, a sequence number does not
    const execId = `debug-${debugSeq++}`;
    let pid: number;
    let cons: Console | undefined;
    try {
      if (stdio.terminal) {
        // The helper runs argv on its own pty; its exit status is argv's, so it stands for the process.
        cons = await Console.start(`${crun.STATE_DIR}/${execId}`, io.child, { argv });
        const width = p.optionalInt(q, 'width', 0, 65535);
        const height = p.optionalInt(q, 'height', 0, 65535);
        if (width !== undefined && height !== undefined) cons.resize(width, height);
        pid = cons.pid;
      } else {
        pid = platform.spawn(argv, io.child);
      }
    } catch (err) {
      cons?.stop();
      io.destroy();
      throw err instanceof RpcError ? err : new RpcError('INTERNAL', String((err as Error).message));
    }
    io.started();
    const proc: Proc = { containerId: '', execId, pid, io, console: cons };
    this.debugProcs.set(pid, proc);
    const exited = (st: number) => {
      this.debugProcs.delete(pid);
      this.exited(proc, st);
    };
    if (cons) void cons.exited.then(exited);
    else platform.onExit(pid, exited);
    return { pid, execId };
  }

  /** A window change of a debug command's terminal (kuasarctl exec -t). */
  private debugResize(q: p.Params): Record<string, unknown> {
    const pid = p.int(q, 'pid', 1, 0x7fffffff);
    const width = p.int(q, 'width', 0, 65535);
    const height = p.int(q, 'height', 0, 65535);
    const proc = this.debugProcs.get(pid);
    if (!proc) throw new RpcError('NOT_FOUND', `no debug process ${pid}`);
    if (!proc.console) throw new RpcError('FAILED_PRECONDITION', `debug process ${pid} has no terminal`);
    proc.console.resize(width, height);
    return {};
  }

  // --- exits and OOM ----------------------------------------------------------------------------

  private exited(proc: Proc, waitStatus: number): void {
    proc.exitStatus = waitStatus;
    const exitedAtMs = Date.now();
    const c = this.containers.get(proc.containerId);
    if (c && !proc.execId) this.checkOom(c);
    let sent = false;
    const send = () => {
      if (sent) return;
      sent = true;
      this.session.emit('exit', {
        containerId: proc.containerId,
        ...(proc.execId ? { execId: proc.execId } : {}),
        pid: proc.pid,
        status: crun.exitCode(waitStatus),
        exitedAtMs,
      });
    };
    const timer = platform.timers.setTimeout(send, OUTPUT_GRACE_MS);
    proc.io.outputDone.then(() => {
      platform.timers.clearTimeout(timer);
      send();
    });
  }

  private ensureOomWatch(): void {
    if (this.oomTimer !== undefined) return;
    const tick = () => {
      this.oomTimer = undefined;
      let live = 0;
      for (const c of this.containers.values()) {
        if (c.init.exitStatus !== undefined) continue;
        live++;
        this.checkOom(c);
      }
      if (live > 0) this.oomTimer = platform.timers.setTimeout(tick, OOM_POLL_MS);
    };
    this.oomTimer = platform.timers.setTimeout(tick, OOM_POLL_MS);
  }

  /** qjs has no inotify, so memory.events is polled; also checked at exit so an OOM precedes its exit event. */
  private checkOom(c: Container): void {
    if (!c.cgroup) return;
    const kills = crun.parseKeyValues(platform.readText(`${c.cgroup}/memory.events`) ?? '').oom_kill ?? 0;
    if (kills > c.oomKills) {
      c.oomKills = kills;
      this.session.emit('oom', { containerId: c.id });
    }
  }

  // --- lookups ----------------------------------------------------------------------------------

  /** Stream ids are unique per VM: one still open here belongs to another process. */
  private stdio(q: p.Params): p.Stdio {
    const stdio = p.stdio(q);
    for (const sid of [stdio.stdin, stdio.stdout, stdio.stderr]) {
      if (sid !== undefined && this.session.getStream(sid)) throw new RpcError('ALREADY_EXISTS', `stream ${sid} is in use`);
    }
    return stdio;
  }

  private container(q: p.Params, field: string): Container {
    const id = p.id(q, field);
    const c = this.containers.get(id);
    if (!c) throw new RpcError('NOT_FOUND', `container ${id} not found`);
    return c;
  }

  private process(c: Container, execId: string | undefined): Proc {
    if (!execId) return c.init;
    const e = c.execs.get(execId);
    if (!e) throw new RpcError('NOT_FOUND', `exec ${execId} not found in ${c.id}`);
    return e;
  }
}

function logFile(id: string): string {
  return `${crun.STATE_DIR}/${id}.log`;
}

function crunError(log: string, status: number): string {
  const msg = crun.logMessage(platform.readText(log) ?? '');
  return `${msg || 'failed'} (exit ${crun.exitCode(status)})`;
}

function readPid(file: string): number {
  const pid = Number((platform.readText(file) ?? '').trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new RpcError('INTERNAL', `crun wrote no pid to ${file}`);
  return pid;
}

/**
 * Runs crun and waits for it: with the process's pipes as its stdio (the container inherits them),
 * or, for a terminal, with /dev/null (the container gets the pty; crun's errors go to its log).
 */
function spawnAndWait(argv: string[], io: ProcessIo, terminal: boolean): Promise<number> {
  return new Promise((resolve, reject) => {
    let pid: number;
    let devnull = -1;
    try {
      if (terminal) devnull = platform.openNull(true);
      pid = platform.spawn(argv, terminal ? { stdin: devnull, stdout: devnull, stderr: devnull } : io.child);
    } catch (err) {
      reject(new RpcError('INTERNAL', (err as Error).message));
      return;
    } finally {
      platform.close(devnull);
    }
    platform.onExit(pid, resolve);
  });
}

function specWantsTerminal(configPath: string): boolean {
  try {
    const spec = JSON.parse(platform.readText(configPath) ?? '{}') as { process?: { terminal?: unknown } };
    return spec.process?.terminal === true;
  } catch {
    throw new RpcError('INVALID_ARGUMENT', `${configPath} is not JSON`);
  }
}

let debugSeq = 0;

async function must(argv: string[], what: string, ok?: RegExp): Promise<void> {
  const r = await platform.run(argv, { mergeStderr: true });
  const msg = r.stdout.trim();
  if (r.status !== 0 && !(ok && ok.test(msg))) throw new RpcError('INTERNAL', `${what} failed (exit ${crun.exitCode(r.status)}): ${msg}`);
}

function isMounted(mountPoint: string): boolean {
  const mounts = platform.readText('/proc/self/mounts') ?? '';
  return mounts.split('\n').some((l) => l.split(' ')[1] === mountPoint);
}

function uptimeMs(): number {
  return Math.round(Number((platform.readText('/proc/uptime') ?? '0').split(' ')[0]) * 1000);
}

function statusField(file: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(platform.readText(file) ?? '');
  return m ? Number(m[1]) : 0;
}
