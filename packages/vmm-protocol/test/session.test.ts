import { encodeFrame, FrameType, type EventMessage, type ProtocolError, RpcError, Session, utf8Decode, utf8Encode } from '../src';
import { Link, settle } from './helpers';

let link: Link;
afterEach(() => link?.dispose());

describe('Session handshake and requests', () => {
  test('HELLO exchange makes both sides ready; the host sees the guest info', async () => {
    link = new Link();
    link.connect();
    expect(link.host.ready).toBe(false);
    const ready = link.host.whenReady(1000);
    link.pump();
    expect(link.guest.ready).toBe(true);
    expect(link.host.ready).toBe(true);
    const hello = await ready;
    expect(hello).toMatchObject({ version: 1, agent: 'test', bootId: 'boot-1', session: link.host.session });
  });

  test('a HELLO lost in transit is resent until answered', async () => {
    link = new Link();
    link.connect();
    link.toGuest = []; // the first HELLO vanished
    await new Promise((r) => setTimeout(r, 80));
    link.pump();
    expect(link.host.ready).toBe(true);
  });

  test('request/response, errors by code, unknown methods, thrown errors', async () => {
    link = new Link();
    link.guest.handle('add', (p) => ({ sum: (p.a as number) + (p.b as number) }));
    link.guest.handle('async', async () => {
      await new Promise((r) => setTimeout(r, 5));
      return { later: true };
    });
    link.guest.handle('missing', () => {
      throw new RpcError('NOT_FOUND', 'no such container');
    });
    link.guest.handle('crash', () => {
      throw new TypeError('boom');
    });
    link.connect();
    const sum = link.host.request('add', { a: 2, b: 40 });
    const later = link.host.request('async');
    const missing = link.host.request('missing').catch((e: RpcError) => e);
    const crash = link.host.request('crash').catch((e: RpcError) => e);
    const unknown = link.host.request('nope').catch((e: RpcError) => e);
    for (let i = 0; i < 20; i++) {
      await settle(link);
      await new Promise((r) => setTimeout(r, 2));
    }
    expect(await sum).toEqual({ sum: 42 });
    expect(await later).toEqual({ later: true });
    expect(await missing).toMatchObject({ code: 'NOT_FOUND', message: 'no such container' });
    expect(await crash).toMatchObject({ code: 'INTERNAL', message: 'boom' });
    expect(await unknown).toMatchObject({ code: 'UNIMPLEMENTED' });
  });

  test('requests made before the handshake wait for it; in-flight ones fail UNAVAILABLE on disconnect', async () => {
    link = new Link();
    link.guest.handle('echo', (p) => p);
    link.guest.handle('never', () => new Promise(() => {}));
    const early = link.host.request('echo', { x: 1 });
    link.connect();
    await settle(link);
    expect(await early).toEqual({ x: 1 });
    const hung = link.host.request('never').catch((e: RpcError) => e);
    await settle(link);
    link.disconnect();
    expect(await hung).toMatchObject({ code: 'UNAVAILABLE' });
  });

  test('timeouts reject with DEADLINE_EXCEEDED and a late response is ignored', async () => {
    link = new Link();
    let release: (v: Record<string, unknown>) => void = () => {};
    link.guest.handle('slow', () => new Promise((r) => (release = r)));
    link.connect();
    link.pump();
    const p = link.host.request('slow', {}, { timeoutMs: 20 }).catch((e: RpcError) => e);
    link.pump();
    await new Promise((r) => setTimeout(r, 40));
    expect(await p).toMatchObject({ code: 'DEADLINE_EXCEEDED' });
    release({ late: true });
    await settle(link);
    expect(link.host.stats.protocolErrors).toBe(0);
  });

  test('a response to an old connection is not sent on the new one', async () => {
    link = new Link();
    let release: (v: Record<string, unknown>) => void = () => {};
    link.guest.handle('slow', () => new Promise((r) => (release = r)));
    link.connect();
    link.pump();
    const p = link.host.request('slow').catch((e: RpcError) => e);
    link.pump();
    link.disconnect();
    expect(await p).toMatchObject({ code: 'UNAVAILABLE' });
    link.connect();
    link.pump();
    release({});
    await new Promise((r) => setImmediate(r));
    expect(link.toHost.filter((b) => b[3] === FrameType.Response)).toHaveLength(0);
  });
});

describe('Session events', () => {
  test('events are delivered, replayed after reconnect until ACKed, never twice to one Session', async () => {
    link = new Link();
    const seen: EventMessage[] = [];
    link.host.onEvent((e) => seen.push(e));
    link.connect();
    link.pump();
    link.guest.emit('exit', { containerId: 'a', status: 0 });
    link.pump();
    expect(seen.map((e) => [e.seq, e.type, e.containerId])).toEqual([[1, 'exit', 'a']]);

    link.disconnect();
    link.guest.emit('exit', { containerId: 'b', status: 3 }); // while the host is away
    link.connect();
    link.pump();
    expect(seen.map((e) => e.containerId)).toEqual(['a', 'b']); // 'a' replayed but deduplicated
    expect(link.guest.unacknowledged).toBe(2);

    link.host.ack(1);
    link.pump();
    expect(link.guest.unacknowledged).toBe(1);

    // A fresh host process (new Session) sees only what was not acknowledged.
    const fresh = new Session({ role: 'host' });
    const replayed: EventMessage[] = [];
    fresh.onEvent((e) => replayed.push(e));
    link.host.detach();
    link.guest.detach();
    const toGuest: Uint8Array[] = [];
    const toHost: Uint8Array[] = [];
    link.guest.attach({ write: (b) => toHost.push(b) });
    fresh.attach({ write: (b) => toGuest.push(b) });
    for (let i = 0; i < 5; i++) {
      toGuest.splice(0).forEach((b) => link.guest.receive(b));
      toHost.splice(0).forEach((b) => fresh.receive(b));
    }
    expect(replayed.map((e) => e.containerId)).toEqual(['b']);
    fresh.dispose();
  });

  test('the ring is bounded and counts what it dropped', () => {
    link = new Link({}, { eventRingSize: 3 });
    for (let i = 0; i < 10; i++) link.guest.emit('exit', { i });
    expect(link.guest.unacknowledged).toBe(3);
    expect(link.guest.stats.eventsDropped).toBe(7);
    const seen: number[] = [];
    link.host.onEvent((e) => seen.push(e.seq));
    link.connect();
    link.pump();
    expect(seen).toEqual([8, 9, 10]);
  });
});

