// A process's terminal. QuickJS cannot hold a pty (no ioctl, no SCM_RIGHTS for crun's
// --console-socket), so the static helper kuasar-console (native/console.c), shipped next to the
// agent, owns the pty master and relays it to the process's stdin/stdout pipes, which ProcessIo
// streams like any other process's. Resizes reach it as "ROWS COLS" lines on a control FIFO.
import { RpcError } from '@kuasar/vmm-protocol';
import * as platform from './platform';

export const HELPER = 'kuasar-console';
// The helper only creates a FIFO and a socket before it is ready; under TCG that takes ~10 ms.
const READY_TIMEOUT_MS = 10_000;

/** socket: wait for crun's pty master on this path; argv: run argv on a new pty (debug shells). */
export type ConsoleMode = { socket: string } | { argv: string[] };

export class Console {
  /** The helper's raw wait status once it exited (in argv mode, the status of argv). */
  readonly exited: Promise<number>;
  private controlFd = -1;
  private running = true;
  private resolveExit: (status: number) => void = () => {};

  private constructor(
    readonly pid: number,
    private readonly controlPath: string,
    private readonly socketPath: string | undefined,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  /**
   * Starts the helper with the process's pipe ends as its stdin/stdout and waits until it listens.
   * `base` is a path prefix under the agent's state dir for the FIFO (and socket).
   */
  static async start(base: string, stdio: { stdin: number; stdout: number }, mode: ConsoleMode): Promise<Console> {
    const helper = `${platform.agentDir()}/${HELPER}`;
    if (!platform.exists(helper)) throw new RpcError('UNIMPLEMENTED', `terminal processes need ${helper}, which this guest does not have`);
    const control = `${base}.console.ctl`;
    const socket = 'socket' in mode ? mode.socket : undefined;
    const argv = socket !== undefined ? [helper, 'socket', control, socket] : [helper, 'exec', control, ...(mode as { argv: string[] }).argv];
    const status = platform.pipe();
    let pid: number;
    try {
      pid = platform.spawn(argv, { stdin: stdio.stdin, stdout: stdio.stdout, stderr: status[1] });
    } catch (err) {
      platform.close(status[0]);
      throw new RpcError('INTERNAL', `${HELPER}: ${(err as Error).message}`);
    } finally {
      platform.close(status[1]);
    }
    const c = new Console(pid, control, socket);
    platform.onExit(pid, (st) => c.gone(st));
    try {
      await c.waitReady(status[0]);
      c.controlFd = platform.openFifoWriter(control);
    } catch (err) {
      c.stop();
      throw err instanceof RpcError ? err : new RpcError('INTERNAL', `${HELPER}: ${(err as Error).message}`);
    }
    return c;
  }

  /** Width and height in character cells, as containerd's ResizePty gives them. */
  resize(width: number, height: number): void {
    if (!this.running) throw new RpcError('FAILED_PRECONDITION', 'the terminal is gone (its process exited)');
    const n = platform.write(this.controlFd, utf8(`${height} ${width}\n`));
    // EAGAIN: 64 KiB of unread resizes means the helper is stuck; the next resize carries the size.
    if (n < 0 && -n !== platform.EAGAIN) throw new RpcError('FAILED_PRECONDITION', `resize: errno ${-n}`);
  }

  /** Ends the terminal (the processes on it get SIGHUP when the master closes). */
  stop(): void {
    if (this.running) platform.kill(this.pid, 9);
    this.closeControl();
  }

  private closeControl(): void {
    platform.close(this.controlFd);
    this.controlFd = -1;
  }

  private gone(status: number): void {
    this.running = false;
    this.closeControl();
    // The helper removes both itself; not when it was SIGKILLed.
    platform.remove(this.controlPath);
    if (this.socketPath) platform.remove(this.socketPath);
    this.resolveExit(status);
  }

  /** Reads the helper's stderr: "ready\n" first, then any error line it prints, logged until EOF. */
  private waitReady(fd: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const buf = new ArrayBuffer(1024);
      let text = '';
      let ready = false;
      const timer = platform.timers.setTimeout(() => fail(`not ready after ${READY_TIMEOUT_MS} ms`), READY_TIMEOUT_MS);
      const fail = (why: string) => {
        if (ready) return;
        ready = true;
        platform.timers.clearTimeout(timer);
        reject(new RpcError('INTERNAL', `${HELPER} ${why}${text.trim() ? `: ${text.trim()}` : ''}`));
      };
      platform.onReadable(fd, () => {
        const n = platform.read(fd, buf, buf.byteLength);
        if (n < 0 && (-n === platform.EAGAIN || -n === platform.EINTR)) return;
        if (n <= 0) {
          platform.onReadable(fd, null);
          platform.close(fd);
          fail('exited before it was ready');
          return;
        }
        text += String.fromCharCode(...new Uint8Array(buf, 0, n));
        if (!ready && text.startsWith('ready\n')) {
          ready = true;
          text = text.slice(6);
          platform.timers.clearTimeout(timer);
          resolve();
        }
        if (ready && text.includes('\n')) {
          platform.log('warn', 'terminal helper', { pid: this.pid, msg: text.trim() });
          text = '';
        }
      });
    });
  }
}

function utf8(ascii: string): Uint8Array {
  const b = new Uint8Array(ascii.length);
  for (let i = 0; i < ascii.length; i++) b[i] = ascii.charCodeAt(i);
  return b;
}
