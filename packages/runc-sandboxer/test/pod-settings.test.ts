import { cri } from '@kuasar/api';
import { cgroupfsPath, podCgroupDirs } from '../src/pod-cgroup';
import { PodSettingsError, podSettings } from '../src/pod-settings';

const { POD, CONTAINER, NODE, TARGET } = cri.NamespaceMode;

function config(ns: Partial<cri.NamespaceOption> | undefined, extra: Partial<cri.PodSandboxConfig> = {}, cgroupParent = ''): cri.PodSandboxConfig {
  return cri.PodSandboxConfig.fromPartial({
    hostname: 'web-0',
    linux: { cgroupParent, ...(ns ? { securityContext: { namespaceOptions: ns } } : {}) },
    ...extra,
  });
}

describe('podSettings', () => {
  it('maps kubelet defaults: private network and ipc, one pid namespace per container', () => {
    expect(podSettings('sb1', config({ network: POD, pid: CONTAINER, ipc: POD }), '/var/run/netns/cni-1')).toEqual({
      isolation: { network: 'pod', pid: 'container', ipc: 'pod' },
      hostname: 'web-0',
      netnsPath: '/var/run/netns/cni-1',
      cgroupParent: '/kuasar/sb1',
      ownCgroupParent: true,
    });
  });

  it('shares the pid namespace for POD (shareProcessNamespace) and the host for NODE', () => {
    expect(podSettings('sb1', config({ pid: POD }), '').isolation.pid).toBe('pod');
    expect(podSettings('sb1', config({ pid: NODE, ipc: NODE, network: NODE }), '').isolation).toEqual({ network: 'node', pid: 'node', ipc: 'node' });
  });

  it('reads an absent NamespaceOption as all-POD, as proto3 and CRI do', () => {
    expect(podSettings('sb1', config(undefined), '').isolation).toEqual({ network: 'pod', pid: 'pod', ipc: 'pod' });
  });

  it('gives a non-CRI pod private namespaces and per-container pids, without hostname', () => {
    expect(podSettings('sb1', undefined, '')).toEqual({
      isolation: { network: 'pod', pid: 'container', ipc: 'pod' },
      cgroupParent: '/kuasar/sb1',
      ownCgroupParent: true,
    });
  });

  it('drops the hostname of a host-network pod (it shares the host uts namespace)', () => {
    expect(podSettings('sb1', config({ network: NODE }), '').hostname).toBeUndefined();
  });

  it('keeps the cgroup parent kubelet chose and does not own it', () => {
    const s = podSettings('sb1', config({}, {}, '/kubepods/besteffort/podabc'), '');
    expect([s.cgroupParent, s.ownCgroupParent]).toEqual(['/kubepods/besteffort/podabc', false]);
    expect(podSettings('sb1', config({}, {}, 'kubepods-besteffort-podabc.slice'), '').cgroupParent).toBe('kubepods-besteffort-podabc.slice');
  });

  it.each([
    [config({ pid: TARGET }), '', /pid namespace mode TARGET/],
    [config({ network: cri.NamespaceMode.UNRECOGNIZED }), '', /network namespace mode/],
    [config({ network: NODE }), '/var/run/netns/x', /host-network pod cannot have a netns/],
    [config({ usernsOptions: { mode: POD, uids: [], gids: [] } }), '', /user namespaces are not supported/],
    [config({}, {}, 'relative/parent'), '', /absolute or a systemd slice/],
    [config({}, {}, '/kubepods/../etc'), '', /invalid cgroup_parent/],
  ])('rejects %#', (cfg, netns, message) => {
    expect(() => podSettings('sb1', cfg, netns)).toThrow(PodSettingsError);
    expect(() => podSettings('sb1', cfg, netns)).toThrow(message);
  });
});

describe('pod cgroup paths', () => {
  it('expands systemd slices the way systemd nests them', () => {
    expect(cgroupfsPath('kubepods-besteffort-podabc.slice')).toBe('/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice');
    expect(cgroupfsPath('/kuasar/sb1/')).toBe('/kuasar/sb1/');
    expect(cgroupfsPath('-.slice')).toBe('/');
    expect(() => cgroupfsPath('relative')).toThrow(/not a cgroupfs path/);
  });

  it('resolves the parent in every mounted hierarchy (v1 controllers and the unified one here)', () => {
    const dirs = podCgroupDirs('/kuasar/sb1');
    expect(dirs.v1['memory']).toBe('/sys/fs/cgroup/memory/kuasar/sb1');
    expect(dirs.v1['pids']).toBe('/sys/fs/cgroup/pids/kuasar/sb1');
    if (dirs.unified) expect(dirs.unified.endsWith('/kuasar/sb1')).toBe(true);
  });
});
