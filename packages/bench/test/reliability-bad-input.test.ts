// The bad-input matrix over the wire, and socket/file permissions: a real runc-sandboxer process, its real Controller
// (gRPC) and Task (ttrpc) sockets, no containerd. Every bad call gets a clear status, and a witness pod with a
// running container is checked after each one: nothing else is lost.
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { mountsUnder } from '@kuasar/testkit';
import { encodeFrame, encodeRequest, FrameDecoder, decodeResponse, MessageType, NAMESPACE_KEY } from '@kuasar/ttrpc';
import { task } from '@kuasar/api';
import { GRPC_CODES, NAMESPACE, SandboxerTarget, TASK_V2, podContainerBundle, type WireResult } from '../src';

jest.setTimeout(300_000);

const name = (r: WireResult): string => (r.code === -1 ? `TRANSPORT ${r.message}` : GRPC_CODES[r.code] ?? String(r.code));

let t: SandboxerTarget;
const WITNESS = 'witness-pod';
const WITNESS_C = 'witness-c';
let witnessPid = 0;

/** The witness pod is READY and its container RUNNING with the same pid: the bad call lost nothing. */
async function expectWitnessIntact(): Promise<void> {
  const pod = await t.controllerCall('status', { sandboxId: WITNESS });
  expect(name(pod)).toBe('OK');
  const st = await t.taskCall('state', { id: WITNESS_C });
  expect(name(st)).toBe('OK');
  const state = task.StateResponse.decode(st.body!);
  expect({ pid: state.pid, status: state.status }).toEqual({ pid: witnessPid, status: 2 /* RUNNING */ });
  expect(existsSync(`/proc/${witnessPid}`)).toBe(true);
}

async function startContainer(id: string, pod: string, args: string[]): Promise<number> {
  const bundle = podContainerBundle(t.base, pod, args);
  const c = await t.taskCall('create', { id, bundle });
  if (c.code !== 0) throw new Error(`Create ${id}: ${name(c)} ${c.message}`);
  const s = await t.taskCall('start', { id });
  if (s.code !== 0) throw new Error(`Start ${id}: ${name(s)} ${s.message}`);
  return task.StartResponse.decode(s.body!).pid;
}

beforeAll(async () => {
  t = await SandboxerTarget.start();
  await t.runPod(WITNESS);
  witnessPid = await startContainer(WITNESS_C, WITNESS, ['sleep', '3600']);
});

afterAll(async () => {
  if (!t) return;
  await t.shutdownAll().catch(() => undefined);
  await t.stop();
});

afterEach(async () => {
  if (t.sb.running) await expectWitnessIntact();
});

