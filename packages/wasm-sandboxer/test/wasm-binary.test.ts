import * as fs from 'node:fs';
import { capMemory, definedMemories, pagesForLimit, WasmLoadError } from '../src';
import { wasm } from './stdio';

const bytes = (name: string): Uint8Array => new Uint8Array(fs.readFileSync(wasm(name)));

describe('memory limits in the wasm binary', () => {
  test('reads the declared limits', () => {
    expect(definedMemories(bytes('memory-bomb'))).toEqual([{ minPages: 1, maxPages: 65536, shared: false }]);
    expect(definedMemories(bytes('hello'))).toEqual([{ minPages: 1, shared: false }]);
  });

  test('caps a memory without a maximum, and one with a larger maximum; the result still compiles', async () => {
    for (const name of ['hello', 'memory-bomb']) {
      const capped = capMemory(bytes(name), 512);
      expect(definedMemories(capped)).toEqual([{ minPages: 1, maxPages: 512, shared: false }]);
      expect(WebAssembly.validate(capped)).toBe(true);
      // only the memory section changed: same imports and exports
      const [a, b] = await Promise.all([WebAssembly.compile(bytes(name)), WebAssembly.compile(capped)]);
      expect(WebAssembly.Module.imports(b)).toEqual(WebAssembly.Module.imports(a));
      expect(WebAssembly.Module.exports(b)).toEqual(WebAssembly.Module.exports(a));
    }
  });

  test('multi-byte LEB sizes re-encode correctly (a section that grows by bytes)', () => {
    // hello's memory section is 3 bytes; a cap of 65535 pages adds a 3-byte LEB maximum
    const capped = capMemory(bytes('hello'), 65535);
    expect(capped.length).toBe(bytes('hello').length + 3);
    expect(definedMemories(capped)[0]).toEqual({ minPages: 1, maxPages: 65535, shared: false });
    expect(WebAssembly.validate(capped)).toBe(true);
  });

  test('a smaller declared maximum is kept and the bytes are returned as they are', () => {
    const src = bytes('memory-bomb');
    const once = capMemory(src, 100);
    expect(capMemory(once, 200)).toBe(once);
  });

  test('a minimum above the limit is refused', () => {
    expect(() => capMemory(bytes('big-minimum'), pagesForLimit(64 * 1048576))).toThrow(
      expect.objectContaining({ code: 'ERR_WASM_MEMORY_LIMIT' }) as Error,
    );
  });

  test('a module without memory is returned untouched', () => {
    const noMem = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);
    expect(capMemory(noMem, 1)).toBe(noMem);
  });

  test('pages round the limit down', () => {
    expect(pagesForLimit(65535)).toBe(0);
    expect(pagesForLimit(65536 * 3 + 5)).toBe(3);
    expect(pagesForLimit(2 ** 40)).toBe(65536);
  });

  test('garbage, truncated modules and components get a WasmLoadError', () => {
    const cases: [Uint8Array, string][] = [
      [new Uint8Array([1, 2, 3]), 'ERR_WASM_INVALID'],
      [new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 5, 10, 1]), 'ERR_WASM_INVALID'], // section past the end
      [new Uint8Array([0, 97, 115, 109, 0x0d, 0, 1, 0]), 'ERR_WASM_COMPONENT'],
      [new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 5, 3, 1, 0x04, 1]), 'ERR_WASM_UNSUPPORTED'], // memory64
      [new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 5, 2, 1, 0x00]), 'ERR_WASM_INVALID'], // limits cut short
    ];
    for (const [b, code] of cases) {
      let err: unknown;
      try {
        capMemory(b, 10);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WasmLoadError);
      expect(err).toMatchObject({ code });
    }
  });
});
