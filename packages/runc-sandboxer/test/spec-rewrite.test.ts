import type { PodNamespaces } from '../src/pod-namespaces';
import { SpecRewriteError, podCgroupsPath, podSpecContext, rewriteContainerSpec, type OciSpec, type PodSpecContext } from '../src/spec-rewrite';

const NS = '/run/kuasar/runc/sb1/ns';
const NETNS = '/var/run/netns/cni-1234';

function pod(over: Partial<PodSpecContext> = {}): PodSpecContext {
  return {
    sandboxId: 'sb1',
    reportedPid: 0,
    network: { path: NETNS },
    ipc: { path: `${NS}/ipc` },
    uts: { path: `${NS}/uts` },
    pid: 'container',
    hostname: 'web-0',
    cgroupParent: '/kubepods/besteffort/podabc',
    ...over,
  };
}

/** The namespaces containerd 2.x CRI puts into a container spec for sandbox pid `pid`. */
function criSpec(pid: number, opts: { sharedPid?: boolean; extra?: OciSpec } = {}): OciSpec {
  const ns = [
    { type: 'pid' as const, ...(opts.sharedPid ? { path: `/proc/${pid}/ns/pid` } : {}) },
    { type: 'ipc', path: `/proc/${pid}/ns/ipc` },
    { type: 'uts', path: `/proc/${pid}/ns/uts` },
    { type: 'mount' },
    { type: 'network', path: `/proc/${pid}/ns/net` },
  ];
  return { ociVersion: '1.1.0', process: { args: ['sh'] }, linux: { namespaces: ns, resources: { devices: [] } }, ...opts.extra };
}

const nothingResolves = { resolves: () => false };
const allResolves = { resolves: () => true };

function byType(spec: OciSpec): Record<string, string | undefined> {
  return Object.fromEntries((spec.linux?.namespaces ?? []).map((n) => [n.type, n.path]));
}

