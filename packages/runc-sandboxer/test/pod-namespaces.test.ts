import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MNT_DETACH, setChildSubreaper, umount2 } from '@kuasar/sys';
import {
  PodNamespaceError,
  inspectPodNamespaces,
  readPodNamespaces,
  setUpPodNamespaces,
  tearDownPodNamespaces,
  type PodIsolation,
  type PodNamespaces,
} from '../src/pod-namespaces';
import { isProcessAlive, mountPointsUnder, readNsPids } from '../src/proc';
import { defaultCgroupParent, podSpecContext, rewriteContainerSpec } from '../src/spec-rewrite';
import { OciCli, baseSpec, engineWorks, makeRootfs, nsInode, removeCgroup } from './oci-fixture';

jest.setTimeout(60_000);

/** Our own cgroup subtree, so cleanup never touches other tests' cgroups. */
const CGROUP_PREFIX = `/kuasar-podns-test-${process.pid}`;

let work: string;
let root: string; // the sandboxer's state dir: pods live in <root>/<id>/
let rootfs: string;
let runc: OciCli;
const containers: Array<{ cli: OciCli; id: string }> = [];
const netnses: string[] = [];

beforeAll(() => {
  // These tests run plain runc, not the task core: its container processes must be re-parented to init, not to a
  // subreaper left over from another test file in this jest worker, where nobody would reap them.
  setChildSubreaper(false);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-runc-'));
  root = path.join(work, 'state');
  fs.mkdirSync(root);
  rootfs = makeRootfs(work);
  runc = new OciCli('runc', path.join(work, 'runc-root'));
});

afterEach(async () => {
  for (const c of containers.splice(0)) await c.cli.deleteForce(c.id);
  for (const id of fs.readdirSync(root)) await tearDownPodNamespaces(podAt(id)).catch(() => undefined);
  for (const n of netnses.splice(0)) execFileSync('ip', ['netns', 'delete', n], { stdio: 'ignore' });
});

afterAll(() => {
  removeCgroup(CGROUP_PREFIX);
  fs.rmSync(work, { recursive: true, force: true });
});

const ISOLATED: PodIsolation = { network: 'pod', pid: 'container', ipc: 'pod' };
let seq = 0;
const newId = (): string => `pod${process.pid}x${++seq}`;
const podAt = (id: string): string => path.join(root, id);

/** Creates a container of the pod from runc's default spec, rewritten the way the task core will. */
function bundleFor(cli: OciCli, pod: PodNamespaces, cid: string, args: string[], reportedPid = pod.holder?.pid ?? 0): string {
  const ctx = podSpecContext(pod, reportedPid, `${CGROUP_PREFIX}${defaultCgroupParent(pod.id)}`);
  const spec = rewriteContainerSpec(baseSpec(rootfs, args), cid, ctx);
  containers.push({ cli, id: cid });
  return cli.writeBundle(work, cid, spec);
}

function podMountsIn(table = fs.readFileSync('/proc/self/mountinfo', 'utf8')): string[] {
  return table.split('\n').filter((l) => l.includes(root));
}

