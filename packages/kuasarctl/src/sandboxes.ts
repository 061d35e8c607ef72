// Reads the sandboxers' state dirs the way an operator would, without the sandboxer: `<dir>/<id>/sandbox.json`
// (written by @kuasar/sandbox's SandboxStore) and `<dir>/tasks/<ns>/<id>/task.json` (the task core's TaskStore).
// Tolerant on purpose: a record from a newer or older sandboxer still lists with whatever fields it has.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Kind } from './kinds';

export const RECORD_FILE = 'sandbox.json';
// Names the framework keeps beside the sandbox dirs, and the id rule of containerd's identifiers.
const RESERVED = new Set(['tasks', 'task.sock']);
const SANDBOX_ID = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
const CRI_CONTAINER_NAME = 'io.kubernetes.cri.container-name';
const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';

export interface ContainerSummary {
  id: string;
  namespace: string;
  name: string;
  /** sandbox | container (CRI's container-type annotation), '' when unknown. */
  type: string;
  state: string;
  pid: number;
  createdAt: Date | undefined;
  bundle: string;
  execs: number;
}

export interface SandboxSummary {
  id: string;
  kind: Kind;
  /** created | ready | stopped as recorded, or 'unknown' / 'corrupt'. */
  state: string;
  pid: number;
  createdAt: Date | undefined;
  startedAt: Date | undefined;
  exit: { exitStatus: number; exitedAt: Date | undefined } | undefined;
  name: string;
  namespace: string;
  attempt: number;
  netnsPath: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  dir: string;
  /** Why the record could not be read fully. */
  error?: string;
  /** The parsed record as stored, for inspect. */
  record: unknown;
  containers: ContainerSummary[];
}

export class StateDirError extends Error {
  override readonly name = 'StateDirError';
  readonly exitCode = 1;
}

const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : 0);
const date = (v: unknown): Date | undefined => {
  if (typeof v !== 'string') return undefined;
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? undefined : d;
};
const strMap = (v: unknown): Record<string, string> =>
  Object.fromEntries(Object.entries(obj(v) ?? {}).filter((e): e is [string, string] => typeof e[1] === 'string'));

/** One sandbox.json, parsed leniently (sandbox.ts recordToJSON is the writer). */
export function summarizeRecord(kind: Kind, id: string, dir: string, data: unknown): SandboxSummary {
  const o = obj(data);
  const config = obj(o?.config);
  const metadata = obj(config?.metadata);
  const exit = obj(o?.exit);
  const state = str(o?.state) || 'unknown';
  const problems: string[] = [];
  if (!o) problems.push('record is not a JSON object');
  else {
    if (o.id !== undefined && o.id !== id) problems.push(`record id ${JSON.stringify(o.id)} does not match its dir`);
    if (o.version !== undefined && o.version !== 1) problems.push(`record version ${JSON.stringify(o.version)} is newer than this kuasarctl knows`);
  }
  return {
    id,
    kind,
    state,
    pid: num(o?.pid),
    createdAt: date(o?.createdAt),
    startedAt: date(o?.startedAt),
    exit: exit ? { exitStatus: num(exit.exitStatus), exitedAt: date(exit.exitedAt) } : undefined,
    name: str(metadata?.name),
    namespace: str(metadata?.namespace),
    attempt: num(metadata?.attempt),
    netnsPath: str(o?.netnsPath),
    labels: strMap(o?.labels),
    annotations: strMap(o?.annotations),
    dir,
    error: problems.length > 0 ? problems.join('; ') : undefined,
    record: data,
    containers: [],
  };
}

/** The task core's records, each with the sandbox it belongs to (from its bundle's CRI annotations). */
export function readContainers(stateDir: string): { sandboxId: string; container: ContainerSummary }[] {
  const root = path.join(stateDir, 'tasks');
  const out: { sandboxId: string; container: ContainerSummary }[] = [];
  let namespaces: string[];
  try {
    namespaces = fs.readdirSync(root);
  } catch {
    return out;
  }
  for (const ns of namespaces.sort()) {
    let ids: string[];
    try {
      ids = fs.readdirSync(path.join(root, ns));
    } catch {
      continue;
    }
    for (const id of ids.sort()) {
      let r: Record<string, unknown> | undefined;
      try {
        r = obj(JSON.parse(fs.readFileSync(path.join(root, ns, id, 'task.json'), 'utf8')));
      } catch {
        continue; // half-written or foreign: the task core reports those itself
      }
      if (!r) continue;
      const bundle = str(r.bundle);
      let annotations: Record<string, string> = {};
      try {
        annotations = strMap(obj(JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')))?.annotations);
      } catch {
        // bundle gone (container being deleted) or unreadable: the container still lists, unassigned
      }
      const processes = Array.isArray(r.processes) ? r.processes.map(obj).filter((p) => p !== undefined) : [];
      const init = processes.find((p) => p.execId === '');
      const type = annotations[CRI_CONTAINER_TYPE] ?? '';
      out.push({
        // a pod's own sandbox container (the pause/holder) names itself as the sandbox
        // quark's engine writes runsc's own id for the pod (`<pod>+`, prefix-free) into the annotation
        sandboxId: annotations[CRI_SANDBOX_ID]?.replace(/\+$/, '') ?? (type === 'sandbox' ? id : ''),
        container: {
          id,
          namespace: ns,
          name: annotations[CRI_CONTAINER_NAME] ?? '',
          type,
          state: r.paused === true ? 'paused' : str(init?.status) || 'unknown',
          pid: num(init?.pid),
          createdAt: date(r.createdAt),
          bundle,
          execs: processes.length - (init ? 1 : 0),
        },
      });
    }
  }
  return out;
}

/**
 * Every sandbox in one kind's state dir. A missing dir means no sandboxes (the sandboxer never ran); any other
 * read error of the dir itself is a StateDirError. A record that cannot be read lists as state 'corrupt'.
 */
export function readSandboxes(kind: Kind, stateDir: string): SandboxSummary[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(stateDir, { withFileTypes: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new StateDirError(`cannot read ${kind} state dir ${stateDir}: ${code ?? (err as Error).message}`);
  }
  const containers = readContainers(stateDir);
  const out: SandboxSummary[] = [];
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.isDirectory() || RESERVED.has(e.name) || !SANDBOX_ID.test(e.name)) continue;
    const dir = path.join(stateDir, e.name);
    let summary: SandboxSummary;
    try {
      summary = summarizeRecord(kind, e.name, dir, JSON.parse(fs.readFileSync(path.join(dir, RECORD_FILE), 'utf8')));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      summary = summarizeRecord(kind, e.name, dir, undefined);
      summary.state = code === 'ENOENT' ? 'unknown' : 'corrupt';
      summary.error = code === 'ENOENT' ? `no ${RECORD_FILE} (being created or removed)` : `${RECORD_FILE}: ${(err as Error).message}`;
    }
    summary.containers = containers.filter((c) => c.sandboxId === e.name).map((c) => c.container);
    out.push(summary);
  }
  return out;
}
