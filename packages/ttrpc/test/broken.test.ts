import { ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { Code, encodeFrame, encodeRequest, MessageType, TtrpcClient, TtrpcServer } from '../src';
import { RawPeer, sleep, tempSocketPath } from './helpers';

const SVC = 'kuasar.test.v1.Echo';

describe('broken and closing connections', () => {
  const children: ChildProcess[] = [];
  afterAll(() => children.forEach((c) => c.kill('SIGKILL')));

  test('server process dies mid-call: pending calls reject with UNAVAILABLE', async () => {
    const tmp = tempSocketPath();
    // A real TtrpcServer in a separate process, so it can be SIGKILLed mid-call.
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'child-server.js'), tmp.sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child.once('exit', (code) => reject(new Error(`child server exited early: ${code}`)));
    });
    const client = await TtrpcClient.connect(tmp.sock);
    expect(Array.from(await client.call(SVC, 'Say', new Uint8Array([4])))).toEqual([4]);
    const calls = [1, 2, 3].map(() => client.call(SVC, 'Hang', new Uint8Array(0)));
    await sleep(50);
    child.kill('SIGKILL');
    for (const c of calls) await expect(c).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    await expect(client.call(SVC, 'Hang', new Uint8Array(0))).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    expect(client.closed).toBe(true);
    await client.close();
    tmp.cleanup();
  });

  test('client disconnects mid-frame (header and body): server survives, aborts that client\'s calls', async () => {
    const tmp = tempSocketPath();
    const server = new TtrpcServer();
    let aborted = 0;
    server.register(SVC, 'Say', async (p) => p);
    server.register(SVC, 'Hang', (_p, ctx) => new Promise((_res, rej) => ctx.signal.addEventListener('abort', () => {
      aborted++;
      rej(ctx.signal.reason);
    })));
    await server.listen(tmp.sock);

    const a = await RawPeer.connect(tmp.sock);
    a.write(encodeFrame(1, MessageType.REQUEST, 0, encodeRequest({ service: SVC, method: 'Hang', payload: undefined, timeoutNano: 0n, metadata: new Map() })));
    await sleep(20);
    a.write(encodeFrame(3, MessageType.REQUEST, 0, new Uint8Array(100)).subarray(0, 30)); // body cut short
    await sleep(20);
    a.socket.destroy();

    const b = await RawPeer.connect(tmp.sock);
    b.write(Buffer.from([0, 0, 0])); // header cut short
    b.socket.end();

    const c = await RawPeer.connect(tmp.sock);
    c.request(1, SVC, 'Say', new Uint8Array(3000));
    c.socket.destroy(); // the server's reply then hits EPIPE

    await sleep(50);
    expect(aborted).toBe(1);
    const client = await TtrpcClient.connect(tmp.sock);
    expect(Array.from(await client.call(SVC, 'Say', new Uint8Array([9])))).toEqual([9]);
    await client.close();
    await server.close(1000);
    tmp.cleanup();
  });

  test('graceful close waits for in-flight calls, refuses new connections, and is bounded by its timeout', async () => {
    const tmp = tempSocketPath();
    const server = new TtrpcServer();
    server.register(SVC, 'Slow', async () => {
      await sleep(150);
      return new Uint8Array([1]);
    });
    server.register(SVC, 'Hang', () => new Promise(() => {}));
    await server.listen(tmp.sock);
    const client = await TtrpcClient.connect(tmp.sock);
    const slow = client.call(SVC, 'Slow', new Uint8Array(0));
    await sleep(20);
    const t0 = Date.now();
    await server.close(2000);
    expect(Array.from(await slow)).toEqual([1]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    await expect(TtrpcClient.connect(tmp.sock)).rejects.toMatchObject({ code: Code.UNAVAILABLE });

    const tmp2 = tempSocketPath();
    const s2 = new TtrpcServer();
    s2.register(SVC, 'Hang', () => new Promise(() => {}));
    await s2.listen(tmp2.sock);
    const c2 = await TtrpcClient.connect(tmp2.sock);
    const hung = c2.call(SVC, 'Hang', new Uint8Array(0));
    await sleep(20);
    const t1 = Date.now();
    await s2.close(100);
    expect(Date.now() - t1).toBeLessThan(1000);
    await expect(hung).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    await client.close();
    await c2.close();
    tmp.cleanup();
    tmp2.cleanup();
  });
});
