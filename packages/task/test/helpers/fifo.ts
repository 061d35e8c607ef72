// Client-side FIFO handling the way containerd's cio does it: mkfifo, open outputs O_RDONLY|O_NONBLOCK and
// stdin for writing once the shim holds the read end.
import { execFileSync } from 'node:child_process';
import { constants, openSync, mkdtempSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ClientFifos {
  dir: string;
  stdin: string;
  stdout: string;
  stderr: string;
  /** everything read from stdout until EOF */
  stdoutText: Promise<string>;
  stderrText: Promise<string>;
  /** what stdout delivered so far (stdoutText resolves with all of it at EOF) */
  stdoutSoFar(): string;
  /** open stdin for writing (after Create/Exec, when the shim holds the reader), write, optionally close */
  writeStdin(data: string, close?: boolean): Promise<void>;
  /** close every client fd */
  close(): void;
}

function readAll(path: string, sockets: Socket[], chunks: Buffer[] = []): Promise<string> {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const s = new Socket({ fd, readable: true, writable: false });
  sockets.push(s);
  return new Promise((resolve) => {
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

export function clientFifos(name: string, o: { stdin?: boolean; stderr?: boolean } = {}): ClientFifos {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-fifo-'));
  const stdin = o.stdin ? join(dir, `${name}-stdin`) : '';
  const stdout = join(dir, `${name}-stdout`);
  const stderr = o.stderr === false ? '' : join(dir, `${name}-stderr`);
  for (const p of [stdin, stdout, stderr]) if (p) execFileSync('mkfifo', ['-m', '0700', p]);
  const sockets: Socket[] = [];
  const stdoutChunks: Buffer[] = [];
  const stdoutText = readAll(stdout, sockets, stdoutChunks);
  const stderrText = stderr ? readAll(stderr, sockets) : Promise.resolve('');
  let writer: Socket | undefined;
  return {
    dir, stdin, stdout, stderr, stdoutText, stderrText,
    stdoutSoFar: () => Buffer.concat(stdoutChunks).toString('utf8'),
    async writeStdin(data, close = true) {
      if (!writer) {
        writer = new Socket({ fd: openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK), readable: false, writable: true });
        sockets.push(writer);
      }
      await new Promise<void>((resolve) => writer!.write(data, () => resolve()));
      if (close) await new Promise<void>((resolve) => writer!.end(() => resolve()));
    },
    close() {
      for (const s of sockets) s.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
