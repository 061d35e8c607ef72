import * as fs from 'node:fs';
import { SysError, TimeoutError } from './errors';
import { closeFd, EAGAIN, EINTR, sock, sockaddrUn, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET, unixSocket, type MsgHdr } from './unix';

const SCM_RIGHTS = 1;
const MSG_CMSG_CLOEXEC = 0x40000000;
const CMSG_HDR = 16; // struct cmsghdr on x86_64: size_t len; int level; int type
const CONTROL_LEN = 256; // room for several fds, extra ones are closed

/**
 * The listening end of runc/crun `--console-socket`: the runtime connects and sends the pty
 * master over SCM_RIGHTS. Waits go through koffi's libuv poll, so the event loop never blocks.
 */
export class ConsoleSocket {
  readonly path: string;
  private fd: number;
  private pending: { cancel(err: Error): void } | undefined;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fd = fd;
  }

  /** Creates the socket file at path (which must not exist) and listens on it. */
  static listen(path: string): ConsoleSocket {
    const addr = sockaddrUn(path);
    if (path.startsWith('@')) throw new TypeError('console socket must be a filesystem path');
    const s = sock();
    const fd = unixSocket(SOCK_STREAM | SOCK_NONBLOCK);
    if (s.bind(fd, addr, addr.length) !== 0) {
      const err = new SysError('bind', s.errno(), path);
      closeFd(fd);
      throw err;
    }
    if (s.listen(fd, 4) !== 0) {
      const err = new SysError('listen', s.errno(), path);
      closeFd(fd);
      fs.rmSync(path, { force: true });
      throw err;
    }
    return new ConsoleSocket(path, fd);
  }

  /**
   * Accepts one connection and returns the first fd it carries (close-on-exec; the caller owns
   * and must close it). Rejects with TimeoutError after timeoutMs.
   */
  async receiveFd(timeoutMs = 10_000): Promise<number> {
    if (this.fd < 0) throw new Error('console socket is closed');
    if (this.pending) throw new Error('receiveFd is already waiting on this console socket');
    const deadline = Date.now() + timeoutMs;
    const conn = await this.accept(deadline);
    try {
      return await this.recvFd(conn, deadline);
    } finally {
      closeFd(conn);
    }
  }

  /** Stops listening, removes the socket file, and rejects a pending receiveFd. */
  close(): void {
    this.pending?.cancel(new Error('console socket closed'));
    if (this.fd >= 0) {
      closeFd(this.fd);
      this.fd = -1;
      fs.rmSync(this.path, { force: true });
    }
  }

  private async accept(deadline: number): Promise<number> {
    const s = sock();
    for (;;) {
      const conn = s.accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (conn >= 0) return conn;
      const errno = s.errno();
      if (errno !== EAGAIN && errno !== EINTR) throw new SysError('accept4', errno, this.path);
      await this.readable(this.fd, deadline);
    }
  }

  private async recvFd(conn: number, deadline: number): Promise<number> {
    const s = sock();
    for (;;) {
      const data = Buffer.alloc(4096);
      const control = Buffer.alloc(CONTROL_LEN);
      const msg: MsgHdr = {
        msg_name: null,
        msg_namelen: 0,
        msg_iov: [{ iov_base: data, iov_len: data.length }],
        msg_iovlen: 1,
        msg_control: control,
        msg_controllen: control.length,
        msg_flags: 0,
      };
      const n = s.recvmsg(conn, msg, MSG_CMSG_CLOEXEC);
      if (n < 0) {
        const errno = s.errno();
        if (errno !== EAGAIN && errno !== EINTR) throw new SysError('recvmsg', errno, this.path);
        await this.readable(conn, deadline);
        continue;
      }
      const fds = parseRights(control, msg.msg_controllen);
      if (fds.length > 0) {
        for (const extra of fds.slice(1)) closeFd(extra);
        return fds[0];
      }
      if (n === 0) throw new Error(`console socket ${this.path}: peer closed without sending a fd`);
      // Plain data without rights: keep reading until the fd arrives or the peer hangs up.
    }
  }

  private readable(fd: number, deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        reject(new TimeoutError(`no console fd on ${this.path} in time`));
        return;
      }
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        handle.close();
        this.pending = undefined;
        if (err) reject(err);
        else resolve();
      };
      const handle = sock().poll(fd, { readable: true, disconnect: true }, () => finish());
      const timer = setTimeout(() => finish(new TimeoutError(`no console fd on ${this.path} in time`)), remaining);
      this.pending = { cancel: finish };
    });
  }
}

function parseRights(control: Buffer, length: number): number[] {
  const fds: number[] = [];
  let off = 0;
  while (off + CMSG_HDR <= length) {
    const len = Number(control.readBigUInt64LE(off));
    if (len < CMSG_HDR || off + len > length) break;
    if (control.readInt32LE(off + 8) === SOL_SOCKET && control.readInt32LE(off + 12) === SCM_RIGHTS) {
      for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += (len + 7) & ~7;
  }
  return fds;
}

/**
 * Connects to a console socket and sends fd over SCM_RIGHTS with a short payload, as runc does.
 * Used to exercise ConsoleSocket without a runtime; blocking, but a local connect is immediate.
 */
export function sendFd(socketPath: string, fd: number, payload = 'kuasar'): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`fd must be a non-negative integer, got ${fd}`);
  // A stream socket drops ancillary data sent with zero bytes of payload.
  if (payload.length === 0) throw new TypeError('payload must not be empty');
  const addr = sockaddrUn(socketPath);
  const s = sock();
  const conn = unixSocket(SOCK_STREAM);
  try {
    if (s.connect(conn, addr, addr.length) !== 0) throw new SysError('connect', s.errno(), socketPath);
    const control = Buffer.alloc(24);
    control.writeBigUInt64LE(BigInt(CMSG_HDR + 4), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    control.writeInt32LE(fd, 16);
    const data = Buffer.from(payload);
    const msg: MsgHdr = {
      msg_name: null,
      msg_namelen: 0,
      msg_iov: [{ iov_base: data, iov_len: data.length }],
      msg_iovlen: 1,
      msg_control: control,
      msg_controllen: control.length,
      msg_flags: 0,
    };
    if (s.sendmsg(conn, msg, 0) < 0) throw new SysError('sendmsg', s.errno(), socketPath);
  } finally {
    closeFd(conn);
  }
}
