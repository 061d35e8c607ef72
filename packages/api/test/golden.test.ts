// Pins field numbers and service names byte-for-byte against the values in containerd / CRI sources.
import { cri, eventsTtrpc, events, google, namespaces, runcOptions, runtimeOptions, sandboxApi, task, types, cgroupsV2 } from '@kuasar/api';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const bytes = (...b: number[]) => Buffer.from(b).toString('hex');
const ts1 = { seconds: 1n, nanos: 0 };

describe('sandbox controller field numbers', () => {
  test('ControllerStartResponse.version is field 6 (varint)', () => {
    expect(hex(sandboxApi.ControllerStartResponse.encode(sandboxApi.ControllerStartResponse.fromPartial({ version: 3 })).finish())).toBe(bytes(0x30, 0x03));
  });
  test('ControllerStartResponse.address is field 5', () => {
    expect(hex(sandboxApi.ControllerStartResponse.encode(sandboxApi.ControllerStartResponse.fromPartial({ address: 'a' })).finish())).toBe(bytes(0x2a, 0x01, 0x61));
  });
  test('ControllerUpdateRequest.sandboxer is field 2', () => {
    expect(hex(sandboxApi.ControllerUpdateRequest.encode(sandboxApi.ControllerUpdateRequest.fromPartial({ sandboxer: 'k' })).finish())).toBe(bytes(0x12, 0x01, 0x6b));
  });
  test.each([
    ['ControllerCreateRequest', sandboxApi.ControllerCreateRequest],
    ['ControllerStartRequest', sandboxApi.ControllerStartRequest],
    ['ControllerPlatformRequest', sandboxApi.ControllerPlatformRequest],
    ['ControllerStopRequest', sandboxApi.ControllerStopRequest],
    ['ControllerWaitRequest', sandboxApi.ControllerWaitRequest],
    ['ControllerStatusRequest', sandboxApi.ControllerStatusRequest],
    ['ControllerShutdownRequest', sandboxApi.ControllerShutdownRequest],
    ['ControllerMetricsRequest', sandboxApi.ControllerMetricsRequest],
  ] as const)('%s.sandboxer is field 10', (_n, codec: any) => {
    expect(hex(codec.encode(codec.fromPartial({ sandboxer: 'k' })).finish())).toBe(bytes(0x52, 0x01, 0x6b));
  });
  test('ControllerCreateRequest.sandbox is field 6 and netns_path field 4', () => {
    const m = sandboxApi.ControllerCreateRequest.fromPartial({ netnsPath: 'n', sandbox: { sandboxer: 'k' } });
    expect(hex(sandboxApi.ControllerCreateRequest.encode(m).finish())).toBe(bytes(0x22, 0x01, 0x6e, 0x32, 0x03, 0x52, 0x01, 0x6b));
  });
  test('ControllerStatusResponse.version is field 9, address field 8', () => {
    const m = sandboxApi.ControllerStatusResponse.fromPartial({ address: 'a', version: 3 });
    expect(hex(sandboxApi.ControllerStatusResponse.encode(m).finish())).toBe(bytes(0x42, 0x01, 0x61, 0x48, 0x03));
  });
  test('Metric: timestamp 1, id 2, data 3 (as in containerd metrics.pb.go)', () => {
    const m = types.Metric.fromPartial({ timestamp: ts1, id: 'i', data: { typeUrl: 'a' } });
    expect(hex(types.Metric.encode(m).finish())).toBe(bytes(0x0a, 0x02, 0x08, 0x01, 0x12, 0x01, 0x69, 0x1a, 0x03, 0x0a, 0x01, 0x61));
  });
  test('Sandbox.extensions is a map<string,Any> at field 7', () => {
    const m = types.Sandbox.fromPartial({ extensions: { m: { typeUrl: 't' } } });
    // 3a len { 0a 01 'm' 12 03 { 0a 01 't' } }
    expect(hex(types.Sandbox.encode(m).finish())).toBe(bytes(0x3a, 0x08, 0x0a, 0x01, 0x6d, 0x12, 0x03, 0x0a, 0x01, 0x74));
  });
});

