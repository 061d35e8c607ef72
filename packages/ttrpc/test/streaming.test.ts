import { Code, encodeFrame, Flag, MessageType, TtrpcClient, TtrpcError, TtrpcServer } from '../src';
import { RawPeer, sleep, tempSocketPath } from './helpers';

const SVC = 'kuasar.test.v1.Streams';
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

describe('streaming', () => {
  let tmp: ReturnType<typeof tempSocketPath>;
  let server: TtrpcServer;
  let client: TtrpcClient;
  let received: Uint8Array[] = [];
  let produced = 0;

  beforeEach(async () => {
    received = [];
    produced = 0;
    tmp = tempSocketPath();
    server = new TtrpcServer({ streamHighWater: 4 });
    server.registerStream(SVC, 'Collect', { clientStreaming: true, serverStreaming: false }, async (stream) => {
      for await (const m of stream) received.push(m);
      return bytes(`got ${received.length}`);
    });
    server.registerStream(SVC, 'SlowCollect', { clientStreaming: true, serverStreaming: false }, async (stream) => {
      for await (const m of stream) {
        received.push(m);
        await sleep(5);
      }
      return bytes(`got ${received.length}`);
    });
    server.registerStream(SVC, 'Count', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      for await (const first of stream) {
        const n = Number(text(first));
        for (let i = 0; i < n; i++) await stream.send(bytes(String(i)));
      }
    });
    server.registerStream(SVC, 'Empties', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      await stream.send(new Uint8Array(0));
      await stream.send(bytes('x'));
    });
    server.registerStream(SVC, 'Flood', { clientStreaming: false, serverStreaming: true }, async (stream, ctx) => {
      const chunk = new Uint8Array(64 * 1024);
      for (let i = 0; i < 1000 && !ctx.signal.aborted; i++) {
        await stream.send(chunk);
        produced++;
      }
    });
    server.registerStream(SVC, 'Echo', { clientStreaming: true, serverStreaming: true }, async (stream) => {
      for await (const m of stream) await stream.send(bytes(text(m).toUpperCase()));
      return bytes('bye');
    });
    server.registerStream(SVC, 'FailMid', { clientStreaming: false, serverStreaming: true }, async (stream) => {
      await stream.send(bytes('one'));
      throw new TtrpcError(Code.ABORTED, 'gave up');
    });
    await server.listen(tmp.sock);
    client = await TtrpcClient.connect(tmp.sock, { streamHighWater: 4 });
  });

  afterEach(async () => {
    await client.close();
    await server.close(1000);
    tmp.cleanup();
  });

  test('client streaming: messages then Response', async () => {
    const s = client.stream(SVC, 'Collect', { clientStreaming: true, serverStreaming: false });
    for (const m of ['a', '', 'c']) await s.send(bytes(m));
    await s.closeSend();
    expect(text(await s.response)).toBe('got 3');
    expect(received.map(text)).toEqual(['a', '', 'c']);
  });

  test('server streaming: Request[remote-closed] then Data..., ended by Data[remote-closed]', async () => {
    const s = client.stream(SVC, 'Count', { clientStreaming: false, serverStreaming: true, request: bytes('5') });
    const got: string[] = [];
    for await (const m of s) got.push(text(m));
    expect(got).toEqual(['0', '1', '2', '3', '4']);
    expect((await s.response).length).toBe(0);
  });

  test('bidi streaming', async () => {
    const s = client.stream(SVC, 'Echo', { clientStreaming: true, serverStreaming: true });
    const it = s[Symbol.asyncIterator]();
    for (const w of ['abc', 'def']) {
      await s.send(bytes(w));
      expect(text((await it.next()).value)).toBe(w.toUpperCase());
    }
    await s.closeSend();
    // The handler's return value rides on the closing Data frame.
    expect(text((await it.next()).value)).toBe('bye');
    expect((await it.next()).done).toBe(true);
  });

  test('server-stream failure arrives as a Response status after earlier data', async () => {
    const s = client.stream(SVC, 'FailMid', { clientStreaming: false, serverStreaming: true, request: bytes('') });
    const it = s[Symbol.asyncIterator]();
    expect(text((await it.next()).value)).toBe('one');
    await expect(it.next()).rejects.toMatchObject({ code: Code.ABORTED, message: 'gave up' });
    await expect(s.response).rejects.toMatchObject({ code: Code.ABORTED });
  });

  test('empty Data frames: zero-length without NO_DATA is a message, with NO_DATA is not', async () => {
    const raw = await RawPeer.connect(tmp.sock);
    raw.request(1, SVC, 'Empties', undefined, Flag.REMOTE_CLOSED);
    const f1 = await raw.next();
    const f2 = await raw.next();
    const f3 = await raw.next();
    expect([f1.type, f1.flags, f1.length]).toEqual([MessageType.DATA, 0, 0]);
    expect([f2.type, f2.flags, text(f2.data)]).toEqual([MessageType.DATA, 0, 'x']);
    expect([f3.type, f3.flags, f3.length]).toEqual([MessageType.DATA, Flag.REMOTE_CLOSED | Flag.NO_DATA, 0]);

    // Client-streaming with no request payload: no initial message. Then: empty message, a NO_DATA frame (not a
    // message), a real message, and the close.
    raw.request(3, SVC, 'Collect', undefined, Flag.REMOTE_OPEN);
    raw.write(encodeFrame(3, MessageType.DATA, 0, new Uint8Array(0)));
    raw.write(encodeFrame(3, MessageType.DATA, Flag.NO_DATA, new Uint8Array(0)));
    raw.write(encodeFrame(3, MessageType.DATA, 0, bytes('z')));
    raw.write(encodeFrame(3, MessageType.DATA, Flag.REMOTE_CLOSED | Flag.NO_DATA));
    const { frame, res } = await raw.nextResponse();
    expect(frame.streamId).toBe(3);
    expect(text(res.payload)).toBe('got 2');
    expect(received.map((m) => m.length)).toEqual([0, 1]);
    // After the close, more data on that stream is rejected like Go does.
    raw.write(encodeFrame(3, MessageType.DATA, 0, bytes('late')));
    const late = await raw.nextResponse();
    expect(late.res.status).toMatchObject({ code: Code.INVALID_ARGUMENT, message: 'StreamID is no longer active' });
    raw.close();

    // And through the client API: an empty message arrives as an empty Uint8Array.
    const s = client.stream(SVC, 'Empties', { clientStreaming: false, serverStreaming: true });
    const got: number[] = [];
    for await (const m of s) got.push(m.length);
    expect(got).toEqual([0, 1]);
  });

  test('a remote-closed Request to a client-streaming method carries its only message', async () => {
    const raw = await RawPeer.connect(tmp.sock);
    raw.request(1, SVC, 'Collect', bytes('only'), Flag.REMOTE_CLOSED);
    const { res } = await raw.nextResponse();
    expect(text(res.payload)).toBe('got 1');
    expect(received.map(text)).toEqual(['only']);
    raw.close();
  });

  test('backpressure: a slow consumer keeps the server-stream producer bounded', async () => {
    const s = client.stream(SVC, 'Flood', { clientStreaming: false, serverStreaming: true });
    const it = s[Symbol.asyncIterator]();
    await it.next();
    await sleep(500); // consumer stalls
    const atStall = produced;
    const bufferedBytes = atStall * 64 * 1024;
    // 1000 x 64 KiB = 64 MiB would be produced without flow control; with it, only socket buffers plus the
    // client's 4-message queue and one chunk of backlog fill up.
    expect(bufferedBytes).toBeLessThan(8 * 1024 * 1024);
    await sleep(200);
    expect(produced).toBe(atStall); // really stalled, not just slow
    let n = 1;
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      n++;
    }
    expect(n).toBe(1000);
    expect(produced).toBe(1000);
    process.stdout.write(`backpressure: producer stalled at ${atStall} x 64 KiB messages\n`);
  });

  test('backpressure: a slow server consumer stalls the client-stream sender', async () => {
    const s = client.stream(SVC, 'SlowCollect', { clientStreaming: true, serverStreaming: false });
    let sent = 0;
    const chunk = new Uint8Array(64 * 1024);
    const sender = (async () => {
      for (let i = 0; i < 400; i++) {
        await s.send(chunk);
        sent++;
      }
      await s.closeSend();
    })();
    await sleep(300);
    // ~60 messages consumed in 300 ms; without pausing, all 400 would be written immediately.
    expect(sent).toBeLessThan(200);
    await sender;
    expect(text(await s.response)).toBe('got 400');
  }, 20_000);

  test('maxInFlight pauses reading: no more than N handlers run at once', async () => {
    const tmp2 = tempSocketPath();
    const srv = new TtrpcServer({ maxInFlight: 4 });
    let running = 0;
    let peak = 0;
    srv.register(SVC, 'Work', async () => {
      running++;
      peak = Math.max(peak, running);
      await sleep(10);
      running--;
      return new Uint8Array(0);
    });
    await srv.listen(tmp2.sock);
    const c = await TtrpcClient.connect(tmp2.sock);
    await Promise.all(Array.from({ length: 100 }, () => c.call(SVC, 'Work', new Uint8Array(0))));
    expect(peak).toBe(4);
    await c.close();
    await srv.close(1000);
    tmp2.cleanup();
  });
});
