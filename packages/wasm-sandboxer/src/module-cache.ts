// Compiled modules, shared by every worker: a WebAssembly.Module posted to a worker shares V8's compiled code,
// so a module is compiled once per (digest, memory cap) however many containers run it.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { capMemory, pagesForLimit } from './wasm-binary';
import { WasmLoadError } from './errors';
import { applyV8Flags } from './v8-flags';

const WASI_MODULE = 'wasi_snapshot_preview1';
/** modules up to this size are read (and hashed) synchronously */
const SYNC_READ_MAX = 4 * 1048576;

export interface CompiledModule {
  /** sha256 (hex) of the module file as stored */
  digest: string;
  module: WebAssembly.Module;
  /** the memory cap compiled into the module, in pages; undefined when no limit was applied */
  maxPages?: number;
}

interface DigestMemo {
  stamp: string;
  digest: string;
}

/**
 * LRU of compiled modules keyed by digest and memory cap. The digest of a path is remembered against the file's
 * (dev, inode, size, mtime, ctime) so a cache hit costs one stat, not a read and a hash of the whole file.
 */
export class ModuleCache {
  private readonly compiled = new Map<string, Promise<CompiledModule>>();
  private readonly digests = new Map<string, DigestMemo>();

  constructor(private readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`module cache capacity must be >= 1, got ${capacity}`);
    applyV8Flags();
  }

  get size(): number {
    return this.compiled.size;
  }

  /** Load, validate and compile `path`, capping its memory at `memoryLimitBytes` when given. */
  async load(path: string, memoryLimitBytes?: number): Promise<CompiledModule> {
    const limitPages = memoryLimitBytes === undefined ? undefined : pagesForLimit(memoryLimitBytes);
    // A synchronous stat (microseconds on the local snapshot) keeps the hot path off libuv's thread pool, which
    // blocking FIFO reads and writes elsewhere in the sandboxer can occupy.
    let stat: fs.BigIntStats;
    try {
      stat = fs.statSync(path, { bigint: true });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new WasmLoadError('ERR_WASM_NOT_FOUND', `cannot read wasm module ${path}: ${e.code ?? e.message}`, { cause: err });
    }
    if (!stat.isFile()) throw new WasmLoadError('ERR_WASM_NOT_FOUND', `wasm module ${path} is not a regular file`);
    const stamp = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
    const memo = this.digests.get(path);
    if (memo && memo.stamp === stamp) {
      const hit = this.compiled.get(key(memo.digest, limitPages));
      if (hit) {
        this.touch(key(memo.digest, limitPages), hit);
        return hit;
      }
    }

    // Every container has its own rootfs path, so the memo above misses on each new container: a small module is
    // read synchronously (tens of µs) rather than in four thread-pool round trips (milliseconds on a busy host).
    const bytes = await (stat.size <= SYNC_READ_MAX ? Promise.resolve().then(() => fs.readFileSync(path)) : fsp.readFile(path)).catch(
      (err: NodeJS.ErrnoException) => {
        throw new WasmLoadError('ERR_WASM_NOT_FOUND', `cannot read wasm module ${path}: ${err.code ?? err.message}`, { cause: err });
      },
    );
    const digest = createHash('sha256').update(bytes).digest('hex');
    this.digests.delete(path);
    this.digests.set(path, { stamp, digest });
    while (this.digests.size > this.capacity * 4) this.digests.delete(this.digests.keys().next().value as string);

    const k = key(digest, limitPages);
    let entry = this.compiled.get(k);
    if (!entry) {
      entry = compile(path, bytes, digest, limitPages);
      // a failed compile is not cached: the next run reports the same error afresh (or succeeds after a fix)
      entry.catch(() => {
        if (this.compiled.get(k) === entry) this.compiled.delete(k);
      });
    }
    this.touch(k, entry);
    return entry;
  }

  clear(): void {
    this.compiled.clear();
    this.digests.clear();
  }

  private touch(k: string, entry: Promise<CompiledModule>): void {
    this.compiled.delete(k);
    this.compiled.set(k, entry);
    while (this.compiled.size > this.capacity) this.compiled.delete(this.compiled.keys().next().value as string);
  }
}

function key(digest: string, limitPages: number | undefined): string {
  return `${digest}/${limitPages ?? 'unlimited'}`;
}

async function compile(path: string, bytes: Uint8Array, digest: string, limitPages: number | undefined): Promise<CompiledModule> {
  const capped = limitPages === undefined ? bytes : capMemory(bytes, limitPages);
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(capped);
  } catch (err) {
    throw new WasmLoadError('ERR_WASM_INVALID', `not a valid wasm module: ${path}: ${(err as Error).message}`, { cause: err });
  }
  // Refuse here what instantiation in a worker would refuse later with a less helpful link error.
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== WASI_MODULE || imp.kind !== 'function') {
      throw new WasmLoadError(
        'ERR_WASM_IMPORT',
        `${path} imports ${imp.kind} ${imp.module}.${imp.name}, which is not provided: only ${WASI_MODULE} functions are`,
      );
    }
  }
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  if (exports.get('_start') !== 'function') {
    throw new WasmLoadError('ERR_WASM_NO_START', `${path} exports no _start function: only WASI commands can run as containers`);
  }
  if (exports.get('memory') !== 'memory') {
    throw new WasmLoadError('ERR_WASM_NO_MEMORY', `${path} exports no memory named "memory", which WASI requires`);
  }
  const out: CompiledModule = { digest, module };
  if (limitPages !== undefined) out.maxPages = limitPages;
  return out;
}