describe('pod namespaces with real runc', () => {
  it('gives two containers of a pod the pod hostname and one ipc namespace, and own pid namespaces', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED, hostname: 'web-0' });
    expect(pod.holder).toBeUndefined(); // no resident process for a pod without shared PIDs
    const probe = ['sh', '-c', 'hostname; for n in ipc uts pid; do readlink /proc/self/ns/$n; done'];
    await runc.runDetached(bundleFor(runc, pod, `${pod.id}-a`, ['sleep', '1000']), `${pod.id}-a`);
    const a = (await runc.exec(`${pod.id}-a`, probe)).trim().split('\n');
    const b = (await runc.run(bundleFor(runc, pod, `${pod.id}-b`, probe), `${pod.id}-b`)).trim().split('\n');
    expect(a[0]).toBe('web-0');
    expect(b[0]).toBe('web-0');
    expect(a[1]).toBe(`ipc:[${nsInode(pod.paths.ipc!)}]`);
    expect(b[1]).toBe(a[1]);
    expect(b[2]).toBe(a[2]); // uts
    expect(a[1]).not.toBe(fs.readlinkSync('/proc/self/ns/ipc'));
    expect(b[3]).not.toBe(a[3]); // pid 'container': each its own pid namespace
    expect(a[3]).not.toBe(fs.readlinkSync('/proc/self/ns/pid'));
    expect(fs.readFileSync('/proc/sys/kernel/hostname', 'utf8').trim()).not.toBe('web-0');
  });

  it('shares one pid namespace under a catatonit holder that is pid 1', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' }, hostname: 'shared' });
    const holder = pod.holder!;
    expect(isProcessAlive(holder)).toBe(true);
    expect(readNsPids(holder.pid)).toEqual([holder.pid, 1]);
    expect(fs.readlinkSync(`/proc/${holder.pid}/comm`.replace('comm', 'exe'))).toBe('/usr/bin/catatonit');
    await runc.runDetached(bundleFor(runc, pod, `${pod.id}-a`, ['sleep', '1001']), `${pod.id}-a`);
    const ps = await runc.run(bundleFor(runc, pod, `${pod.id}-b`, ['ps', '-o', 'pid,args']), `${pod.id}-b`);
    const rows = ps.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    expect(rows).toContainEqual(['1', 'catatonit', '-P']);
    expect(rows.some((r) => r[1] === 'sleep' && r[2] === '1001')).toBe(true);
    const aPid = (await runc.state(`${pod.id}-a`)).pid;
    expect(fs.readlinkSync(`/proc/${aPid}/ns/pid`)).toBe(fs.readlinkSync(`/proc/${holder.pid}/ns/pid`));
  });

  it('joins a netns made by ip netns add', async () => {
    const name = `kuasar-test-${process.pid}-${seq}`;
    execFileSync('ip', ['netns', 'add', name]);
    netnses.push(name);
    const netnsPath = `/var/run/netns/${name}`;
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' }, hostname: 'net', netnsPath });
    expect(pod.paths.net).toBe(netnsPath);
    expect(pod.ownNetns).toBe(false);
    expect(fs.readlinkSync(`/proc/${pod.holder!.pid}/ns/net`)).toBe(`net:[${nsInode(netnsPath)}]`);
    const out = await runc.run(bundleFor(runc, pod, `${pod.id}-a`, ['sh', '-c', 'readlink /proc/self/ns/net; ip -o link']), `${pod.id}-a`);
    const [net, ...links] = out.trim().split('\n');
    expect(net).toBe(`net:[${nsInode(netnsPath)}]`);
    expect(links.map((l) => l.split(':')[1]?.trim())).toEqual(['lo']);
  });

  it('makes a private loopback-only netns when there is no netns path', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED });
    expect(pod.ownNetns).toBe(true);
    const out = await runc.run(bundleFor(runc, pod, `${pod.id}-a`, ['sh', '-c', 'readlink /proc/self/ns/net; ip -o link show lo']), `${pod.id}-a`);
    const [net, lo] = out.trim().split('\n');
    expect(net).toBe(`net:[${nsInode(pod.paths.net!)}]`);
    expect(net).not.toBe(fs.readlinkSync('/proc/self/ns/net'));
    expect(lo).toMatch(/<LOOPBACK,UP,LOWER_UP>/);
  });

  it('keeps a host-network pod in the host net and uts namespaces (runc accepts the rewritten spec)', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { network: 'node', pid: 'container', ipc: 'pod' }, hostname: 'ignored' });
    expect(pod.paths).toEqual({ ipc: path.join(root, pod.id, 'ns/ipc') });
    const out = await runc.run(bundleFor(runc, pod, `${pod.id}-a`, ['sh', '-c', 'readlink /proc/self/ns/net; readlink /proc/self/ns/uts; hostname']), `${pod.id}-a`);
    expect(out.trim().split('\n')).toEqual([
      fs.readlinkSync('/proc/self/ns/net'),
      fs.readlinkSync('/proc/self/ns/uts'),
      fs.readFileSync('/proc/sys/kernel/hostname', 'utf8').trim(),
    ]);
  });

  it('runs the pod with crun too, where crun works here', async () => {
    const crun = new OciCli('crun', path.join(work, 'crun-root'));
    if (!(await engineWorks(crun, rootfs, work))) {
      console.warn('crun cannot run containers on this host (hybrid cgroups with hugetlb in cgroup2); crun case skipped');
      return;
    }
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' }, hostname: 'crun-pod' });
    const out = await crun.run(bundleFor(crun, pod, `${pod.id}-a`, ['sh', '-c', 'hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid']), `${pod.id}-a`);
    expect(out.trim().split('\n')).toEqual([
      'crun-pod',
      `ipc:[${nsInode(pod.paths.ipc!)}]`,
      fs.readlinkSync(`/proc/${pod.holder!.pid}/ns/pid`),
    ]);
  });
});