describe('Session streams', () => {
  test('data flows, credit limits the sender and the writer sees backpressure', () => {
    link = new Link({ window: 1000 }, { window: 1000 });
    link.connect();
    link.pump();
    const received: number[] = [];
    const hostSide = link.host.openStream(3, { direction: 'in', manualCredit: true });
    hostSide.onData((b) => received.push(b.length));
    const out = link.guest.openStream(3, { direction: 'out' });
    expect(out.write(new Uint8Array(600))).toBe(true);
    expect(out.write(new Uint8Array(600))).toBe(false); // beyond the window: queued, writer told to wait
    expect(out.writable).toBe(0);
    link.pump();
    expect(received).toEqual([600, 400]);
    expect(out.pendingBytes).toBe(200);
    let drained = 0;
    out.onDrain(() => drained++);
    hostSide.consume(1000);
    link.pump();
    expect(received).toEqual([600, 400, 200]);
    expect(drained).toBe(1);
    expect(out.credit).toBe(800);
  });

  test('CLOSE after queued data; the one-way streams are forgotten on both sides', () => {
    link = new Link();
    link.connect();
    link.pump();
    const chunks: string[] = [];
    let ended = false;
    const h = link.host.openStream(5, { direction: 'in' });
    h.onData((b) => chunks.push(utf8Decode(b)));
    h.onEnd(() => (ended = true));
    const g = link.guest.openStream(5, { direction: 'out' });
    g.write(utf8Encode('hello '));
    g.write(utf8Encode('world'));
    g.end();
    link.pump();
    expect(chunks.join('')).toBe('hello world');
    expect(ended).toBe(true);
    expect(link.host.streamCount).toBe(0);
    expect(link.guest.streamCount).toBe(0);
  });

  test('while disconnected the sender queues up to the window; after reconnect it all arrives', () => {
    link = new Link({ window: 100 }, { window: 100 });
    link.connect();
    link.pump();
    const got: number[] = [];
    link.host.openStream(7, { direction: 'in' }).onData((b) => got.push(...b));
    const g = link.guest.openStream(7, { direction: 'out' });
    link.disconnect();
    const data = Uint8Array.from({ length: 150 }, (_, i) => i);
    expect(g.write(data)).toBe(false);
    expect(g.pendingBytes).toBe(150);
    link.connect();
    link.pump();
    expect(got).toEqual(Array.from(data));
  });

  test('DATA beyond granted credit and DATA on unknown streams are reported and dropped', () => {
    link = new Link({ window: 10 }, { window: 10 });
    link.connect();
    link.pump();
    const errors: ProtocolError[] = [];
    link.host.onProtocolError((e) => errors.push(e));
    const got: number[] = [];
    link.host.openStream(9, { direction: 'in', manualCredit: true }).onData((b) => got.push(b.length));
    link.host.receive(encodeFrame(FrameType.Data, 9, new Uint8Array(8)));
    link.host.receive(encodeFrame(FrameType.Data, 9, new Uint8Array(8)));
    link.host.receive(encodeFrame(FrameType.Data, 11, new Uint8Array(4)));
    link.host.receive(encodeFrame(FrameType.Credit, 9, new Uint8Array(3)));
    expect(got).toEqual([8]);
    expect(errors.map((e) => e.code)).toEqual(['CREDIT_EXCEEDED', 'UNKNOWN_STREAM', 'BAD_CREDIT']);
    expect(link.host.stats.dataDropped).toBe(12);
  });

  test('garbage and malformed JSON on the channel never throw out of receive()', () => {
    link = new Link();
    link.connect();
    link.pump();
    const errors: ProtocolError[] = [];
    link.guest.onProtocolError((e) => errors.push(e));
    expect(() => {
      link.guest.receive(utf8Encode('garbage'));
      link.guest.receive(encodeFrame(FrameType.Request, 0, utf8Encode('{not json')));
      link.guest.receive(encodeFrame(FrameType.Request, 0, utf8Encode('[1,2]')));
      link.guest.receive(encodeFrame(FrameType.Ack, 0, utf8Encode('{"seq":"x"}')));
      link.guest.receive(encodeFrame(FrameType.Hello, 0, utf8Encode('{"version":2}')));
    }).not.toThrow();
    expect(errors.map((e) => e.code)).toEqual(['BAD_MAGIC', 'BAD_JSON', 'BAD_MESSAGE', 'BAD_MESSAGE', 'BAD_MESSAGE']);
  });
});
