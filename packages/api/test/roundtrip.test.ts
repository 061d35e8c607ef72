// Every message family survives encode -> decode (binary) and toJSON -> fromJSON with non-default values
// in every kind of field (scalars, bigint, bytes, enums, nested, repeated, maps, Any).
import {
  cgroupsV1, cgroupsV2, cri, events, eventsTtrpc, google, runcOptions, runtimeOptions, sandboxApi, task, types,
  packAny, timestampFromDate,
} from '@kuasar/api';

interface Codec<T> {
  encode(m: T): { finish(): Uint8Array };
  decode(b: Uint8Array): T;
  fromPartial(p: any): T;
  toJSON(m: T): unknown;
  fromJSON(o: any): T;
}

const ts = timestampFromDate(new Date('2026-11-28T10:20:30.123Z'));
const mount = { type: 'overlay', source: 'overlay', target: '/rootfs', options: ['lowerdir=/a', 'upperdir=/b', 'workdir=/c'] };
const anyOpts = packAny('containerd.runc.v1.Options', runcOptions.Options, runcOptions.Options.fromPartial({ binaryName: 'crun', root: '/run/crun' }));

const cases: Array<[string, Codec<any>, Record<string, unknown>]> = [
  // google
  ['google.Any', google.Any, { typeUrl: 'x.y.Z', value: Buffer.from([1, 2, 3]) }],
  ['google.Timestamp', google.Timestamp, { seconds: 1_700_000_000n, nanos: 999_999_999 }],
  ['google.Status', google.Status, { code: 5, message: 'not found', details: [anyOpts] }],
  // types
  ['types.Mount', types.Mount, mount],
  ['types.Platform', types.Platform, { os: 'linux', architecture: 'amd64', variant: 'v3', osVersion: '6.1' }],
  ['types.Metric', types.Metric, { timestamp: ts, id: 'sb1', data: anyOpts }],
  ['types.Sandbox', types.Sandbox, {
    sandboxId: 'sb1', runtime: { name: 'io.containerd.kuasar.v1', options: anyOpts }, spec: anyOpts,
    labels: { a: 'b' }, createdAt: ts, updatedAt: ts, extensions: { metadata: anyOpts },
    platform: { os: 'linux', architecture: 'amd64' }, sandboxer: 'kuasar',
  }],
  ['types.Envelope', types.Envelope, { timestamp: ts, namespace: 'k8s.io', topic: '/tasks/exit', event: anyOpts }],
  ['types.ProcessInfo', types.ProcessInfo, { pid: 42, info: anyOpts }],
  // task
  ['task.CreateTaskRequest', task.CreateTaskRequest, {
    id: 'c1', bundle: '/b', rootfs: [mount], terminal: true, stdin: '/i', stdout: '/o', stderr: '/e',
    checkpoint: 'cp', parentCheckpoint: 'pcp', options: anyOpts,
  }],
  ['task.StateResponse', task.StateResponse, {
    id: 'c1', bundle: '/b', pid: 7, status: types.TaskStatus.PAUSING, stdin: 'i', stdout: 'o', stderr: 'e',
    terminal: true, exitStatus: 137, exitedAt: ts, execId: 'e1',
  }],
  ['task.ExecProcessRequest', task.ExecProcessRequest, { id: 'c', execId: 'e', terminal: true, stdin: 'i', stdout: 'o', stderr: 'e', spec: anyOpts }],
  ['task.UpdateTaskRequest', task.UpdateTaskRequest, { id: 'c', resources: anyOpts, annotations: { k: 'v', k2: '' } }],
  ['task.KillRequest', task.KillRequest, { id: 'c', execId: 'e', signal: 9, all: true }],
  ['task.PidsResponse', task.PidsResponse, { processes: [{ pid: 1, info: anyOpts }, { pid: 2 }] }],
  ['task.DeleteResponse', task.DeleteResponse, { pid: 4294967295, exitStatus: 255, exitedAt: ts }],
  ['task.WaitResponse', task.WaitResponse, { exitStatus: 1, exitedAt: ts }],
  ['task.ConnectResponse', task.ConnectResponse, { shimPid: 10, taskPid: 11, version: '3' }],
  ['task.ResizePtyRequest', task.ResizePtyRequest, { id: 'c', execId: 'e', width: 80, height: 24 }],
  ['task.ShutdownRequest', task.ShutdownRequest, { id: 'c', now: true }],
  ['task.CheckpointTaskRequest', task.CheckpointTaskRequest, { id: 'c', path: '/p', options: anyOpts }],
  ['task.StatsResponse', task.StatsResponse, { stats: anyOpts }],
  // sandbox controller
  ['sandboxApi.ControllerCreateRequest', sandboxApi.ControllerCreateRequest, {
    sandboxId: 'sb', rootfs: [mount], options: anyOpts, netnsPath: '/var/run/netns/x', annotations: { a: '1' },
    sandbox: { sandboxId: 'sb', sandboxer: 'kuasar' }, sandboxer: 'kuasar',
  }],
  ['sandboxApi.ControllerStartResponse', sandboxApi.ControllerStartResponse, {
    sandboxId: 'sb', pid: 9, createdAt: ts, labels: { selinux_label: 'x' }, address: 'ttrpc+unix:///run/k/task.sock', version: 3,
  }],
  ['sandboxApi.ControllerStatusResponse', sandboxApi.ControllerStatusResponse, {
    sandboxId: 'sb', pid: 9, state: 'SANDBOX_READY', info: { k: 'v' }, createdAt: ts, exitedAt: ts, extra: anyOpts,
    address: 'ttrpc+unix:///x', version: 3,
  }],
  ['sandboxApi.ControllerStopRequest', sandboxApi.ControllerStopRequest, { sandboxId: 'sb', timeoutSecs: 10, sandboxer: 'k' }],
  ['sandboxApi.ControllerWaitResponse', sandboxApi.ControllerWaitResponse, { exitStatus: 3, exitedAt: ts }],
  ['sandboxApi.ControllerPlatformResponse', sandboxApi.ControllerPlatformResponse, { platform: { os: 'linux', architecture: 'arm64' } }],
  ['sandboxApi.ControllerMetricsResponse', sandboxApi.ControllerMetricsResponse, { metrics: { timestamp: ts, id: 'sb', data: anyOpts } }],
  ['sandboxApi.ControllerUpdateRequest', sandboxApi.ControllerUpdateRequest, { sandboxId: 'sb', sandboxer: 'k', sandbox: { sandboxId: 'sb' }, fields: ['labels', 'extensions.x'] }],
  // events
  ['events.TaskCreate', events.TaskCreate, {
    containerId: 'c', bundle: '/b', rootfs: [mount], io: { stdin: 'i', stdout: 'o', stderr: 'e', terminal: true }, checkpoint: 'cp', pid: 3,
  }],
  ['events.TaskExit', events.TaskExit, { containerId: 'c', id: 'e1', pid: 3, exitStatus: 143, exitedAt: ts }],
  ['events.TaskDelete', events.TaskDelete, { containerId: 'c', pid: 3, exitStatus: 1, exitedAt: ts, id: 'c' }],
  ['events.TaskExecStarted', events.TaskExecStarted, { containerId: 'c', execId: 'e', pid: 5 }],
  ['events.TaskCheckpointed', events.TaskCheckpointed, { containerId: 'c', checkpoint: 'cp' }],
  ['events.SandboxExit', events.SandboxExit, { sandboxId: 'sb', exitStatus: 2, exitedAt: ts }],
  // events ttrpc
  ['eventsTtrpc.ForwardRequest', eventsTtrpc.ForwardRequest, { envelope: { timestamp: ts, namespace: 'default', topic: '/tasks/oom', event: anyOpts } }],
  // options
  ['runcOptions.Options', runcOptions.Options, {
    noPivotRoot: true, noNewKeyring: true, shimCgroup: '/s', ioUid: 1000, ioGid: 1000, binaryName: 'crun', root: '/r',
    systemdCgroup: true, criuImagePath: '/ci', criuWorkPath: '/cw', taskApiAddress: 'ttrpc+unix:///t', taskApiVersion: 3,
  }],
  ['runcOptions.ProcessDetails', runcOptions.ProcessDetails, { execId: 'e1' }],
  ['runtimeOptions.Options', runtimeOptions.Options, { typeUrl: 't', configPath: '/etc/k.toml', configBody: Buffer.from('a = 1\n') }],
  // cgroups
  ['cgroupsV1.Metrics', cgroupsV1.Metrics, {
    hugetlb: [{ usage: 1n, max: 2n, failcnt: 3n, pagesize: '2MB' }], pids: { current: 4n, limit: 5n },
    cpu: { usage: { total: 10n, kernel: 3n, user: 7n, perCpu: [5n, 5n] }, throttling: { periods: 1n, throttledPeriods: 1n, throttledTime: 9n } },
    memory: { cache: 1n, rss: 2n, totalUnevictable: 32n, usage: { limit: 9_223_372_036_854_771_712n, usage: 4096n, max: 8192n, failcnt: 0n }, kernelTcp: { usage: 1n } },
    blkio: { ioServiceBytesRecursive: [{ op: 'Read', device: 'sda', major: 8n, minor: 0n, value: 512n }] },
    network: [{ name: 'eth0', rxBytes: 1n, txDropped: 2n }], cgroupStats: { nrRunning: 1n }, memoryOomControl: { oomKill: 1n },
  }],
  ['cgroupsV2.Metrics', cgroupsV2.Metrics, {
    pids: { current: 1n, limit: 2n }, cpu: { usageUsec: 100n, userUsec: 60n, systemUsec: 40n, nrPeriods: 1n, nrThrottled: 1n, throttledUsec: 5n },
    memory: { anon: 1n, file: 2n, usage: 3n, usageLimit: 18_446_744_073_709_551_615n, swapMaxUsage: 37n },
    io: { usage: [{ major: 8n, minor: 0n, rbytes: 1n, wbytes: 2n, rios: 3n, wios: 4n }] },
    hugetlb: [{ current: 1n, max: 2n, pagesize: '1GB' }], memoryEvents: { oom: 1n, oomKill: 1n },
  }],
  // CRI
  ['cri.PodSandboxConfig', cri.PodSandboxConfig, {
    metadata: { name: 'p', uid: 'u', namespace: 'default', attempt: 1 }, hostname: 'h', logDirectory: '/var/log/pods/x',
    dnsConfig: { servers: ['1.1.1.1'], searches: ['svc'], options: ['ndots:5'] },
    portMappings: [{ protocol: cri.Protocol.UDP, containerPort: 53, hostPort: 5353, hostIp: '0.0.0.0' }],
    labels: { app: 'x' }, annotations: { a: 'b' },
    linux: {
      cgroupParent: '/kubepods/pod1', sysctls: { 'net.ipv4.ip_forward': '1' },
      securityContext: {
        namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD, targetId: 't' },
        selinuxOptions: { user: 'u', role: 'r', type: 't', level: 's0' }, runAsUser: { value: 1000n }, runAsGroup: { value: 1000n },
        readonlyRootfs: true, supplementalGroups: [1n, 2n], privileged: true, seccompProfilePath: 'x',
        seccomp: { profileType: cri.SecurityProfile_ProfileType.Localhost, localhostRef: '/p' }, apparmor: { profileType: cri.SecurityProfile_ProfileType.Unconfined },
        supplementalGroupsPolicy: cri.SupplementalGroupsPolicy.Strict,
      },
      overhead: { cpuShares: 2n }, resources: { cpuPeriod: 100000n, cpuQuota: 50000n, memoryLimitInBytes: 1n << 30n, unified: { 'memory.high': 'max' } },
    },
    windows: { securityContext: { runAsUsername: 'x' } },
  }],
  ['cri.ContainerConfig', cri.ContainerConfig, {
    metadata: { name: 'c', attempt: 2 }, image: { image: 'busybox', userSpecifiedImage: 'docker.io/busybox', runtimeHandler: 'r', imageRef: 'sha256:x' },
    command: ['sh'], args: ['-c', 'echo'], workingDir: '/', envs: [{ key: 'A', value: 'B' }],
    mounts: [{ containerPath: '/c', hostPath: '/h', readonly: true, propagation: cri.MountPropagation.PROPAGATION_BIDIRECTIONAL, uidMappings: [{ hostId: 1, containerId: 0, length: 65536 }], imageSubPath: 'sub' }],
    devices: [{ containerPath: '/dev/x', hostPath: '/dev/y', permissions: 'rwm' }], labels: { l: '1' }, annotations: { a: '1' },
    logPath: 'c/0.log', stdin: true, stdinOnce: true, tty: true,
    linux: { resources: { memorySwapLimitInBytes: 5n }, securityContext: { capabilities: { addCapabilities: ['CAP_NET_ADMIN'] }, runAsUsername: 'root', noNewPrivs: true, maskedPaths: ['/proc/kcore'] } },
    CDIDevices: [{ name: 'vendor.com/gpu=0' }],
  }],
  ['cri.ContainerStatus', cri.ContainerStatus, {
    id: 'c', metadata: { name: 'c' }, state: cri.ContainerState.CONTAINER_EXITED, createdAt: 1n, startedAt: 2n, finishedAt: 3n, exitCode: -1,
    image: { image: 'i' }, imageRef: 'r', reason: 'OOMKilled', message: 'm', labels: { a: 'b' }, annotations: { c: 'd' },
    mounts: [{ containerPath: '/x' }], logPath: 'l', resources: { linux: { cpuShares: 2n } }, imageId: 'id', user: { linux: { uid: 0n, gid: 0n, supplementalGroups: [10n] } },
  }],
  ['cri.ExecSyncResponse', cri.ExecSyncResponse, { stdout: Buffer.from('out'), stderr: Buffer.from([0xff, 0]), exitCode: 7 }],
  ['cri.ListPodSandboxResponse', cri.ListPodSandboxResponse, { items: [{ id: 'p', metadata: { name: 'n' }, state: cri.PodSandboxState.SANDBOX_NOTREADY, createdAt: 5n, labels: { a: 'b' }, runtimeHandler: 'h' }] }],
  ['cri.PodSandboxStatusResponse', cri.PodSandboxStatusResponse, {
    status: { id: 'p', state: cri.PodSandboxState.SANDBOX_READY, createdAt: 1n, network: { ip: '10.0.0.2', additionalIps: [{ ip: 'fd00::2' }] }, linux: { namespaces: { options: { network: cri.NamespaceMode.POD } } } },
    info: { k: '{}' }, timestamp: 9n,
  }],
  ['cri.StatusResponse', cri.StatusResponse, {
    status: { conditions: [{ type: 'RuntimeReady', status: true, reason: 'r', message: 'm' }] }, info: { a: 'b' },
    runtimeHandlers: [{ name: 'kuasar', features: { recursiveReadOnlyMounts: true, userNamespaces: true } }], features: { supplementalGroupsPolicy: true },
  }],
  ['cri.ImageStatusResponse', cri.ImageStatusResponse, { image: { id: 'sha256:x', repoTags: ['t'], repoDigests: ['d'], size: 12345n, uid: { value: 0n }, username: 'u', spec: { image: 'x' }, pinned: true }, info: { k: 'v' } }],
  ['cri.PullImageRequest', cri.PullImageRequest, { image: { image: 'busybox' }, auth: { username: 'u', password: 'p', auth: 'a', serverAddress: 's', identityToken: 'i', registryToken: 'r' }, sandboxConfig: { hostname: 'h' } }],
  ['cri.ListContainerStatsResponse', cri.ListContainerStatsResponse, {
    stats: [{ attributes: { id: 'c', metadata: { name: 'c' } }, cpu: { timestamp: 1n, usageCoreNanoSeconds: { value: 5n } }, memory: { timestamp: 1n, workingSetBytes: { value: 4096n } }, writableLayer: { timestamp: 1n, fsId: { mountpoint: '/' }, usedBytes: { value: 1n } }, swap: { timestamp: 1n, swapUsageBytes: { value: 0n } } }],
  }],
  ['cri.UpdateContainerResourcesRequest', cri.UpdateContainerResourcesRequest, { containerId: 'c', linux: { cpusetCpus: '0-1', hugepageLimits: [{ pageSize: '2MB', limit: 1n }] }, annotations: { a: 'b' } }],
];