describe('teardown', () => {
  it('leaves no mounts, processes or directories, and is idempotent', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' }, hostname: 'gone' });
    expect(podMountsIn().length).toBe(5); // ns dir self-bind + ipc, uts, net, pid
    await tearDownPodNamespaces(podAt(id));
    expect(podMountsIn()).toEqual([]);
    expect(isProcessAlive(pod.holder!)).toBe(false);
    expect(fs.existsSync(path.join(root, id))).toBe(false);
    await tearDownPodNamespaces(podAt(id));
    expect(inspectPodNamespaces(podAt(id))).toEqual({ state: 'absent' });
  });

  it('keeps files it does not own in the pod dir', async () => {
    const id = newId();
    await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED });
    fs.writeFileSync(path.join(root, id, 'sandbox.json'), '{}');
    await tearDownPodNamespaces(podAt(id));
    expect(fs.readdirSync(path.join(root, id))).toEqual(['sandbox.json']);
    fs.rmSync(path.join(root, id), { recursive: true });
  });

  it('works from the mount table when the record is gone', async () => {
    const id = newId();
    await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED });
    fs.rmSync(path.join(root, id, 'namespaces.json'));
    expect(inspectPodNamespaces(podAt(id))).toMatchObject({ state: 'dead' });
    await tearDownPodNamespaces(podAt(id));
    expect(podMountsIn()).toEqual([]);
  });

  it('does not leak ns mounts into a peer mount of a shared parent', async () => {
    const shared = path.join(work, 'shared');
    const peer = path.join(work, 'peer');
    fs.mkdirSync(shared);
    fs.mkdirSync(peer);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', shared]);
    try {
      execFileSync('mount', ['--make-shared', shared]);
      execFileSync('mount', ['--bind', shared, peer]);
      const id = newId();
      await setUpPodNamespaces(path.join(shared, id), { id, isolation: { ...ISOLATED, pid: 'pod' } });
      const inPeer = mountPointsUnder(peer);
      expect(inPeer.sort()).toEqual([peer, path.join(peer, id, 'ns')]); // the private self-bind only, no nsfs
      await tearDownPodNamespaces(path.join(shared, id));
      expect(mountPointsUnder(peer)).toEqual([peer]);
      expect(mountPointsUnder(shared)).toEqual([shared]);
    } finally {
      execFileSync('umount', ['-R', '-l', peer]);
      execFileSync('umount', ['-R', '-l', shared]);
    }
  });
});

