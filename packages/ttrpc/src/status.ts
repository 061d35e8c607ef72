/** google.rpc.Code numbers, as carried in ttrpc Response.status.code. */
export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** google.protobuf.Any, kept opaque (type_url + encoded value). */
export interface Any {
  typeUrl: string;
  value: Uint8Array;
}

/** An RPC failure with a google.rpc status code; what both server handlers throw and clients reject with. */
export class TtrpcError extends Error {
  override readonly name = 'TtrpcError';
  readonly code: Code;
  readonly details: Any[];

  constructor(code: Code, message: string, details: Any[] = []) {
    super(message);
    this.code = code;
    this.details = details;
  }

  /** Go's ttrpc turns any non-status error into UNKNOWN with the error text (services.go convertCode). */
  static from(err: unknown): TtrpcError {
    if (err instanceof TtrpcError) return err;
    if (err instanceof Error) return new TtrpcError(Code.UNKNOWN, err.message);
    return new TtrpcError(Code.UNKNOWN, String(err));
  }
}
