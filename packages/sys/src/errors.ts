import { constants } from 'node:os';

// errno number -> symbolic name ('EPERM', ...), built from Node's own table on first error.
let errnoNames: Map<number, string> | undefined;

export function errnoName(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    for (const [name, value] of Object.entries(constants.errno)) {
      if (!errnoNames.has(value)) errnoNames.set(value, name);
    }
  }
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** A failed system call: `code` is the symbolic errno ('EPERM', 'ECHILD', ...). */
export class SysError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  readonly path?: string;

  constructor(syscall: string, errno: number, path?: string) {
    const code = errnoName(errno);
    super(`${syscall}${path === undefined ? '' : ` ${path}`}: ${code} (errno ${errno})`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
    if (path !== undefined) this.path = path;
  }
}

/** @kuasar/sys only speaks Linux x86_64 (struct layouts and ioctl numbers are hard-coded). */
export class UnsupportedPlatformError extends Error {
  readonly code = 'ERR_KUASAR_UNSUPPORTED_PLATFORM';
  constructor(platform: string, arch: string) {
    super(`@kuasar/sys supports linux/x64 only, not ${platform}/${arch}`);
    this.name = 'UnsupportedPlatformError';
  }
}

/** The native koffi module could not be found or loaded. */
export class NativeLoadError extends Error {
  readonly code = 'ERR_KUASAR_NATIVE_LOAD';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeLoadError';
  }
}

/** A wait that did not complete in time (e.g. no console fd arrived). */
export class TimeoutError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(message: string) {
    super(message);
    this.name = 'TimeoutError';
  }
}
