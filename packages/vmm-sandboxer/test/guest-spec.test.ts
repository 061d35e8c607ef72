import { guestProcess, guestSpec, GuestSpecError } from '../src/guest-spec';

const host = {
  ociVersion: '1.1.0',
  hostname: 'web-0',
  root: { path: 'rootfs', readonly: true },
  process: { args: ['sh'], cwd: '/', apparmorProfile: 'cri-containerd.apparmor.d', selinuxLabel: 'x' },
  mounts: [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/etc/hosts', type: 'bind', source: '/var/lib/containerd/sandboxes/p1/hosts', options: ['rbind', 'rprivate', 'ro'] },
    { destination: '/data', source: '/srv/data', options: ['rbind', 'rw'] },
  ],
  hooks: { prestart: [{ path: '/usr/bin/nvidia-hook' }] },
  annotations: { a: 'b' },
  linux: {
    cgroupsPath: '/kubepods/besteffort/pod1/c1',
    mountLabel: 'y',
    namespaces: [
      { type: 'pid' },
      { type: 'ipc', path: '/proc/4242/ns/ipc' },
      { type: 'uts', path: '/proc/4242/ns/uts' },
      { type: 'mount' },
      { type: 'network', path: '/var/run/netns/cni-1' },
      { type: 'user', path: '/proc/4242/ns/user' },
    ],
    resources: { memory: { limit: 67108864 } },
  },
};

describe('guestSpec', () => {
  it('points root and binds into the share and drops what names host objects', () => {
    const g = guestSpec(host, 'c1', '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1');
    expect(g.guestBundle).toBe('/mnt/kuasar/c1');
    expect(g.binds).toEqual([
      { source: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1/rootfs', target: 'rootfs', readonly: false },
      { source: '/var/lib/containerd/sandboxes/p1/hosts', target: 'mounts/1', readonly: true },
      { source: '/srv/data', target: 'mounts/2', readonly: false },
    ]);
    const s = g.spec as typeof host;
    expect(s.root).toEqual({ path: 'rootfs', readonly: true });
    expect(s.mounts[0]).toEqual(host.mounts[0]);
    expect(s.mounts[1]).toEqual({ destination: '/etc/hosts', type: 'bind', source: '/mnt/kuasar/c1/mounts/1', options: ['rprivate', 'ro', 'bind'] });
    expect(s.mounts[2]).toEqual({ destination: '/data', type: 'bind', source: '/mnt/kuasar/c1/mounts/2', options: ['rw', 'bind'] });
    // the VM is the pod: its network, hostname and IPC are the containers'; other joins become fresh namespaces
    expect(s.linux.namespaces).toEqual([{ type: 'pid' }, { type: 'mount' }, { type: 'user' }]);
    expect(s.hostname).toBeUndefined();
    expect(s.linux.cgroupsPath).toBe('/kuasar/c1');
    expect(s.linux.mountLabel).toBeUndefined();
    expect(s.linux.resources).toEqual(host.linux.resources);
    expect(s.hooks).toBeUndefined();
    expect(s.process.apparmorProfile).toBeUndefined();
    expect(s.process.selinuxLabel).toBeUndefined();
    expect(s.annotations).toEqual({ a: 'b' });
    expect(s.ociVersion).toBe('1.0.2');
    // the input is left alone (the task core compares it)
    expect(host.linux.namespaces).toHaveLength(6);
  });

  it('rejects what it cannot share, with a clear error', () => {
    expect(() => guestSpec(host, '../x', '/b')).toThrow(GuestSpecError);
    expect(() => guestSpec({ mounts: [{ destination: '/x', type: 'bind', source: 'relative' }] }, 'c', '/b')).toThrow(/must be an absolute host path/);
    expect(() => guestSpec({ mounts: 'x' } as never, 'c', '/b')).toThrow(/mounts must be an array/);
    expect(() => guestSpec({ linux: { namespaces: [{}] } } as never, 'c', '/b')).toThrow(/invalid linux.namespaces entry/);
  });

  it('exec processes lose LSM labels only', () => {
    expect(guestProcess({ args: ['ls'], apparmorProfile: 'p', env: ['A=1'] })).toEqual({ args: ['ls'], env: ['A=1'] });
  });
});
