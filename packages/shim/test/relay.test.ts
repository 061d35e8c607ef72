// The task relay (`containerd-shim-kuasar-<kind>-v2 relay`, native/task-relay.c) as a real process: real unix
// sockets, a real ttrpc client standing in for containerd and real ttrpc servers standing in for the sandboxer
// before and after a crash.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { task } from '@kuasar/api';
import {
  Code, FrameDecoder, MessageType, TtrpcClient, TtrpcError, TtrpcServer, createClient, decodeResponse, encodeFrame,
  encodeRequest, type ServiceImplementation,
} from '@kuasar/ttrpc';
import { buildShim, removeShimBuild, shimPath, tempDir } from './helpers';

jest.setTimeout(30_000);

type Impl = ServiceImplementation<typeof task.TaskV3Definition>;
const TASK_SERVICE = 'containerd.task.v3.Task';
const unimplemented = (): Promise<never> => Promise.reject(new TtrpcError(Code.UNIMPLEMENTED, 'not in this fake'));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A fake sandboxer task server: `wait` answers `exitStatus` (or never, when undefined), `create` never answers. */
async function fakeSandboxer(socket: string, exitStatus: number | undefined, seen: string[]): Promise<TtrpcServer> {
  const impl = new Proxy({} as Impl, {
    get: (_t, name: string) => {
      if (name === 'wait') {
        return (req: task.WaitRequest) => {
          seen.push(`wait ${req.id}`);
          return exitStatus === undefined ? new Promise(() => undefined) : Promise.resolve({ exitStatus, exitedAt: undefined });
        };
      }
      if (name === 'create') return (req: task.CreateTaskRequest) => (seen.push(`create ${req.id}`), new Promise(() => undefined));
      if (name === 'connect') {
        return (req: task.ConnectRequest) => (seen.push(`connect ${req.id}`), req.id === 'refused'
          ? Promise.reject(new TtrpcError(Code.NOT_FOUND, 'no such task'))
          : Promise.resolve(task.ConnectResponse.fromPartial({ shimPid: 41, taskPid: 42 })));
      }
      if (name === 'state') return (req: task.StateRequest) => (seen.push(`state ${req.id}`), Promise.resolve(task.StateResponse.fromPartial({ id: req.id, pid: 42 })));
      return unimplemented;
    },
  });
  const server = new TtrpcServer();
  server.addService(task.TaskV3Definition, impl);
  server.register('test.Echo', 'Echo', async (payload) => payload);
  await server.listen(socket);
  return server;
}

