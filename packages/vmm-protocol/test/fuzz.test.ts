// Random and mutated frames against the decoder and a live Session pair: nothing may throw, memory
// held by the decoder stays bounded, and a valid frame after the garbage still gets through.
// FUZZ_CASES (default 100 000) sets the number of inputs; FUZZ_SEED reproduces a run.
import { encodeFrame, encodeJson, FrameDecoder, FrameType, HEADER_LENGTH, MAX_PAYLOAD, utf8Encode } from '../src';
import { Link, rng } from './helpers';

const CASES = Number(process.env.FUZZ_CASES ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);

function validFrames(r: () => number): Uint8Array[] {
  const json = (v: unknown) => encodeJson(v);
  return [
    encodeFrame(FrameType.Hello, 0, json({ version: 1, session: 'x' })),
    encodeFrame(FrameType.Request, 0, json({ id: 1, method: 'guest.info', params: {} })),
    encodeFrame(FrameType.Response, 0, json({ id: 1, result: { a: 1 } })),
    encodeFrame(FrameType.Response, 0, json({ id: 2, error: { code: 'NOT_FOUND', message: 'm' } })),
    encodeFrame(FrameType.Event, 0, json({ seq: 1 + Math.floor(r() * 5), type: 'exit', containerId: 'c' })),
    encodeFrame(FrameType.Data, 1 + Math.floor(r() * 4), utf8Encode('payload')),
    encodeFrame(FrameType.Credit, 1 + Math.floor(r() * 4), Uint8Array.of(0, 0, 1, 0)),
    encodeFrame(FrameType.Close, 1 + Math.floor(r() * 4)),
    encodeFrame(FrameType.Ack, 0, json({ seq: Math.floor(r() * 5) })),
  ];
}

function mutate(r: () => number, base: Uint8Array): Uint8Array {
  const b = base.slice();
  const kind = Math.floor(r() * 6);
  const at = Math.floor(r() * b.length);
  switch (kind) {
    case 0: // flip bits
      for (let i = 0, n = 1 + Math.floor(r() * 4); i < n; i++) b[Math.floor(r() * b.length)] ^= 1 << Math.floor(r() * 8);
      return b;
    case 1: // truncate
      return b.subarray(0, at);
    case 2: // header field overwrite (type/version/length)
      b[2 + Math.floor(r() * 10)] = Math.floor(r() * 256);
      return b;
    case 3: // huge declared length
      if (b.length >= HEADER_LENGTH) new DataView(b.buffer).setUint32(8, MAX_PAYLOAD + Math.floor(r() * 1000));
      return b;
    case 4: // duplicate a slice
      return Uint8Array.from([...b.subarray(0, at), ...b.subarray(Math.floor(r() * b.length))]);
    default: // random bytes
      return Uint8Array.from({ length: Math.floor(r() * 64) }, () => Math.floor(r() * 256));
  }
}

describe(`fuzz (FUZZ_CASES=${CASES}, FUZZ_SEED=${SEED})`, () => {
  test('the decoder never throws, stays bounded and resynchronises', () => {
    const r = rng(SEED);
    const dec = new FrameDecoder();
    const frames = validFrames(r);
    let maxBuffered = 0;
    for (let i = 0; i < CASES; i++) {
      const input = r() < 0.3 ? frames[Math.floor(r() * frames.length)] : mutate(r, frames[Math.floor(r() * frames.length)]);
      // Random chunking of each input.
      let o = 0;
      while (o < input.length) {
        const n = 1 + Math.floor(r() * input.length);
        dec.push(input.subarray(o, o + n));
        o += n;
      }
      maxBuffered = Math.max(maxBuffered, dec.bufferedBytes);
    }
    expect(maxBuffered).toBeLessThanOrEqual(HEADER_LENGTH + MAX_PAYLOAD);
    // After garbage, a frame can be swallowed by a bogus header's length; what is guaranteed is
    // that once the decoder is on a boundary again, valid frames decode.
    dec.reset();
    const out = dec.push(encodeFrame(FrameType.Close, 77));
    expect(out.map((f) => f.stream)).toEqual([77]);
  });

  test('a Session pair fed mutated frames never throws and still answers afterwards', async () => {
    const r = rng(SEED + 1);
    const link = new Link();
    link.guest.handle('guest.info', () => ({ ok: true }));
    link.connect();
    link.pump();
    const frames = validFrames(r);
    const n = Math.max(1, Math.floor(CASES / 4));
    for (let i = 0; i < n; i++) {
      const input = mutate(r, frames[Math.floor(r() * frames.length)]);
      const target = r() < 0.5 ? link.guest : link.host;
      target.receive(input);
    }
    link.toGuest = [];
    link.toHost = [];
    // Resynchronise each decoder with a fresh connection, then prove the session still works.
    link.disconnect();
    link.connect();
    link.pump();
    const res = link.host.request('guest.info', {}, { timeoutMs: 2000 });
    for (let i = 0; i < 5; i++) {
      link.pump();
      await new Promise((res2) => setImmediate(res2));
    }
    expect(await res).toEqual({ ok: true });
    expect(link.guest.streamCount).toBeLessThanOrEqual(0);
    link.dispose();
  }, 120_000);
});
