// Exit statuses of processes that are NOT our children, from the kernel's process events connector
// (netlink NETLINK_CONNECTOR, CN_IDX_PROC). A restarted sandboxer re-adopts container inits that were re-parented to
// init when the old process died: waitpid() cannot see them, but the kernel still announces each exit, with its wait
// status, to every listener in the initial namespaces (root, CAP_NET_ADMIN).
import * as os from 'node:os';
import { SysError } from './errors';
import type { WaitStatus } from './reaper';
import { EAGAIN, EINTR, SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET, sock } from './unix';
import { lazy } from './koffi';

const AF_NETLINK = 16;
const NETLINK_CONNECTOR = 11;
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const NLMSG_DONE = 3;
const NLMSG_ERROR = 2;
const NLMSG_HDRLEN = 16;
const CN_MSG_LEN = 20;
const PROC_CN_MCAST_LISTEN = 1;
const PROC_EVENT_EXIT = 0x80000000;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const ENOBUFS = 105;
const MSG_DONTWAIT = 0x40;
// proc_event sits after nlmsghdr + cn_msg; its union starts 16 bytes in (what, cpu, u64 timestamp).
const EV = NLMSG_HDRLEN + CN_MSG_LEN;

type PollHandle = ReturnType<ReturnType<typeof sock>['poll']>;

const extra = lazy((_k, lib) => ({
  setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
}));

/** Kernels from 6.6 filter by event type when the request carries `struct proc_input` (op + event type). */
function filtersByType(): boolean {
  const [maj, min] = os.release().split('.').map((x) => Number.parseInt(x, 10));
  return maj! > 6 || (maj === 6 && min! >= 6);
}

/**
 * Listens for the exits of the pids it watches. Subscribe BEFORE checking that a pid is alive: an exit between the
 * two is then still seen. An exit the socket had to drop (receive buffer overflow) is unknowable; `take()` then
 * returns undefined like for a pid that exited before the listener existed.
 */
export class ProcExitListener {
  private readonly watched = new Set<number>();
  private readonly exits = new Map<number, WaitStatus>();
  private readonly buf = Buffer.alloc(64 * 1024);
  private poll: PollHandle | undefined;
  private fd: number;
  /** Exit events the kernel dropped because the socket was full (ENOBUFS seen). */
  overflows = 0;
  /** Set when reading the socket failed: no exit is seen after that (callers fall back to "unknown"). */
  failed: SysError | undefined;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** Opens and subscribes the netlink socket; throws SysError when the kernel or privileges do not allow it. */
  static open(): ProcExitListener {
    const s = sock();
    const fd = s.socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (fd < 0) throw new SysError('socket(NETLINK_CONNECTOR)', s.errno());
    try {
      // a busy node ends thousands of threads a second; keep room for a slow event loop turn
      const size = Buffer.alloc(4);
      size.writeInt32LE(8 << 20);
      if (extra().setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, size, 4) !== 0) extra().setsockopt(fd, SOL_SOCKET, SO_RCVBUF, size, 4);
      const addr = Buffer.alloc(12);
      addr.writeUInt16LE(AF_NETLINK, 0);
      addr.writeUInt32LE(0, 4); // nl_pid 0: the kernel assigns one
      addr.writeUInt32LE(CN_IDX_PROC, 8);
      if (s.bind(fd, addr, addr.length) !== 0) throw new SysError('bind(CN_IDX_PROC)', s.errno());
      const filtered = filtersByType();
      const payload = filtered ? 8 : 4;
      const msg = Buffer.alloc(NLMSG_HDRLEN + CN_MSG_LEN + payload);
      msg.writeUInt32LE(msg.length, 0);
      msg.writeUInt16LE(NLMSG_DONE, 4);
      msg.writeUInt32LE(process.pid, 12);
      msg.writeUInt32LE(CN_IDX_PROC, 16);
      msg.writeUInt32LE(CN_VAL_PROC, 20);
      msg.writeUInt16LE(payload, 32);
      msg.writeUInt32LE(PROC_CN_MCAST_LISTEN, 36);
      if (filtered) msg.writeUInt32LE(PROC_EVENT_EXIT, 40);
      const kernel = Buffer.alloc(12);
      kernel.writeUInt16LE(AF_NETLINK, 0);
      if (s.sendto(fd, msg, msg.length, 0, kernel, kernel.length) !== msg.length) throw new SysError('sendto(PROC_CN_MCAST_LISTEN)', s.errno());
    } catch (err) {
      s.close(fd);
      throw err;
    }
    const l = new ProcExitListener(fd);
    // drained as events arrive, so the kernel buffer holds only one event loop turn's worth
    l.poll = s.poll(fd, { readable: true }, () => l.drain());
    l.poll.unref();
    return l;
  }

  watch(pid: number): void {
    // Events already queued are from before this call: read them first, so an earlier exit of a process that had
    // this pid (pid reuse) is never taken for this one.
    this.drain();
    this.watched.add(pid);
  }

  unwatch(pid: number): void {
    this.watched.delete(pid);
    this.exits.delete(pid);
  }

  get size(): number {
    return this.watched.size;
  }

  /** The wait status of pid's exit if the kernel announced it since watch(); reads pending events first. */
  take(pid: number): WaitStatus | undefined {
    this.drain();
    const st = this.exits.get(pid);
    if (st) this.unwatch(pid);
    return st;
  }

  /** Reads every pending event without blocking. Never throws: it runs from timers and poll callbacks. */
  drain(): void {
    if (this.fd < 0 || this.failed) return;
    const s = sock();
    for (;;) {
      const n = Number(s.recv(this.fd, this.buf, this.buf.length, MSG_DONTWAIT));
      if (n < 0) {
        const errno = s.errno();
        if (errno === EINTR) continue;
        if (errno === ENOBUFS) {
          this.overflows++;
          continue;
        }
        if (errno !== EAGAIN) {
          this.failed = new SysError('recv(NETLINK_CONNECTOR)', errno);
          this.poll?.close();
          this.poll = undefined;
        }
        return;
      }
      this.parse(n);
    }
  }

  close(): void {
    this.poll?.close();
    this.poll = undefined;
    if (this.fd >= 0) sock().close(this.fd);
    this.fd = -1;
    this.watched.clear();
    this.exits.clear();
  }

  private parse(n: number): void {
    for (let off = 0; off + NLMSG_HDRLEN <= n;) {
      const len = this.buf.readUInt32LE(off);
      if (len < NLMSG_HDRLEN || off + len > n) return;
      const type = this.buf.readUInt16LE(off + 4);
      if (type !== NLMSG_ERROR && len >= EV + 16 + 16 && this.buf.readUInt32LE(off + EV) === PROC_EVENT_EXIT) {
        const pid = this.buf.readInt32LE(off + EV + 16);
        const tgid = this.buf.readInt32LE(off + EV + 20);
        const raw = this.buf.readUInt32LE(off + EV + 24);
        // a thread's exit is not the process's; the leader's carries the group's status
        if (pid === tgid && this.watched.has(pid) && !this.exits.has(pid)) this.exits.set(pid, decode(pid, raw));
      }
      off += (len + 3) & ~3;
    }
  }
}

function decode(pid: number, raw: number): WaitStatus {
  const sig = raw & 0x7f;
  if (sig === 0) return { pid, status: (raw >> 8) & 0xff, exited: true, signal: null };
  return { pid, status: 128 + sig, exited: false, signal: sig };
}