function socketAnswers(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

interface Relay {
  child: ChildProcess;
  pid: number;
  /** Parsed JSON lines of its stderr so far. */
  logs(): Record<string, unknown>[];
  exited: Promise<number | null>;
}

const relays: ChildProcess[] = [];

/** Starts the relay on <dir>/relay.sock -> <dir>/task.sock; resolves once it answers (or it exited). */
async function startRelay(dir: string, extra: string[] = []): Promise<Relay> {
  const child = spawn(shimPath('runc'), [
    'relay', '--listen', path.join(dir, 'relay.sock'), '--upstream', path.join(dir, 'task.sock'),
    '--pid-file', path.join(dir, 'relay.pid'), '--log-level', 'debug', ...extra,
    // fd 3: something inherited without CLOEXEC, which a process that outlives its parent must not keep (IDLE_FDS).
  ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  relays.push(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  let done = false;
  void exited.then(() => (done = true));
  const deadline = Date.now() + 5000;
  while (!done && Date.now() < deadline && !(await socketAnswers(path.join(dir, 'relay.sock')))) await sleep(10);
  return {
    child,
    pid: child.pid!,
    exited,
    logs: () => err.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** An idle relay: stdin, stdout, stderr, epoll, signalfd and the listening socket (not the inherited fd 3). */
const IDLE_FDS = 6;

function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** A raw containerd-side connection: write frames by hand, read the frames the relay sends back. */
async function rawConnection(socket: string): Promise<{ sock: net.Socket; frames: { streamId: number; type: number; data: Buffer }[]; closed: Promise<void> }> {
  const sock = net.connect(socket);
  await new Promise<void>((resolve, reject) => (sock.once('connect', resolve), sock.once('error', reject)));
  const frames: { streamId: number; type: number; data: Buffer }[] = [];
  const dec = new FrameDecoder();
  sock.on('data', (chunk: Buffer) => frames.push(...dec.push(chunk)));
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  return { sock, frames, closed };
}

function requestFrame(streamId: number, method: string, payload: Uint8Array, service = TASK_SERVICE, timeoutNano = 0n): Buffer {
  return encodeFrame(streamId, MessageType.REQUEST, 0, encodeRequest({ service, method, payload, timeoutNano, metadata: new Map() }));
}

async function until<T>(what: string, fn: () => T, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

let dir: string;
let cleanupDir: () => void;
const servers: TtrpcServer[] = [];
const clients: TtrpcClient[] = [];

beforeAll(() => {
  buildShim();
});
afterAll(() => {
  removeShimBuild();
});
beforeEach(() => {
  ({ dir, cleanup: cleanupDir } = tempDir('krelay-'));
});
afterEach(async () => {
  for (const c of clients.splice(0)) await c.close().catch(() => undefined);
  for (const s of servers.splice(0)) await s.close(100).catch(() => undefined);
  // SIGTERM first: a graceful exit frees everything, which is when a sanitizer build (KUASAR_SHIM_TEST_BIN) checks leaks.
  for (const r of relays.splice(0)) {
    if (r.exitCode === null && r.signalCode === null) {
      const gone = new Promise((res) => r.once('exit', res));
      r.kill('SIGTERM');
      const timer = setTimeout(() => r.kill('SIGKILL'), 2000);
      await gone;
      clearTimeout(timer);
    }
  }
  cleanupDir();
});

async function connect(): Promise<ReturnType<typeof createClient<typeof task.TaskV3Definition>>> {
  const c = await TtrpcClient.connect(path.join(dir, 'relay.sock'));
  clients.push(c);
  return createClient(task.TaskV3Definition, c);
}

describe('task relay', () => {
  test('a sandboxer crash: Wait in flight is re-sent to the new sandboxer, Create in flight fails UNAVAILABLE, the connection stays', async () => {
    const upstream = path.join(dir, 'task.sock');
    const seen1: string[] = [];
    const first = await fakeSandboxer(upstream, undefined, seen1);
    const relay = await startRelay(dir);
    const client = await connect();

    expect((await client.state({ id: 'c1', execId: '' })).pid).toBe(42);
    const wait = client.wait({ id: 'c1', execId: '' });
    const create = client.create(task.CreateTaskRequest.fromPartial({ id: 'c2', bundle: '/b' }));
    create.catch(() => undefined);
    await until('calls reach the sandboxer', () => seen1.length, (n) => n === 3);
    expect(seen1).toEqual(['state c1', 'wait c1', 'create c2']);

    await first.close(0); // the crash: every connection drops with the calls unanswered
    await expect(create).rejects.toMatchObject({ code: Code.UNAVAILABLE, message: expect.stringMatching(/restarted while handling Create/) });

    const seen2: string[] = [];
    servers.push(await fakeSandboxer(upstream, 7, seen2));
    await expect(wait).resolves.toMatchObject({ exitStatus: 7 });
    expect(seen2).toContain('wait c1');
    expect(seen2).not.toContain('create c2');
    // The same containerd connection keeps working.
    expect((await client.state({ id: 'c3', execId: '' })).id).toBe('c3');
    const msgs = relay.logs().map((l) => l.msg);
    expect(msgs).toContain('task relay: sandboxer connection lost; reconnecting');
    const back = relay.logs().find((l) => l.msg === 'task relay reconnected')!;
    expect(back).toMatchObject({ level: 'info', component: 'task-relay', sandboxer: 'runc', replayed: ['Wait'] });
    expect(typeof back.downMs).toBe('number');
  });

  test('calls made while the sandboxer is down wait for it and then go through', async () => {
    const upstream = path.join(dir, 'task.sock');
    await startRelay(dir);
    const client = await connect();
    const state = client.state({ id: 'late', execId: '' });
    await sleep(300);
    servers.push(await fakeSandboxer(upstream, 0, []));
    await expect(state).resolves.toMatchObject({ id: 'late', pid: 42 });
  });

  test('a sandboxer that never comes back: pending calls fail UNAVAILABLE once the reconnect window ends, then the connection closes', async () => {
    const relay = await startRelay(dir, ['--reconnect-ms', '300']);
    const c = await TtrpcClient.connect(path.join(dir, 'relay.sock'));
    clients.push(c);
    const closed = new Promise<void>((r) => c.onClose(() => r()));
    await expect(createClient(task.TaskV3Definition, c).state({ id: 'x', execId: '' })).rejects.toMatchObject({ code: Code.UNAVAILABLE, message: expect.stringMatching(/not reachable/) });
    await closed;
    await until('the error logged', () => relay.logs().some((l) => l.level === 'error' && /did not come back/.test(String(l.msg))), Boolean);
  });

  test('refuses to take over a relay socket another live relay serves, and leaves it working', async () => {
    servers.push(await fakeSandboxer(path.join(dir, 'task.sock'), 0, []));
    const first = await startRelay(dir);
    const second = await startRelay(dir);
    expect(await second.exited).toBe(1);
    expect(second.logs().some((l) => /another process is serving/.test(String(l.msg)))).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'relay.pid'), 'utf8').trim()).toBe(String(first.pid));
    expect((await (await connect()).state({ id: 'ok', execId: '' })).pid).toBe(42);
  });

  test('a frame of exactly the ttrpc limit passes both ways unchanged', async () => {
    servers.push(await fakeSandboxer(path.join(dir, 'task.sock'), 0, []));
    await startRelay(dir);
    const c = await TtrpcClient.connect(path.join(dir, 'relay.sock'));
    clients.push(c);
    // Request/Response envelopes add a few bytes around the payload; stay just under 4 MiB of frame data.
    const payload = Buffer.alloc((4 << 20) - 64);
    for (let i = 0; i < payload.length; i += 4096) payload.writeUInt32BE(i, i);
    const back = await c.call('test.Echo', 'Echo', payload);
    expect(Buffer.compare(Buffer.from(back), payload)).toBe(0);
  });

  test('garbage: an oversized frame gets RESOURCE_EXHAUSTED without being buffered, later calls on the connection still work', async () => {
    servers.push(await fakeSandboxer(path.join(dir, 'task.sock'), 0, []));
    const relay = await startRelay(dir);
    const raw = await rawConnection(path.join(dir, 'relay.sock'));
    const big = (8 << 20) + 5;
    const header = Buffer.alloc(10);
    header.writeUInt32BE(big, 0);
    header.writeUInt32BE(1, 4);
    header[8] = MessageType.REQUEST;
    raw.sock.write(header);
    raw.sock.write(Buffer.alloc(big, 0xab));
    raw.sock.write(requestFrame(3, 'State', task.StateRequest.encode({ id: 'after', execId: '' }).finish()));
    await until('two answers', () => raw.frames.length, (n) => n >= 2);
    const first = decodeResponse(raw.frames.find((f) => f.streamId === 1)!.data);
    expect(first.status).toMatchObject({ code: Code.RESOURCE_EXHAUSTED, message: expect.stringMatching(/exceed maximum message size of 4194304/) });
    const second = decodeResponse(raw.frames.find((f) => f.streamId === 3)!.data);
    expect(task.StateResponse.decode(second.payload)).toMatchObject({ id: 'after', pid: 42 });
    // The 8 MiB were skipped, not held.
    expect(rssKb(relay.pid)).toBeLessThan(4096);
    raw.sock.destroy();
  });

  test('garbage: junk bytes, a malformed request and half a frame neither crash the relay nor disturb other connections', async () => {
    const seen: string[] = [];
    servers.push(await fakeSandboxer(path.join(dir, 'task.sock'), 0, seen));
    const relay = await startRelay(dir);
    const client = await connect();
    const wait = client.wait({ id: 'steady', execId: '' });

    // A request whose envelope is not protobuf: the sandboxer's server answers it, the relay just passes it on.
    const bad = await rawConnection(path.join(dir, 'relay.sock'));
    bad.sock.write(encodeFrame(1, MessageType.REQUEST, 0, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])));
    // Random bytes (a header with an unknown type and a short body), then half a frame, then hang up.
    const junk = await rawConnection(path.join(dir, 'relay.sock'));
    junk.sock.write(Buffer.from('GET / HTTP/1.1\r\nHost: relay\r\n\r\n'));
    junk.sock.end(requestFrame(1, 'State', Buffer.alloc(10)).subarray(0, 15));
    await junk.closed;
    bad.sock.destroy();

    await expect(wait).resolves.toMatchObject({ exitStatus: 0 });
    expect((await client.state({ id: 'still', execId: '' })).pid).toBe(42);
    expect(relay.child.exitCode).toBeNull();
  });

  test('bounded: a client that floods calls while the sandboxer is down and reads nothing gets RESOURCE_EXHAUSTED past the cap, and the relay stops reading', async () => {
    const relay = await startRelay(dir, ['--log-level', 'error']);
    const baseFds = IDLE_FDS;
    const raw = await rawConnection(path.join(dir, 'relay.sock'));
    raw.sock.pause();
    const calls = 80_000;
    const payload = task.StateRequest.encode({ id: 'flood', execId: '' }).finish();
    const frames = Array.from({ length: calls }, (_, i) => requestFrame(2 * i + 1, 'State', payload));
    raw.sock.write(Buffer.concat(frames));
    await sleep(1000);
    // 65536 calls held for the sandboxer (~10 MB with bookkeeping), the rest answered; nothing grows past that.
    expect(rssKb(relay.pid)).toBeLessThan(24 * 1024);
    raw.sock.resume();
    await until('the calls past the cap are answered', () => raw.frames.length, (n) => n === calls - 65536, 20_000);
    expect(raw.frames.every((f) => f.streamId > 2 * 65536 && decodeResponse(f.data).status?.code === Code.RESOURCE_EXHAUSTED)).toBe(true);
    // The held ones are still waiting for a sandboxer (the relay did not drop them); a hang-up frees them.
    raw.sock.destroy();
    await until('the connection freed', () => fdCount(relay.pid), (n) => n === baseFds);
    expect(relay.child.exitCode).toBeNull();
  });

  test('lifecycle: pid file, SIGTERM removes its socket and pid file, and it exits when its socket is removed', async () => {
    const relay = await startRelay(dir);
    expect(Number(fs.readFileSync(path.join(dir, 'relay.pid'), 'utf8'))).toBe(relay.pid);
    const st = fs.statSync(path.join(dir, 'relay.sock'));
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    relay.child.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
    expect(fs.existsSync(path.join(dir, 'relay.sock'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'relay.pid'))).toBe(false);
    expect(relay.logs().find((l) => l.msg === 'task relay stopping')).toMatchObject({ why: 'SIGTERM' });

    const again = await startRelay(dir);
    fs.rmSync(path.join(dir, 'relay.sock'));
    const started = Date.now();
    expect(await again.exited).toBe(0);
    expect(Date.now() - started).toBeLessThan(4000);
    expect(again.logs().find((l) => l.msg === 'task relay stopping')).toMatchObject({ why: 'socket removed' });
  });

  test('usage errors exit 2 with a message, -h exits 0', async () => {
    const run = (args: string[]) => new Promise<{ code: number | null; err: string; out: string }>((resolve) => {
      const c = spawn(shimPath('runc'), ['relay', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      let out = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      c.once('close', (code) => resolve({ code, err, out }));
    });
    expect(await run(['--listen', 'rel.sock', '--upstream', '/x/task.sock'])).toMatchObject({ code: 2, err: expect.stringMatching(/--listen needs an absolute path/) });
    expect(await run(['--listen', '/x/r.sock'])).toMatchObject({ code: 2, err: expect.stringMatching(/--upstream needs an absolute path/) });
    expect(await run(['--listen', '/x/r.sock', '--upstream', '/x/t.sock', '--reconnect-ms', 'soon'])).toMatchObject({ code: 2, err: expect.stringMatching(/--reconnect-ms/) });
    expect(await run(['--listen', `/${'x'.repeat(120)}`, '--upstream', '/x/t.sock'])).toMatchObject({ code: 2, err: expect.stringMatching(/does not fit/) });
    expect(await run(['--bogus', '1'])).toMatchObject({ code: 2, err: expect.stringMatching(/not defined: -bogus/) });
    expect(await run(['--listen'])).toMatchObject({ code: 2, err: expect.stringMatching(/needs an argument/) });
    expect(await run(['-h'])).toMatchObject({ code: 0, out: expect.stringMatching(/^usage: .* relay --listen/) });
  });

  // containerd hangs up in each state of a connection: while the sandboxer is down and being re-dialled, before the
  // relay got to accept it (a containerd restart), and before its upstream was dialled. None may outlive containerd's side.
  test('containerd hanging up in any state frees both fds: during re-dial, before accept, before the upstream dial', async () => {
    const upstream = path.join(dir, 'task.sock');
    const sock = path.join(dir, 'relay.sock');
    const relay = await startRelay(dir);
    const state = (id: string) => task.StateRequest.encode({ id, execId: '' }).finish();
    const waitFrame = (id: string) => requestFrame(1, 'Wait', task.WaitRequest.encode({ id, execId: '' }).finish());

    // 1. No sandboxer yet: the relay re-dials every 100 ms with a queued call, and containerd leaves.
    const early = await rawConnection(sock);
    early.sock.write(requestFrame(1, 'State', state('early')));
    await until('the connection held', () => fdCount(relay.pid), (n) => n === IDLE_FDS + 1);
    early.sock.destroy();
    await until('the re-dialling connection freed', () => fdCount(relay.pid), (n) => n === IDLE_FDS);

    // 2. A parked Wait, then the sandboxer dies: containerd leaves while its upstream is being re-dialled.
    let sb = await fakeSandboxer(upstream, undefined, []);
    const parked = await Promise.all([rawConnection(sock), rawConnection(sock)]);
    parked.forEach((r, i) => r.sock.write(waitFrame(`parked${i}`)));
    await until('both relayed', () => fdCount(relay.pid), (n) => n === IDLE_FDS + 4);
    await sb.close(0);
    await until('upstreams dropped', () => fdCount(relay.pid), (n) => n === IDLE_FDS + 2);
    parked[0]!.sock.destroy();
    parked[1]!.sock.end(); // a half-close (FIN only) counts as leaving too
    await until('the re-dialling connections freed', () => fdCount(relay.pid), (n) => n === IDLE_FDS);

    // 3. The relay is frozen (as under load, or while containerd restarts): connections arrive, send a call, and
    // hang up before it accepts them; meanwhile the sandboxer comes back, so each accept dials a live upstream.
    sb = await fakeSandboxer(upstream, undefined, []);
    servers.push(sb);
    process.kill(relay.pid, 'SIGSTOP');
    try {
      const gone = await Promise.all(Array.from({ length: 5 }, () => rawConnection(sock)));
      gone.forEach((r, i) => (r.sock.write(waitFrame(`gone${i}`)), r.sock.destroy()));
      await Promise.all(gone.map((r) => r.closed));
    } finally {
      process.kill(relay.pid, 'SIGCONT');
    }
    await until('connections accepted after their peer left are freed', () => fdCount(relay.pid), (n) => n === IDLE_FDS);
    // And the relay still serves.
    expect((await (await connect()).state({ id: 'after', execId: '' })).id).toBe('after');
    expect(relay.child.exitCode).toBeNull();
  });

  // containerd 2.x reloading tasks after its restart: a connection per task, first call Connect with a 5 s deadline;
  // when that fails (here: the sandboxer is down past the deadline, or says NOT_FOUND) containerd cleans the task up
  // and never closes the connection. The relay closes it once the grace after the deadline is over.
  test('a connection whose first call, a Connect with a deadline, failed is closed after the grace; connections in use stay', async () => {
    const upstream = path.join(dir, 'task.sock');
    const sock = path.join(dir, 'relay.sock');
    const relay = await startRelay(dir);
    const connectFrame = (id: string, ms: number) => requestFrame(1, 'Connect', task.ConnectRequest.encode({ id }).finish(), TASK_SERVICE, BigInt(ms) * 1_000_000n);
    // While the sandboxer is down: a probe that will be answered too late, the same one that containerd then goes on
    // using (so it was not a failed reload), and a Connect without a deadline (not a reload probe).
    const late = await rawConnection(sock);
    late.sock.write(connectFrame('late', 300));
    const used = await rawConnection(sock);
    used.sock.write(connectFrame('used', 300));
    const noDeadline = await rawConnection(sock);
    noDeadline.sock.write(connectFrame('nodeadline', 0));
    await sleep(600);
    servers.push(await fakeSandboxer(upstream, undefined, []));
    // With the sandboxer up: a probe answered OK in time, and one answered NOT_FOUND in time.
    const ok = await rawConnection(sock);
    ok.sock.write(connectFrame('ok', 5000));
    const refused = await rawConnection(sock);
    refused.sock.write(connectFrame('refused', 1000));
    const all = [late, used, noDeadline, ok, refused];
    await until('every Connect answered', () => all.every((r) => r.frames.length === 1), Boolean);
    used.sock.write(requestFrame(3, 'Wait', task.WaitRequest.encode({ id: 'used', execId: '' }).finish()));
    expect(decodeResponse(refused.frames[0]!.data).status?.code).toBe(Code.NOT_FOUND);
    expect(task.ConnectResponse.decode(decodeResponse(late.frames[0]!.data).payload).taskPid).toBe(42);

    // Nothing is closed before the grace (10 s after the deadline): containerd's own clean-up runs meanwhile.
    await sleep(2000);
    expect(fdCount(relay.pid)).toBe(IDLE_FDS + 2 * all.length);
    await Promise.all([late.closed, refused.closed]);
    await sleep(300);
    for (const r of [used, noDeadline, ok]) expect(r.sock.destroyed).toBe(false);
    expect(fdCount(relay.pid)).toBe(IDLE_FDS + 2 * 3);
    expect(relay.logs().filter((l) => /containerd abandoned/.test(String(l.msg)))).toHaveLength(2);
    for (const r of [used, noDeadline, ok]) r.sock.destroy();
    await until('the rest freed', () => fdCount(relay.pid), (n) => n === IDLE_FDS);
  });

  test('100 containerd connections with parked Waits and 3 sandboxer restarts: small and steady RSS, no leaked fds', async () => {
    const upstream = path.join(dir, 'task.sock');
    let sb = await fakeSandboxer(upstream, undefined, []);
    const relay = await startRelay(dir, ['--log-level', 'warn']);
    const baseFds = IDLE_FDS;
    const conns = await Promise.all(Array.from({ length: 100 }, () => TtrpcClient.connect(path.join(dir, 'relay.sock'))));
    const waits = conns.map((c, i) => createClient(task.TaskV3Definition, c).wait({ id: `c${i}`, execId: '' }));
    waits.forEach((w) => w.catch(() => undefined));
    await until('every connection relayed', () => fdCount(relay.pid), (n) => n === baseFds + 200);
    for (let round = 0; round < 3; round++) {
      await sb.close(0);
      await until('upstreams dropped', () => fdCount(relay.pid), (n) => n === baseFds + 100);
      sb = await fakeSandboxer(upstream, undefined, []);
      await until('upstreams back', () => fdCount(relay.pid), (n) => n === baseFds + 200);
    }
    const rss = rssKb(relay.pid);
    // eslint-disable-next-line no-console
    console.log(`task relay VmRSS with 100 connections after 3 restarts: ${rss} kB`);
    expect(rss).toBeLessThan(2048);
    await sb.close(0);
    sb = await fakeSandboxer(upstream, 3, []);
    await until('upstreams back', () => fdCount(relay.pid), (n) => n === baseFds + 200);
    servers.push(sb);
    for (const c of conns) await c.close();
    await until('connections closed', () => fdCount(relay.pid), (n) => n === baseFds);
    expect(relay.child.exitCode).toBeNull();
  });
});
