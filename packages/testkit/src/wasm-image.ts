// A runwasi-style WASI image for the wasm sandboxer: the config's CMD names a module in the rootfs
// (CMD ["/hello.wasm"]), as `docker buildx --platform wasi/wasm` images and runwasi's test images do. The modules
// are built from the WebAssembly text below with wabt's wat2wasm (Debian package `wabt`), so the image needs no
// toolchain beyond it and its bytes depend only on this file.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { kuasarCacheDir } from './binaries';
import { ImageBuildError, buildOciImage, type BuiltImage, type LayerEntry, type OciImageSpec } from './oci-image';

export const WASM_IMAGE = 'docker.io/kuasar/wasm-hello:latest';

const FD_WRITE = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))';
const PROC_EXIT = '(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))';

/** Text of a module that writes `text` to `fd` (an iovec at 0, the count at 8). */
const write = (fd: number, at: number, text: string): string =>
  `(i32.store (i32.const 0) (i32.const ${at})) (i32.store (i32.const 4) (i32.const ${Buffer.byteLength(text)}))
    (drop (call $fd_write (i32.const ${fd}) (i32.const 0) (i32.const 1) (i32.const 8)))`;
const data = (at: number, text: string): string => `(data (i32.const ${at}) "${text.replace(/\n/g, '\\n')}")`;

/** The modules of WASM_IMAGE, by path in the image. What each prints is in WASM_IMAGE_OUTPUT. */
export const WASM_IMAGE_MODULES: Readonly<Record<string, string>> = {
  // "hello from wasm" on stdout, then returns from _start: exit 0
  'hello.wasm': `(module ${FD_WRITE} (memory (export "memory") 1) ${data(64, 'hello from wasm\n')}
  (func (export "_start") ${write(1, 64, 'hello from wasm\n')}))`,
  // a line on stderr, then proc_exit(7)
  'fail.wasm': `(module ${FD_WRITE} ${PROC_EXIT} (memory (export "memory") 1) ${data(64, 'failing with 7\n')}
  (func (export "_start") ${write(2, 64, 'failing with 7\n')} (call $proc_exit (i32.const 7)) unreachable))`,
  // "sleeping" on stdout, then one hour asleep in poll_oneoff (a relative CLOCK_MONOTONIC subscription): a
  // container that runs until it is stopped
  'sleep.wasm': `(module ${FD_WRITE} ${PROC_EXIT}
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1) ${data(512, 'sleeping\n')}
  (func (export "_start")
    (i32.store (i32.const 256) (i32.const 512)) (i32.store (i32.const 260) (i32.const 9))
    (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264)))
    (i64.store (i32.const 0) (i64.const 1)) (i32.store8 (i32.const 8) (i32.const 0)) (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 3600000000000)) (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)) (then (call $proc_exit (i32.const 1))))))`,
};

/** What each module of WASM_IMAGE writes, and its exit status. */
export const WASM_IMAGE_OUTPUT: Readonly<Record<string, { stdout: string; stderr: string; exitCode?: number }>> = {
  'hello.wasm': { stdout: 'hello from wasm\n', stderr: '', exitCode: 0 },
  'fail.wasm': { stdout: '', stderr: 'failing with 7\n', exitCode: 7 },
  'sleep.wasm': { stdout: 'sleeping\n', stderr: '' }, // runs until killed
};

/**
 * WebAssembly text → binary with wabt's wat2wasm, cached under `${KUASAR_CACHE}/wasm/` by the text's hash.
 * Throws ImageBuildError when wat2wasm is missing or rejects the text.
 */
export function wat2wasm(wat: string, cacheDir = path.join(kuasarCacheDir(), 'wasm')): Buffer {
  if (typeof wat !== 'string' || wat.trim() === '') throw new ImageBuildError('wat2wasm: empty WebAssembly text');
  const hash = createHash('sha256').update(wat).digest('hex').slice(0, 24);
  const out = path.join(cacheDir, `${hash}.wasm`);
  if (existsSync(out)) return readFileSync(out);
  mkdirSync(cacheDir, { recursive: true });
  const src = `${out}.${process.pid}.wat`;
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(src, wat);
  try {
    const r = spawnSync('wat2wasm', [src, '-o', tmp], { encoding: 'utf8' });
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
      throw new ImageBuildError('wat2wasm not found: install the Debian package `wabt`');
    }
    if (r.status !== 0) throw new ImageBuildError(`wat2wasm failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.trim()}`);
    // tmp + rename, so a concurrent builder never reads a half-written module
    renameSync(tmp, out);
  } finally {
    rmSync(src, { force: true });
    rmSync(tmp, { force: true });
  }
  return readFileSync(out);
}

/** The image: every module of WASM_IMAGE_MODULES at the rootfs root, CMD ["/hello.wasm"], nothing else. */
export function wasmImageSpec(name = WASM_IMAGE): OciImageSpec {
  const entries: LayerEntry[] = Object.entries(WASM_IMAGE_MODULES).map(([file, wat]) => ({ type: 'file', path: file, mode: 0o755, content: wat2wasm(wat) }));
  return { name, entries, config: { Cmd: ['/hello.wasm'] } };
}

/** Builds (cached) the OCI archive of the wasm image, for `importImage` / `ctr images import`. */
export function wasmImage(name = WASM_IMAGE): BuiltImage {
  return buildOciImage(wasmImageSpec(name));
}