describe('rewriteContainerSpec', () => {
  it('replaces CRI 2.x /proc/<pid>/ns paths of a holder-less pod (pid 0) with the pod files', () => {
    const out = rewriteContainerSpec(criSpec(0), 'c1', pod(), nothingResolves);
    expect(byType(out)).toEqual({ pid: undefined, ipc: `${NS}/ipc`, uts: `${NS}/uts`, mount: undefined, network: NETNS });
    expect(out.linux?.namespaces?.find((n) => n.type === 'pid')).toEqual({ type: 'pid' });
    expect(out.linux?.cgroupsPath).toBe('/kubepods/besteffort/podabc/c1');
    // everything else passes through
    expect(out.process).toEqual({ args: ['sh'] });
    expect(out.linux?.['resources']).toEqual({ devices: [] });
  });

  it('replaces paths built from the reported holder pid even though they resolve', () => {
    const p = pod({ reportedPid: 4242, pid: { path: `${NS}/pid` } });
    const out = rewriteContainerSpec(criSpec(4242, { sharedPid: true }), 'c1', p, allResolves);
    expect(byType(out)).toMatchObject({ pid: `${NS}/pid`, ipc: `${NS}/ipc`, uts: `${NS}/uts`, network: NETNS });
  });

  it('joins the pod pid namespace from an OCI default pid entry (no path) in a shared-pid pod', () => {
    const out = rewriteContainerSpec(criSpec(7), 'c1', pod({ reportedPid: 7, pid: { path: `${NS}/pid` } }), allResolves);
    expect(out.linux?.namespaces?.find((n) => n.type === 'pid')).toEqual({ type: 'pid', path: `${NS}/pid` });
  });

  it('keeps a TARGET pid path that resolves to another container', () => {
    const spec = criSpec(7);
    spec.linux!.namespaces![0] = { type: 'pid', path: '/proc/999/ns/pid' };
    const out = rewriteContainerSpec(spec, 'c1', pod({ reportedPid: 7 }), allResolves);
    expect(byType(out).pid).toBe('/proc/999/ns/pid');
  });

  it('leaves resolving paths of a CRI 1.x pause task alone', () => {
    const out = rewriteContainerSpec(criSpec(555), 'c1', pod({ reportedPid: 0 }), allResolves);
    expect(byType(out)).toMatchObject({ ipc: '/proc/555/ns/ipc', uts: '/proc/555/ns/uts', network: '/proc/555/ns/net' });
  });

  it('in a pod made from a CRI 1.x pause task: the pause pid is reported, its pid namespace (POD) is joined as CRI wrote it', () => {
    // the pod holds no pid namespace; POD-pid containers name the live pause's, CONTAINER ones name none
    const p = pod({ reportedPid: 555 });
    const shared = rewriteContainerSpec(criSpec(555, { sharedPid: true }), 'c1', p, allResolves);
    expect(byType(shared)).toMatchObject({ pid: '/proc/555/ns/pid', ipc: `${NS}/ipc`, uts: `${NS}/uts`, network: NETNS });
    const own = rewriteContainerSpec(criSpec(555), 'c2', p, allResolves);
    expect(own.linux?.namespaces?.find((n) => n.type === 'pid')).toEqual({ type: 'pid' });
    // a pause that is gone leaves a path to nothing: a pid namespace of its own instead
    const dead = rewriteContainerSpec(criSpec(555, { sharedPid: true }), 'c3', p, nothingResolves);
    expect(dead.linux?.namespaces?.find((n) => n.type === 'pid')).toEqual({ type: 'pid' });
  });

  it('replaces /proc paths that do not resolve and fills entries without path', () => {
    const spec: OciSpec = { linux: { namespaces: [{ type: 'ipc' }, { type: 'uts', path: '/proc/31337/ns/uts' }] } };
    const out = rewriteContainerSpec(spec, 'c1', pod(), nothingResolves);
    expect(byType(out)).toMatchObject({ ipc: `${NS}/ipc`, uts: `${NS}/uts`, network: NETNS, pid: undefined });
  });

  it('never lets a container escape to a host namespace its pod does not use', () => {
    const out = rewriteContainerSpec({ linux: { namespaces: [{ type: 'mount' }] } }, 'c1', pod({ pid: { path: `${NS}/pid` } }), nothingResolves);
    expect(byType(out)).toEqual({ mount: undefined, network: NETNS, ipc: `${NS}/ipc`, uts: `${NS}/uts`, pid: `${NS}/pid` });
    const own = rewriteContainerSpec({}, 'c1', pod(), nothingResolves);
    expect(own.linux?.namespaces?.find((n) => n.type === 'pid')).toEqual({ type: 'pid' });
  });

  it('removes namespaces the pod takes from the host and drops the hostname with host network', () => {
    const p = pod({ network: 'host', uts: 'host', ipc: 'host', pid: 'host' });
    const out = rewriteContainerSpec(criSpec(0, { sharedPid: true, extra: { hostname: 'web-0' } }), 'c1', p, nothingResolves);
    expect(byType(out)).toEqual({ mount: undefined });
    expect(out.hostname).toBeUndefined();
  });

  it('drops a hostname in the pod uts namespace but keeps it in a private one', () => {
    expect(rewriteContainerSpec(criSpec(0, { extra: { hostname: 'x' } }), 'c1', pod(), nothingResolves).hostname).toBeUndefined();
    const own: OciSpec = { hostname: 'mine', linux: { namespaces: [{ type: 'uts', path: '/proc/77/ns/uts' }] } };
    // a resolving foreign path is kept, and with it a hostname would rename that namespace: dropped too
    expect(rewriteContainerSpec(own, 'c1', pod(), allResolves).hostname).toBeUndefined();
  });

  it('keeps mount, cgroup and user entries that are not the pod pid', () => {
    const spec: OciSpec = { linux: { namespaces: [{ type: 'mount' }, { type: 'cgroup' }, { type: 'user', path: '/proc/99/ns/user' }] } };
    const out = rewriteContainerSpec(spec, 'c1', pod(), allResolves);
    expect(byType(out)).toMatchObject({ mount: undefined, cgroup: undefined, user: '/proc/99/ns/user' });
  });

  it('refuses a pod user namespace', () => {
    const spec = criSpec(0);
    spec.linux!.namespaces!.push({ type: 'user', path: '/proc/0/ns/user' });
    expect(() => rewriteContainerSpec(spec, 'c1', pod(), nothingResolves)).toThrow(/user namespaces are not supported/);
  });

  it('does not modify its input', () => {
    const spec = criSpec(0, { extra: { hostname: 'h' } });
    const copy = JSON.parse(JSON.stringify(spec));
    rewriteContainerSpec(spec, 'c1', pod({ network: 'host', uts: 'host' }), nothingResolves);
    expect(spec).toEqual(copy);
  });

  it.each([['../x'], ['a/b'], [''], ['-x']])('rejects container id %j', (id) => {
    expect(() => rewriteContainerSpec({}, id, pod())).toThrow(SpecRewriteError);
  });

  it('rejects malformed specs', () => {
    expect(() => rewriteContainerSpec({ linux: { namespaces: 'x' as never } }, 'c1', pod())).toThrow(/must be an array/);
    expect(() => rewriteContainerSpec({ linux: { namespaces: [null as never] } }, 'c1', pod())).toThrow(/invalid linux.namespaces entry/);
    expect(() => rewriteContainerSpec(null as never, 'c1', pod())).toThrow(/must be an object/);
  });
});

