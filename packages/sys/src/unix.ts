import { SysError } from './errors';
import { lazy } from './koffi';

// Linux x86_64 values.
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const EAGAIN = 11;
export const EINTR = 4;
const SUN_PATH_MAX = 108;

/** libc socket calls shared by the console socket, sd_notify and peer credentials. */
export const sock = lazy((k, lib) => {
  // Anonymous types: koffi's type names are process-wide, and a second copy of this module
  // (another bundle, jest's per-file registry) would otherwise fail with a duplicate name.
  const iovec = k.struct({ iov_base: 'void *', iov_len: 'size_t' });
  const msghdr = k.struct({
    msg_name: 'void *',
    msg_namelen: 'uint32_t',
    msg_iov: k.pointer(iovec),
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  return {
    errno: () => k.errno(),
    poll: k.node.poll,
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
    listen: lib.func('int listen(int fd, int backlog)'),
    accept4: lib.func('int accept4(int fd, void *addr, void *len, int flags)'),
    connect: lib.func('int connect(int fd, const void *addr, uint32_t len)'),
    sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)'),
    recv: lib.func('long recv(int fd, _Out_ void *buf, size_t len, int flags)'),
    sendmsg: lib.func('sendmsg', 'long', ['int', k.pointer(msghdr), 'int']),
    recvmsg: lib.func('recvmsg', 'long', ['int', k.inout(k.pointer(msghdr)), 'int']),
    getsockopt: lib.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)'),
    close: lib.func('int close(int fd)'),
  };
});

export interface MsgHdr {
  msg_name: null;
  msg_namelen: number;
  msg_iov: { iov_base: Buffer; iov_len: number }[];
  msg_iovlen: number;
  msg_control: Buffer | null;
  msg_controllen: number;
  msg_flags: number;
}

/**
 * struct sockaddr_un for a path, or for an abstract name when it starts with '@'
 * (leading NUL, no terminator, length counts only the used bytes).
 */
export function sockaddrUn(name: string): Buffer {
  const abstract = name.startsWith('@');
  const bytes = Buffer.from(abstract ? name.slice(1) : name);
  if (bytes.length === 0) throw new TypeError('unix socket address must not be empty');
  if (!abstract && bytes.includes(0)) throw new TypeError('unix socket path must not contain NUL');
  const used = abstract ? 1 + bytes.length : bytes.length + 1;
  if (used > SUN_PATH_MAX) {
    throw new RangeError(`unix socket address is ${used} bytes, the limit is ${SUN_PATH_MAX}: ${name}`);
  }
  const addr = Buffer.alloc(2 + used);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, abstract ? 3 : 2);
  return addr;
}

/** Creates a unix socket or throws SysError. */
export function unixSocket(type: number): number {
  const s = sock();
  const fd = s.socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError('socket', s.errno());
  return fd;
}

export function closeFd(fd: number): void {
  sock().close(fd);
}
