import { ProtocolError } from './errors';

export const MAGIC = 0x4b56; // "KV"
export const VERSION = 1;
export const HEADER_LENGTH = 12;
export const MAX_PAYLOAD = 1024 * 1024;

export enum FrameType {
  Hello = 1,
  Request = 2,
  Response = 3,
  Event = 4,
  Data = 5,
  Credit = 6,
  Close = 7,
  Ack = 8,
}

export interface Frame {
  type: FrameType;
  stream: number;
  payload: Uint8Array;
}

const EMPTY = new Uint8Array(0);
const MAGIC_HI = MAGIC >> 8;
const MAGIC_LO = MAGIC & 0xff;

/** Header + payload in one buffer. Throws ProtocolError on an oversized payload (a sender bug, not wire input). */
export function encodeFrame(type: FrameType, stream: number, payload: Uint8Array = EMPTY): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new ProtocolError('FRAME_TOO_LARGE', `payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  }
  if (!Number.isInteger(stream) || stream < 0 || stream > 0xffffffff) {
    throw new ProtocolError('BAD_MESSAGE', `stream id ${stream} is not a u32`);
  }
  const out = new Uint8Array(HEADER_LENGTH + payload.length);
  const view = new DataView(out.buffer);
  view.setUint16(0, MAGIC);
  view.setUint8(2, VERSION);
  view.setUint8(3, type);
  view.setUint32(4, stream);
  view.setUint32(8, payload.length);
  out.set(payload, HEADER_LENGTH);
  return out;
}

export function encodeU32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0);
  return out;
}

export function decodeU32(payload: Uint8Array): number | undefined {
  if (payload.length !== 4) return undefined;
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0);
}

function isFrameType(t: number): t is FrameType {
  return t >= FrameType.Hello && t <= FrameType.Ack;
}

/**
 * Incremental decoder. push() takes any chunking of the byte stream and returns the frames it
 * completed. A bad header is reported through onError and the decoder resynchronises by scanning
 * for the next magic, so garbage costs frames, never the process. It holds at most one header and
 * one payload. push() never throws, including when onError does.
 */
export class FrameDecoder {
  private readonly header = new Uint8Array(HEADER_LENGTH);
  private headerLength = 0;
  private payload: Uint8Array | undefined;
  private payloadFill = 0;
  private pendingType = 0;
  private pendingStream = 0;
  /** Inside a resync episode: further errors are counted, not reported, until a good header. */
  private resyncing = false;
  /** Total bytes discarded since construction (for metrics and tests). */
  discardedBytes = 0;
  errors = 0;

  constructor(private readonly onError: (err: ProtocolError) => void = () => {}) {}

  /** Bytes held in the partial frame (bounded by HEADER_LENGTH + MAX_PAYLOAD). */
  get bufferedBytes(): number {
    return this.headerLength + (this.payload ? this.payload.length : 0);
  }

  push(chunk: Uint8Array): Frame[] {
    const out: Frame[] = [];
    this.scan(chunk, out);
    return out;
  }

  private scan(chunk: Uint8Array, out: Frame[]): void {
    let i = 0;
    const end = chunk.length;
    while (i < end) {
      if (this.payload) {
        const take = Math.min(this.payload.length - this.payloadFill, end - i);
        this.payload.set(chunk.subarray(i, i + take), this.payloadFill);
        this.payloadFill += take;
        i += take;
        if (this.payloadFill === this.payload.length) this.complete(out);
        continue;
      }
      if (this.headerLength === 0 && chunk[i] !== MAGIC_HI) {
        // Fast skip to the next possible frame start.
        let j = chunk.indexOf(MAGIC_HI, i);
        if (j < 0) j = end;
        this.discard(j - i, 'BAD_MAGIC', 'bytes outside any frame');
        i = j;
        continue;
      }
      this.header[this.headerLength++] = chunk[i++];
      if (this.headerLength === 2 && this.header[1] !== MAGIC_LO) {
        this.discard(1, 'BAD_MAGIC', 'bytes outside any frame');
        const second = this.header[1];
        this.headerLength = 0;
        if (second === MAGIC_HI) this.header[this.headerLength++] = second;
        else this.discard(1, 'BAD_MAGIC', 'bytes outside any frame');
        continue;
      }
      if (this.headerLength === HEADER_LENGTH) this.parseHeader(out);
    }
  }

  private parseHeader(out: Frame[]): void {
    const view = new DataView(this.header.buffer);
    const version = view.getUint8(2);
    const type = view.getUint8(3);
    const length = view.getUint32(8);
    let problem: ProtocolError | undefined;
    if (version !== VERSION) problem = new ProtocolError('BAD_VERSION', `frame version ${version}, expected ${VERSION}`);
    else if (!isFrameType(type)) problem = new ProtocolError('BAD_TYPE', `unknown frame type ${type}`);
    else if (length > MAX_PAYLOAD) problem = new ProtocolError('FRAME_TOO_LARGE', `frame length ${length} exceeds ${MAX_PAYLOAD}`);
    if (problem) {
      // Drop the first magic byte and rescan the other 11: a real frame may start inside them.
      // They are fewer than a header, so this cannot recurse further than one level.
      const rest = this.header.slice(1, HEADER_LENGTH);
      this.headerLength = 0;
      this.discard(1, problem.code, problem.message);
      this.scan(rest, out);
      return;
    }
    this.endResync();
    this.pendingType = type;
    this.pendingStream = view.getUint32(4);
    this.headerLength = 0;
    this.payload = length === 0 ? EMPTY : new Uint8Array(length);
    this.payloadFill = 0;
    if (length === 0) this.complete(out);
  }

  private complete(out: Frame[]): void {
    out.push({ type: this.pendingType as FrameType, stream: this.pendingStream, payload: this.payload as Uint8Array });
    this.payload = undefined;
    this.payloadFill = 0;
  }

  private discard(n: number, code: ProtocolError['code'], message: string): void {
    if (n <= 0) return;
    this.discardedBytes += n;
    if (this.resyncing) return;
    // One report per resync episode: a flood of garbage costs one error, not one per byte.
    this.resyncing = true;
    this.errors++;
    try {
      this.onError(new ProtocolError(code, `${message}; resynchronising`, n));
    } catch {
      // A failing error listener must not break decoding.
    }
  }

  private endResync(): void {
    this.resyncing = false;
  }

  /** Forget any partial frame: a new connection starts on a frame boundary. */
  reset(): void {
    this.endResync();
    this.headerLength = 0;
    this.payload = undefined;
    this.payloadFill = 0;
  }
}