describe('path-traversal and malformed ids', () => {
  const BAD = ['../../etc', '..', 'a/b', '/abs', '', 'x'.repeat(77), 'tasks', 'task.sock', 'é', 'a\u0000b', '.hidden', 'a..b'];

  test.each(BAD)('Controller Create/Status/Shutdown of %j: INVALID_ARGUMENT, no file made', async (id) => {
    const before = readdirSync(t.dir).sort();
    for (const m of ['create', 'status', 'start', 'stop', 'wait', 'shutdown', 'metrics', 'platform'] as const) {
      const r = await t.controllerCall(m, { sandboxId: id });
      expect(`${m} ${name(r)}`).toBe(`${m} INVALID_ARGUMENT`);
      expect(r.message.length).toBeGreaterThan(10);
    }
    expect(readdirSync(t.dir).sort()).toEqual(before);
    expect(existsSync('/etc/sandbox.json')).toBe(false);
  });

  test.each(BAD.filter((x) => x !== 'tasks' && x !== 'task.sock'))('Task Create of %j: INVALID_ARGUMENT; lookups NOT_FOUND; no task dir', async (id) => {
    expect(name(await t.taskCall('create', { id, bundle: '/nonexistent' }))).toBe('INVALID_ARGUMENT');
    expect(name(await t.taskCall('exec', { id: WITNESS_C, execId: id, spec: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from('{"args":["true"],"cwd":"/"}') } }))).toBe('INVALID_ARGUMENT');
    // lookups only compare the id with the ones in the table: no file is involved
    for (const [m, req] of [['state', { id }], ['delete', { id }], ['kill', { id, signal: 9 }], ['wait', { id }]] as const) {
      const r = await t.taskCall(m, req);
      expect(['INVALID_ARGUMENT', 'NOT_FOUND']).toContain(name(r));
    }
    expect(t.taskDirs()).toEqual([`${NAMESPACE}/${WITNESS_C}`]);
  });

  test('a namespace that is a path (metadata containerd-namespace-ttrpc=../..) is refused', async () => {
    const conn = await t.taskConn();
    const body = Buffer.from(task.StateRequest.encode(task.StateRequest.fromPartial({ id: WITNESS_C })).finish());
    await expect(conn.call(TASK_V2, 'State', body, { namespace: '../..' })).rejects.toMatchObject({ code: 5 }); // not in the table
    await expect(conn.call(TASK_V2, 'Create', Buffer.from(task.CreateTaskRequest.encode(task.CreateTaskRequest.fromPartial({ id: 'ns-escape', bundle: '/nonexistent' })).finish()), { namespace: '../../../tmp' })).rejects.toMatchObject({ code: 3 });
    expect(existsSync(path.join(t.dir, 'tasks', '..', '..', '..', 'tmp', 'ns-escape'))).toBe(false);
  });
});

describe('oversize messages', () => {
  test('a ttrpc request over 4 MiB gets RESOURCE_EXHAUSTED and the connection keeps serving', async () => {
    const big = Buffer.from(task.CreateTaskRequest.encode(task.CreateTaskRequest.fromPartial({ id: 'big', bundle: `/${'a'.repeat(5 << 20)}` })).finish());
    const r = await t.taskRaw(TASK_V2, 'Create', big);
    expect(name(r)).toBe('RESOURCE_EXHAUSTED');
    expect(name(await t.taskCall('state', { id: 'never-created' }))).toBe('NOT_FOUND');
  });

  test('a ttrpc frame header announcing 1 GiB is refused without reading it, the server lives on', async () => {
    const reply = await new Promise<string>((resolve) => {
      const s = net.connect(t.sb.taskSocket);
      const header = Buffer.alloc(10);
      header.writeUInt32BE(1 << 30, 0);
      header.writeUInt32BE(1, 4);
      header[8] = MessageType.REQUEST;
      const dec = new FrameDecoder(64 << 20);
      let got = '';
      s.on('data', (d) => {
        for (const f of dec.push(d)) got += `frame type ${f.type} code ${decodeResponse(f.data).status?.code}`;
      });
      s.on('close', () => resolve(got || 'closed'));
      s.on('error', () => undefined);
      s.write(Buffer.concat([header, Buffer.alloc(1024)]));
      setTimeout(() => s.destroy(), 3000);
    });
    // Go ttrpc answers RESOURCE_EXHAUSTED for the stream and discards the body, or closes the connection
    expect(reply === 'closed' || /code 8/.test(reply)).toBe(true);
    expect(t.sb.running).toBe(true);
  });

  test('a gRPC Controller request over the 4 MiB limit gets RESOURCE_EXHAUSTED', async () => {
    const r = await t.controllerRaw('Create', Buffer.concat([Buffer.from([10]), Buffer.from([0x80, 0x80, 0x80, 0x03]), Buffer.alloc(6 << 20, 0x61)]));
    expect(name(r)).toBe('RESOURCE_EXHAUSTED');
  });

  test('a valid ttrpc request with a huge metadata list is answered, not crashed on', async () => {
    const md = new Map<string, string[]>([[NAMESPACE_KEY, [NAMESPACE]], ...Array.from({ length: 5000 }, (_, i) => [`k${i}`, ['v'.repeat(100)]] as [string, string[]])]);
    const frame = encodeFrame(1, MessageType.REQUEST, 0, encodeRequest({ service: TASK_V2, method: 'State', payload: Buffer.from(task.StateRequest.encode({ id: 'never-created', execId: '' }).finish()), timeoutNano: 0n, metadata: md }));
    const code = await new Promise<number | undefined>((resolve) => {
      const s = net.connect(t.sb.taskSocket);
      const dec = new FrameDecoder(64 << 20);
      s.on('data', (d) => {
        for (const f of dec.push(d)) {
          resolve(decodeResponse(f.data).status?.code);
          s.destroy();
        }
      });
      s.on('close', () => resolve(-1));
      s.write(frame);
    });
    expect(code === 5 || code === 8).toBe(true); // NOT_FOUND, or RESOURCE_EXHAUSTED over the frame limit
  });
});

