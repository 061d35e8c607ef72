// Process identity from /proc: a pid plus its start time names one process even after pid reuse. Recovery in every
// sandboxer decides from this and not from anything kept in memory, since it is what survives a restart.
import * as fs from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot): with the pid it names one process, even after pid reuse. */
  startTime: string;
}

/** Start time and state of a process, or undefined when it does not exist. */
export function readProcessStat(pid: number): { startTime: string; state: string } | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may hold spaces and parentheses: fields resume after the LAST ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field 22 is rest[19].
  const state = rest[0];
  const startTime = rest[19];
  if (state === undefined || startTime === undefined) return undefined;
  return { startTime, state };
}

// Z (zombie) and X (dead) have exited: they only wait to be reaped, and pid 1 here reaps orphans lazily (a zombie of
// its can last seconds), so kill(pid, 0) would still call them alive.
const running = (state: string): boolean => state !== 'Z' && state !== 'X';

/**
 * True when pid names a process that has not exited: it exists and is neither a zombie nor dead. The one liveness
 * check to use instead of kill(pid, 0). False for a pid that is not a positive integer.
 */
export function isRunning(pid: number): boolean {
  const stat = readProcessStat(pid);
  return stat !== undefined && running(stat.state);
}

/** True when the process runs (a zombie is dead: it only waits to be reaped) and is the same one we recorded. */
export function isProcessAlive(id: ProcessIdentity): boolean {
  const stat = readProcessStat(id.pid);
  return stat !== undefined && running(stat.state) && stat.startTime === id.startTime;
}

/**
 * Zombie children of this process. As subreaper a sandboxer inherits orphans nobody tracks (runtime helpers such as
 * runsc's, leftovers of host-pid containers); it reaps the ones it sees twice in a row, since Node reaps the
 * children it spawned itself at once.
 */
/** Every pid in /proc now (processes come and go while the caller looks at them); [] when /proc is unreadable. */
export function listPids(): number[] {
  let names: string[];
  try {
    names = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  return names.map(Number).filter((pid) => Number.isInteger(pid) && pid > 0);
}

export function zombieChildren(): Set<number> {
  return new Set(zombieChildIdentities().keys());
}

/**
 * Zombie children of this process with their start times. A sweep that reaps only zombies seen twice must compare
 * both: a pid freed by libuv's reaping and reused within one period (pid_max wraps) is a different zombie, possibly
 * libuv's own child again, which must not be reaped in its place.
 */
export function zombieChildIdentities(): Map<number, string> {
  const out = new Map<number, string>();
  for (const pid of listPids()) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z' && Number(f[1]) === process.pid && f[19] !== undefined) out.set(pid, f[19]);
    } catch {
      /* gone */
    }
  }
  return out;
}
