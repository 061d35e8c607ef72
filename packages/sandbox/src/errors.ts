/**
 * Typed failures carrying google.rpc status codes. The numbers are the same for gRPC and ttrpc, so one error type
 * serves the Controller (grpc-js) and anything a sandboxer serves over ttrpc. containerd turns the codes into its
 * errdefs (5 → ErrNotFound, 6 → ErrAlreadyExists, 9 → ErrFailedPrecondition, ...), which CRI branches on.
 */
export const StatusCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof StatusCode)[keyof typeof StatusCode];

export class SandboxError extends Error {
  readonly code: StatusCode;
  constructor(code: StatusCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.INVALID_ARGUMENT, message, options);
  }
}
export class NotFoundError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.NOT_FOUND, message, options);
  }
}
export class AlreadyExistsError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.ALREADY_EXISTS, message, options);
  }
}
export class FailedPreconditionError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.FAILED_PRECONDITION, message, options);
  }
}
export class UnavailableError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.UNAVAILABLE, message, options);
  }
}
export class UnimplementedError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.UNIMPLEMENTED, message, options);
  }
}
export class DeadlineExceededError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.DEADLINE_EXCEEDED, message, options);
  }
}
export class InternalError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(StatusCode.INTERNAL, message, options);
  }
}

/** A bad config file or flag; the CLI prints it and exits 2 instead of a stack trace. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/**
 * The status code for any thrown value. Errors from other layers keep their code when it is a google.rpc number
 * (e.g. a TtrpcError from an engine or VM agent); Node's errno errors have string codes and become UNKNOWN, like Go's
 * ttrpc/grpc do with plain errors.
 */
export function statusCodeOf(err: unknown): StatusCode {
  if (err instanceof SandboxError) return err.code;
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number' && Number.isInteger(code) && code > 0 && code <= 16) return code as StatusCode;
  }
  return StatusCode.UNKNOWN;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
