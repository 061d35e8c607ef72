import { Code, createClient, encodeFrame, MessageType, NAMESPACE_KEY, TtrpcClient, TtrpcError, TtrpcServer, withNamespace } from '../src';
import type { CallContext } from '../src';
import { Echo, encodeEcho, EchoServiceDefinition, RawPeer, sleep, tempSocketPath } from './helpers';

const SVC = 'kuasar.test.v1.Echo';

describe('unary calls over a unix socket', () => {
  let tmp: ReturnType<typeof tempSocketPath>;
  let server: TtrpcServer;
  let client: TtrpcClient;
  let lastCtx: CallContext | undefined;
  let lateHandlerDone: Promise<void> = Promise.resolve();

  beforeEach(async () => {
    tmp = tempSocketPath();
    server = new TtrpcServer({ maxMessageSize: 64 * 1024 });
    server.register(SVC, 'Say', async (payload, ctx) => {
      lastCtx = ctx;
      const req = Echo.decode(payload);
      if (req.delayMs) await sleep(req.delayMs);
      if (req.text === 'fail-typed') throw new TtrpcError(Code.NOT_FOUND, 'container c1 not found');
      if (req.text === 'fail-plain') throw new Error('boom');
      if (req.text === 'big') return new Uint8Array(64 * 1024 + 1);
      return encodeEcho({ text: `echo:${req.text}` });
    });
    server.register(SVC, 'Slow', (_payload, ctx) => {
      lastCtx = ctx;
      let finish!: () => void;
      lateHandlerDone = new Promise((r) => (finish = r));
      return new Promise((resolve) => {
        ctx.signal.addEventListener('abort', () => {
          // Reply anyway after the deadline: the client must drop this late response quietly.
          setTimeout(() => {
            resolve(encodeEcho({ text: 'late' }));
            finish();
          }, 20);
        });
      });
    });
    await server.listen(tmp.sock);
    client = await TtrpcClient.connect(`unix://${tmp.sock}`, { maxMessageSize: 64 * 1024 });
  });

  afterEach(async () => {
    await client.close();
    await server.close(1000);
    tmp.cleanup();
  });

  test('1000 concurrent calls with out-of-order replies each reach their caller', async () => {
    const n = 1000;
    const calls = Array.from({ length: n }, (_, i) =>
      client.call(SVC, 'Say', encodeEcho({ text: `m${i}`, delayMs: (i * 7919) % 50 })).then((b) => Echo.decode(b).text),
    );
    const order: number[] = [];
    calls.forEach((p, i) => p.then(() => order.push(i)));
    const results = await Promise.all(calls);
    expect(results).toEqual(Array.from({ length: n }, (_, i) => `echo:m${i}`));
    // Replies really arrived out of order (handler delays vary), so matching by stream id was exercised.
    expect(order).not.toEqual([...order].sort((a, b) => a - b));
  });

  test('handler errors become google.rpc.Status codes', async () => {
    await expect(client.call(SVC, 'Say', encodeEcho({ text: 'fail-typed' }))).rejects.toMatchObject({ code: Code.NOT_FOUND, message: 'container c1 not found' });
    await expect(client.call(SVC, 'Say', encodeEcho({ text: 'fail-plain' }))).rejects.toMatchObject({ code: Code.UNKNOWN, message: 'boom' });
  });

  test('unknown service and method are UNIMPLEMENTED with Go message text', async () => {
    await expect(client.call('no.such.Service', 'X', new Uint8Array())).rejects.toMatchObject({ code: Code.UNIMPLEMENTED, message: 'service no.such.Service' });
    await expect(client.call(SVC, 'Nope', new Uint8Array())).rejects.toMatchObject({ code: Code.UNIMPLEMENTED, message: 'method Nope' });
  });

  test('metadata round trip incl. repeated keys, and namespace', async () => {
    const md = withNamespace({ traceparent: '00-abc', 'x-multi': ['a', 'b', 'c'] }, 'k8s.io');
    await client.call(SVC, 'Say', encodeEcho({ text: 'x' }), { metadata: md });
    expect(lastCtx!.metadata.get('x-multi')).toEqual(['a', 'b', 'c']);
    expect(lastCtx!.metadata.get('traceparent')).toEqual(['00-abc']);
    expect(lastCtx!.namespace).toBe('k8s.io');
    await client.call(SVC, 'Say', encodeEcho({ text: 'x' }), { namespace: 'default' });
    expect(lastCtx!.metadata.get(NAMESPACE_KEY)).toEqual(['default']);
    expect(lastCtx!.deadline).toBeUndefined();
  });

  test('deadline: server sees it and aborts, client gets DEADLINE_EXCEEDED, late reply ignored', async () => {
    const t0 = Date.now();
    await expect(client.call(SVC, 'Slow', new Uint8Array(), { timeoutMs: 100 })).rejects.toMatchObject({ code: Code.DEADLINE_EXCEEDED });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(95);
    expect(lastCtx!.deadline).toBeGreaterThan(t0);
    expect(lastCtx!.deadline! - t0).toBeLessThanOrEqual(150);
    await lateHandlerDone;
    expect(lastCtx!.signal.aborted).toBe(true);
    expect((lastCtx!.signal.reason as TtrpcError).code).toBe(Code.DEADLINE_EXCEEDED);
    await sleep(30); // let the late response arrive at the client
    const r = await client.call(SVC, 'Say', encodeEcho({ text: 'after' }));
    expect(Echo.decode(r).text).toBe('echo:after');
  });

  test('server answers DEADLINE_EXCEEDED itself when the handler overruns (raw client without a local timer)', async () => {
    const raw = await RawPeer.connect(tmp.sock);
    const { encodeRequest } = await import('../src');
    raw.write(encodeFrame(1, MessageType.REQUEST, 0, encodeRequest({ service: SVC, method: 'Slow', payload: undefined, timeoutNano: 50_000_000n, metadata: new Map() })));
    const { res } = await raw.nextResponse();
    expect(res.status).toMatchObject({ code: Code.DEADLINE_EXCEEDED });
    await lateHandlerDone;
    await sleep(30);
    expect(raw.frames).toHaveLength(0); // the handler's late result is not sent a second time
    raw.close();
  });

  test('client refuses to send an oversize request without writing a byte', async () => {
    const written: number[] = [];
    const sock = (client as unknown as { socket: { bytesWritten: number } }).socket;
    written.push(sock.bytesWritten);
    await expect(client.call(SVC, 'Say', new Uint8Array(64 * 1024))).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
    expect(sock.bytesWritten).toBe(written[0]);
    const r = await client.call(SVC, 'Say', encodeEcho({ text: 'ok' }));
    expect(Echo.decode(r).text).toBe('echo:ok');
  });

  test('server refuses to send an oversize response: RESOURCE_EXHAUSTED', async () => {
    await expect(client.call(SVC, 'Say', encodeEcho({ text: 'big' }))).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
  });

  test('hand-crafted oversize frame gets RESOURCE_EXHAUSTED and the connection stays usable', async () => {
    const raw = await RawPeer.connect(tmp.sock);
    raw.write(encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array(64 * 1024 + 1).fill(0x41)));
    const first = await raw.nextResponse();
    expect(first.frame.streamId).toBe(1);
    expect(first.res.status).toMatchObject({ code: Code.RESOURCE_EXHAUSTED, message: `message length ${64 * 1024 + 1} exceed maximum message size of ${64 * 1024}` });
    raw.request(3, SVC, 'Say', encodeEcho({ text: 'still here' }));
    const second = await raw.nextResponse();
    expect(second.frame.streamId).toBe(3);
    expect(second.res.status).toEqual({ code: 0, message: '', details: [] });
    expect(Buffer.from(second.frame.data.subarray(0, 2)).toString('hex')).toBe('0a00'); // empty status first, as Go writes it
    expect(Echo.decode(second.res.payload).text).toBe('echo:still here');
    raw.close();
  });

  test('even and re-used stream ids are INVALID_ARGUMENT; unknown frame types ignored', async () => {
    const raw = await RawPeer.connect(tmp.sock);
    raw.request(2, SVC, 'Say', encodeEcho({ text: 'a' }));
    let r = await raw.nextResponse();
    expect([r.frame.streamId, r.res.status?.code, r.res.status?.message]).toEqual([2, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams']);
    raw.request(5, SVC, 'Say', encodeEcho({ text: 'b' }));
    r = await raw.nextResponse();
    expect(r.frame.streamId).toBe(5);
    expect(r.res.status?.code).toBe(Code.OK);
    raw.request(5, SVC, 'Say', encodeEcho({ text: 'c' }));
    r = await raw.nextResponse();
    expect([r.frame.streamId, r.res.status?.code, r.res.status?.message]).toEqual([5, Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment']);
    raw.request(3, SVC, 'Say', encodeEcho({ text: 'd' }));
    r = await raw.nextResponse();
    expect(r.res.status?.code).toBe(Code.INVALID_ARGUMENT);
    raw.write(encodeFrame(7, 0x09, 0, new Uint8Array([1, 2, 3]))); // unknown type: ignored
    raw.write(encodeFrame(9, MessageType.DATA, 0, new Uint8Array([1]))); // data for an unknown stream
    r = await raw.nextResponse();
    expect([r.frame.streamId, r.res.status?.message]).toEqual([9, 'StreamID is no longer active']);
    raw.write(encodeFrame(11, MessageType.REQUEST, 0, new Uint8Array([0x0a, 0x7f, 0x01]))); // truncated protobuf
    r = await raw.nextResponse();
    expect(r.res.status?.code).toBe(Code.INVALID_ARGUMENT);
    expect(r.res.status?.message).toMatch(/^unmarshal request error: /);
    raw.request(13, SVC, 'Say', encodeEcho({ text: 'e' }));
    r = await raw.nextResponse();
    expect(r.frame.streamId).toBe(13);
    expect(Echo.decode(r.res.payload).text).toBe('echo:e');
    raw.close();
  });

  test('client ids are odd, from 1 in steps of 2', async () => {
    await client.call(SVC, 'Say', encodeEcho({ text: 'a' }));
    expect(lastCtx!.streamId).toBe(1);
    await client.call(SVC, 'Say', encodeEcho({ text: 'b' }));
    expect(lastCtx!.streamId).toBe(3);
  });

  test('abort signal rejects with CANCELLED', async () => {
    const ac = new AbortController();
    const p = client.call(SVC, 'Say', encodeEcho({ text: 'x', delayMs: 200 }), { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: Code.CANCELLED });
  });
});

describe('typed services (ts-proto generic definitions)', () => {
  test('one implementation served as v2 and v3 names; typed client stubs', async () => {
    const tmp = tempSocketPath();
    const server = new TtrpcServer();
    const impl = {
      say: async (req: Echo, ctx: CallContext) => ({ text: `${ctx.service}:${req.text}`, delayMs: 0 }),
      collect: async (stream: AsyncIterable<Echo>) => {
        const parts: string[] = [];
        for await (const m of stream) parts.push(m.text);
        return { text: parts.join('+'), delayMs: 0 };
      },
      repeat: async (stream: AsyncIterable<Echo> & { send(m: Echo): Promise<void> }) => {
        for await (const m of stream) for (let i = 0; i < 3; i++) await stream.send({ text: `${m.text}${i}`, delayMs: 0 });
      },
      chat: async (stream: AsyncIterable<Echo> & { send(m: Echo): Promise<void> }) => {
        for await (const m of stream) await stream.send({ text: m.text.toUpperCase(), delayMs: 0 });
      },
    };
    server.addService(EchoServiceDefinition, impl, { fullName: 'containerd.task.v2.Task' });
    server.addService(EchoServiceDefinition, impl, { fullName: 'containerd.task.v3.Task' });
    await server.listen(tmp.sock);
    const conn = await TtrpcClient.connect(tmp.sock);
    try {
      const v2 = createClient(EchoServiceDefinition, conn, { fullName: 'containerd.task.v2.Task' });
      const v3 = createClient(EchoServiceDefinition, conn, { fullName: 'containerd.task.v3.Task' });
      expect((await v2.say({ text: 'hi', delayMs: 0 })).text).toBe('containerd.task.v2.Task:hi');
      expect((await v3.say({ text: 'hi', delayMs: 0 })).text).toBe('containerd.task.v3.Task:hi');
      const plain = createClient(EchoServiceDefinition, conn);
      await expect(plain.say({ text: 'x', delayMs: 0 })).rejects.toMatchObject({ code: Code.UNIMPLEMENTED, message: 'service kuasar.test.v1.Echo' });

      const col = v3.collect();
      await col.send({ text: 'a', delayMs: 0 });
      await col.send({ text: 'b', delayMs: 0 });
      await col.closeSend();
      expect((await col.response).text).toBe('a+b');

      const rep = v3.repeat({ text: 'r', delayMs: 0 });
      const got: string[] = [];
      for await (const m of rep) got.push(m.text);
      expect(got).toEqual(['r0', 'r1', 'r2']);

      const chat = v3.chat();
      const it = chat[Symbol.asyncIterator]();
      await chat.send({ text: 'x', delayMs: 0 });
      expect((await it.next()).value.text).toBe('X');
      await chat.send({ text: 'y', delayMs: 0 });
      expect((await it.next()).value.text).toBe('Y');
      await chat.closeSend();
      expect((await it.next()).done).toBe(true);
    } finally {
      await conn.close();
      await server.close(1000);
      tmp.cleanup();
    }
  });
});

describe('default 4 MiB limit', () => {
  test('matches Go: 4<<20 accepted, one byte more refused by client and answered RESOURCE_EXHAUSTED by server', async () => {
    const tmp = tempSocketPath();
    const server = new TtrpcServer();
    server.register(SVC, 'Len', async (p) => encodeEcho({ text: String(p.length) }));
    await server.listen(tmp.sock);
    const client = await TtrpcClient.connect(tmp.sock);
    // Request envelope overhead is 2+19 (service) + 2+3 (method) + 5 (payload tag+len) bytes.
    const fits = (4 << 20) - 31;
    expect(Echo.decode(await client.call(SVC, 'Len', new Uint8Array(fits))).text).toBe(String(fits));
    await expect(client.call(SVC, 'Len', new Uint8Array(fits + 1))).rejects.toMatchObject({ code: Code.RESOURCE_EXHAUSTED });
    const raw = await RawPeer.connect(tmp.sock);
    raw.write(encodeFrame(1, MessageType.REQUEST, 0, new Uint8Array((4 << 20) + 1)));
    const { res } = await raw.nextResponse();
    expect(res.status).toMatchObject({ code: Code.RESOURCE_EXHAUSTED, message: 'message length 4194305 exceed maximum message size of 4194304' });
    raw.close();
    await client.close();
    await server.close(1000);
    tmp.cleanup();
  });
});

describe('listen and peer credentials', () => {
  test('listen replaces a stale socket, refuses a live one, applies socketMode', async () => {
    const tmp = tempSocketPath();
    const fs = await import('node:fs');
    const { spawnSync } = await import('node:child_process');
    // A socket file whose server was SIGKILLed, so nothing unlinked it.
    spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(tmp.sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(fs.lstatSync(tmp.sock).isSocket()).toBe(true);
    const a = new TtrpcServer({ socketMode: 0o600 });
    a.register('s', 'm', async () => new Uint8Array([1]));
    await a.listen(tmp.sock);
    expect(fs.statSync(tmp.sock).mode & 0o777).toBe(0o600);
    const b = new TtrpcServer();
    await expect(b.listen(tmp.sock)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    const c = await TtrpcClient.connect(tmp.sock);
    expect(Array.from(await c.call('s', 'm', new Uint8Array()))).toEqual([1]);
    await c.close();
    await a.close(1000);
    tmp.cleanup();
  });

  test('peer whose uid/gid differ from ours is dropped; matching peer is served', async () => {
    const tmp = tempSocketPath();
    let creds = { pid: 1, uid: process.geteuid!() + 1, gid: process.getegid!() };
    const server = new TtrpcServer({ peerCredentials: () => creds });
    server.register('s', 'm', async () => new Uint8Array([2]));
    await server.listen(tmp.sock);
    const bad = await TtrpcClient.connect(tmp.sock);
    await expect(bad.call('s', 'm', new Uint8Array())).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    creds = { pid: process.pid, uid: process.geteuid!(), gid: process.getegid!() };
    const good = await TtrpcClient.connect(tmp.sock);
    expect(Array.from(await good.call('s', 'm', new Uint8Array()))).toEqual([2]);
    await good.close();
    await bad.close();
    await server.close(1000);
    tmp.cleanup();
  });
});
