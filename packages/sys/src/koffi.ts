import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as KoffiModule from 'koffi';
import { NativeLoadError, UnsupportedPlatformError } from './errors';

export type Koffi = typeof KoffiModule;
export type LibraryHandle = KoffiModule.LibraryHandle;

/** Name of the SEA asset that must hold koffiNativePath()'s bytes. */
export const KOFFI_ASSET_NAME = 'koffi.node';
const KOFFI_VERSION = '3.3.4';
const PRIMARY_CACHE_DIR = '/run/kuasar/.native';

let koffi: Koffi | undefined;
let libcHandle: LibraryHandle | undefined;

function assertPlatform(): void {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new UnsupportedPlatformError(process.platform, process.arch);
  }
}

/**
 * Path of koffi's prebuilt native module in node_modules (glibc x64 build).
 * The SEA bundler embeds this file as the asset KOFFI_ASSET_NAME.
 */
export function koffiNativePath(): string {
  assertPlatform();
  // pnpm places the optional platform package next to koffi, so resolve from koffi's own
  // directory (koffi's exports map hides package.json; its main file sits at the root).
  const koffiDir = path.dirname(require.resolve('koffi'));
  const pkg = require.resolve('@koromix/koffi-linux-x64/package.json', { paths: [koffiDir] });
  return path.join(path.dirname(pkg), 'linux_x64', 'koffi.node');
}

/**
 * koffi, loaded on first use. In a single-executable application node_modules does not exist,
 * so the native module comes from the SEA asset, written once to a private cache file and
 * dlopen'ed; koffi's JS wrapper only adds deprecated aliases, so the raw native module is the API.
 */
export function loadKoffi(): Koffi {
  if (koffi) return koffi;
  assertPlatform();
  if (isSea()) {
    koffi = loadNative(cacheSeaAsset());
  } else {
    try {
      koffi = require('koffi') as Koffi;
    } catch (err) {
      throw new NativeLoadError(`cannot load koffi: ${(err as Error).message}`, { cause: err });
    }
  }
  return koffi;
}

/** The libc handle, opened once. */
export function libc(): LibraryHandle {
  if (!libcHandle) libcHandle = loadKoffi().load('libc.so.6');
  return libcHandle;
}

/** Defers koffi declarations until the first call of a syscall wrapper. */
export function lazy<T>(declare: (k: Koffi, lib: LibraryHandle) => T): () => T {
  let value: T | undefined;
  return () => {
    if (value === undefined) value = declare(loadKoffi(), libc());
    return value;
  };
}

function isSea(): boolean {
  try {
    return (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    return false; // Node without node:sea cannot be a SEA
  }
}

function cacheSeaAsset(): string {
  let bytes: Buffer;
  try {
    const sea = require('node:sea') as { getRawAsset(key: string): ArrayBuffer };
    bytes = Buffer.from(sea.getRawAsset(KOFFI_ASSET_NAME));
  } catch (err) {
    throw new NativeLoadError(`this executable has no '${KOFFI_ASSET_NAME}' SEA asset`, { cause: err });
  }
  return writeNativeCache(bytes);
}

/**
 * Writes the native module to `<dir>/koffi-<sha256 prefix>.node` unless already there, and
 * returns its path. The name carries the hash, so a present file of the right size is the same
 * module; the directory must be ours and private, or a local user could plant a library.
 */
export function writeNativeCache(bytes: Buffer, dirs: string[] = defaultCacheDirs()): string {
  // node:crypto costs ~16 ms to load, so only SEA start-up pays for it.
  const { createHash } = require('node:crypto') as typeof import('node:crypto');
  const digest = createHash('sha256').update(bytes).digest('hex').slice(0, 16);
  const errors: string[] = [];
  for (const dir of dirs) {
    try {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const st = fs.lstatSync(dir);
      if (!st.isDirectory() || st.uid !== process.getuid!() || (st.mode & 0o077) !== 0) {
        throw new Error(`${dir} is not a private directory owned by uid ${process.getuid!()}`);
      }
      const file = path.join(dir, `koffi-${digest}.node`);
      const existing = fs.statSync(file, { throwIfNoEntry: false });
      if (existing?.isFile() && existing.size === bytes.length) return file;
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, bytes, { mode: 0o700 });
      fs.renameSync(tmp, file);
      return file;
    } catch (err) {
      errors.push(`${dir}: ${(err as Error).message}`);
    }
  }
  throw new NativeLoadError(`cannot write koffi native module cache (${errors.join('; ')})`);
}

function defaultCacheDirs(): string[] {
  return [PRIMARY_CACHE_DIR, path.join(os.tmpdir(), `kuasar-native-${process.getuid!()}`)];
}

/** dlopen()s a koffi native module file and checks it is the version our types describe. */
export function loadNative(file: string): Koffi {
  const mod: { exports: Partial<Koffi> } = { exports: {} };
  try {
    process.dlopen(mod, file);
  } catch (err) {
    throw new NativeLoadError(`cannot dlopen ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (mod.exports.version !== KOFFI_VERSION) {
    throw new NativeLoadError(`${file} is koffi ${String(mod.exports.version)}, expected ${KOFFI_VERSION}`);
  }
  return mod.exports as Koffi;
}
