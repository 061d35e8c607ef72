// Just enough of the wasm binary format to bound linear memory: V8 has no per-instance memory limit and Worker
// resourceLimits only cover the JS heap, so the one thing that really stops `memory.grow` is the memory's declared
// maximum. We read every defined memory's limits and, when a limit applies, re-encode the memory section with
// max = min(declared max, limit). Everything else is copied byte for byte.
import { WasmLoadError } from './errors';

export const WASM_PAGE_BYTES = 65536;
/** wasm32 cannot address more than 4 GiB */
export const WASM32_MAX_PAGES = 65536;

const MAGIC = [0x00, 0x61, 0x73, 0x6d];
const SECTION_MEMORY = 5;

export interface MemoryLimits {
  minPages: number;
  maxPages?: number;
  shared: boolean;
}

interface Section {
  id: number;
  /** offset of the section id byte */
  start: number;
  /** offset just past the payload */
  end: number;
  payloadStart: number;
}

class Reader {
  pos: number;
  constructor(
    private readonly bytes: Uint8Array,
    pos = 0,
    private readonly limit = bytes.length,
  ) {
    this.pos = pos;
  }

  byte(): number {
    if (this.pos >= this.limit) throw invalid('unexpected end of module');
    return this.bytes[this.pos++]!;
  }

  u32(): number {
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) throw invalid('LEB128 value does not fit in u32');
        return result;
      }
    }
    throw invalid('LEB128 u32 longer than 5 bytes');
  }
}

function invalid(detail: string): WasmLoadError {
  return new WasmLoadError('ERR_WASM_INVALID', `not a valid wasm module: ${detail}`);
}

function encodeU32(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

function sections(bytes: Uint8Array): Section[] {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) throw invalid('missing \\0asm magic');
  const version = bytes[4]! | (bytes[5]! << 8);
  const layer = bytes[6]! | (bytes[7]! << 8);
  if (layer === 1) {
    throw new WasmLoadError('ERR_WASM_COMPONENT', 'wasm components are not supported: only WASI preview1 core modules run here');
  }
  if (version !== 1 || layer !== 0) throw invalid(`unsupported binary version ${version}`);
  const r = new Reader(bytes, 8);
  const out: Section[] = [];
  while (r.pos < bytes.length) {
    const start = r.pos;
    const id = r.byte();
    const size = r.u32();
    const payloadStart = r.pos;
    const end = payloadStart + size;
    if (end > bytes.length) throw invalid(`section ${id} runs past the end of the module`);
    out.push({ id, start, end, payloadStart });
    r.pos = end;
  }
  return out;
}

function readLimits(r: Reader): MemoryLimits {
  const flags = r.byte();
  if (flags & 0x04) throw new WasmLoadError('ERR_WASM_UNSUPPORTED', 'memory64 modules are not supported');
  if (flags & ~0x03) throw invalid(`unknown memory limits flags 0x${flags.toString(16)}`);
  const minPages = r.u32();
  const limits: MemoryLimits = { minPages, shared: (flags & 0x02) !== 0 };
  if (flags & 0x01) limits.maxPages = r.u32();
  return limits;
}

/** The limits of the memories the module defines itself (imported memories are not listed). */
export function definedMemories(bytes: Uint8Array): MemoryLimits[] {
  const mem = sections(bytes).find((s) => s.id === SECTION_MEMORY);
  if (!mem) return [];
  const r = new Reader(bytes, mem.payloadStart, mem.end);
  const count = r.u32();
  const out: MemoryLimits[] = [];
  for (let i = 0; i < count; i++) out.push(readLimits(r));
  return out;
}

/** Whole wasm pages that fit in `bytes` (the limit is rounded down: a partial page cannot be granted). */
export function pagesForLimit(bytes: number): number {
  return Math.min(WASM32_MAX_PAGES, Math.floor(bytes / WASM_PAGE_BYTES));
}

/**
 * Caps every defined memory at `limitPages`. Throws WasmLoadError('ERR_WASM_MEMORY_LIMIT') if a memory's declared
 * minimum is already above the limit. Returns the input itself when nothing needs to change.
 */
export function capMemory(bytes: Uint8Array, limitPages: number): Uint8Array {
  const secs = sections(bytes);
  const mem = secs.find((s) => s.id === SECTION_MEMORY);
  if (!mem) return bytes;
  const r = new Reader(bytes, mem.payloadStart, mem.end);
  const count = r.u32();
  const payload: number[] = encodeU32(count);
  let changed = false;
  for (let i = 0; i < count; i++) {
    const m = readLimits(r);
    if (m.minPages > limitPages) {
      throw new WasmLoadError(
        'ERR_WASM_MEMORY_LIMIT',
        `the module's memory ${i} needs at least ${m.minPages * WASM_PAGE_BYTES} bytes (${m.minPages} pages), ` +
          `above the container's memory limit of ${limitPages * WASM_PAGE_BYTES} bytes (${limitPages} pages)`,
      );
    }
    const maxPages = Math.min(m.maxPages ?? WASM32_MAX_PAGES, limitPages);
    if (maxPages !== m.maxPages) changed = true;
    payload.push(0x01 | (m.shared ? 0x02 : 0), ...encodeU32(m.minPages), ...encodeU32(maxPages));
  }
  if (r.pos !== mem.end) throw invalid('trailing bytes in the memory section');
  if (!changed) return bytes;
  const header = [SECTION_MEMORY, ...encodeU32(payload.length)];
  const out = new Uint8Array(bytes.length - (mem.end - mem.start) + header.length + payload.length);
  out.set(bytes.subarray(0, mem.start), 0);
  out.set(header, mem.start);
  out.set(payload, mem.start + header.length);
  out.set(bytes.subarray(mem.end), mem.start + header.length + payload.length);
  return out;
}