describe('unknown sandboxes and containers', () => {
  test('every Controller call on an unknown sandbox: NOT_FOUND', async () => {
    for (const m of ['status', 'start', 'stop', 'wait', 'metrics', 'platform'] as const) {
      const r = await t.controllerCall(m, { sandboxId: 'no-such-pod' });
      expect(`${m} ${name(r)}`).toBe(`${m} NOT_FOUND`);
    }
    expect(name(await t.controllerCall('update', { sandboxId: 'no-such-pod', sandbox: { sandboxId: 'no-such-pod' } }))).toBe('NOT_FOUND');
    // containerd treats Shutdown of a sandbox that is gone as done: OK or NOT_FOUND, both idempotent
    expect(['OK', 'NOT_FOUND']).toContain(name(await t.controllerCall('shutdown', { sandboxId: 'no-such-pod' })));
  });

  test('every Task call on an unknown container or exec: NOT_FOUND', async () => {
    for (const [m, req] of [
      ['state', { id: 'no-such-c' }], ['start', { id: 'no-such-c' }], ['delete', { id: 'no-such-c' }], ['pids', { id: 'no-such-c' }],
      ['pause', { id: 'no-such-c' }], ['resume', { id: 'no-such-c' }], ['kill', { id: 'no-such-c', signal: 9 }], ['wait', { id: 'no-such-c' }],
      ['stats', { id: 'no-such-c' }], ['connect', { id: 'no-such-c' }], ['closeIO', { id: 'no-such-c' }], ['resizePty', { id: 'no-such-c', width: 80, height: 24 }],
      ['state', { id: WITNESS_C, execId: 'no-such-exec' }], ['kill', { id: WITNESS_C, execId: 'no-such-exec', signal: 9 }],
    ] as const) {
      const r = await t.taskCall(m as 'state', req);
      expect(`${m} ${name(r)}`).toBe(`${m} NOT_FOUND`);
    }
  });

  test('a container whose bundle names an unknown pod: a clear error, nothing made', async () => {
    const bundle = podContainerBundle(t.base, 'no-such-pod', ['true']);
    const r = await t.taskCall('create', { id: 'orphan-c', bundle });
    expect(['NOT_FOUND', 'FAILED_PRECONDITION', 'OK']).toContain(name(r));
    if (r.code === 0) {
      // standalone containers are allowed (no pod): then it must be fully removable
      expect(name(await t.taskCall('delete', { id: 'orphan-c' }))).toBe('OK');
    }
    expect(t.taskDirs()).toEqual([`${NAMESPACE}/${WITNESS_C}`]);
  });
});

describe('a netns path that is not a network namespace', () => {
  test('Start: INVALID_ARGUMENT naming the path (the wire fuzzer found INTERNAL here); Shutdown leaves nothing', async () => {
    for (const [id, netnsPath] of [['netns-root', '/'], ['netns-file', '/etc/hostname']] as const) {
      // no pod config: nothing at Create looks at the path (a CRI host-network pod is refused there already)
      expect(name(await t.controllerCall('create', { sandboxId: id, netnsPath }))).toBe('OK');
      const started = await t.controllerCall('start', { sandboxId: id });
      expect(`${name(started)} ${started.message}`).toBe(`INVALID_ARGUMENT netns path is not a namespace file: ${netnsPath}`);
      expect(name(await t.controllerCall('shutdown', { sandboxId: id }))).toBe('OK');
      expect(name(await t.controllerCall('status', { sandboxId: id }))).toBe('NOT_FOUND');
    }
    await expectWitnessIntact();
  });
});

