import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { kuasarCacheDir } from './binaries';
import type { PrivateContainerd } from './private-containerd';

/** One entry of an image layer. Paths are relative to the rootfs ("bin/sh"), without a leading "/". */
export type LayerEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; mode?: number; content: Buffer | string }
  | { type: 'symlink'; path: string; target: string };

/** The subset of the OCI image config that our images use. */
export interface ImageRunConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
}

export interface OciImageSpec {
  /** Docker-style full reference, e.g. "docker.io/kuasar/busybox:latest". */
  name: string;
  entries: LayerEntry[];
  config: ImageRunConfig;
}

export interface BuiltImage {
  name: string;
  /** The OCI archive (tar of an OCI image layout), ready for `ctr images import`. */
  tarPath: string;
  /** sha256:… of the image manifest: what containerd reports as the image's target digest. */
  manifestDigest: string;
  /** sha256:… of the image config: what CRI reports as the image id. */
  configDigest: string;
}

export class ImageBuildError extends Error {
  override readonly name = 'ImageBuildError';
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const REF_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\.[a-z0-9-]+)*(?::\d+)?\/[a-z0-9._/-]+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

// ---------------------------------------------------------------------------------------------
// ustar writer. Written here rather than shelling out so the bytes (hence the digests and the
// cache key) depend only on the entries: no mtime, uid, user name or tar version leaks in.

function octal(n: number, width: number): string {
  // width includes the trailing NUL
  const s = n.toString(8);
  if (s.length > width - 1) throw new ImageBuildError(`tar: value ${n} does not fit a ${width}-byte field`);
  return s.padStart(width - 1, '0') + '\0';
}

function splitName(name: string): { name: string; prefix: string } {
  if (Buffer.byteLength(name) <= 100) return { name, prefix: '' };
  // ustar splits long names at a '/' into prefix (≤155) and name (≤100).
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest.length > 0) return { name: rest, prefix };
  }
  throw new ImageBuildError(`tar: path too long for ustar: ${name}`);
}

