import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import {
  BUSYBOX_IMAGE,
  ImageBuildError,
  PAUSE_IMAGE,
  PrivateContainerd,
  buildOciArchive,
  buildOciImage,
  busyboxImageSpec,
  containerdAvailability,
  importImage,
  pauseImageSpec,
  writeTar,
  type ContainerdVersion,
  type OciImageSpec,
} from '../src';

jest.setTimeout(120_000);

let tmp = '';
beforeAll(() => { tmp = mkdtempSync(path.join(os.tmpdir(), 'koci-')); });
afterAll(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }); });

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Extracts a tar with GNU tar (an independent reader) into a fresh dir. */
function untar(archive: Buffer): string {
  const dir = mkdtempSync(path.join(tmp, 'x-'));
  const r = spawnSync('tar', ['-x', '-C', dir, '-f', '-'], { input: archive });
  if (r.status !== 0) throw new Error(`tar -x failed: ${r.stderr.toString()}`);
  return dir;
}

function listTar(archive: Buffer): string[] {
  const r = spawnSync('tar', ['-tv', '--numeric-owner', '-f', '-'], { input: archive, encoding: 'buffer' });
  if (r.status !== 0) throw new Error(`tar -t failed: ${r.stderr.toString()}`);
  return r.stdout.toString().split('\n').filter(Boolean);
}

