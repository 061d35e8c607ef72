import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { isRunning } from '@kuasar/sys';
import {
  BinariesNotFoundError,
  CONTAINERD_VERSIONS,
  ContainerdStartError,
  CtrError,
  PrivateContainerd,
  containerdAvailability,
  mountsUnder,
  processesMentioning,
  type ContainerdVersion,
} from '../src';

jest.setTimeout(120_000);

const BUSYBOX = '/bin/busybox';
let rootfs = '';

beforeAll(() => {
  // A minimal rootfs so ctr can run a real task (shim + runc) without any image.
  rootfs = mkdtempSync(path.join(os.tmpdir(), 'ktk-rootfs-'));
  mkdirSync(path.join(rootfs, 'bin'));
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(path.join(rootfs, d));
  copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
  for (const app of ['sh', 'sleep']) symlinkSync('busybox', path.join(rootfs, 'bin', app));
});

afterAll(() => {
  if (rootfs) rmSync(rootfs, { recursive: true, force: true });
});

async function waitGone(pid: number, ms = 5_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    // Our own child is reaped by node; a re-parented one by init, lazily here: its zombie already counts as gone.
    if (!isRunning(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !isRunning(pid);
}

describe.each(CONTAINERD_VERSIONS.map((v) => [v]))('containerd %s', (version: ContainerdVersion) => {
  const avail = containerdAvailability(version);
  if ('reason' in avail) {
    // eslint-disable-next-line no-console
    console.warn(`skipping containerd ${version}: ${avail.reason}`);
  }
  const maybe = 'bins' in avail ? it : it.skip;

  maybe('starts private, answers ctr version with its own server version, and stops clean', async () => {
    const runBefore = existsSync('/run/containerd');
    const optBefore = existsSync('/opt/containerd');
    const c = await PrivateContainerd.start({ version });
    const pid = c.pid!;
    try {
      expect(isRunning(pid)).toBe(true);
      expect(await c.serverVersion()).toMatch(new RegExp(`^${version.replace('.', '\\.')}\\.\\d+`));
      expect(statSync(c.grpcAddress).isSocket()).toBe(true);
      expect(c.ttrpcAddress).toBe(`${c.grpcAddress}.ttrpc`);
      expect(statSync(c.ttrpcAddress).isSocket()).toBe(true);
      expect(c.root.startsWith(c.dir) && existsSync(c.root)).toBe(true);
      expect(c.logs()).toMatch(/containerd successfully booted/);
      expect((await c.ctr(['plugins', 'ls'])).stdout).toMatch(/io\.containerd\.snapshotter\.v1\s+native\s+\S+\s+ok/);
    } finally {
      await c.stop();
    }
    expect(await waitGone(pid)).toBe(true);
    expect(existsSync(c.dir)).toBe(false);
    expect(mountsUnder(c.dir)).toEqual([]);
    // The log survives the temp dir, for post-mortems.
    expect(c.logs()).toMatch(/containerd successfully booted/);
    if (!runBefore) expect(existsSync('/run/containerd')).toBe(false);
    if (!optBefore) expect(existsSync('/opt/containerd')).toBe(false);
  });

  maybe('start env reaches the daemon and survives a restart; a restart with another env replaces it', async () => {
    const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    const c = await PrivateContainerd.start({ version, env: { KUASAR_TEST_MARK: 'start' } });
    try {
      expect(environ(c.pid!)).toContain('KUASAR_TEST_MARK=start');
      await c.restart('SIGTERM');
      expect(environ(c.pid!)).toContain('KUASAR_TEST_MARK=start');
      await c.restart('SIGTERM', { KUASAR_TEST_MARK: 'again' });
      expect(environ(c.pid!)).toContain('KUASAR_TEST_MARK=again');
    } finally {
      await c.stop();
    }
  });

  maybe('stop() kills a running task and its shim and unmounts what is left under its root', async () => {
    const runBefore = existsSync('/run/containerd');
    const c = await PrivateContainerd.start({ version });
    const id = `ktk-${process.pid}`;
    let shims: number[] = [];
    let taskPid = 0;
    const leftover = path.join(c.root, 'leftover-mount');
    try {
      await c.ctr(['run', '-d', '--rootfs', rootfs, id, '/bin/sleep', '1000']);
      const { stdout } = await c.ctr(['tasks', 'ls']);
      const row = new RegExp(`${id}\\s+(\\d+)\\s+RUNNING`).exec(stdout);
      expect(row).not.toBeNull();
      taskPid = Number(row![1]);
      expect(isRunning(taskPid)).toBe(true);
      shims = processesMentioning(c.grpcAddress);
      expect(shims.length).toBeGreaterThan(0);
      mkdirSync(leftover);
      expect(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', leftover]).status).toBe(0);
      expect(mountsUnder(c.dir)).toContain(leftover);
    } finally {
      await c.stop();
    }
    expect(await waitGone(taskPid)).toBe(true);
    for (const pid of shims) expect(await waitGone(pid)).toBe(true);
    expect(processesMentioning(c.grpcAddress)).toEqual([]);
    expect(mountsUnder(c.dir)).toEqual([]);
    expect(existsSync(c.dir)).toBe(false);
    expect(existsSync(`/run/containerd/runc/default/${id}`)).toBe(false);
    // Shim sockets and runc roots land in /run/containerd whatever the config says; stop() removes ours.
    if (!runBefore) expect(existsSync('/run/containerd')).toBe(false);
  });

  maybe('rejects an extraConfig that breaks containerd, with its log in the error and nothing left', async () => {
    const before = new Set(processesMentioning('--config'));
    const err = await PrivateContainerd.start({ version, extraConfig: '[plugins\nthis is = = not toml' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContainerdStartError);
    expect((err as Error).message).toMatch(/exited during start/);
    expect((err as Error).message).toMatch(/containerd log/);
    const leaked = processesMentioning('--config').filter((p) => !before.has(p));
    expect(leaked).toEqual([]);
  });

  maybe('rejects an extraConfig repeating a generated table before starting anything', async () => {
    const table = PrivateContainerd.configTables(version).find((t) => t.includes('cri'))!;
    await expect(PrivateContainerd.start({ version, extraConfig: `[${table}]\nfoo = 1\n` })).rejects.toThrow(/repeats table/);
  });

  maybe('applies extraConfig: top-level keys stay top-level, tables are added', async () => {
    const c = await PrivateContainerd.start({ version, extraConfig: 'disabled_plugins = ["io.containerd.snapshotter.v1.native"]\n[debug]\n  level = "debug"\n' });
    try {
      const { stdout } = await c.ctr(['plugins', 'ls']);
      // A disabled plugin is not listed at all; the first test shows native is listed by default.
      expect(stdout).not.toMatch(/io\.containerd\.snapshotter\.v1\s+native\s/);
      expect(stdout).toMatch(/io\.containerd\.snapshotter\.v1\s+overlayfs\s+\S+\s+ok/);
      await c.ctr(['namespaces', 'create', 'ktk']);
      expect(c.logs()).toMatch(/level=debug/);
      await expect(c.ctr(['namespaces', 'create', 'ktk'])).rejects.toBeInstanceOf(CtrError);
    } finally {
      await c.stop();
    }
  });
});

it('names the fix when a version is unknown', () => {
  expect(() => containerdAvailability('9.9' as ContainerdVersion)).not.toThrow();
  expect(containerdAvailability('9.9' as ContainerdVersion)).toEqual({ reason: expect.stringMatching(/unknown containerd version '9.9'/) });
  return expect(PrivateContainerd.start({ version: '9.9' as ContainerdVersion })).rejects.toBeInstanceOf(BinariesNotFoundError);
});
