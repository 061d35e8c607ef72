// Syscalls Node lacks, for Linux x86_64. koffi loads on the first call, not on import.
export { SysError, UnsupportedPlatformError, NativeLoadError, TimeoutError, errnoName } from './errors';
export { KOFFI_ASSET_NAME, koffiNativePath, loadKoffi } from './koffi';
export type { Koffi } from './koffi';
export { setChildSubreaper, isChildSubreaper, waitPid, Reaper } from './reaper';
export { ProcExitListener } from './proc-exit';
export { isProcessAlive, isRunning, listPids, readProcessStat, zombieChildIdentities, zombieChildren } from './proc-stat';
export type { ProcessIdentity } from './proc-stat';
export type { WaitStatus, ReaperOptions, ReaperEvents } from './reaper';
export { ConsoleSocket, sendFd } from './console-socket';
export { setWinsize, getWinsize, openPty } from './winsize';
export type { Winsize, Pty } from './winsize';
export * from './mount';
export { peerCredentials } from './peercred';
export type { PeerCredentials } from './peercred';
export { sdNotify } from './notify';
export { dup } from './fd';