describe('writeTar', () => {
  it('writes ustar that GNU tar reads: types, modes, owner 0:0, mtime 0, long names', () => {
    const long = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(30)}.txt`; // > 100 bytes: needs the prefix field
    const tar = writeTar([
      { type: 'dir', path: 'etc' },
      { type: 'file', path: 'etc/x', mode: 0o640, content: 'hello\n' },
      { type: 'symlink', path: 'etc/y', target: 'x' },
      { type: 'file', path: 'bin/tool', mode: 0o755, content: Buffer.alloc(1000, 7) },
      { type: 'file', path: long, content: 'deep' },
    ]);
    expect(tar.length % 512).toBe(0);
    const listing = listTar(tar);
    expect(listing.find((l) => l.endsWith(' etc/x'))).toMatch(/^-rw-r----- 0\/0 +6 1970-01-01 00:00 etc\/x$/);
    expect(listing.find((l) => l.includes('etc/y'))).toMatch(/^lrwxrwxrwx 0\/0 .* etc\/y -> x$/);
    expect(listing.find((l) => l.endsWith(' etc/'))).toMatch(/^drwxr-xr-x 0\/0 /);
    const dir = untar(tar);
    expect(readFileSync(path.join(dir, 'etc/x'), 'utf8')).toBe('hello\n');
    expect(readlinkSync(path.join(dir, 'etc/y'))).toBe('x');
    expect(readFileSync(path.join(dir, long), 'utf8')).toBe('deep');
    expect(statSync(path.join(dir, 'bin/tool')).mode & 0o777).toBe(0o755);
    expect(readFileSync(path.join(dir, 'bin/tool'))).toEqual(Buffer.alloc(1000, 7));
  });

  it('is independent of input order', () => {
    const a = { type: 'file' as const, path: 'a', content: '1' };
    const b = { type: 'file' as const, path: 'b', content: '2' };
    expect(writeTar([a, b]).equals(writeTar([b, a]))).toBe(true);
  });

  it.each([
    ['absolute path', [{ type: 'file', path: '/etc/x', content: '' }]],
    ['dot-dot', [{ type: 'file', path: 'a/../../x', content: '' }]],
    ['empty path', [{ type: 'dir', path: '' }]],
    ['duplicate', [{ type: 'dir', path: 'a' }, { type: 'dir', path: 'a/' }]],
    ['link target too long', [{ type: 'symlink', path: 'l', target: 'x'.repeat(101) }]],
    ['name unsplittable', [{ type: 'file', path: 'n'.repeat(120), content: '' }]],
  ])('rejects %s', (_what, entries) => {
    expect(() => writeTar(entries as never)).toThrow(ImageBuildError);
  });
});

describe('OCI archive', () => {
  const spec: OciImageSpec = {
    name: 'docker.io/kuasar/unit:v1',
    entries: [{ type: 'file', path: 'usr/share/hello', content: 'hi' }],
    config: { Cmd: ['/bin/true'] },
  };

  it('is a valid OCI image layout whose digests match their blobs', () => {
    const { archive, manifestDigest, configDigest } = buildOciArchive(spec);
    const dir = untar(archive);
    expect(JSON.parse(readFileSync(path.join(dir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const blob = (d: string): Buffer => {
      const b = readFileSync(path.join(dir, 'blobs/sha256', d.replace(/^sha256:/, '')));
      expect(`sha256:${sha(b)}`).toBe(d);
      return b;
    };
    const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0].digest).toBe(manifestDigest);
    expect(index.manifests[0].annotations).toEqual({ 'io.containerd.image.name': spec.name, 'org.opencontainers.image.ref.name': 'v1' });
    const manifestBuf = blob(manifestDigest);
    expect(index.manifests[0].size).toBe(manifestBuf.length);
    const manifest = JSON.parse(manifestBuf.toString());
    expect(manifest.config.digest).toBe(configDigest);
    const config = JSON.parse(blob(configDigest).toString());
    expect(config).toMatchObject({ os: 'linux', architecture: 'amd64', config: { Cmd: ['/bin/true'] } });
    const layer = blob(manifest.layers[0].digest);
    expect(manifest.layers[0].mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    const layerTar = gunzipSync(layer);
    // diff_id is the digest of the uncompressed layer; containerd checks it when unpacking.
    expect(config.rootfs.diff_ids).toEqual([`sha256:${sha(layerTar)}`]);
    const rootfs = untar(layerTar);
    expect(readFileSync(path.join(rootfs, 'usr/share/hello'), 'utf8')).toBe('hi');
    expect(statSync(path.join(rootfs, 'usr/share')).isDirectory()).toBe(true);
  });

  it('is byte-for-byte reproducible', () => {
    expect(buildOciArchive(spec).archive.equals(buildOciArchive(spec).archive)).toBe(true);
    const other = buildOciArchive({ ...spec, config: { Cmd: ['/bin/false'] } });
    expect(other.configDigest).not.toBe(buildOciArchive(spec).configDigest);
  });

  it.each(['busybox', 'docker.io/kuasar/x', 'Docker.io/kuasar/x:latest', ''])('rejects image name %p', (name) => {
    expect(() => buildOciArchive({ ...spec, name })).toThrow(ImageBuildError);
  });

  it('caches by content hash', () => {
    const cache = path.join(tmp, 'cache');
    const a = buildOciImage(spec, cache);
    const m1 = statSync(a.tarPath).mtimeMs;
    const b = buildOciImage(spec, cache);
    expect(b.tarPath).toBe(a.tarPath);
    expect(statSync(b.tarPath).mtimeMs).toBe(m1);
    expect(path.dirname(a.tarPath)).toBe(cache);
    const c = buildOciImage({ ...spec, entries: [{ type: 'file', path: 'other', content: 'x' }] }, cache);
    expect(c.tarPath).not.toBe(a.tarPath);
  });
});

describe('test images', () => {
  it('busybox: every applet links to a static busybox that runs in a chroot', () => {
    const s = busyboxImageSpec();
    expect(s.name).toBe(BUSYBOX_IMAGE);
    const { archive } = buildOciArchive(s);
    const dir = untar(archive);
    const manifestDigest = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')).manifests[0].digest.slice(7);
    const manifest = JSON.parse(readFileSync(path.join(dir, 'blobs/sha256', manifestDigest), 'utf8'));
    const rootfs = untar(gunzipSync(readFileSync(path.join(dir, 'blobs/sha256', manifest.layers[0].digest.slice(7)))));
    expect(readlinkSync(path.join(rootfs, 'bin/sh'))).toBe('busybox');
    expect(readlinkSync(path.join(rootfs, 'sbin/ip'))).toBe('../bin/busybox');
    expect(statSync(path.join(rootfs, 'tmp')).mode & 0o7777).toBe(0o1777);
    const r = spawnSync('chroot', [rootfs, '/bin/sh', '-c', 'echo $(id -un):$(cat /etc/passwd | wc -l); ls /usr/bin/env'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('root:2\n/usr/bin/env\n');
  });

  it('pause: catatonit -P', () => {
    const s = pauseImageSpec();
    expect(s.name).toBe(PAUSE_IMAGE);
    expect(s.config.Entrypoint).toEqual(['/catatonit', '-P']);
    expect(s.entries.some((e) => e.type === 'file' && e.path === 'catatonit' && e.mode === 0o755)).toBe(true);
  });

  it('refuses a dynamically linked or missing binary', () => {
    expect(() => busyboxImageSpec('/bin/ls')).toThrow(/dynamically linked/);
    expect(() => pauseImageSpec('/no/such/catatonit')).toThrow(ImageBuildError);
    const notElf = path.join(tmp, 'script');
    mkdirSync(tmp, { recursive: true });
    writeFileSync(notElf, '#!/bin/sh\n', { mode: 0o755 });
    expect(() => pauseImageSpec(notElf)).toThrow(/not an ELF/);
  });
});

describe.each((['2.1', '1.7', '1.6'] as ContainerdVersion[]).map((v) => [v]))('importImage into containerd %s', (version: ContainerdVersion) => {
  const avail = containerdAvailability(version);
  if ('reason' in avail) {
    // eslint-disable-next-line no-console
    console.warn(`skipping containerd ${version}: ${avail.reason}`);
  }
  const maybe = 'bins' in avail ? it : it.skip;

  maybe('names the image and unpacks it into overlayfs', async () => {
    const ctrd = await PrivateContainerd.start({ version });
    try {
      const img = buildOciImage({ name: 'docker.io/kuasar/unit:v1', entries: [{ type: 'file', path: 'hello', content: 'hi' }], config: {} }, path.join(tmp, 'cache'));
      await importImage(ctrd, img.tarPath, { namespace: 'k8s.io' });
      const ls = (await ctrd.ctr(['images', 'ls'], { namespace: 'k8s.io' })).stdout;
      const row = ls.split('\n').find((l) => l.startsWith(`${img.name} `));
      expect(row).toBeDefined();
      expect(row).toContain(img.manifestDigest);
      // Unpacked: a snapshot exists in the default (overlayfs) snapshotter.
      const check = (await ctrd.ctr(['images', 'check'], { namespace: 'k8s.io' })).stdout;
      expect(check).toMatch(/complete/);
      const snaps = (await ctrd.ctr(['snapshots', '--snapshotter', 'overlayfs', 'ls'], { namespace: 'k8s.io' })).stdout;
      expect(snaps.split('\n').filter((l) => /Committed/.test(l)).length).toBeGreaterThanOrEqual(1);
      // Other namespaces do not see it.
      expect((await ctrd.ctr(['images', 'ls', '-q'], { namespace: 'default' })).stdout).not.toContain(img.name);
      await expect(importImage(ctrd, path.join(tmp, 'absent.tar'))).rejects.toBeInstanceOf(ImageBuildError);
    } finally {
      await ctrd.stop();
    }
  });
});
