// `kuasarctl exec <sandbox-id> -- <cmd...>`: runs a command in a VM sandbox's guest, outside any container, through
// the vmm sandboxer's debug socket (<vmm state dir>/debug.sock; server and wire format: vmm-sandboxer's
// src/debug-socket.ts). The frame codec is repeated here so kuasarctl does not bundle the sandboxer.
import * as net from 'node:net';
import * as path from 'node:path';
import { KINDS, UsageError } from '../kinds';
import { parseOverrides, resolveLocation } from '../locations';
import { StateDirError, readSandboxes, type SandboxSummary } from '../sandboxes';
import { NotFoundError } from './sandboxes';

export const DEBUG_SOCKET = 'debug.sock';
const FRAME = { Stdin: 1, StdinEnd: 2, Started: 3, Stdout: 4, Stderr: 5, Exit: 6, Error: 7, Resize: 8 } as const;
const MAX_FRAME = 64 * 1024;

export interface ExecFlags {
  tty?: boolean;
  stdin?: boolean;
  dir?: string[];
}

export class ExecError extends Error {
  override readonly name = 'ExecError';
  readonly exitCode = 1;
}

function frame(type: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** The sandbox the id names (exact, else a unique prefix) in any kind's state dir. */
export function findSandbox(id: string, dirs: string[] = []): SandboxSummary {
  const overrides = parseOverrides(dirs, '--dir');
  const all: SandboxSummary[] = [];
  const unreadable: string[] = [];
  for (const kind of KINDS) {
    try {
      all.push(...readSandboxes(kind, resolveLocation(kind, {}, overrides).dir));
    } catch (err) {
      if (!(err instanceof StateDirError)) throw err;
      unreadable.push(err.message);
    }
  }
  const exact = all.filter((s) => s.id === id);
  const hits = exact.length > 0 ? exact : all.filter((s) => s.id.startsWith(id));
  if (hits.length === 0) {
    throw new NotFoundError(`sandbox ${JSON.stringify(id)} not found in any state dir (kuasarctl list shows what exists)${unreadable.length ? `; ${unreadable.join('; ')}` : ''}`);
  }
  if (hits.length > 1) throw new NotFoundError(`sandbox id ${JSON.stringify(id)} is ambiguous: ${hits.map((s) => `${s.kind}/${s.id}`).join(', ')}`);
  return hits[0]!;
}

function json(payload: Buffer): Record<string, unknown> {
  try {
    const v = JSON.parse(payload.toString('utf8')) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' ? 'does not exist: the vmm sandboxer is not running, or is older than kuasarctl exec'
          : err.code === 'ECONNREFUSED' ? 'refuses connections: the vmm sandboxer is not running'
            : err.code === 'EACCES' ? 'is not accessible: run kuasarctl exec as root'
              : err.message;
      reject(new ExecError(`debug socket ${socketPath} ${why}`));
    });
  });
}

export async function execCommand(id: string, command: string[], flags: ExecFlags): Promise<number> {
  if (command.length === 0) throw new UsageError('exec needs a command after the sandbox id (kuasarctl exec <sandbox-id> -- <cmd> [args...])');
  const sandbox = findSandbox(id, flags.dir);
  if (sandbox.kind !== 'vmm') {
    throw new ExecError(
      `sandbox ${sandbox.id} is a ${sandbox.kind} sandbox: kuasarctl exec runs commands only in VM (vmm) sandboxes; ` +
        'for a container of this pod use crictl exec <container-id> <cmd>',
    );
  }
  const socket = await connect(path.join(path.dirname(sandbox.dir), DEBUG_SOCKET));
  const tty = flags.tty === true;
  const withStdin = flags.stdin === true;
  const size = tty && process.stdout.isTTY ? { width: process.stdout.columns, height: process.stdout.rows } : {};
  socket.write(`${JSON.stringify({ sandbox: sandbox.id, argv: command, tty, stdin: withStdin, ...size })}\n`);
  return relay(socket, tty, withStdin);
}

/** Frames between the socket and this process's stdio; resolves with the remote exit code. */
function relay(socket: net.Socket, tty: boolean, withStdin: boolean): Promise<number> {
  const stdin = process.stdin;
  const raw = tty && withStdin && stdin.isTTY === true;
  const restore = () => {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
  };
  // the terminal must come back cooked whatever ends us; in raw mode ^C is a byte for the remote, not SIGINT
  const signals: [NodeJS.Signals, number][] = [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]];
  const onSignal = (sig: NodeJS.Signals) => {
    restore();
    socket.destroy(); // the sandboxer kills a command whose client went away
    process.exit(128 + (signals.find(([s]) => s === sig)?.[1] ?? 1));
  };
  for (const [s] of signals) process.on(s, onSignal);
  if (raw) stdin.setRawMode(true);
  // a full-screen program in the remote pty redraws for the new size only if it is told (SIGWINCH in the guest)
  const onResize = () => {
    if (!socket.destroyed) socket.write(frame(FRAME.Resize, Buffer.from(JSON.stringify({ width: process.stdout.columns, height: process.stdout.rows }))));
  };
  if (tty && process.stdout.isTTY) process.stdout.on('resize', onResize);

  return new Promise<number>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let settled = false;
    const done = (err: Error | undefined, code?: number) => {
      if (settled) return;
      settled = true;
      for (const [s] of signals) process.off(s, onSignal);
      process.stdout.off('resize', onResize);
      restore();
      if (withStdin) stdin.destroy();
      socket.destroy();
      // output frames went to stdout already; the exit code only once they are flushed
      process.stdout.write('', () => (err ? reject(err) : resolve(code ?? 0)));
    };
    const write = (out: NodeJS.WriteStream, bytes: Buffer) => {
      if (!out.write(bytes)) {
        socket.pause();
        out.once('drain', () => socket.resume());
      }
    };
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 5 && !settled) {
        const len = buf.readUInt32BE(1);
        if (len > MAX_FRAME) return done(new ExecError(`bad frame from the debug socket (${len} bytes)`));
        if (buf.length < 5 + len) break;
        const type = buf[0];
        const payload = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        if (type === FRAME.Stdout) write(process.stdout, payload);
        else if (type === FRAME.Stderr) write(process.stderr, payload);
        else if (type === FRAME.Exit) {
          const code = Number(json(payload).exitCode);
          return done(undefined, Number.isInteger(code) && code >= 0 && code <= 255 ? code : 255);
        } else if (type === FRAME.Error) {
          const e = json(payload);
          return done(new ExecError(`${typeof e.message === 'string' ? e.message : 'exec failed'}${typeof e.code === 'string' ? ` (${e.code})` : ''}`));
        }
        // Started: nothing to do; unknown types are skipped (a newer sandboxer)
      }
    });
    socket.on('error', (err) => done(new ExecError(`debug socket: ${err.message}`)));
    socket.on('close', () => done(new ExecError('the sandboxer closed the connection before the command exited')));

    if (!withStdin) return;
    stdin.on('data', (chunk: Buffer) => {
      for (let off = 0; off < chunk.length; off += MAX_FRAME) {
        if (!socket.write(frame(FRAME.Stdin, chunk.subarray(off, off + MAX_FRAME)))) {
          stdin.pause();
          socket.once('drain', () => stdin.resume());
        }
      }
    });
    stdin.on('end', () => {
      if (!settled) socket.write(frame(FRAME.StdinEnd));
    });
    stdin.on('error', () => undefined);
  });
}