describe('double create, delete while running', () => {
  test('Controller Create of an existing sandbox: ALREADY_EXISTS, the first one untouched', async () => {
    const r = await t.controllerCall('create', { sandboxId: WITNESS });
    expect(name(r)).toBe('ALREADY_EXISTS');
    expect(name(await t.controllerCall('start', { sandboxId: WITNESS }))).toBe('FAILED_PRECONDITION');
  });

  test('Task Create of an existing container: ALREADY_EXISTS; Start of a running one: FAILED_PRECONDITION', async () => {
    const r = await t.taskCall('create', { id: WITNESS_C, bundle: podContainerBundle(t.base, WITNESS, ['true']) });
    expect(name(r)).toBe('ALREADY_EXISTS');
    expect(['FAILED_PRECONDITION', 'ALREADY_EXISTS']).toContain(name(await t.taskCall('start', { id: WITNESS_C })));
  });

  test('two concurrent Creates of one new container: one wins, the other ALREADY_EXISTS', async () => {
    const b = podContainerBundle(t.base, WITNESS, ['sleep', '60']);
    const rs = await Promise.all([t.taskCall('create', { id: 'twin', bundle: b }), t.taskCall('create', { id: 'twin', bundle: b })]);
    expect(rs.map(name).sort()).toEqual(['ALREADY_EXISTS', 'OK']);
    expect(name(await t.taskCall('delete', { id: 'twin' }))).toBe('OK');
  });

  test('Task Delete of a running container: FAILED_PRECONDITION, and it keeps running', async () => {
    const r = await t.taskCall('delete', { id: WITNESS_C });
    expect(name(r)).toBe('FAILED_PRECONDITION');
  });
});

describe('bad bundles and specs', () => {
  test('a missing, relative or spec-less bundle: a clear error, nothing made', async () => {
    expect(name(await t.taskCall('create', { id: 'nb1', bundle: '/nonexistent/bundle' }))).toBe('FAILED_PRECONDITION');
    expect(name(await t.taskCall('create', { id: 'nb2', bundle: 'relative/bundle' }))).toBe('INVALID_ARGUMENT');
    const b = podContainerBundle(t.base, WITNESS, ['true']);
    writeFileSync(path.join(b, 'config.json'), '{"process": ');
    expect(name(await t.taskCall('create', { id: 'nb3', bundle: b }))).toBe('INVALID_ARGUMENT');
    expect(t.taskDirs()).toEqual([`${NAMESPACE}/${WITNESS_C}`]);
  });

  test('an exec with a broken process spec: INVALID_ARGUMENT', async () => {
    const r = await t.taskCall('exec', { id: WITNESS_C, execId: 'bad-exec', spec: { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from('{"args": 5') } });
    expect(name(r)).toBe('INVALID_ARGUMENT');
  });
});

describe('a missing runtime binary', () => {
  test('config pointing at a nonexistent runc: Create fails with a status naming it, the sandboxer keeps serving', async () => {
    const other = await SandboxerTarget.start({ config: '[runc.runtime]\nbinary = "/nonexistent/runc"\n' }).catch((err: Error) => err);
    if (other instanceof Error) {
      // refusing to start at all is also a clear answer, if it names the binary
      expect(other.message).toMatch(/nonexistent\/runc/);
      return;
    }
    try {
      await other.runPod('p-norunc').catch(() => undefined);
      const r = await other.taskCall('create', { id: 'c-norunc', bundle: podContainerBundle(other.base, 'p-norunc', ['true']) });
      expect(['FAILED_PRECONDITION', 'NOT_FOUND', 'INTERNAL', 'UNAVAILABLE', 'UNKNOWN']).toContain(name(r));
      expect(r.message).toMatch(/nonexistent\/runc|ENOENT|not found/i);
      expect(other.taskDirs()).toEqual([]);
      expect(name(await other.taskCall('state', { id: 'never-created' }))).toBe('NOT_FOUND');
      expect(other.sb.running).toBe(true);
    } finally {
      await other.shutdownAll().catch(() => undefined);
      await other.stop();
    }
  });
});

