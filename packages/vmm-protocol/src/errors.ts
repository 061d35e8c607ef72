/** What went wrong on the wire. The decoder and Session report these; they never throw them out of push/receive. */
export type ProtocolErrorCode =
  | 'BAD_MAGIC'
  | 'BAD_VERSION'
  | 'BAD_TYPE'
  | 'FRAME_TOO_LARGE'
  | 'BAD_JSON'
  | 'BAD_MESSAGE'
  | 'BAD_CREDIT'
  | 'CREDIT_EXCEEDED'
  | 'UNKNOWN_STREAM';

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    /** Bytes thrown away while resynchronising (decoder errors only). */
    readonly skippedBytes = 0,
  ) {
    super(message);
  }
}

/** gRPC code names carried in RESPONSE.error.code. */
export type RpcCode =
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'INVALID_ARGUMENT'
  | 'FAILED_PRECONDITION'
  | 'UNIMPLEMENTED'
  | 'INTERNAL'
  | 'DEADLINE_EXCEEDED'
  | 'UNAVAILABLE';

export const RPC_CODES: readonly RpcCode[] = [
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'INVALID_ARGUMENT',
  'FAILED_PRECONDITION',
  'UNIMPLEMENTED',
  'INTERNAL',
  'DEADLINE_EXCEEDED',
  'UNAVAILABLE',
];

/** A failed request: either the peer's error response or a local timeout/disconnect. */
export class RpcError extends Error {
  override readonly name = 'RpcError';
  constructor(
    readonly code: RpcCode,
    message: string,
  ) {
    super(message);
  }
}
