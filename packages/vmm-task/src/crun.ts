// crun command lines and output parsing; pure, so they are unit-tested on Node.

export const CRUN_ROOT = '/run/crun';
/** Agent state on the guest's tmpfs: pid files, exec process specs, crun logs. */
export const STATE_DIR = '/run/kuasar';

const base = (log: string) => ['crun', '--root', CRUN_ROOT, '--log', log];

const consoleArgs = (socket?: string) => (socket ? ['--console-socket', socket] : []);

export function createArgv(id: string, bundle: string, pidFile: string, log: string, consoleSocket?: string): string[] {
  return [...base(log), 'create', '--bundle', bundle, '--pid-file', pidFile, ...consoleArgs(consoleSocket), id];
}

/** The FIFO a created container's init blocks on until started (crun's <root>/<id>/exec.fifo). */
export function execFifo(id: string): string {
  return `${CRUN_ROOT}/${id}/exec.fifo`;
}

export function startArgv(id: string, log: string): string[] {
  return [...base(log), 'start', id];
}

export function execArgv(id: string, processFile: string, pidFile: string, log: string, consoleSocket?: string): string[] {
  // --detach: crun returns once the process runs; the process is re-parented to the agent (PID 1),
  // which reaps it and so learns its real exit status.
  return [...base(log), 'exec', '--detach', '--process', processFile, '--pid-file', pidFile, ...consoleArgs(consoleSocket), id];
}

export function killArgv(id: string, signal: number, all: boolean, log: string): string[] {
  return [...base(log), 'kill', ...(all ? ['--all'] : []), id, String(signal)];
}

export function deleteArgv(id: string, force: boolean, log: string): string[] {
  return [...base(log), 'delete', ...(force ? ['--force'] : []), id];
}

export function stateArgv(id: string, log: string): string[] {
  return [...base(log), 'state', id];
}

export function simpleArgv(cmd: 'pause' | 'resume', id: string, log: string): string[] {
  return [...base(log), cmd, id];
}

export function updateArgv(id: string, resourcesFile: string, log: string): string[] {
  return [...base(log), 'update', '--resources', resourcesFile, id];
}

/** A raw wait(2) status as a shell-style exit code: the code, or 128 + signal. */
export function exitCode(waitStatus: number): number {
  const sig = waitStatus & 0x7f;
  return sig === 0 ? (waitStatus >> 8) & 0xff : 128 + sig;
}

export type ContainerStatus = 'created' | 'running' | 'paused' | 'stopped';

export function parseState(json: string): { status: ContainerStatus; pid: number } {
  const s = JSON.parse(json) as { status?: string; pid?: number };
  const status = (['created', 'running', 'paused', 'stopped'] as const).find((x) => x === s.status) ?? 'stopped';
  return { status, pid: typeof s.pid === 'number' ? s.pid : 0 };
}

/** crun's log (one JSON or text line per message) as one readable message. */
export function logMessage(log: string): string {
  const lines = log
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      try {
        const j = JSON.parse(l) as { msg?: string };
        return typeof j.msg === 'string' ? j.msg : l;
      } catch {
        return l;
      }
    });
  return lines.slice(-5).join('; ');
}

/** The cgroup v2 path of a process from /proc/<pid>/cgroup ("0::/path"). */
export function cgroupPath(procCgroup: string): string | undefined {
  for (const line of procCgroup.split('\n')) if (line.startsWith('0::')) return `/sys/fs/cgroup${line.slice(3) === '/' ? '' : line.slice(3)}`;
  return undefined;
}

/** "key value" lines (memory.events, cpu.stat, memory.stat) as numbers. */
export function parseKeyValues(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out[k] = Number(v);
  }
  return out;
}

/** "max" or a number, as cgroup files write it. */
export function parseLimit(text: string | undefined): number | undefined {
  const t = text?.trim();
  if (!t) return undefined;
  if (t === 'max') return Number.MAX_SAFE_INTEGER;
  return /^\d+$/.test(t) ? Number(t) : undefined;
}

export function parseProcs(text: string): number[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\d+$/.test(l))
    .map(Number);
}
