// The debug socket's wire format (kuasarctl exec's way in), spoken directly: window resizes of a -t command reach
// the pty in the guest; bad resize frames end the command with a clear error.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { DebugFrame, DebugFrameReader, encodeDebugFrame, parseResize } from '../src/debug-socket';
import { agentSkipReason } from './guest';
import { EventsSink, killVms, rpc, runPod, startHarness, tempDir, until, type Harness } from './harness';

jest.setTimeout(Number(process.env.KUASAR_TEST_TIMEOUT_MS) || 240_000);

const skip = agentSkipReason();
if (skip) console.warn(`debug socket tests skipped: ${skip}`);
const describeVm = skip ? describe.skip : describe;

test('parseResize: {width, height} in 0..65535, anything else INVALID_ARGUMENT', () => {
  expect(parseResize(Buffer.from('{"width":100,"height":30}'))).toEqual({ width: 100, height: 30 });
  for (const bad of ['', 'x', '[]', 'null', '{"width":100}', '{"width":-1,"height":3}', '{"width":1.5,"height":3}', '{"width":70000,"height":3}']) {
    expect(() => parseResize(Buffer.from(bad))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  }
});

/** One debug exec connection: the frames it received, decoded. */
class Client {
  readonly socket: net.Socket;
  readonly out: Buffer[] = [];
  readonly frames: { type: number; payload: Buffer }[] = [];
  readonly closed: Promise<void>;
  constructor(sock: string, request: object) {
    this.socket = net.createConnection(sock);
    const reader = new DebugFrameReader();
    this.socket.on('data', (c: Buffer) => {
      for (const f of reader.push(c)) {
        this.frames.push(f);
        if (f.type === DebugFrame.Stdout) this.out.push(f.payload);
      }
    });
    this.closed = new Promise((r) => this.socket.on('close', () => r()));
    this.socket.write(`${JSON.stringify(request)}\n`);
  }
  get text(): string {
    return Buffer.concat(this.out).toString();
  }
  send(type: number, payload: string | Buffer = Buffer.alloc(0)): void {
    this.socket.write(encodeDebugFrame(type, typeof payload === 'string' ? Buffer.from(payload) : payload));
  }
  last(type: number): Record<string, unknown> | undefined {
    const f = [...this.frames].reverse().find((x) => x.type === type);
    return f ? (JSON.parse(f.payload.toString()) as Record<string, unknown>) : undefined;
  }
}

describeVm('debug socket with a real guest (QEMU TCG)', () => {
  let root: string;
  let sink: EventsSink;
  let h: Harness;

  beforeAll(async () => {
    root = tempDir('dbg');
    sink = new EventsSink(path.join(root, 'ev.sock'));
    await sink.server.listen(sink.path);
    h = await startHarness(root, sink);
    await runPod(h, 'dpod');
  });

  afterAll(async () => {
    if (h) {
      await rpc(h.controller, 'stop', { sandboxId: 'dpod', timeoutSecs: 0 }).catch(() => undefined);
      await rpc(h.controller, 'shutdown', { sandboxId: 'dpod' }).catch(() => undefined);
      await h.stop();
      killVms(h.dir);
    }
    await sink?.server.close(500);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('a window change of a -t command reaches its pty in the guest', async () => {
    const c = new Client(path.join(h.dir, 'debug.sock'), {
      sandbox: 'dpod', argv: ['sh', '-c', 'stty size; read x; stty size; exit 3'], tty: true, stdin: true, width: 80, height: 24,
    });
    await until(() => c.text.includes('24 80\r\n'), 60_000, 'the first size');
    c.send(DebugFrame.Resize, JSON.stringify({ width: 132, height: 50 }));
    c.send(DebugFrame.Stdin, 'go\r');
    await c.closed;
    expect(c.text).toContain('50 132\r\n');
    expect(c.last(DebugFrame.Exit)).toEqual({ exitCode: 3 });
  });

  it('a resize without a terminal changes nothing; a bad resize frame ends the command with INVALID_ARGUMENT', async () => {
    const plain = new Client(path.join(h.dir, 'debug.sock'), { sandbox: 'dpod', argv: ['sh', '-c', 'read x; echo "$x"'], tty: false, stdin: true });
    await until(() => plain.frames.some((f) => f.type === DebugFrame.Started), 60_000, 'started');
    plain.send(DebugFrame.Resize, JSON.stringify({ width: 10, height: 10 }));
    plain.send(DebugFrame.Stdin, 'still here\n');
    await plain.closed;
    expect(plain.text).toBe('still here\n');
    expect(plain.last(DebugFrame.Exit)).toEqual({ exitCode: 0 });

    const bad = new Client(path.join(h.dir, 'debug.sock'), { sandbox: 'dpod', argv: ['sleep', '600'], tty: true, stdin: true });
    await until(() => bad.frames.some((f) => f.type === DebugFrame.Started), 60_000, 'started');
    bad.send(DebugFrame.Resize, '{"width":"wide"}');
    await bad.closed;
    expect(bad.last(DebugFrame.Error)).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