describe.each(cases)('%s', (_name, codec, sample) => {
  const msg = codec.fromPartial(sample);

  it('survives a binary round trip', () => {
    const bytes = codec.encode(msg).finish();
    expect(bytes.length).toBeGreaterThan(0);
    expect(codec.decode(bytes)).toEqual(msg);
  });

  it('survives a JSON round trip', () => {
    expect(codec.fromJSON(JSON.parse(JSON.stringify(codec.toJSON(msg))))).toEqual(msg);
  });

  it('sample sets only real fields, each to a non-default value', () => {
    // Guards the sample itself: fromPartial silently drops misspelled keys, which would hide a missing field.
    const defaults = codec.fromPartial({}) as Record<string, unknown>;
    const decoded = codec.decode(codec.encode(msg).finish()) as Record<string, unknown>;
    for (const key of Object.keys(sample)) {
      expect(Object.keys(defaults)).toContain(key);
      expect(decoded[key]).not.toEqual(defaults[key]);
    }
  });
});

test('empty messages encode to zero bytes', () => {
  expect(google.Empty.encode({}).finish()).toHaveLength(0);
  expect(sandboxApi.ControllerStopResponse.encode({}).finish()).toHaveLength(0);
  expect(cri.StartContainerResponse.encode({}).finish()).toHaveLength(0);
});

test('unknown fields are skipped when decoding', () => {
  // field 15 (varint 1) and field 16 (length-delimited "zz") are not in StartRequest.
  const bytes = Uint8Array.from([0x0a, 0x01, 0x63, 0x78, 0x01, 0x82, 0x01, 0x02, 0x7a, 0x7a, 0x12, 0x01, 0x65]);
  expect(task.StartRequest.decode(bytes)).toEqual({ id: 'c', execId: 'e' });
});