function tarHeader(name: string, opts: { mode: number; size: number; typeflag: string; linkname?: string }): Buffer {
  const h = Buffer.alloc(512, 0);
  const { name: n, prefix } = splitName(name);
  const linkname = opts.linkname ?? '';
  if (Buffer.byteLength(linkname) > 100) throw new ImageBuildError(`tar: link target too long: ${linkname}`);
  h.write(n, 0, 100, 'utf8');
  h.write(octal(opts.mode & 0o7777, 8), 100, 8, 'ascii');
  h.write(octal(0, 8), 108, 8, 'ascii'); // uid
  h.write(octal(0, 8), 116, 8, 'ascii'); // gid
  h.write(octal(opts.size, 12), 124, 12, 'ascii');
  h.write(octal(0, 12), 136, 12, 'ascii'); // mtime: epoch, for reproducibility
  h.write('        ', 148, 8, 'ascii'); // checksum placeholder (spaces) while summing
  h.write(opts.typeflag, 156, 1, 'ascii');
  h.write(linkname, 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.write('root', 265, 32, 'ascii');
  h.write('root', 297, 32, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 8, 'ascii');
  return h;
}

/** Serialises entries as a ustar archive, sorted by path, owned by 0:0, mtime 0. */
export function writeTar(entries: LayerEntry[]): Buffer {
  const seen = new Set<string>();
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts: Buffer[] = [];
  for (const e of sorted) {
    if (typeof e.path !== 'string' || e.path === '' || e.path.startsWith('/') || e.path.split('/').includes('..')) {
      throw new ImageBuildError(`tar: bad entry path '${String(e.path)}' (relative, no '..')`);
    }
    const p = e.path.replace(/\/+$/, '');
    if (seen.has(p)) throw new ImageBuildError(`tar: duplicate entry '${p}'`);
    seen.add(p);
    if (e.type === 'dir') {
      parts.push(tarHeader(`${p}/`, { mode: e.mode ?? 0o755, size: 0, typeflag: '5' }));
    } else if (e.type === 'symlink') {
      parts.push(tarHeader(p, { mode: 0o777, size: 0, typeflag: '2', linkname: e.target }));
    } else if (e.type === 'file') {
      const data = typeof e.content === 'string' ? Buffer.from(e.content) : e.content;
      parts.push(tarHeader(p, { mode: e.mode ?? 0o644, size: data.length, typeflag: '0' }), data);
      const pad = (512 - (data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad, 0));
    } else {
      throw new ImageBuildError(`tar: unknown entry type '${String((e as { type: unknown }).type)}'`);
    }
  }
  parts.push(Buffer.alloc(1024, 0));
  return Buffer.concat(parts);
}

/** Adds the parent directories every entry needs (tar readers cope without, snapshotters prefer them). */
function withParents(entries: LayerEntry[]): LayerEntry[] {
  const dirs = new Set(entries.filter((e) => e.type === 'dir').map((e) => e.path.replace(/\/+$/, '')));
  const out = [...entries];
  for (const e of entries) {
    const segs = e.path.replace(/\/+$/, '').split('/');
    for (let i = 1; i < segs.length; i++) {
      const d = segs.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        out.push({ type: 'dir', path: d });
      }
    }
  }
  return out;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * Builds the OCI archive in memory: one gzip'd layer, config, manifest, index.json naming the
 * image both the containerd way (io.containerd.image.name = full name) and the OCI way
 * (org.opencontainers.image.ref.name = the tag), as `ctr images export` does.
 */
export function buildOciArchive(spec: OciImageSpec): { archive: Buffer; manifestDigest: string; configDigest: string } {
  if (!spec || typeof spec.name !== 'string' || !REF_RE.test(spec.name)) {
    throw new ImageBuildError(`image name '${String(spec?.name)}' must be a full reference like docker.io/org/name:tag`);
  }
  if (!Array.isArray(spec.entries)) throw new ImageBuildError('image entries must be an array');
  const layerTar = writeTar(withParents(spec.entries));
  // gzip header from zlib carries mtime 0 and a fixed OS byte, so the layer digest is stable.
  const layer = gzipSync(layerTar, { level: 9 });
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: [DEFAULT_PATH], ...spec.config },
    rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] },
    history: [{ created_by: 'kuasar testkit oci-image.ts' }],
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
  }));
  const tag = spec.name.slice(spec.name.lastIndexOf(':') + 1);
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: sha256(manifest),
      size: manifest.length,
      platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': spec.name, 'org.opencontainers.image.ref.name': tag },
    }],
  }));
  const blob = (b: Buffer): LayerEntry => ({ type: 'file', path: `blobs/sha256/${sha256(b).slice(7)}`, content: b });
  const archive = writeTar([
    { type: 'file', path: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { type: 'file', path: 'index.json', content: index },
    { type: 'dir', path: 'blobs' },
    { type: 'dir', path: 'blobs/sha256' },
    blob(layer),
    blob(config),
    blob(manifest),
  ]);
  return { archive, manifestDigest: sha256(manifest), configDigest: sha256(config) };
}