describe('task API field numbers', () => {
  test('StateResponse.exec_id is field 11 and status field 4', () => {
    const m = task.StateResponse.fromPartial({ status: types.TaskStatus.STOPPED, execId: 'e' });
    expect(hex(task.StateResponse.encode(m).finish())).toBe(bytes(0x20, 0x03, 0x5a, 0x01, 0x65));
  });
  test('CreateTaskRequest.options is field 10', () => {
    const m = task.CreateTaskRequest.fromPartial({ options: { typeUrl: 'a' } });
    expect(hex(task.CreateTaskRequest.encode(m).finish())).toBe(bytes(0x52, 0x03, 0x0a, 0x01, 0x61));
  });
  test('DeleteResponse: pid 1, exit_status 2, exited_at 3', () => {
    const m = task.DeleteResponse.fromPartial({ pid: 1, exitStatus: 2, exitedAt: ts1 });
    expect(hex(task.DeleteResponse.encode(m).finish())).toBe(bytes(0x08, 0x01, 0x10, 0x02, 0x1a, 0x02, 0x08, 0x01));
  });
  test('TaskStatus enum values', () => {
    expect([types.TaskStatus.UNKNOWN, types.TaskStatus.CREATED, types.TaskStatus.RUNNING, types.TaskStatus.STOPPED, types.TaskStatus.PAUSED, types.TaskStatus.PAUSING]).toEqual([0, 1, 2, 3, 4, 5]);
  });
  test('v2 and v3 services: full names, 17 methods, same messages', () => {
    expect(task.TaskV2Definition.fullName).toBe('containerd.task.v2.Task');
    expect(task.TaskV3Definition.fullName).toBe('containerd.task.v3.Task');
    const v2 = Object.values(task.TaskV2Definition.methods);
    const v3 = Object.values(task.TaskV3Definition.methods);
    expect(v2.map((m) => m.name)).toEqual(['State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill', 'Exec', 'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown']);
    expect(v3.map((m) => m.name)).toEqual(v2.map((m) => m.name));
    v3.forEach((m, i) => {
      expect(m.requestType).toBe(v2[i]!.requestType);
      expect(m.responseType).toBe(v2[i]!.responseType);
      expect(m.requestStream || m.responseStream).toBe(false);
    });
    expect(task.TaskV3Definition.methods.kill.responseType).toBe(google.Empty);
  });
});

describe('events field numbers', () => {
  test('TaskExit.exited_at is field 5', () => {
    expect(hex(events.TaskExit.encode(events.TaskExit.fromPartial({ exitedAt: ts1 })).finish())).toBe(bytes(0x2a, 0x02, 0x08, 0x01));
  });
  test('TaskDelete.id is field 5, exited_at field 4', () => {
    const m = events.TaskDelete.fromPartial({ exitedAt: ts1, id: 'i' });
    expect(hex(events.TaskDelete.encode(m).finish())).toBe(bytes(0x22, 0x02, 0x08, 0x01, 0x2a, 0x01, 0x69));
  });
  test('Envelope: timestamp 1, namespace 2, topic 3, event 4', () => {
    const m = types.Envelope.fromPartial({ timestamp: ts1, namespace: 'n', topic: '/t', event: { typeUrl: 'a' } });
    expect(hex(types.Envelope.encode(m).finish())).toBe(
      bytes(0x0a, 0x02, 0x08, 0x01, 0x12, 0x01, 0x6e, 0x1a, 0x02, 0x2f, 0x74, 0x22, 0x03, 0x0a, 0x01, 0x61),
    );
  });
  test('ForwardRequest.envelope is field 1 and the service is containerd.services.events.ttrpc.v1.Events/Forward', () => {
    const m = eventsTtrpc.ForwardRequest.fromPartial({ envelope: { namespace: 'n' } });
    expect(hex(eventsTtrpc.ForwardRequest.encode(m).finish())).toBe(bytes(0x0a, 0x03, 0x12, 0x01, 0x6e));
    expect(eventsTtrpc.EventsDefinition.fullName).toBe('containerd.services.events.ttrpc.v1.Events');
    expect(eventsTtrpc.EventsDefinition.methods.forward.name).toBe('Forward');
  });
});

describe('options and stats field numbers', () => {
  test('runtimeoptions Options.config_body is field 3 (bytes)', () => {
    const m = runtimeOptions.Options.fromPartial({ configBody: Buffer.from('a') });
    expect(hex(runtimeOptions.Options.encode(m).finish())).toBe(bytes(0x1a, 0x01, 0x61));
  });
  test('runc Options.systemd_cgroup is field 9, task_api_version field 13', () => {
    const m = runcOptions.Options.fromPartial({ systemdCgroup: true, taskApiVersion: 3 });
    expect(hex(runcOptions.Options.encode(m).finish())).toBe(bytes(0x48, 0x01, 0x68, 0x03));
  });
  test('cgroups v2 Metrics.memory is field 4 (3 unused)', () => {
    const m = cgroupsV2.Metrics.fromPartial({ memory: { anon: 1n } });
    expect(hex(cgroupsV2.Metrics.encode(m).finish())).toBe(bytes(0x22, 0x02, 0x08, 0x01));
  });
  test('google.rpc.Status: code 1, message 2', () => {
    expect(hex(google.Status.encode({ code: 12, message: 'x', details: [] }).finish())).toBe(bytes(0x08, 0x0c, 0x12, 0x01, 0x78));
  });
});

