import * as fs from 'node:fs';
import * as path from 'node:path';
import { cri, task, unpackAny } from '@kuasar/api';
import type { OciSpec } from '@kuasar/task';
import { POD_SANDBOX_CONFIG_TYPE, TaskSandboxes, createLogger, isPauseTask, sandboxParamsFromPauseSpec } from '../src';
import { startHarness, tempDir, type Harness } from './harness';

const NS = 'k8s.io';

function pause(id: string, extra: Partial<OciSpec> = {}, namespaces: { type: string; path?: string }[] = []): OciSpec {
  return {
    hostname: 'web-0',
    annotations: {
      'io.kubernetes.cri.container-type': 'sandbox',
      'io.kubernetes.cri.sandbox-id': id,
      'io.kubernetes.cri.sandbox-name': 'web-0',
      'io.kubernetes.cri.sandbox-namespace': 'shop',
      'io.kubernetes.cri.sandbox-uid': 'u-1',
      'io.kubernetes.cri.sandbox-log-directory': '/var/log/pods/shop_web-0_u-1',
    },
    linux: { namespaces, cgroupsPath: `/${NS}/${id}` },
    ...extra,
  };
}

function configOf(spec: OciSpec, id = 'p1') {
  const params = sandboxParamsFromPauseSpec(id, NS, spec);
  return { params, config: unpackAny(params.options!, cri.PodSandboxConfig, POD_SANDBOX_CONFIG_TYPE) };
}

describe('sandboxParamsFromPauseSpec', () => {
  it('reads back the PodSandboxConfig CRI 1.x built the pause spec from', () => {
    const { params, config } = configOf(pause('p1', {}, [
      { type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/var/run/netns/cni-1' },
    ]));
    expect(params).toMatchObject({ sandboxId: 'p1', netnsPath: '/var/run/netns/cni-1', task: { namespace: NS, id: 'p1' } });
    expect(params.annotations?.['io.kubernetes.cri.sandbox-name']).toBe('web-0');
    expect(config.metadata).toEqual({ name: 'web-0', namespace: 'shop', uid: 'u-1', attempt: 0 });
    expect(config.hostname).toBe('web-0');
    expect(config.logDirectory).toBe('/var/log/pods/shop_web-0_u-1');
    // containerd's default cgroup (no cgroup_parent) leaves the parent to the kind
    expect(config.linux?.cgroupParent).toBe('');
    expect(config.linux?.securityContext?.namespaceOptions).toMatchObject({
      network: cri.NamespaceMode.POD, ipc: cri.NamespaceMode.POD, pid: cri.NamespaceMode.CONTAINER,
    });
    expect(config.linux?.securityContext?.namespaceOptions?.usernsOptions).toBeUndefined();
  });

  it('maps absent namespaces to the host, and keeps a cgroup parent CRI was given', () => {
    const { params, config } = configOf(pause('p1', { linux: { namespaces: [{ type: 'mount' }], cgroupsPath: '/kubepods/besteffort/podu-1/p1' } }));
    expect(params.netnsPath).toBe('');
    expect(config.linux?.securityContext?.namespaceOptions).toMatchObject({
      network: cri.NamespaceMode.NODE, ipc: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.NODE,
    });
    expect(config.linux?.cgroupParent).toBe('/kubepods/besteffort/podu-1');
    const systemd = configOf(pause('p1', { linux: { cgroupsPath: 'kubepods-besteffort-podu_1.slice:cri-containerd:p1' } })).config;
    expect(systemd.linux?.cgroupParent).toBe('kubepods-besteffort-podu_1.slice');
  });

  it('asks for a pod user namespace when the pause has one', () => {
    const { config } = configOf(pause('p1', {}, [{ type: 'user' }]));
    expect(config.linux?.securityContext?.namespaceOptions?.usernsOptions?.mode).toBe(cri.NamespaceMode.POD);
  });
});

it('isPauseTask: only CRI sandbox containers, and only as their own pod', () => {
  expect(isPauseTask('p1', pause('p1'))).toBe(true);
  expect(isPauseTask('c1', pause('p1'))).toBe(false);
  expect(isPauseTask('c1', { annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'p1' } })).toBe(false);
  expect(isPauseTask('x', {})).toBe(false);
});

