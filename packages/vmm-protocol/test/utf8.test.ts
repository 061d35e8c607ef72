import { utf8Decode, utf8Encode } from '../src';
import { rng } from './helpers';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });

describe('utf8', () => {
  test.each([
    ['ascii', 'hello'],
    ['2-byte', 'héllo ß'],
    ['3-byte', '日本語 €'],
    ['4-byte', '𝄞 😀 🇩🇪'],
    ['empty', ''],
    ['nul', 'a\u0000b'],
  ])('%s round-trips and matches TextEncoder', (_, s) => {
    const bytes = utf8Encode(s);
    expect(Array.from(bytes)).toEqual(Array.from(enc.encode(s)));
    expect(utf8Decode(bytes)).toBe(s);
  });

  test('lone surrogates encode as U+FFFD like TextEncoder', () => {
    for (const s of ['\ud800', 'a\udc00b', '\ud83d', '\ud83dx', '\udfff\ud800']) {
      expect(Array.from(utf8Encode(s))).toEqual(Array.from(enc.encode(s)));
    }
  });

  test('malformed bytes decode exactly like the WHATWG decoder', () => {
    const cases = [
      [0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80],
      [0xf0, 0x9f, 0x98], [0xe2, 0x82], [0x80, 0x41], [0xc3], [0xf5, 0x80], [0xe1, 0x41, 0x80],
    ];
    for (const c of cases) expect(utf8Decode(Uint8Array.from(c))).toBe(dec.decode(Uint8Array.from(c)));
  });

  test('random byte strings decode like TextDecoder (20 000 cases)', () => {
    const r = rng(7);
    for (let i = 0; i < 20_000; i++) {
      const n = Math.floor(r() * 12);
      const b = new Uint8Array(n);
      // Bias towards lead/continuation bytes, where decoders disagree if they are wrong.
      for (let k = 0; k < n; k++) b[k] = r() < 0.5 ? 0x80 + Math.floor(r() * 0x78) : Math.floor(r() * 256);
      expect(utf8Decode(b)).toBe(dec.decode(b));
    }
  });

  test('random strings encode like TextEncoder', () => {
    const r = rng(11);
    for (let i = 0; i < 5_000; i++) {
      let s = '';
      const n = Math.floor(r() * 10);
      for (let k = 0; k < n; k++) s += String.fromCharCode(Math.floor(r() * 0x10000));
      expect(Array.from(utf8Encode(s))).toEqual(Array.from(enc.encode(s)));
    }
  });

  test('long strings (beyond one fromCharCode batch) round-trip', () => {
    const s = 'äx😀'.repeat(10_000);
    expect(utf8Decode(utf8Encode(s))).toBe(s);
  });
});
