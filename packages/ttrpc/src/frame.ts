/** ttrpc framing: a 10-byte big-endian header (length, stream id, type, flags) followed by `length` data bytes. */

export const HEADER_LENGTH = 10;
/** Largest data length either side may send or accept (Go: messageLengthMax = 4 << 20). */
export const MAX_MESSAGE_SIZE = 4 << 20;

export const MessageType = { REQUEST: 0x01, RESPONSE: 0x02, DATA: 0x03 } as const;
export const Flag = { REMOTE_CLOSED: 0x01, REMOTE_OPEN: 0x02, NO_DATA: 0x04 } as const;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  /** Declared data length; may exceed `data.length` only when `oversized`. */
  length: number;
  /** Empty when oversized: the bytes were discarded, never buffered. */
  data: Buffer;
  oversized: boolean;
}

export function encodeFrame(streamId: number, type: number, flags: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out[8] = type & 0xff;
  out[9] = flags & 0xff;
  out.set(data, HEADER_LENGTH);
  return out;
}

const EMPTY = Buffer.alloc(0);

/**
 * Incremental frame parser. Copies each byte at most once (body chunks are concatenated once, at the end),
 * so feeding one byte at a time stays linear. Oversized bodies are skipped without being buffered.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(HEADER_LENGTH);
  private headerFilled = 0;
  private current: Omit<Frame, 'data'> | null = null;
  private bodyChunks: Buffer[] = [];
  private bodyFilled = 0;

  constructor(readonly maxMessageSize: number = MAX_MESSAGE_SIZE) {}

  /** Bytes of a started frame not yet complete; non-zero at end of stream means the peer stopped mid-frame. */
  get pendingBytes(): number {
    return this.headerFilled + this.bodyFilled;
  }

  push(chunk: Uint8Array): Frame[] {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const frames: Frame[] = [];
    let off = 0;
    while (off < buf.length || (this.current !== null && this.current.length === this.bodyFilled)) {
      if (this.current === null) {
        const n = Math.min(HEADER_LENGTH - this.headerFilled, buf.length - off);
        buf.copy(this.header, this.headerFilled, off, off + n);
        this.headerFilled += n;
        off += n;
        if (this.headerFilled < HEADER_LENGTH) break;
        const length = this.header.readUInt32BE(0);
        this.current = {
          length,
          streamId: this.header.readUInt32BE(4),
          type: this.header[8]!,
          flags: this.header[9]!,
          oversized: length > this.maxMessageSize,
        };
        this.headerFilled = 0;
        this.bodyFilled = 0;
        continue;
      }
      const cur = this.current;
      const n = Math.min(cur.length - this.bodyFilled, buf.length - off);
      if (n > 0 && !cur.oversized) this.bodyChunks.push(buf.subarray(off, off + n));
      this.bodyFilled += n;
      off += n;
      if (this.bodyFilled < cur.length) break;
      let data: Buffer = EMPTY;
      if (!cur.oversized && this.bodyChunks.length > 0) {
        data = this.bodyChunks.length === 1 ? this.bodyChunks[0]! : Buffer.concat(this.bodyChunks, cur.length);
      }
      frames.push({ ...cur, data });
      this.current = null;
      this.bodyChunks = [];
      this.bodyFilled = 0;
    }
    return frames;
  }
}
