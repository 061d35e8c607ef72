import { encodeFrame, type Frame, FrameDecoder, FrameType, HEADER_LENGTH, MAX_PAYLOAD, ProtocolError, utf8Encode } from '../src';

function collect(dec: FrameDecoder, chunks: Uint8Array[]): Frame[] {
  return chunks.flatMap((c) => dec.push(c));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe('frame', () => {
  test('header layout is big-endian magic, version, type, stream, length', () => {
    const f = encodeFrame(FrameType.Data, 0x01020304, Uint8Array.from([9, 8]));
    expect(Array.from(f)).toEqual([0x4b, 0x56, 1, 5, 1, 2, 3, 4, 0, 0, 0, 2, 9, 8]);
  });

  test('decodes across every split point', () => {
    const a = encodeFrame(FrameType.Request, 0, utf8Encode('{"id":1}'));
    const b = encodeFrame(FrameType.Close, 7);
    const c = encodeFrame(FrameType.Data, 3, Uint8Array.from([1, 2, 3]));
    const all = concat(a, b, c);
    for (let i = 0; i <= all.length; i++) {
      const dec = new FrameDecoder();
      const frames = collect(dec, [all.subarray(0, i), all.subarray(i)]);
      expect(frames.map((f) => [f.type, f.stream, Array.from(f.payload)])).toEqual([
        [FrameType.Request, 0, Array.from(utf8Encode('{"id":1}'))],
        [FrameType.Close, 7, []],
        [FrameType.Data, 3, [1, 2, 3]],
      ]);
      expect(dec.bufferedBytes).toBe(0);
    }
  });

  test('byte-at-a-time delivery works', () => {
    const all = concat(encodeFrame(FrameType.Event, 0, utf8Encode('{}')), encodeFrame(FrameType.Ack, 0, utf8Encode('{"seq":1}')));
    const dec = new FrameDecoder();
    const frames = collect(dec, Array.from(all, (b) => Uint8Array.of(b)));
    expect(frames).toHaveLength(2);
  });

  test('payloads are copies: reusing the read buffer does not change delivered frames', () => {
    const buf = encodeFrame(FrameType.Data, 1, Uint8Array.from([5, 6, 7]));
    const dec = new FrameDecoder();
    const [f] = dec.push(buf);
    buf.fill(0);
    expect(Array.from(f.payload)).toEqual([5, 6, 7]);
  });

  test.each([
    ['bad version', (f: Uint8Array) => (f[2] = 2), 'BAD_VERSION'],
    ['bad type', (f: Uint8Array) => (f[3] = 99), 'BAD_TYPE'],
    ['too long', (f: Uint8Array) => new DataView(f.buffer).setUint32(8, MAX_PAYLOAD + 1), 'FRAME_TOO_LARGE'],
  ])('%s is reported and the next frame still decodes', (_, corrupt, code) => {
    const bad = encodeFrame(FrameType.Data, 1, Uint8Array.from([1, 2, 3, 4]));
    corrupt(bad);
    const good = encodeFrame(FrameType.Data, 2, Uint8Array.from([42]));
    const errors: ProtocolError[] = [];
    const dec = new FrameDecoder((e) => errors.push(e));
    const frames = dec.push(concat(bad, good));
    expect(errors.map((e) => e.code)).toEqual([code]);
    expect(frames).toHaveLength(1);
    expect(frames[0].stream).toBe(2);
    expect(Array.from(frames[0].payload)).toEqual([42]);
  });

  test('garbage before, between and after frames costs one report per episode', () => {
    const good = encodeFrame(FrameType.Close, 9);
    const junk = utf8Encode('KUASAR-GUEST-READY uptime=0.5 KV K\x56\x02');
    const errors: ProtocolError[] = [];
    const dec = new FrameDecoder((e) => errors.push(e));
    const frames = dec.push(concat(junk, good, junk, good, junk));
    expect(frames.map((f) => f.stream)).toEqual([9, 9]);
    expect(errors).toHaveLength(3);
    expect(errors.every((e) => e instanceof ProtocolError)).toBe(true);
  });

  test('a frame starting inside a rejected header is found', () => {
    const good = encodeFrame(FrameType.Close, 5);
    // A fake header whose bytes 1..11 contain the real frame's start.
    const fake = Uint8Array.from([0x4b, 0x56, 9, 0x4b, 0x56]);
    const dec = new FrameDecoder();
    const frames = dec.push(concat(fake, good));
    expect(frames.map((f) => f.stream)).toEqual([5]);
  });

  test('an error listener that throws does not escape push()', () => {
    const dec = new FrameDecoder(() => {
      throw new Error('listener bug');
    });
    expect(() => dec.push(Uint8Array.from([1, 2, 3]))).not.toThrow();
    expect(dec.push(encodeFrame(FrameType.Close, 1))).toHaveLength(1);
  });

  test('encode refuses payloads above MAX_PAYLOAD and non-u32 streams', () => {
    expect(() => encodeFrame(FrameType.Data, 1, new Uint8Array(MAX_PAYLOAD + 1))).toThrow(ProtocolError);
    expect(() => encodeFrame(FrameType.Data, -1)).toThrow(ProtocolError);
    expect(encodeFrame(FrameType.Data, 1, new Uint8Array(MAX_PAYLOAD)).length).toBe(MAX_PAYLOAD + HEADER_LENGTH);
  });

  test('reset drops a partial frame', () => {
    const dec = new FrameDecoder();
    const f = encodeFrame(FrameType.Data, 1, new Uint8Array(100));
    dec.push(f.subarray(0, 50));
    expect(dec.bufferedBytes).toBe(100); // the payload buffer, allocated once the header is in
    dec.reset();
    expect(dec.bufferedBytes).toBe(0);
    expect(dec.push(encodeFrame(FrameType.Close, 3))).toHaveLength(1);
  });
});
