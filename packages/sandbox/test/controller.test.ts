import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { cgroupsV1, cri, dateFromTimestamp, google, packAny, sandboxApi, types, unpackAny } from '@kuasar/api';
import { isRunning } from '@kuasar/sys';
import { type Harness, createRequest, rpc, startHarness, stopHarness, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(20_000);

let h: Harness;
let root: string;

beforeEach(async () => {
  root = tempDir('kuasar-sbx-sandbox-');
  h = await startHarness({ root });
});

afterEach(async () => {
  // Leave no sleeps or cgroups behind, whatever a test did.
  for (const id of h.serving.controller.ids()) await h.serving.controller.shutdown(id);
  await stopHarness(h);
});

describe('pod lifecycle over gRPC', () => {
  test('Create keeps the PodSandboxConfig, netns, annotations and containerd record', async () => {
    const sandboxRecord = types.Sandbox.fromPartial({
      sandboxId: 'pod1',
      runtime: { name: 'io.containerd.test.v1' },
      labels: { name: 'pod1' },
      extensions: { metadata: { typeUrl: 'github.com/containerd/cri/pkg/store/sandbox/Metadata', value: Buffer.from('{"ID":"pod1"}') } },
      sandboxer: 'test',
    });
    // The long URL form must decode too.
    const options = packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial({
      hostname: 'web-0',
      dnsConfig: { servers: ['10.0.0.10'] },
      linux: { cgroupParent: '/kubepods/besteffort/pod1', securityContext: { namespaceOptions: { network: 2, pid: 1 } } },
    }));
    options.typeUrl = `type.googleapis.com/${options.typeUrl}`;
    await rpc(h.client, 'create', createRequest('pod1', { options, annotations: { a: 'b' }, sandbox: sandboxRecord }));

    const onDisk = JSON.parse(readFileSync(path.join(h.dir, 'pod1', 'sandbox.json'), 'utf8'));
    expect(onDisk.state).toBe('created');
    expect(onDisk.netnsPath).toBe('/var/run/netns/cni-pod1');
    expect(onDisk.annotations).toEqual({ a: 'b' });
    const r = h.serving.controller.get('pod1').record;
    expect(r.config?.hostname).toBe('web-0');
    expect(r.config?.dnsConfig?.servers).toEqual(['10.0.0.10']);
    expect(r.config?.linux?.cgroupParent).toBe('/kubepods/besteffort/pod1');
    expect(r.config?.linux?.securityContext?.namespaceOptions?.network).toBe(2);
    expect(r.sandbox?.runtime?.name).toBe('io.containerd.test.v1');
    expect(Buffer.from(r.sandbox!.extensions.metadata.value).toString()).toBe('{"ID":"pod1"}');
    expect(existsSync(path.join(h.dir, 'pod1', 'kind-file'))).toBe(true);
  });

  test('Create, Start, Status (verbose), Wait blocks until Stop, Shutdown', async () => {
    await rpc(h.client, 'create', createRequest('pod2'));
    const before = await rpc(h.client, 'status', { sandboxId: 'pod2', verbose: false, sandboxer: '' });
    expect(before.state).toBe('SANDBOX_NOTREADY');

    const started: sandboxApi.ControllerStartResponse = await rpc(h.client, 'start', { sandboxId: 'pod2', sandboxer: '' });
    expect(started.pid).toBeGreaterThan(0);
    expect(isRunning(started.pid)).toBe(true);
    expect(started.address).toBe(`ttrpc+unix://${path.join(h.dir, 'task.sock')}`);
    expect(started.version).toBe(3);
    expect(started.labels).toEqual({ selinux_label: 'test_label' });
    expect(Math.abs(dateFromTimestamp(started.createdAt!).getTime() - Date.now())).toBeLessThan(5000);

    const status: sandboxApi.ControllerStatusResponse = await rpc(h.client, 'status', { sandboxId: 'pod2', verbose: true, sandboxer: '' });
    expect(status.state).toBe('SANDBOX_READY');
    expect(status.pid).toBe(started.pid);
    expect(status.address).toBe(started.address);
    expect(status.version).toBe(3);
    expect(status.exitedAt).toBeUndefined();
    const info = JSON.parse(status.info.info);
    // The keys CRI's SandboxInfo knows carry its Go types; our own data sits under a key it ignores.
    expect(info).toEqual({
      pid: started.pid,
      processStatus: 'running',
      netNamespaceClosed: true, // the test's netns path does not exist
      runtimeType: '',
      kuasar: expect.objectContaining({ kind: { alive: true } }),
    });
    expect(info.kuasar.record.id).toBe('pod2');
    expect(info.kuasar.record.config.hostname).toBe('pod2');

    let waited = false;
    const wait = rpc(h.client, 'wait', { sandboxId: 'pod2', sandboxer: '' }).then((r) => {
      waited = true;
      return r as sandboxApi.ControllerWaitResponse;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(waited).toBe(false); // Wait must not return while the sandbox runs

    await rpc(h.client, 'stop', { sandboxId: 'pod2', timeoutSecs: 5, sandboxer: '' });
    const exit = await wait;
    expect(exit.exitStatus).toBe(128 + 15);
    expect(exit.exitedAt).toBeDefined();
    expect(isRunning(started.pid)).toBe(false);

    const after: sandboxApi.ControllerStatusResponse = await rpc(h.client, 'status', { sandboxId: 'pod2', verbose: false, sandboxer: '' });
    expect(after.state).toBe('SANDBOX_NOTREADY');
    expect(after.exitedAt).toBeDefined();
    expect(after.address).toBe('');
    expect(JSON.parse(readFileSync(path.join(h.dir, 'pod2', 'sandbox.json'), 'utf8')).state).toBe('stopped');

    // Stop again is harmless; a Wait after the exit returns at once with the same status.
    await rpc(h.client, 'stop', { sandboxId: 'pod2', timeoutSecs: 0, sandboxer: '' });
    expect((await rpc(h.client, 'wait', { sandboxId: 'pod2', sandboxer: '' })).exitStatus).toBe(143);

    await rpc(h.client, 'shutdown', { sandboxId: 'pod2', sandboxer: '' });
    expect(existsSync(path.join(h.dir, 'pod2'))).toBe(false);
    // Idempotent for containerd: a repeated Shutdown is NOT_FOUND, which CRI's RemovePodSandbox tolerates.
    await expect(rpc(h.client, 'shutdown', { sandboxId: 'pod2', sandboxer: '' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(rpc(h.client, 'status', { sandboxId: 'pod2', verbose: false, sandboxer: '' })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  test('many concurrent Waits all return after the exit; cancelled Waits leave nothing behind', async () => {
    await rpc(h.client, 'create', createRequest('pod3'));
    await rpc(h.client, 'start', { sandboxId: 'pod3', sandboxer: '' });
    const waits = Array.from({ length: 20 }, () => rpc(h.client, 'wait', { sandboxId: 'pod3', sandboxer: '' }));
    // Cancelled by the client (deadline): the server must drop these waiters.
    const short = Array.from({ length: 10 }, () =>
      rpc(h.client, 'wait', { sandboxId: 'pod3', sandboxer: '' }, { deadline: Date.now() + 200 }).catch((e) => e),
    );
    for (const e of await Promise.all(short)) expect(e.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    const signal = h.serving.controller.get('pod3').exitSignal;
    await waitFor(() => signal.waiterCount === 20);
    expect(signal.waiterCount).toBe(20);

    await rpc(h.client, 'stop', { sandboxId: 'pod3', timeoutSecs: 0, sandboxer: '' });
    const exits = await Promise.all(waits);
    expect(exits.map((e) => e.exitStatus)).toEqual(Array(20).fill(128 + 9));
    expect(signal.waiterCount).toBe(0);
  });

  test('Stop with a timeout: a process ignoring SIGTERM is killed after the timeout', async () => {
    await rpc(h.client, 'create', createRequest('stubborn', { annotations: { 'test.kuasar.io/ignore-sigterm': 'true' } }));
    const { pid } = await rpc(h.client, 'start', { sandboxId: 'stubborn', sandboxer: '' });
    const wait = rpc(h.client, 'wait', { sandboxId: 'stubborn', sandboxer: '' });
    const t0 = Date.now();
    const stop = rpc(h.client, 'stop', { sandboxId: 'stubborn', timeoutSecs: 1, sandboxer: '' });
    // Reads do not queue behind a running Stop.
    await new Promise((r) => setTimeout(r, 100));
    const t1 = Date.now();
    expect((await rpc(h.client, 'status', { sandboxId: 'stubborn' })).state).toBe('SANDBOX_READY');
    expect(Date.now() - t1).toBeLessThan(500);
    await stop;
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(950);
    expect(elapsed).toBeLessThan(5000);
    expect((await wait).exitStatus).toBe(128 + 9);
    expect(isRunning(pid)).toBe(false);
  });

  test('Shutdown of a running sandbox kills it, cleans up, and ends pending Waits', async () => {
    await rpc(h.client, 'create', createRequest('pod4'));
    const { pid } = await rpc(h.client, 'start', { sandboxId: 'pod4', sandboxer: '' });
    const wait = rpc(h.client, 'wait', { sandboxId: 'pod4', sandboxer: '' });
    await rpc(h.client, 'shutdown', { sandboxId: 'pod4', sandboxer: '' });
    expect((await wait).exitStatus).toBe(137);
    expect(isRunning(pid)).toBe(false);
    expect(existsSync(path.join(h.dir, 'pod4'))).toBe(false);
    expect(h.kind.calls.filter((c) => c.id === 'pod4').map((c) => c.op)).toEqual(['create', 'start', 'stop', 'shutdown']);
  });

  test('Platform reports the real host platform', async () => {
    await rpc(h.client, 'create', createRequest('pod5'));
    const { platform } = await rpc(h.client, 'platform', { sandboxId: 'pod5', sandboxer: '' });
    expect(platform.os).toBe('linux');
    expect(platform.architecture).toBe({ x64: 'amd64', arm64: 'arm64' }[process.arch as string] ?? process.arch);
  });

  test('Metrics returns cgroup stats of the running sandbox', async () => {
    await rpc(h.client, 'create', createRequest('pod6'));
    // Not running yet: nothing to measure, and NOT_FOUND is what CRI's stats listing skips quietly.
    await expect(rpc(h.client, 'metrics', { sandboxId: 'pod6', sandboxer: '' })).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
    await rpc(h.client, 'start', { sandboxId: 'pod6', sandboxer: '' });
    const { metrics } = (await rpc(h.client, 'metrics', { sandboxId: 'pod6', sandboxer: '' })) as sandboxApi.ControllerMetricsResponse;
    expect(metrics!.id).toBe('pod6');
    expect(Math.abs(dateFromTimestamp(metrics!.timestamp!).getTime() - Date.now())).toBeLessThan(5000);
    expect(metrics!.data!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = unpackAny(metrics!.data!, cgroupsV1.Metrics);
    expect(m.pids!.current).toBeGreaterThanOrEqual(1n);
    expect(m.memory!.usage!.usage).toBeGreaterThan(0n);
  });

  test('Metrics without a kind reader: the framework reads the sandbox pid cgroup', async () => {
    await stopHarness(h);
    h = await startHarness({ root: tempDir('kuasar-sbx-sandbox-'), kind: new SleepKind(0, { kindMetrics: false }) });
    await rpc(h.client, 'create', createRequest('pod6b'));
    await rpc(h.client, 'start', { sandboxId: 'pod6b' });
    const { metrics } = (await rpc(h.client, 'metrics', { sandboxId: 'pod6b' })) as sandboxApi.ControllerMetricsResponse;
    expect(h.kind.calls.some((c) => c.op === 'metrics')).toBe(false);
    expect(metrics!.data!.typeUrl).toBe('io.containerd.cgroups.v1.Metrics');
    const m = unpackAny(metrics!.data!, cgroupsV1.Metrics);
    expect(m.pids!.current).toBeGreaterThanOrEqual(1n);
  });

  test('Update applies containerd field paths and persists them', async () => {
    const initial = types.Sandbox.fromPartial({
      sandboxId: 'pod7',
      runtime: { name: 'rt' },
      labels: { keep: '1', drop: '2' },
      extensions: { metadata: { typeUrl: 'm', value: Buffer.from('old') } },
    });
    await rpc(h.client, 'create', createRequest('pod7', { sandbox: initial }));
    const spec: google.Any = { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Spec', value: Buffer.from('{"ociVersion":"1.1.0"}') };
    await rpc(h.client, 'update', {
      sandboxId: 'pod7',
      sandboxer: '',
      sandbox: types.Sandbox.fromPartial({ sandboxId: 'pod7', labels: { added: 'yes' }, spec }),
      fields: ['labels.added', 'labels.drop', 'spec'],
    });
    let r = h.serving.controller.get('pod7').record.sandbox!;
    expect(r.labels).toEqual({ keep: '1', added: 'yes' });
    expect(Buffer.from(r.spec!.value).toString()).toBe('{"ociVersion":"1.1.0"}');
    expect(Buffer.from(r.extensions.metadata.value).toString()).toBe('old');
    const onDisk = JSON.parse(readFileSync(path.join(h.dir, 'pod7', 'sandbox.json'), 'utf8'));
    expect(onDisk.sandbox.labels).toEqual({ keep: '1', added: 'yes' });

    // Empty fields: the whole record (labels, extensions, spec, runtime), but runtime.name stays immutable.
    await rpc(h.client, 'update', {
      sandboxId: 'pod7',
      sandboxer: '',
      sandbox: types.Sandbox.fromPartial({ sandboxId: 'pod7', runtime: { name: 'rt' }, labels: { only: 'this' } }),
      fields: [],
    });
    r = h.serving.controller.get('pod7').record.sandbox!;
    expect(r.labels).toEqual({ only: 'this' });
    expect(r.extensions).toEqual({});
    expect(r.spec).toBeUndefined();
    await expect(
      rpc(h.client, 'update', { sandboxId: 'pod7', sandboxer: '', sandbox: types.Sandbox.fromPartial({ runtime: { name: 'other' } }), fields: [] }),
    ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(
      rpc(h.client, 'update', { sandboxId: 'pod7', sandboxer: '', sandbox: types.Sandbox.fromPartial({}), fields: ['sandboxer'] }),
    ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });
});

describe('bad input', () => {
  const badIds = ['a/b', '..', '../etc', '', 'x'.repeat(77), 'a\u0000b', '-a', 'a..b', 'tasks'];

  test.each(badIds.map((id) => [JSON.stringify(id).slice(0, 24), id]))('id %s is INVALID_ARGUMENT on every RPC', async (_label, id) => {
    for (const method of ['create', 'start', 'platform', 'stop', 'wait', 'status', 'shutdown', 'metrics', 'update'] as const) {
      const req = method === 'create' ? createRequest(id) : { sandboxId: id, sandboxer: '', sandbox: types.Sandbox.fromPartial({}) };
      await expect(rpc(h.client, method, req as never)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    }
  });

  test('a 76-character id is accepted', async () => {
    await rpc(h.client, 'create', createRequest('y'.repeat(76)));
    expect(existsSync(path.join(h.dir, 'y'.repeat(76), 'sandbox.json'))).toBe(true);
  });

  test('unknown ids are NOT_FOUND', async () => {
    for (const method of ['start', 'platform', 'stop', 'wait', 'status', 'shutdown', 'metrics', 'update'] as const) {
      const req = { sandboxId: 'nope', sandboxer: '', sandbox: types.Sandbox.fromPartial({}) };
      await expect(rpc(h.client, method, req as never)).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    }
  });

  test('double Create is ALREADY_EXISTS; Start twice is FAILED_PRECONDITION', async () => {
    await rpc(h.client, 'create', createRequest('dup'));
    await expect(rpc(h.client, 'create', createRequest('dup'))).rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS });
    await rpc(h.client, 'start', { sandboxId: 'dup', sandboxer: '' });
    await expect(rpc(h.client, 'start', { sandboxId: 'dup', sandboxer: '' })).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
  });

  test('options claiming PodSandboxConfig but undecodable are INVALID_ARGUMENT and leave nothing behind', async () => {
    const options = { typeUrl: 'runtime.v1.PodSandboxConfig', value: Buffer.from([0x0a, 0xff, 0xff]) };
    await expect(rpc(h.client, 'create', createRequest('garbled', { options }))).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    expect(existsSync(path.join(h.dir, 'garbled'))).toBe(false);
  });
});

describe('concurrency', () => {
  test('operations on one id are serialised; different ids run concurrently', async () => {
    await stopHarness(h);
    h = await startHarness({ root: tempDir('kuasar-sbx-sandbox-'), kind: new SleepKind(50) });
    const creates = await Promise.allSettled(Array.from({ length: 8 }, () => rpc(h.client, 'create', createRequest('same'))));
    expect(creates.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of creates) if (r.status === 'rejected') expect(r.reason.code).toBe(grpc.status.ALREADY_EXISTS);

    const starts = await Promise.allSettled(Array.from({ length: 4 }, () => rpc(h.client, 'start', { sandboxId: 'same', sandboxer: '' })));
    expect(starts.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    await Promise.all([
      rpc(h.client, 'stop', { sandboxId: 'same', timeoutSecs: 0, sandboxer: '' }),
      rpc(h.client, 'update', { sandboxId: 'same', sandboxer: '', sandbox: types.Sandbox.fromPartial({ labels: { a: 'b' } }), fields: ['labels'] }),
      rpc(h.client, 'stop', { sandboxId: 'same', timeoutSecs: 0, sandboxer: '' }),
    ]);
    expect(h.kind.maxInFlightPerId).toBe(1);
    expect(h.kind.calls.filter((c) => c.op === 'create')).toHaveLength(1);
    expect(h.kind.calls.filter((c) => c.op === 'start')).toHaveLength(1);

    await Promise.all(['c1', 'c2', 'c3', 'c4'].map((id) => rpc(h.client, 'create', createRequest(id))));
    expect(h.kind.maxInFlightTotal).toBeGreaterThan(1);
    expect(h.kind.maxInFlightPerId).toBe(1);
  });
});

describe('sockets and dirs', () => {
  test('controller socket is 0600 and owned by root; state dir is 0700', () => {
    const s = statSync(h.socket);
    expect(s.isSocket()).toBe(true);
    expect(s.mode & 0o777).toBe(0o600);
    expect(s.uid).toBe(0);
    expect(statSync(h.dir).mode & 0o777).toBe(0o700);
  });

  test('a second server refuses a socket a live server answers on', async () => {
    const { serveController, createLogger } = await import('../src');
    await expect(
      serveController({
        listen: h.socket,
        dir: path.join(root, 'other-state'),
        sandboxer: new SleepKind(),
        logger: createLogger({ level: 'fatal' }),
        taskEndpoint: { address: '', version: 3 },
      }),
    ).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, message: expect.stringContaining('another process') });
    // The live server is unharmed.
    await rpc(h.client, 'create', createRequest('still-ok'));
  });
});

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}
