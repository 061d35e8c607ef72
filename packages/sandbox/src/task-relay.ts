import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { UnavailableError } from './errors';

/**
 * The task relay in front of the task socket, so containerd's task connections outlive a sandboxer crash or restart.
 *
 * containerd keeps one ttrpc connection per task endpoint and parks a long-lived Wait on it for every container.
 * When the sandboxer dies that connection closes: containerd 2.x CRI reads the failed Wait as "container exited
 * (255)" and containerd 1.x runs the shim's delete and drops the task. So containerd is handed `<dir>/relay.sock`,
 * served by a separate small process that copies frames per connection to `<dir>/task.sock`, keeps containerd's
 * side open while the sandboxer is away, re-sends the calls that are safe to repeat and fails the others UNAVAILABLE.
 *
 * The relay is C, the `relay` mode of the thin shim binary (packages/shim/native/task-relay.c): it lives as long as
 * the node's pods, and a Node process would hold ~50 MB for that. This module finds that binary and starts it.
 */

export const RELAY_SOCKET = 'relay.sock';
export const RELAY_PID_FILE = 'relay.pid';

/** The relay cannot be found or started; the sandboxer then hands out its task socket itself. */
export class TaskRelayError extends UnavailableError {}

/** The program that serves the relay: the thin shim binary, whose `relay` mode it is. */
export function taskRelayBinaryName(kind: string): string {
  return `containerd-shim-kuasar-${kind}-v2`;
}

export interface FindTaskRelayOptions {
  env?: NodeJS.ProcessEnv;
  /** The sandboxer's own executable or script; the relay is looked for next to it first. */
  main?: string;
}

function executable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

/**
 * Where the relay binary is: `$KUASAR_TASK_RELAY` when it is a path; else next to the sandboxer (install.sh puts both
 * in `<prefix>/bin`, the build both in `dist/bin`); else `<repo>/dist/bin` for a dev bundle
 * (`packages/<kind>-sandboxer/dist/main.js`); else `$PATH`, where containerd finds the same binary as its shim.
 */
export function findTaskRelayBinary(kind: string, o: FindTaskRelayOptions = {}): string {
  const env = o.env ?? process.env;
  const name = taskRelayBinaryName(kind);
  const chosen = env.KUASAR_TASK_RELAY;
  if (chosen && chosen !== '1') {
    if (!path.isAbsolute(chosen) || !executable(chosen)) {
      throw new TaskRelayError(`KUASAR_TASK_RELAY=${chosen} is not an executable absolute path (use 0 to disable the relay)`);
    }
    return chosen;
  }
  const dirs: string[] = [];
  if (o.main) dirs.push(path.dirname(o.main), path.resolve(path.dirname(o.main), '../../../dist/bin'));
  dirs.push(...(env.PATH ?? '').split(':').filter((d) => path.isAbsolute(d)));
  for (const d of dirs) {
    const p = path.join(d, name);
    if (executable(p)) return p;
  }
  throw new TaskRelayError(`${name} (the task relay) is not next to the sandboxer nor on PATH; install it (scripts/install.sh) or build it (pnpm --filter @kuasar/shim build)`);
}

/** The relay's arguments for a sandboxer state dir: `relay.sock` in front of `task.sock`, pid in `relay.pid`. */
export function taskRelayArgs(dir: string, logLevel: string, reconnectMs?: number): string[] {
  return [
    'relay',
    '--listen', path.join(dir, RELAY_SOCKET),
    '--upstream', path.join(dir, 'task.sock'),
    '--pid-file', path.join(dir, RELAY_PID_FILE),
    '--log-level', logLevel,
    ...(reconnectMs === undefined ? [] : ['--reconnect-ms', String(reconnectMs)]),
  ];
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.setTimeout(2000, () => { s.destroy(); resolve(true); });
  });
}

/**
 * Makes sure a relay serves `<dir>/relay.sock`: reuses a live one (it outlived the previous sandboxer, which is its
 * point), else starts `command` detached in its own session so it survives this process. Returns the socket path.
 */
export async function ensureTaskRelay(dir: string, command: string[], logger: Logger, timeoutMs = 10_000): Promise<string> {
  const listen = path.join(dir, RELAY_SOCKET);
  if (await answers(listen)) {
    logger.info({ listen }, 'task relay already running; reusing it');
    return listen;
  }
  const [bin, ...args] = command;
  // Its JSON log lines go to our stderr, i.e. the unit's journal, next to ours.
  const child = spawn(bin!, args, { detached: true, stdio: ['ignore', 'ignore', 'inherit'] });
  child.on('error', () => undefined); // reported below as "did not start"
  child.unref();
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) break;
    if (await answers(listen)) {
      logger.info({ listen, relayPid: child.pid, bin }, 'task relay started');
      return listen;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new TaskRelayError(`task relay ${bin} did not start on ${listen} (exit ${child.exitCode ?? child.signalCode ?? 'none'})`);
}
