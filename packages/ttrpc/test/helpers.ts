import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { decodeResponse, encodeFrame, encodeRequest, Frame, FrameDecoder, MessageType, Response, toMetadata } from '../src';

export function tempSocketPath(name = 'ttrpc.sock'): { dir: string; sock: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
  return { dir, sock: path.join(dir, name), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A tiny ts-proto-shaped message: Echo { text = 1 : string, delay_ms = 2 : uint32 }. */
export interface Echo {
  text: string;
  delayMs: number;
}

export const Echo = {
  encode(m: Echo, w: BinaryWriter = new BinaryWriter()): BinaryWriter {
    if (m.text !== '') w.tag(1, WireType.LengthDelimited).string(m.text);
    if (m.delayMs !== 0) w.tag(2, WireType.Varint).uint32(m.delayMs);
    return w;
  },
  decode(input: Uint8Array): Echo {
    const r = new BinaryReader(input);
    const m: Echo = { text: '', delayMs: 0 };
    while (r.pos < r.len) {
      const [f, wt] = r.tag();
      if (f === 1) m.text = r.string();
      else if (f === 2) m.delayMs = r.uint32();
      else r.skip(wt, f);
    }
    return m;
  },
  fromPartial(o: Partial<Echo>): Echo {
    return { text: o.text ?? '', delayMs: o.delayMs ?? 0 };
  },
};

export const encodeEcho = (m: Partial<Echo>): Uint8Array => Echo.encode(Echo.fromPartial(m)).finish();

/** Shaped like ts-proto's generic-definitions output (`as const`). */
export const EchoServiceDefinition = {
  name: 'Echo',
  fullName: 'kuasar.test.v1.Echo',
  methods: {
    say: { name: 'Say', requestType: Echo, requestStream: false, responseType: Echo, responseStream: false, options: {} },
    collect: { name: 'Collect', requestType: Echo, requestStream: true, responseType: Echo, responseStream: false, options: {} },
    repeat: { name: 'Repeat', requestType: Echo, requestStream: false, responseType: Echo, responseStream: true, options: {} },
    chat: { name: 'Chat', requestType: Echo, requestStream: true, responseType: Echo, responseStream: true, options: {} },
  },
} as const;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A raw socket speaking frames by hand, to send what a well-behaved client never would. */
export class RawPeer {
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.frames.push(...this.decoder.push(c));
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static connect(sock: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect(sock, () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  write(b: Uint8Array): void {
    this.socket.write(b);
  }

  request(id: number, service: string, method: string, payload?: Uint8Array, flags = 0): void {
    this.write(encodeFrame(id, MessageType.REQUEST, flags, encodeRequest({ service, method, payload, timeoutNano: 0n, metadata: toMetadata(undefined) })));
  }

  async next(timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error('raw peer: connection closed');
      if (Date.now() > deadline) throw new Error('raw peer: timeout waiting for frame');
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.frames.shift()!;
  }

  async nextResponse(): Promise<{ frame: Frame; res: Response }> {
    const frame = await this.next();
    return { frame, res: decodeResponse(frame.data) };
  }

  close(): void {
    this.socket.destroy();
  }
}
