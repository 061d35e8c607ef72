import net from 'node:net';
import { Duplex, PassThrough, Writable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import {
  Code,
  decodeRequest,
  decodeResponse,
  encodeFrame,
  encodeRequest,
  encodeResponse,
  Flag,
  FrameDecoder,
  MessageType,
  NAMESPACE_KEY,
  TtrpcClient,
  TtrpcServer,
} from '../src';
import { tempSocketPath } from './helpers';

const CASES = Number(process.env.FUZZ_CASES ?? 100_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 0x7fffffff);
const BATCH = 50;
const MAX = 4096;
const SVC = 'kuasar.test.v1.Fuzz';

/** A real gc() even without --expose-gc, so heap growth measures retained memory, not uncollected garbage. */
function collector(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** Deterministic PRNG (mulberry32) so a failing run can be replayed with FUZZ_SEED. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const bytes = (n: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  return { next, int, bytes };
}

function memoryConnection(): { duplex: Duplex; input: PassThrough; closed: Promise<void> } {
  const input = new PassThrough();
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  const duplex = Duplex.from({ readable: input, writable: sink });
  const closed = new Promise<void>((resolve) => duplex.once('close', () => resolve()));
  return { duplex, input, closed };
}

describe('fuzz', () => {
  test(`server, client and decoder survive ${CASES} mutated/garbage frames`, async () => {
    const rnd = prng(SEED);
    // Jest raises stackTraceLimit to 100, which makes each of the ~100k expected decode errors costly; use Node's default.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 10;
    const tmp = tempSocketPath();
    const server = new TtrpcServer({ maxMessageSize: MAX, maxInFlight: 16, streamHighWater: 8 });
    server.register(SVC, 'Say', async (p) => p);
    server.register(SVC, 'Hang', (_p, ctx) => new Promise((_r, rej) => ctx.signal.addEventListener('abort', () => rej(ctx.signal.reason))));
    server.register(SVC, 'Throw', async () => {
      throw new Error('handler failure');
    });
    server.registerStream(SVC, 'Chat', { clientStreaming: true, serverStreaming: true }, async (s) => {
      for await (const m of s) await s.send(m);
    });
    server.registerStream(SVC, 'Upload', { clientStreaming: true, serverStreaming: false }, async (s) => {
      let n = 0;
      for await (const m of s) n += m.length;
      return new Uint8Array([n & 0xff]);
    });
    await server.listen(tmp.sock);

    // A pool of well-formed frames to mutate; building them once keeps generation cheap.
    const methods = ['Say', 'Hang', 'Throw', 'Chat', 'Upload', 'Nope'];
    const md = new Map([[NAMESPACE_KEY, ['k8s.io']], ['x', ['1', '2']]]);
    const pool: Buffer[] = [];
    for (let i = 0; i < 600; i++) {
      const req = encodeRequest({
        service: rnd.int(8) === 0 ? 'other.Svc' : SVC,
        method: methods[rnd.int(methods.length)]!,
        payload: rnd.bytes(rnd.int(40)),
        timeoutNano: rnd.int(3) === 0 ? BigInt(rnd.int(5_000_000)) : 0n,
        metadata: md,
      });
      pool.push(encodeFrame(1, MessageType.REQUEST, [0, Flag.REMOTE_OPEN, Flag.REMOTE_CLOSED][rnd.int(3)]!, req));
      pool.push(encodeFrame(1, MessageType.DATA, [0, Flag.REMOTE_CLOSED, Flag.NO_DATA, Flag.REMOTE_CLOSED | Flag.NO_DATA][rnd.int(4)]!, rnd.bytes(rnd.int(20))));
      if (i % 3 === 0) pool.push(encodeFrame(1, MessageType.RESPONSE, 0, encodeResponse({ status: { code: rnd.int(17), message: 'm', details: [] }, payload: rnd.bytes(5) })));
    }
    let nextId = 1;
    const pick = (): Buffer => {
      const b = Buffer.from(pool[rnd.int(pool.length)]!);
      // Requests mostly open a fresh id; data frames mostly target the stream just opened.
      b.writeUInt32BE(b[8] === MessageType.REQUEST ? (nextId += 2) : nextId, 4);
      return b;
    };
    /** Mutations that keep the length field truthful, so the stream stays in sync for the next frame. */
    const benign = (): Buffer => {
      const b = pick();
      switch (rnd.int(6)) {
        case 0: // bit flips in the body
          if (b.length > 10) for (let k = 1 + rnd.int(8); k > 0; k--) b[10 + rnd.int(b.length - 10)]! ^= 1 << rnd.int(8);
          return b;
        case 1: // random type / flags
          b[8] = rnd.int(256);
          b[9] = rnd.int(256);
          return b;
        case 2: // garbage protobuf body
          return encodeFrame(b.readUInt32BE(4), b[8]!, b[9]!, rnd.bytes(rnd.int(48)));
        case 3: // random, even or re-used stream id
          b.writeUInt32BE(rnd.int(2) ? rnd.int(0x100000000) : rnd.int(8), 4);
          return b;
        case 4: // body truncated, length fixed up: framing valid, protobuf cut
          return encodeFrame(b.readUInt32BE(4), b[8]!, b[9]!, b.subarray(10, 10 + rnd.int(Math.max(1, b.length - 10))));
        default:
          return b;
      }
    };
    /** Mutations that desynchronise framing; each batch ends with one. */
    const desync = (): Buffer => {
      const b = pick();
      switch (rnd.int(4)) {
        case 0:
          return rnd.bytes(rnd.int(64));
        case 1:
          return b.subarray(0, rnd.int(b.length));
        case 2:
          b.writeUInt32BE(rnd.int(2) ? MAX + 1 + rnd.int(64) : rnd.int(0x100000000), 0);
          return b;
        default:
          for (let k = 1 + rnd.int(4); k > 0; k--) b[rnd.int(10)]! ^= 1 << rnd.int(8);
          return b;
      }
    };

    const gc = collector();
    gc();
    const memBefore = process.memoryUsage().heapUsed;
    let ran = 0;
    let frames = 0;
    let decodeErrors = 0;
    let socketBatches = 0;
    let batches = 0;
    const t0 = Date.now();
    for (let batchNo = 0; ran < CASES; batchNo++) {
      nextId = 1;
      batches++;
      const parts: Buffer[] = [];
      for (let i = 0; i < BATCH - 1 && ran < CASES - 1; i++, ran++) parts.push(benign());
      parts.push(desync());
      ran++;
      const bytes = Buffer.concat(parts);

      // 1. Standalone decoder with random chunking; every frame through the envelope codecs.
      const dec = new FrameDecoder(MAX);
      for (let off = 0; off < bytes.length; ) {
        const n = 1 + rnd.int(97);
        for (const f of dec.push(bytes.subarray(off, off + n))) {
          frames++;
          for (const decode of [decodeRequest, decodeResponse]) {
            try {
              decode(f.data);
            } catch (err) {
              if (!(err instanceof Error)) throw err;
              decodeErrors++;
            }
          }
        }
        off += n;
      }

      // 2. A server connection: in-memory for most batches, a real unix socket for every 10th.
      if (batchNo % 10 === 0) {
        socketBatches++;
        await new Promise<void>((resolve) => {
          const s = net.connect(tmp.sock, () => {
            s.end(bytes);
          });
          s.on('data', () => {});
          s.on('error', () => {});
          s.on('close', () => resolve());
        });
      } else {
        const conn = memoryConnection();
        server.serve(conn.duplex);
        for (let off = 0; off < bytes.length; ) {
          const n = 1 + rnd.int(512);
          conn.input.write(bytes.subarray(off, off + n));
          off += n;
        }
        conn.input.end();
        await conn.closed;
      }

      // 3. The same garbage as server replies to a client with calls in flight.
      if (batchNo % 10 === 5) {
        const conn = memoryConnection();
        const client = new TtrpcClient(conn.duplex, { maxMessageSize: MAX });
        const calls = Array.from({ length: 8 }, () => client.call(SVC, 'Say', new Uint8Array([1])).catch((e: unknown) => e));
        const stream = client.stream(SVC, 'Chat', { clientStreaming: true, serverStreaming: true });
        const drained = (async () => {
          try {
            for await (const _m of stream) void _m;
          } catch {
            /* errors are fine; crashes are not */
          }
        })();
        conn.input.end(bytes);
        await conn.closed;
        const results = await Promise.all(calls);
        await drained;
        for (const r of results) expect(r instanceof Uint8Array || (r as { code?: number }).code !== undefined).toBe(true);
      }
    }
    const elapsed = Date.now() - t0;
    gc();
    const growth = process.memoryUsage().heapUsed - memBefore;
    process.stdout.write(
      `fuzz: ${ran} cases (seed ${SEED}) in ${elapsed} ms: ${frames} frames decoded, ${decodeErrors} envelope decode errors, ` +
        `${batches} connections (${socketBatches} over unix sockets), heap growth ${(growth / 1048576).toFixed(1)} MiB\n`,
    );
    expect(ran).toBe(CASES);
    expect(growth).toBeLessThan(32 * 1024 * 1024);

    // The server still answers a valid call.
    const client = await TtrpcClient.connect(tmp.sock);
    expect(Array.from(await client.call(SVC, 'Say', new Uint8Array([4, 2])))).toEqual([4, 2]);
    await expect(client.call(SVC, 'Nope', new Uint8Array())).rejects.toMatchObject({ code: Code.UNIMPLEMENTED });
    await client.close();
    await server.close(1000);
    tmp.cleanup();
    Error.stackTraceLimit = stackTraceLimit;
  }, 120_000);
});