describe('CRI field numbers and paths', () => {
  test('PodSandboxConfig.linux is field 8, LinuxPodSandboxConfig.cgroup_parent field 1', () => {
    const m = cri.PodSandboxConfig.fromPartial({ linux: { cgroupParent: '/k' } });
    expect(hex(cri.PodSandboxConfig.encode(m).finish())).toBe(bytes(0x42, 0x04, 0x0a, 0x02, 0x2f, 0x6b));
  });
  test('LinuxSandboxSecurityContext.run_as_group is field 8, namespace_options field 1', () => {
    const m = cri.LinuxSandboxSecurityContext.fromPartial({ namespaceOptions: { network: cri.NamespaceMode.NODE }, runAsGroup: { value: 5n } });
    expect(hex(cri.LinuxSandboxSecurityContext.encode(m).finish())).toBe(bytes(0x0a, 0x02, 0x08, 0x02, 0x42, 0x02, 0x08, 0x05));
  });
  test('ImageSpec.image_ref is field 20, ContainerConfig.stop_signal field 18', () => {
    expect(hex(cri.ImageSpec.encode(cri.ImageSpec.fromPartial({ imageRef: 'r' })).finish())).toBe(bytes(0xa2, 0x01, 0x01, 0x72));
    expect(hex(cri.ContainerConfig.encode(cri.ContainerConfig.fromPartial({ stopSignal: 15 as cri.Signal })).finish())).toBe(bytes(0x90, 0x01, 0x0f));
  });
  test('gRPC method paths', () => {
    expect(cri.RuntimeServiceService.runPodSandbox.path).toBe('/runtime.v1.RuntimeService/RunPodSandbox');
    expect(cri.ImageServiceService.pullImage.path).toBe('/runtime.v1.ImageService/PullImage');
    expect(Object.keys(cri.RuntimeServiceService)).toHaveLength(17);
    expect(Object.values(sandboxApi.ControllerService).map((m) => m.path)).toEqual(
      ['Create', 'Start', 'Platform', 'Stop', 'Wait', 'Status', 'Shutdown', 'Metrics', 'Update'].map((n) => `/containerd.services.sandbox.v1.Controller/${n}`),
    );
  });
});

describe('containerd services a sandboxer reads (namespaces, sandbox store)', () => {
  test('StoreGetRequest.sandbox_id is field 1; a StoreGetResponse carrying a Sandbox (field 1) decodes', () => {
    expect(hex(sandboxApi.StoreGetRequest.encode({ sandboxId: 'a' }).finish())).toBe(bytes(0x0a, 0x01, 0x61));
    const answer = Buffer.from([0x0a, 0x03, 0x0a, 0x01, 0x61]);
    expect(sandboxApi.StoreGetResponse.decode(answer)).toEqual({});
  });
  test('ListNamespacesResponse.namespaces is field 1, Namespace.name field 1; labels (field 2) are skipped', () => {
    const m = namespaces.ListNamespacesResponse.fromPartial({ namespaces: [{ name: 'k8s.io' }, { name: 'a' }] });
    expect(hex(namespaces.ListNamespacesResponse.encode(m).finish())).toBe(
      bytes(0x0a, 0x08, 0x0a, 0x06, ...Buffer.from('k8s.io'), 0x0a, 0x03, 0x0a, 0x01, 0x61),
    );
    const labelled = Buffer.from([0x0a, 0x0b, 0x0a, 0x01, 0x61, 0x12, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76]);
    expect(namespaces.ListNamespacesResponse.decode(labelled)).toEqual({ namespaces: [{ name: 'a' }] });
    expect(hex(namespaces.ListNamespacesRequest.encode({}).finish())).toBe('');
  });
  test('gRPC method paths', () => {
    expect(sandboxApi.StoreService.get.path).toBe('/containerd.services.sandbox.v1.Store/Get');
    expect(namespaces.NamespacesService.list.path).toBe('/containerd.services.namespaces.v1.Namespaces/List');
  });
});
