import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MNT_DETACH, MS_BIND, MS_PRIVATE, SysError, mount, umount2 } from '@kuasar/sys';
import { netnsPathProblem } from '@kuasar/sandbox';
import { isProcessAlive, mountPointsUnder, nsfsMountAt, readMountinfo, readNsPids, readProcessStat, type ProcessIdentity } from './proc';

/**
 * A pod's namespaces, held without a resident process where the kernel allows it:
 * ipc, uts and a private network namespace live on as nsfs bind mounts under <dir>/<id>/ns/ after the
 * short-lived process that created them exits. A pid namespace dies with its init, so a pod that shares
 * its PID namespace gets `catatonit -P` as that init (the "holder"), and its ns file is bind-mounted too.
 */

/** How the pod isolates one namespace kind (CRI NamespaceMode: POD, CONTAINER, NODE). */
export interface PodIsolation {
  /** 'pod': the netns at netnsPath, or a private one (loopback only) when there is none. 'node': host network. */
  network: 'pod' | 'node';
  /** 'pod': one pid namespace for all containers (needs a holder). 'container': each container its own. 'node': host. */
  pid: 'pod' | 'container' | 'node';
  ipc: 'pod' | 'node';
}

export interface PodNamespaceRequest {
  id: string;
  isolation: PodIsolation;
  /** The uts namespace's hostname; ignored with host network (the pod then shares the host's uts namespace). */
  hostname?: string;
  /** A network namespace made by the caller (CRI's CNI netns). The pod joins it; the pod never removes it. */
  netnsPath?: string;
}

export type NamespaceKind = 'ipc' | 'uts' | 'net' | 'pid';

/** What a pod's namespaces are, persisted as <pod dir>/namespaces.json. */
export interface PodNamespaces {
  id: string;
  isolation: PodIsolation;
  hostname?: string;
  /** Namespace files containers join. A kind that is absent is the host's (or, for pid 'container', per container). */
  paths: Partial<Record<NamespaceKind, string>>;
  /** Whether paths.net is our own bind mount (true) or the caller's netns (false). */
  ownNetns: boolean;
  holder?: ProcessIdentity;
  createdAt: string;
}

export type PodNamespaceErrorCode = 'invalid_argument' | 'setup_failed' | 'tool_missing';

