import { SysError } from './errors';
import { closeFd, sock, sockaddrUn, SOCK_DGRAM, unixSocket } from './unix';

/**
 * sd_notify(3): sends state (e.g. 'READY=1') as one datagram to $NOTIFY_SOCKET, a path or an
 * abstract '@name'. Returns false when no notify socket is configured, like sd_notify's 0.
 */
export function sdNotify(state: string, socketPath: string | undefined = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath) return false;
  if (state === '') throw new TypeError('sd_notify state must not be empty');
  const addr = sockaddrUn(socketPath);
  const data = Buffer.from(state);
  const s = sock();
  const fd = unixSocket(SOCK_DGRAM);
  try {
    if (s.sendto(fd, data, data.length, 0, addr, addr.length) < 0) throw new SysError('sendto', s.errno(), socketPath);
  } finally {
    closeFd(fd);
  }
  return true;
}
