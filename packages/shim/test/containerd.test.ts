// The thin shim under a real containerd 1.6 (and 1.7 when scripts/fetch-debs.sh has cached it):
// `ctr run --runtime io.containerd.kuasar-runc.v2` must reach the fake sandboxer's Create with the
// bundle and namespace containerd chose. This proves the plumbing, not task semantics.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { task } from '@kuasar/api';
import { containerdAvailability, ContainerdVersion, CtrError, PrivateContainerd } from '@kuasar/testkit';
import { Code, TtrpcError } from '@kuasar/ttrpc';
import { buildShim, eventually, FakeSandboxer, removeShimBuild, tempDir } from './helpers';

const RUNTIME = 'io.containerd.kuasar-runc.v2';
const versions: ContainerdVersion[] = ['1.6', '1.7'];

jest.setTimeout(60_000);
afterAll(() => removeShimBuild());

// The CRI runtime entry a node would carry; ctr names the runtime directly, so this only has to parse.
const extraConfig = `
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-runc]
  runtime_type = "${RUNTIME}"
`;

describe.each(versions)('containerd %s', (version) => {
  const available = containerdAvailability(version);
  const maybe = 'bins' in available ? test : test.skip;
  if (!('bins' in available)) test.skip(`containerd ${version} not available: ${available.reason}`, () => undefined);

  let tmp: { dir: string; cleanup: () => void };
  let sock: string;
  let rootfs: string;
  let fake: FakeSandboxer;
  let ctrd: PrivateContainerd | undefined;
  const saved = { PATH: process.env.PATH, KUASAR_RUNC_TASK_SOCKET: process.env.KUASAR_RUNC_TASK_SOCKET };

  beforeAll(async () => {
    if (!('bins' in available)) return;
    tmp = tempDir('kshim-ctrd-');
    sock = path.join(tmp.dir, 'task.sock');
    rootfs = path.join(tmp.dir, 'rootfs');
    fs.mkdirSync(rootfs);
    fake = await new FakeSandboxer(sock).listen();
    // PrivateContainerd passes this process's environment to containerd, which passes its own to shims:
    // the built shim is found on PATH and points at the fake through KUASAR_RUNC_TASK_SOCKET.
    process.env.PATH = `${buildShim()}:${process.env.PATH}`;
    process.env.KUASAR_RUNC_TASK_SOCKET = sock;
    try {
      ctrd = await PrivateContainerd.start({ version, extraConfig });
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.KUASAR_RUNC_TASK_SOCKET === undefined) delete process.env.KUASAR_RUNC_TASK_SOCKET;
      else process.env.KUASAR_RUNC_TASK_SOCKET = saved.KUASAR_RUNC_TASK_SOCKET;
    }
  });

  afterAll(async () => {
    await ctrd?.stop();
    await fake?.close();
    tmp?.cleanup();
  });

  beforeEach(() => {
    fake?.calls.splice(0);
  });

  maybe('ctr run reaches the sandboxer Create with containerd bundle and namespace; the shim delete follows', async () => {
    fake.setImpl({
      create: async () => { throw new TtrpcError(Code.FAILED_PRECONDITION, 'kuasar fake sandboxer refuses to create'); },
      delete: async () => { throw new TtrpcError(Code.NOT_FOUND, 'no such task'); },
      kill: async () => { throw new TtrpcError(Code.NOT_FOUND, 'no such task'); },
      shutdown: async () => ({}),
    });
    const id = `plumb-${version.replace('.', '')}`;
    const err = await ctrd!.ctr(['run', '--runtime', RUNTIME, '--rootfs', rootfs, id, '/bin/true'], { namespace: 'kuasar-test', timeoutMs: 30_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CtrError);
    expect((err as CtrError).stderr).toContain('kuasar fake sandboxer refuses to create');

    const create = fake.calls.find((c) => c.method === 'Create');
    expect(create).toBeDefined();
    const req = create!.request as task.CreateTaskRequest;
    expect(req.id).toBe(id);
    // The namespace reaches the sandboxer only through the bundle path: containerd 1.x sends no
    // containerd-namespace-ttrpc metadata on task calls (a shim used to serve a single namespace).
    expect(req.bundle).toBe(path.join(ctrd!.state, 'io.containerd.runtime.v2.task', 'kuasar-test', id));
    expect(create!.namespace).toBeUndefined();

    // containerd closes its connection after the failed create and runs `<shim> ... delete`:
    // the shim's Kill(SIGKILL, all) arrives on a fresh connection with the namespace.
    await eventually(() => fake.calls.some((c) => c.method === 'Kill'), 10_000, 'the shim delete action');
    const kill = fake.calls.find((c) => c.method === 'Kill')!;
    expect(kill.namespace).toBe('kuasar-test');
    expect(kill.request).toMatchObject({ id, signal: 9, all: true });
    const log = ctrd!.logs();
    expect(log).not.toMatch(new RegExp(`cleanup warnings.*${id}`)); // NOT_FOUND is the quiet path
  });

  maybe('sandboxer down: ctr run fails with the shim message naming the socket and the systemd unit', async () => {
    await fake.close();
    try {
      const err = await ctrd!.ctr(['run', '--runtime', RUNTIME, '--rootfs', rootfs, `down-${version.replace('.', '')}`, '/bin/true'], { timeoutMs: 30_000 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(CtrError);
      expect((err as CtrError).stderr).toContain('kuasar-runc-sandboxer.service');
      expect((err as CtrError).stderr).toContain(sock);
    } finally {
      await fake.listen();
    }
  });

  // Documents the containerd 1.x behaviour the README's restart analysis rests on: when the task
  // connection closes (a sandboxer restart), containerd runs `delete` for the task and forgets it.
  maybe('a sandboxer restart makes containerd run delete and drop the running task', async () => {
    const holder = spawn('sleep', ['300'], { stdio: 'ignore' }); // a real pid for containerd's cgroup monitor
    const pid = holder.pid!;
    let state: 'created' | 'running' | 'stopped' = 'created';
    fake.setImpl({
      create: async () => ({ pid }),
      start: async () => { state = 'running'; return { pid }; },
      state: async (req: task.StateRequest) => ({ id: req.id, pid, status: state === 'running' ? 2 : state === 'created' ? 1 : 3 }),
      wait: (_req, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
      connect: async () => ({ shimPid: process.pid, taskPid: pid, version: 'fake' }),
      kill: async () => { state = 'stopped'; return {}; },
      delete: async () => ({ pid, exitStatus: 137, exitedAt: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 } }),
      shutdown: async () => ({}),
    });
    const id = `restart-${version.replace('.', '')}`;
    try {
      await ctrd!.ctr(['run', '-d', '--runtime', RUNTIME, '--rootfs', rootfs, id, '/bin/true'], { timeoutMs: 30_000 });
      const listed = (await ctrd!.ctr(['tasks', 'ls'])).stdout;
      expect(listed).toMatch(new RegExp(`${id}\\s+${pid}\\s+RUNNING`));

      fake.calls.splice(0);
      await fake.close(); // the restart: every connection to the task socket closes
      // containerd runs `<shim> delete` at once (within milliseconds here), while the socket is gone.
      await eventually(() => new RegExp(`cleanup warnings kuasar runc sandboxer is not reachable.*task ${id}`).test(ctrd!.logs()), 10_000, 'containerd running the shim delete');
      await fake.listen(); // the sandboxer is back, with the container still alive inside it ...
      // ... but containerd has already forgotten the task: restarting the sandboxer lost it.
      let gone = false;
      for (let i = 0; i < 50 && !gone; i++) {
        gone = !(await ctrd!.ctr(['tasks', 'ls'])).stdout.includes(id);
        if (!gone) await new Promise((r) => setTimeout(r, 100));
      }
      expect(gone).toBe(true);
      expect(ctrd!.logs()).toMatch(new RegExp(`shim disconnected.*id=${id}`));
      expect(fake.calls).toEqual([]); // and nobody reconnects to the task address
    } finally {
      holder.kill('SIGKILL');
      await ctrd!.ctr(['containers', 'rm', id]).catch(() => undefined);
    }
  });
});