describe('podCgroupsPath', () => {
  it('puts the container under the pod parent', () => {
    expect(podCgroupsPath(undefined, 'c1', '/kuasar/sb1')).toBe('/kuasar/sb1/c1');
    expect(podCgroupsPath('/kuasar/sb1/custom', 'c1', '/kuasar/sb1/')).toBe('/kuasar/sb1/custom');
    expect(podCgroupsPath('/k8s.io/c1', 'c1', '/kuasar/sb1')).toBe('/kuasar/sb1/c1');
  });

  it('speaks systemd slices', () => {
    expect(podCgroupsPath(undefined, 'c1', 'kubepods-pod1.slice')).toBe('kubepods-pod1.slice:kuasar:c1');
    expect(podCgroupsPath('kubepods-pod1.slice:cri-containerd:c1', 'c1', 'kubepods-pod1.slice')).toBe('kubepods-pod1.slice:cri-containerd:c1');
    expect(podCgroupsPath('other.slice:cri-containerd:c1', 'c1', 'kubepods-pod1.slice')).toBe('kubepods-pod1.slice:cri-containerd:c1');
    expect(podCgroupsPath('system.slice:x:c1', 'c1', '/kuasar/sb1')).toBe('system.slice:x:c1');
  });

  it('rejects a relative cgroupfs parent', () => {
    expect(() => podCgroupsPath(undefined, 'c1', 'kuasar/sb1')).toThrow(/absolute or a systemd slice/);
  });
});

describe('podSpecContext', () => {
  const base: PodNamespaces = {
    id: 'sb1',
    isolation: { network: 'pod', pid: 'pod', ipc: 'pod' },
    hostname: 'web-0',
    paths: { ipc: `${NS}/ipc`, uts: `${NS}/uts`, pid: `${NS}/pid`, net: NETNS },
    ownNetns: false,
    holder: { pid: 4242, startTime: '1' },
    createdAt: '2026-01-01T00:00:00.000Z',
  };

  it('maps recorded paths and modes', () => {
    expect(podSpecContext(base, 4242, '/kuasar/sb1')).toEqual({
      sandboxId: 'sb1',
      reportedPid: 4242,
      network: { path: NETNS },
      ipc: { path: `${NS}/ipc` },
      uts: { path: `${NS}/uts` },
      pid: { path: `${NS}/pid` },
      hostname: 'web-0',
      cgroupParent: '/kuasar/sb1',
    });
    const hostNet = podSpecContext({ ...base, isolation: { network: 'node', pid: 'node', ipc: 'node' }, paths: {} }, 0, '/x');
    expect([hostNet.network, hostNet.uts, hostNet.ipc, hostNet.pid]).toEqual(['host', 'host', 'host', 'host']);
    expect(podSpecContext({ ...base, isolation: { ...base.isolation, pid: 'container' } }, 0, '/x').pid).toBe('container');
  });

  it('refuses a shared-pid record without a pid file', () => {
    expect(() => podSpecContext({ ...base, paths: { ...base.paths, pid: undefined } }, 1, '/x')).toThrow(SpecRewriteError);
  });
});