describe('TaskSandboxes', () => {
  let h: Harness;
  let bridge: TaskSandboxes;
  beforeEach(async () => {
    h = await startHarness({ root: tempDir('kuasar-task-sandbox-') });
    bridge = new TaskSandboxes(() => h.serving.controller, createLogger({ level: 'fatal', kind: 'test' }));
  });
  afterEach(async () => {
    for (const id of h.serving.controller.ids()) await h.serving.controller.shutdown(id).catch(() => undefined);
    await h.serving.close();
  });

  const req = (id: string) => task.CreateTaskRequest.fromPartial({ id, bundle: `/run/containerd/io.containerd.runtime.v2.task/${NS}/${id}` });

  it('a pause task is created, started, ended and removed as a sandbox around the kind\'s hooks', async () => {
    const seen: string[] = [];
    const hooks = bridge.hooks({
      prepareContainer: (r, spec) => {
        seen.push(`prepare ${r.id} ${h.serving.controller.find('p1')?.record.state ?? 'none'}`);
        return spec;
      },
      containerRemoved: (id) => void seen.push(`removed ${id}`),
    });
    const controller = h.serving.controller;
    await hooks.prepareContainer!(req('p1'), pause('p1'), NS);
    // the kind's own hook saw a ready sandbox
    expect(seen).toEqual(['prepare p1 ready']);
    const sandbox = controller.find('p1')!;
    expect(sandbox.record.task).toEqual({ namespace: NS, id: 'p1' });
    expect(JSON.parse(fs.readFileSync(path.join(h.dir, 'p1', 'sandbox.json'), 'utf8')).task).toEqual({ namespace: NS, id: 'p1' });

    // an app container of the pod is no sandbox
    await hooks.prepareContainer!(req('c1'), { annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': 'p1' } }, NS);
    expect(controller.ids()).toEqual(['p1']);

    // the task's pid becomes the sandbox's (the sleep kind's own process stands in for the pause, so its stop
    // signals a process of this test)
    const pid = sandbox.record.pid;
    sandbox.record.pid = 0;
    await hooks.containerCreated!({ id: 'p1', namespace: NS, bundle: '' }, { pid, spec: pause('p1') });
    expect((await controller.status('p1', false)).pid).toBe(pid);
    expect(JSON.parse(fs.readFileSync(path.join(h.dir, 'p1', 'sandbox.json'), 'utf8')).pid).toBe(pid);
    // the same id in another namespace is not this sandbox's task
    expect(bridge.sandboxOf({ id: 'p1', namespace: 'other' })).toBeUndefined();
    expect(bridge.sandboxOf({ id: 'p1', namespace: NS })).toBe(sandbox);

    const waited = controller.wait('p1');
    const at = new Date('2026-01-02T03:04:05Z');
    await hooks.containerExited!({ id: 'p1', namespace: NS, bundle: '' }, { exitStatus: 137, exitedAt: at });
    expect(await waited).toEqual({ exitStatus: 137, exitedAt: at });
    expect((await controller.status('p1', false)).state).toBe('SANDBOX_NOTREADY');

    await hooks.containerRemoved!('p1', NS);
    expect(seen).toEqual(['prepare p1 ready', 'prepare c1 ready', 'removed p1']);
    expect(controller.find('p1')).toBeUndefined();
    expect(fs.existsSync(path.join(h.dir, 'p1'))).toBe(false);
    expect(h.kind.calls.filter((c) => c.id === 'p1').map((c) => c.op)).toEqual(['create', 'start', 'stop', 'shutdown']);
  });

  it('a pause that cannot become a sandbox fails its Create with the Controller\'s status code', async () => {
    const hooks = bridge.hooks();
    await hooks.prepareContainer!(req('p2'), pause('p2'), NS);
    // a second pause with that id (the first is still there) is left to the kind; an invalid id is refused
    await expect(hooks.prepareContainer!(req('p2'), pause('p2'), NS)).resolves.toBeDefined();
    await expect(hooks.prepareContainer!(req('bad/id'), pause('bad/id'), NS)).rejects.toMatchObject({ code: 3 });
    expect(h.serving.controller.ids()).toEqual(['p2']);
  });
});
