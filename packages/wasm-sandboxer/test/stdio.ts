// Real stdio for modules under test: FIFOs made with mkfifo (what containerd hands a task) and plain files.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const BUILD = path.join(__dirname, '..', 'testdata', 'build');
export const wasm = (name: string): string => path.join(BUILD, `${name}.wasm`);

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `wasm-runner-${prefix}-`));
}

let seq = 0;
function mkfifo(dir: string): string {
  const p = path.join(dir, `fifo-${process.pid}-${seq++}`);
  execFileSync('mkfifo', [p]);
  return p;
}

/** A FIFO the module writes to (blocking end `fd`) and the test reads to EOF. Close `fd` once the module exited. */
export interface OutputFifo {
  fd: number;
  /** everything written, resolved at EOF */
  data: Promise<Buffer>;
  close(): void;
  /** close the test's read end: the module's writes then fail with EPIPE */
  closeReader(): void;
}

export function outputFifo(dir: string): OutputFifo {
  const p = mkfifo(dir);
  const r = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const fd = fs.openSync(p, fs.constants.O_WRONLY);
  fs.unlinkSync(p);
  const sock = new net.Socket({ fd: r, readable: true, writable: false });
  const chunks: Buffer[] = [];
  const data = new Promise<Buffer>((resolve, reject) => {
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('end', () => resolve(Buffer.concat(chunks)));
    sock.on('error', reject);
  });
  let closed = false;
  return {
    fd,
    data,
    closeReader: () => sock.destroy(),
    close: () => {
      if (!closed) fs.closeSync(fd);
      closed = true;
    },
  };
}

/** A FIFO the module reads from (blocking end `fd`); the test writes with `write` and ends it with `end`. */
export interface InputFifo {
  fd: number;
  write(data: Buffer | string): Promise<void>;
  end(): void;
  close(): void;
}

export function inputFifo(dir: string): InputFifo {
  const p = mkfifo(dir);
  const nb = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const w = fs.openSync(p, fs.constants.O_WRONLY);
  const fd = fs.openSync(`/proc/self/fd/${nb}`, fs.constants.O_RDONLY); // blocking read end; a writer exists
  fs.closeSync(nb);
  fs.unlinkSync(p);
  let wOpen = true;
  let rOpen = true;
  return {
    fd,
    // fs.write runs on libuv's thread pool, so a full pipe blocks a pool thread, not the test's event loop
    write: (data) =>
      new Promise<void>((resolve, reject) => {
        const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
        const next = (off: number): void => {
          if (off >= buf.length) return resolve();
          fs.write(w, buf, off, buf.length - off, null, (err, n) => (err ? reject(err) : next(off + n)));
        };
        next(0);
      }),
    end: () => {
      if (wOpen) fs.closeSync(w);
      wOpen = false;
    },
    close: () => {
      if (wOpen) fs.closeSync(w);
      if (rOpen) fs.closeSync(fd);
      wOpen = rOpen = false;
    },
  };
}

export function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}
