import type { Socket } from 'node:net';
import { SysError } from './errors';
import { sock, SOL_SOCKET } from './unix';

const SO_PEERCRED = 17;

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Credentials of the process at the other end of a connected unix socket (SO_PEERCRED), as
 * recorded by the kernel at connect() time.
 */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new TypeError('socket has no file descriptor (not connected, or not a unix socket)');
  const s = sock();
  const cred = new Int32Array(3); // struct ucred: pid, uid, gid
  const len = new Uint32Array([cred.byteLength]);
  if (s.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) !== 0) throw new SysError('getsockopt(SO_PEERCRED)', s.errno());
  return { pid: cred[0], uid: cred[1] >>> 0, gid: cred[2] >>> 0 };
}