describe('a corrupt state file on restart', () => {
  test('torn sandbox.json and task.json: the sandboxer starts, refuses them clearly, and the witness pod survives', async () => {
    await t.runPod('victim-pod');
    await startContainer('victim-c', 'victim-pod', ['sleep', '3600']);
    await t.crash();
    writeFileSync(path.join(t.dir, 'victim-pod', 'sandbox.json'), '{"id": "victim-pod", "state": ');
    const taskJson = path.join(t.dir, 'tasks', NAMESPACE, 'victim-c', 'task.json');
    writeFileSync(taskJson, readFileSync(taskJson).subarray(0, 20));
    const restarted = await SandboxerTarget.start({ base: t.base });
    t = restarted;
    await expectWitnessIntact();
    expect(['NOT_FOUND', 'FAILED_PRECONDITION']).toContain(name(await t.controllerCall('status', { sandboxId: 'victim-pod' })));
    expect(name(await t.taskCall('state', { id: 'victim-c' }))).toBe('NOT_FOUND');
    // the unreadable task record's container was removed, not leaked
    expect(t.taskDirs()).toEqual([`${NAMESPACE}/${WITNESS_C}`]);
    const logged = t.rawLog();
    expect(logged).toMatch(/corrupt sandbox record/);
    expect(logged).toMatch(/unreadable task record/);
    // A corrupt record's pod is left for the operator (docs/troubleshooting.md: "clean up the pod by hand"); this
    // test is that operator: its namespace mounts would outlive the run.
    // a lazy unmount of a top mount detaches the ones under it too
    const mounts = mountsUnder(path.join(t.dir, 'victim-pod'));
    for (const m of mounts.filter((m) => !mounts.some((o) => m.startsWith(`${o}/`)))) execFileSync('umount', ['-l', m]);
    expect(mountsUnder(path.join(t.dir, 'victim-pod'))).toEqual([]);
  });
});

describe('socket and file permissions (running sandboxer)', () => {
  test('the Controller and task sockets are 0600 and owned by root', () => {
    for (const s of [t.listen, t.sb.taskSocket]) {
      const st = lstatSync(s);
      expect(st.isSocket()).toBe(true);
      expect({ socket: path.basename(s), mode: (st.mode & 0o777).toString(8), uid: st.uid, gid: st.gid }).toEqual({ socket: path.basename(s), mode: '600', uid: 0, gid: 0 });
    }
  });

  test('the state dir and every dir the sandboxer made under it are 0700 (no group/other access)', () => {
    const bad: string[] = [];
    const walk = (d: string, depth: number): void => {
      const mode = statSync(d).mode & 0o777;
      if ((mode & 0o077) !== 0) bad.push(`${d} ${mode.toString(8)}`);
      if (depth === 0) return;
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory() && !e.isSymbolicLink()) walk(path.join(d, e.name), depth - 1);
    };
    // <dir>, <dir>/<pod>, <dir>/tasks, <dir>/tasks/<ns>, <dir>/tasks/<ns>/<id>; ns/ holds bind-mounted namespace files
    walk(t.dir, 3);
    expect(bad).toEqual([]);
    expect(statSync(t.dir).uid).toBe(0);
  });

  test('records are not readable by others', () => {
    const files = [path.join(t.dir, WITNESS, 'sandbox.json'), path.join(t.dir, 'tasks', NAMESPACE, WITNESS_C, 'task.json')];
    for (const f of files) expect(`${path.basename(f)} ${((statSync(f).mode & 0o077) === 0)}`).toBe(`${path.basename(f)} true`);
  });
});
