import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { UnavailableError } from './errors';

/**
 * Makes `socketPath` free to bind: a leftover socket from a crashed sandboxer is removed, but a socket some live
 * process still answers on is an error (two sandboxers on one socket would split containerd's calls), and so is any
 * non-socket file (never delete what we did not create).
 */
export async function prepareSocketPath(socketPath: string): Promise<void> {
  await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  let st;
  try {
    st = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new UnavailableError(`${socketPath} exists and is not a socket; refusing to replace it`);
  if (await answers(socketPath)) throw new UnavailableError(`another process is serving on ${socketPath}`);
  await fs.rm(socketPath, { force: true });
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socketPath);
    const done = (live: boolean) => {
      conn.destroy();
      resolve(live);
    };
    conn.once('connect', () => done(true));
    conn.once('error', () => done(false));
    conn.setTimeout(2000, () => done(true)); // a hung peer is still a live peer
  });
}

/**
 * Runs `bind` (which creates the socket file) with umask 077 so the socket is never reachable by others, then sets
 * mode 0600 and root ownership explicitly. Only root (containerd) may drive a sandboxer.
 */
export async function bindPrivate<T>(socketPath: string, bind: () => Promise<T>): Promise<T> {
  const old = process.umask(0o077);
  let result: T;
  try {
    result = await bind();
  } finally {
    process.umask(old);
  }
  await fs.chmod(socketPath, 0o600);
  if (process.getuid?.() === 0) await fs.chown(socketPath, 0, 0);
  return result;
}