describe('recovery detection', () => {
  it('reports alive, then dead when the holder dies', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' } });
    expect(inspectPodNamespaces(podAt(id))).toEqual({ state: 'alive', record: pod });
    process.kill(pod.holder!.pid, 'SIGKILL');
    for (let i = 0; i < 200 && isProcessAlive(pod.holder!); i++) await new Promise((r) => setTimeout(r, 10));
    expect(inspectPodNamespaces(podAt(id))).toMatchObject({ state: 'dead', reason: expect.stringMatching(/holder .* is gone/) });
  });

  it('reports dead when an ns file is no longer mounted, or the netns is gone', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED });
    expect(inspectPodNamespaces(podAt(id)).state).toBe('alive');
    umount2(pod.paths.uts!, MNT_DETACH);
    expect(inspectPodNamespaces(podAt(id))).toMatchObject({ state: 'dead', reason: expect.stringMatching(/uts namespace file .* is not mounted/) });

    const name = `kuasar-test-${process.pid}-r${seq}`;
    execFileSync('ip', ['netns', 'add', name]);
    const id2 = newId();
    await setUpPodNamespaces(podAt(id2), { id: id2, isolation: ISOLATED, netnsPath: `/var/run/netns/${name}` });
    expect(inspectPodNamespaces(podAt(id2)).state).toBe('alive');
    execFileSync('ip', ['netns', 'delete', name]);
    expect(inspectPodNamespaces(podAt(id2))).toMatchObject({ state: 'dead', reason: expect.stringMatching(/netns .* is gone/) });
  });

  it('treats a reused pid with another start time as dead', async () => {
    const id = newId();
    const pod = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' } });
    const file = path.join(root, id, 'namespaces.json');
    const forged = { ...pod, holder: { pid: pod.holder!.pid, startTime: '1' } };
    fs.writeFileSync(file, JSON.stringify(forged));
    expect(inspectPodNamespaces(podAt(id))).toMatchObject({ state: 'dead' });
    fs.writeFileSync(file, JSON.stringify(pod)); // let teardown kill the real holder
  });
});

describe('bad input', () => {
  it.each([
    [{ hostname: '-rf' }, /invalid hostname/],
    [{ hostname: 'a'.repeat(65) }, /invalid hostname/],
    [{ netnsPath: '/nonexistent/netns' }, /does not exist/],
    [{ netnsPath: 'relative' }, /must be absolute/],
    [{ netnsPath: '/' }, /not a namespace file/],
    [{ netnsPath: '/etc/hostname' }, /not a namespace file/],
    [{ isolation: { network: 'node', pid: 'pod', ipc: 'pod' }, netnsPath: '/proc/self/ns/net' }, /host-network pod cannot have a netns/],
    [{ isolation: { network: 'pod', pid: 'shared', ipc: 'pod' } }, /invalid pid mode/],
    [{ id: '../escape' }, /invalid sandbox id/],
  ])('rejects %j and leaves nothing behind', async (over, message) => {
    const req = { id: newId(), isolation: ISOLATED, ...over } as Parameters<typeof setUpPodNamespaces>[1];
    await expect(setUpPodNamespaces(podAt(req.id), req)).rejects.toThrow(message);
    expect(podMountsIn()).toEqual([]);
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it('rolls back a setup that fails half-way', async () => {
    const id = newId();
    const err = await setUpPodNamespaces(podAt(id), { id, isolation: { ...ISOLATED, pid: 'pod' } }, { tools: { catatonit: '/nonexistent/catatonit' } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PodNamespaceError);
    expect((err as PodNamespaceError).code).toBe('setup_failed');
    expect(podMountsIn()).toEqual([]);
    expect(fs.existsSync(path.join(root, id))).toBe(false);
    expect(readPodNamespaces(podAt(id))).toBeUndefined();
  });

  it('refuses to set up the same pod twice', async () => {
    const id = newId();
    await setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED });
    await expect(setUpPodNamespaces(podAt(id), { id, isolation: ISOLATED })).rejects.toThrow(/already has namespaces/);
    expect(inspectPodNamespaces(podAt(id)).state).toBe('alive');
  });
});