export class PodNamespaceError extends Error {
  override readonly name = 'PodNamespaceError';
  constructor(
    readonly code: PodNamespaceErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Host programs the setup runs; absolute paths or names looked up in PATH. */
export interface PodTools {
  unshare: string;
  nsenter: string;
  catatonit: string;
  sh: string;
  hostname: string;
  ip: string;
}

export const DEFAULT_POD_TOOLS: PodTools = {
  unshare: 'unshare',
  nsenter: 'nsenter',
  catatonit: 'catatonit',
  sh: '/bin/sh',
  hostname: 'hostname',
  ip: 'ip',
};

/** The subset of a pino logger this module uses. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface PodNamespaceOptions {
  tools?: Partial<PodTools>;
  logger?: Logger;
  /** Limit for the setup processes. Default 10 s. */
  timeoutMs?: number;
}

const RECORD_FILE = 'namespaces.json';
const NS_DIR = 'ns';
// Same rule as the framework's sandbox ids: one path component, no surprises in mount tables.
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Where the ns files of the pod whose private dir is `dir` are mounted. */
export function podNamespaceDir(dir: string): string {
  return path.join(dir, NS_DIR);
}

function checkDir(dir: string): string {
  if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw new PodNamespaceError('invalid_argument', `pod dir must be an absolute path: ${String(dir)}`);
  return path.normalize(dir);
}

function validateRequest(req: PodNamespaceRequest): void {
  if (typeof req.id !== 'string' || !ID_RE.test(req.id)) throw new PodNamespaceError('invalid_argument', `invalid sandbox id ${JSON.stringify(req.id)}`);
  const { network, pid, ipc } = req.isolation ?? ({} as PodIsolation);
  if (network !== 'pod' && network !== 'node') throw new PodNamespaceError('invalid_argument', `invalid network mode ${String(network)}`);
  if (pid !== 'pod' && pid !== 'container' && pid !== 'node') throw new PodNamespaceError('invalid_argument', `invalid pid mode ${String(pid)}`);
  if (ipc !== 'pod' && ipc !== 'node') throw new PodNamespaceError('invalid_argument', `invalid ipc mode ${String(ipc)}`);
  if (req.hostname !== undefined && req.hostname !== '') {
    // sethostname(2) takes at most 64 bytes; a leading '-' would read as an option of hostname(1).
    if (Buffer.byteLength(req.hostname) > 64 || !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(req.hostname)) {
      throw new PodNamespaceError('invalid_argument', `invalid hostname ${JSON.stringify(req.hostname)}`);
    }
  }
  if (req.netnsPath !== undefined && req.netnsPath !== '') {
    if (network === 'node') throw new PodNamespaceError('invalid_argument', 'a host-network pod cannot have a netns path');
    const problem = netnsPathProblem(req.netnsPath);
    if (problem) throw new PodNamespaceError('invalid_argument', problem);
  }
}

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(argv: string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv as [string, ...string[]];
    // detached: the holder inherits this session; a terminal's ^C to the sandboxer must not reach it.
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const code = e.code === 'ENOENT' ? 'tool_missing' : 'setup_failed';
      reject(new PodNamespaceError(code, `cannot run ${file}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve({ stdout, stderr });
      else reject(new PodNamespaceError('setup_failed', `${argv.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}

// Runs inside the new ipc/uts(/net) namespaces, in the host mount namespace. Positional args, never
// interpolation: the hostname comes from the CRI request.
//   $1 hostname program, $2 hostname ('' = keep), $3 ip program ('' = no private netns),
//   $4 catatonit ('' = no holder), $5 unshare, $6 sh
// The holder must be the FIRST process forked after unshare(CLONE_NEWPID): that process becomes pid 1,
// so hostname/ip run before the inner unshare. `echo $!` prints the holder's pid in the host pid namespace.
const SETUP_SCRIPT = [
  'set -e',
  'if [ -n "$2" ]; then "$1" "$2"; fi',
  'if [ -n "$3" ]; then "$3" link set lo up; fi',
  'if [ -n "$4" ]; then exec "$5" --pid -- "$6" -c \'"$0" -P </dev/null >/dev/null 2>&1 & echo $!\' "$4"; fi',
].join('\n');

/**
 * Creates the pod's namespaces in `dir` (the pod's private state dir) and persists what it made there.
 * On failure everything made so far is torn down. Must run in the mount namespace the engine (runc) runs in,
 * since the ns files are mounts.
 */
export async function setUpPodNamespaces(dir: string, req: PodNamespaceRequest, opts: PodNamespaceOptions = {}): Promise<PodNamespaces> {
  dir = checkDir(dir);
  validateRequest(req);
  const tools = { ...DEFAULT_POD_TOOLS, ...opts.tools };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const nsDir = path.join(dir, NS_DIR);
  if (fs.existsSync(path.join(dir, RECORD_FILE))) {
    throw new PodNamespaceError('invalid_argument', `pod ${req.id} already has namespaces`);
  }
  const { isolation } = req;
  const privateUts = isolation.network === 'pod';
  const privateIpc = isolation.ipc === 'pod';
  const ownNetns = isolation.network === 'pod' && !req.netnsPath;
  const holderNeeded = isolation.pid === 'pod';
  const hostname = privateUts && req.hostname ? req.hostname : undefined;

  const record: PodNamespaces = {
    id: req.id,
    isolation: { ...isolation },
    ...(hostname !== undefined ? { hostname } : {}),
    paths: {},
    ownNetns,
    createdAt: new Date().toISOString(),
  };
  if (req.netnsPath) record.paths.net = req.netnsPath;

  try {
    fs.mkdirSync(nsDir, { recursive: true, mode: 0o700 });
    // A private mount of its own: ns mounts below must not propagate into peer mount namespaces, where
    // copies would keep the namespaces alive after our unmount (and where we could never clean them).
    mount(nsDir, nsDir, null, MS_BIND);
    mount(null, nsDir, null, MS_PRIVATE);

    const unshareArgs: string[] = [];
    const persist = (kind: NamespaceKind, flag: string): void => {
      const file = path.join(nsDir, kind);
      fs.writeFileSync(file, '', { mode: 0o444 });
      unshareArgs.push(`--${flag}=${file}`);
      record.paths[kind] = file;
    };
    if (privateIpc) persist('ipc', 'ipc');
    if (privateUts) persist('uts', 'uts');
    if (ownNetns) persist('net', 'net');

    if (unshareArgs.length > 0 || holderNeeded) {
      const argv: string[] = [];
      if (req.netnsPath) argv.push(tools.nsenter, `--net=${req.netnsPath}`, '--');
      argv.push(tools.unshare, ...unshareArgs, '--', tools.sh, '-c', SETUP_SCRIPT, 'kuasar-pod-setup');
      argv.push(tools.hostname, hostname ?? '', ownNetns ? tools.ip : '', holderNeeded ? tools.catatonit : '', tools.unshare, tools.sh);
      const { stdout } = await run(argv, timeoutMs);
      if (holderNeeded) {
        record.holder = identifyHolder(stdout);
        const file = path.join(nsDir, 'pid');
        fs.writeFileSync(file, '', { mode: 0o444 });
        mount(`/proc/${record.holder.pid}/ns/pid`, file, null, MS_BIND);
        record.paths.pid = file;
      }
    }
    writeRecord(dir, record);
    opts.logger?.info({ sandbox: req.id, paths: record.paths, holder: record.holder?.pid }, 'pod namespaces ready');
    return record;
  } catch (err) {
    // Keep the holder we may have started: teardown finds it in the partial record.
    writeRecordQuietly(dir, record);
    await tearDownPodNamespaces(dir, opts).catch((e: unknown) =>
      opts.logger?.warn({ sandbox: req.id, err: String(e) }, 'cleanup after failed pod setup failed'),
    );
    if (err instanceof PodNamespaceError) throw err;
    throw new PodNamespaceError('setup_failed', `pod ${req.id}: ${(err as Error).message}`, { cause: err });
  }
}

function identifyHolder(stdout: string): ProcessIdentity {
  const pid = Number(stdout.trim());
  if (!Number.isInteger(pid) || pid <= 0) throw new PodNamespaceError('setup_failed', `holder pid not reported (got ${JSON.stringify(stdout)})`);
  const stat = readProcessStat(pid);
  if (!stat || stat.state === 'Z') throw new PodNamespaceError('setup_failed', `holder ${pid} exited at once`);
  const nsPids = readNsPids(pid);
  if (nsPids.length < 2 || nsPids[nsPids.length - 1] !== 1) {
    throw new PodNamespaceError('setup_failed', `holder ${pid} is not pid 1 of a new pid namespace (NSpid ${nsPids.join(' ')})`);
  }
  return { pid, startTime: stat.startTime };
}

function writeRecord(dir: string, record: PodNamespaces): void {
  const file = path.join(dir, RECORD_FILE);
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(record, null, 2), { mode: 0o600 });
  fs.renameSync(tmp, file);
}

function writeRecordQuietly(dir: string, record: PodNamespaces): void {
  try {
    writeRecord(dir, record);
  } catch {
    // The directory itself may be what failed; teardown then works from the mount table alone.
  }
}

export function readPodNamespaces(dir: string): PodNamespaces | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(checkDir(dir), RECORD_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let rec: PodNamespaces;
  try {
    rec = JSON.parse(text) as PodNamespaces;
  } catch (err) {
    throw new PodNamespaceError('invalid_argument', `corrupt ${RECORD_FILE} in ${dir}: ${(err as Error).message}`);
  }
  if (rec === null || typeof rec !== 'object' || typeof rec.id !== 'string' || typeof rec.paths !== 'object' || rec.paths === null) {
    throw new PodNamespaceError('invalid_argument', `corrupt ${RECORD_FILE} in ${dir}`);
  }
  return rec;
}

export interface TearDownOptions extends PodNamespaceOptions {
  /** How long to wait for the killed holder to disappear. Default 5 s. */
  killWaitMs?: number;
}

/**
 * Kills the holder, unmounts every ns file and removes what setUpPodNamespaces created (the pod dir itself
 * only when nothing else is left in it). Idempotent, and works from the mount table even when the record is
 * missing or corrupt.
 */
export async function tearDownPodNamespaces(dir: string, opts: TearDownOptions = {}): Promise<void> {
  dir = checkDir(dir);
  const nsDir = path.join(dir, NS_DIR);
  const id = path.basename(dir);
  let record: PodNamespaces | undefined;
  try {
    record = readPodNamespaces(dir);
  } catch (err) {
    opts.logger?.warn({ sandbox: id, err: String(err) }, 'unreadable pod namespace record; tearing down from the mount table');
  }
  const errors: string[] = [];
  if (record?.holder && isProcessAlive(record.holder)) {
    // SIGKILL at once: as init of its pid namespace catatonit ignores SIGTERM (measured), and it holds
    // no state. Its death makes the kernel kill whatever is left in the namespace.
    try {
      process.kill(record.holder.pid, 'SIGKILL');
      await waitGone(record.holder, opts.killWaitMs ?? 5_000);
    } catch (err) {
      // Still unmount: the mounts must not outlive a holder that hangs in exit (the kernel waits until every
      // process of its pid namespace is reaped, and an unreaped zombie child of ours keeps it there).
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') errors.push((err as Error).message);
    }
  }
  for (const mp of mountPointsUnder(nsDir)) {
    try {
      umount2(mp, MNT_DETACH);
    } catch (err) {
      // EINVAL: no longer a mount point (raced with another teardown); ENOENT: already gone.
      if (!(err instanceof SysError && (err.code === 'EINVAL' || err.code === 'ENOENT'))) errors.push(String(err));
    }
  }
  if (errors.length > 0) throw new PodNamespaceError('setup_failed', `pod ${id}: teardown failed: ${errors.join('; ')}`);
  fs.rmSync(nsDir, { recursive: true, force: true });
  fs.rmSync(path.join(dir, RECORD_FILE), { force: true });
  fs.rmSync(path.join(dir, `${RECORD_FILE}.tmp`), { force: true });
  try {
    fs.rmdirSync(dir); // only if nothing else (e.g. the framework's sandbox.json) lives there
  } catch {
    // not empty or already gone
  }
  opts.logger?.info({ sandbox: id }, 'pod namespaces removed');
}

async function waitGone(id: ProcessIdentity, limitMs: number): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (isProcessAlive(id)) {
    if (Date.now() > deadline) throw new PodNamespaceError('setup_failed', `holder ${id.pid} survived SIGKILL for ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export type PodNamespaceState =
  | { state: 'alive'; record: PodNamespaces }
  | { state: 'dead'; record?: PodNamespaces; reason: string }
  | { state: 'absent' };

/**
 * Recovery: decides from the pod dir alone whether the pod's namespaces still work. Alive means every
 * ns file we made is still an nsfs mount, the holder (if any) is the same process, and the caller's
 * netns still exists.
 */
export function inspectPodNamespaces(dir: string): PodNamespaceState {
  dir = checkDir(dir);
  let record: PodNamespaces | undefined;
  try {
    record = readPodNamespaces(dir);
  } catch (err) {
    return { state: 'dead', reason: `unreadable record: ${(err as Error).message}` };
  }
  if (!record) {
    if (fs.existsSync(path.join(dir, NS_DIR))) return { state: 'dead', reason: `${RECORD_FILE} missing` };
    return { state: 'absent' };
  }
  const table = readMountinfo();
  const nsDir = path.join(dir, NS_DIR);
  for (const [kind, file] of Object.entries(record.paths)) {
    if (kind === 'net' && !record.ownNetns) {
      if (!fs.existsSync(file)) return { state: 'dead', record, reason: `netns ${file} is gone` };
      continue;
    }
    if (!file.startsWith(`${nsDir}/`) || !nsfsMountAt(file, table)) {
      return { state: 'dead', record, reason: `${kind} namespace file ${file} is not mounted` };
    }
  }
  if (record.holder && !isProcessAlive(record.holder)) {
    return { state: 'dead', record, reason: `holder ${record.holder.pid} is gone` };
  }
  return { state: 'alive', record };
}