/** Builds (or reuses) the archive under `${KUASAR_CACHE}/images/`, keyed by its content hash. */
export function buildOciImage(spec: OciImageSpec, cacheDir = path.join(kuasarCacheDir(), 'images')): BuiltImage {
  const { archive, manifestDigest, configDigest } = buildOciArchive(spec);
  const base = spec.name.replace(/^.*\//, '').replace(/[^A-Za-z0-9_.-]/g, '_');
  const tarPath = path.join(cacheDir, `${base}-${sha256(archive).slice(7, 23)}.tar`);
  if (!existsSync(tarPath) || statSync(tarPath).size !== archive.length) {
    mkdirSync(cacheDir, { recursive: true });
    // tmp + rename, so a concurrent builder never imports a half-written archive.
    const tmp = `${tarPath}.${process.pid}.tmp`;
    writeFileSync(tmp, archive);
    renameSync(tmp, tarPath);
  }
  return { name: spec.name, tarPath, manifestDigest, configDigest };
}

// ---------------------------------------------------------------------------------------------
// The two images the CRI tests use.

export const BUSYBOX_IMAGE = 'docker.io/kuasar/busybox:latest';
export const PAUSE_IMAGE = 'docker.io/kuasar/pause:latest';

function staticBinary(file: string, pkg: string): Buffer {
  if (!existsSync(file)) throw new ImageBuildError(`${file} not found; install Debian's ${pkg}`);
  const data = readFileSync(file);
  // A dynamic binary would need its libc in the image; refuse it instead of building a broken image.
  const elf = data.subarray(0, 4).toString('latin1') === '\x7fELF';
  if (!elf) throw new ImageBuildError(`${file} is not an ELF binary`);
  if (data.includes(Buffer.from('/lib64/ld-linux-x86-64.so.2'))) throw new ImageBuildError(`${file} is dynamically linked; need the static build from ${pkg}`);
  return data;
}

const ETC: LayerEntry[] = [
  { type: 'file', path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' },
  { type: 'file', path: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
];
const BASE_DIRS: LayerEntry[] = ['dev', 'proc', 'sys', 'etc', 'root', 'var', 'run'].map((p) => ({ type: 'dir', path: p }) as LayerEntry)
  .concat([{ type: 'dir', path: 'tmp', mode: 0o1777 }]);

/** busybox-static with a symlink per applet at its usual path (`busybox --list-full`). */
export function busyboxImageSpec(busybox = '/bin/busybox', name = BUSYBOX_IMAGE): OciImageSpec {
  const bin = staticBinary(busybox, 'busybox-static');
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).split('\n').map((l) => l.trim()).filter(Boolean);
  const entries: LayerEntry[] = [...BASE_DIRS, ...ETC, { type: 'file', path: 'bin/busybox', mode: 0o755, content: bin }];
  for (const a of applets) {
    if (a === 'bin/busybox') continue;
    const dir = path.posix.dirname(a);
    entries.push({ type: 'symlink', path: a, target: dir === 'bin' ? 'busybox' : path.posix.relative(dir, 'bin/busybox') });
  }
  return { name, entries, config: { Cmd: ['sh'] } };
}

/** catatonit in pause mode: what containerd's podsandbox mode runs as the pod's first container. */
export function pauseImageSpec(catatonit = '/usr/bin/catatonit', name = PAUSE_IMAGE): OciImageSpec {
  const bin = staticBinary(catatonit, 'catatonit');
  return { name, entries: [...BASE_DIRS, ...ETC, { type: 'file', path: 'catatonit', mode: 0o755, content: bin }], config: { Entrypoint: ['/catatonit', '-P'] } };
}

export function busyboxImage(): BuiltImage {
  return buildOciImage(busyboxImageSpec());
}

export function pauseImage(): BuiltImage {
  return buildOciImage(pauseImageSpec());
}

export interface ImportOptions {
  namespace?: string;
  timeoutMs?: number;
}

/**
 * `ctr images import --all-platforms` into the given namespace (default k8s.io, CRI's). The
 * image is unpacked into the default snapshotter, which is what CRI uses. On 2.x ctr goes
 * through the transfer service by default; `--local` keeps the same code path as 1.x.
 */
export async function importImage(containerd: PrivateContainerd, tarPath: string, opts: ImportOptions = {}): Promise<void> {
  if (typeof tarPath !== 'string' || !existsSync(tarPath)) throw new ImageBuildError(`image archive '${String(tarPath)}' does not exist`);
  const args = ['images', 'import', '--all-platforms'];
  if (containerd.version === '2.1') args.push('--local');
  args.push(tarPath);
  await containerd.ctr(args, { namespace: opts.namespace ?? 'k8s.io', timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** Builds (cached) and imports busybox and pause into CRI's namespace. */
export async function importTestImages(containerd: PrivateContainerd, opts: ImportOptions = {}): Promise<{ busybox: BuiltImage; pause: BuiltImage }> {
  const busybox = busyboxImage();
  const pause = pauseImage();
  await importImage(containerd, busybox.tarPath, opts);
  await importImage(containerd, pause.tarPath, opts);
  return { busybox, pause };
}
