// stdin of VM containers across a sandboxer kill -9 + restart: containerd keeps its stdin FIFO writer open while
// the sandboxer is killed and started again, and what it writes afterwards must still reach the guest process.
// A real vmm-sandboxer process (bundled from src/main.ts), a real QEMU (TCG) pod; `cat` echoes stdin to stdout,
// compared byte for byte.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';
import { build } from 'esbuild';
import { OCI_PROCESS_TYPE_URL } from '@kuasar/api';
import { startSandboxerProcess, type SandboxerProcess } from '../../testkit/src/sandboxer-process';
import { connectSandboxer, controllerCall, podSandboxOptions, type SandboxerClients } from '../../testkit/src/sandboxer-clients';
import { GUEST_DIR, agentSkipReason } from './guest';
import { ClientIO, EventsSink, NS, killVms, makeBundle, mountsUnder, removeBundle, tempDir, until } from './harness';

jest.setTimeout(Number(process.env.KUASAR_TEST_TIMEOUT_MS) || 240_000);
// One CI run (of many runs of this file) lost the task connection mid-test for a reason not found yet; the first
// failure is printed, and a second failure in a row fails the test.
jest.retryTimes(1, { logErrorsBeforeRetry: true });

const skip = agentSkipReason();
if (skip) console.warn(`vmm stdin restart test skipped: ${skip}`);
const describeVm = skip ? describe.skip : describe;

/** containerd's stdin writer: opened once the task holds the FIFO's read end, kept open across the restart. */
function stdinWriter(p: string): { write(b: Buffer): Promise<void>; end(): Promise<void>; destroy(): void } {
  const s = new Socket({ fd: fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK), readable: false, writable: true });
  return {
    write: (b) => new Promise<void>((resolve, reject) => s.write(b, (err) => (err ? reject(err) : resolve()))),
    end: () => new Promise<void>((resolve) => s.end(() => resolve())),
    destroy: () => s.destroy(),
  };
}

/** stdout bytes so far (ClientIO's outSoFar decodes UTF-8, which random bytes are not) */
function received(io: ClientIO): number {
  return (io as unknown as { outChunks: Buffer[] }).outChunks.reduce((n, b) => n + b.length, 0);
}

describeVm('stdin of VM containers across a sandboxer kill -9 + restart', () => {
  let root: string;
  let dir: string;
  let listen: string;
  let script: string;
  let configFile: string;
  let sink: EventsSink;
  let sb: SandboxerProcess | undefined;
  let clients: SandboxerClients | undefined;
  const ios: ClientIO[] = [];
  const writers: { destroy(): void }[] = [];
  let bundle: string | undefined;

  const start = async (): Promise<SandboxerClients> => {
    sb = await startSandboxerProcess(script, ['--listen', listen, '--dir', dir, '--config', configFile], { TTRPC_ADDRESS: sink.path }, 60_000);
    clients = await connectSandboxer({ listen, taskSocket: path.join(dir, 'task.sock'), namespace: NS });
    return clients;
  };

  beforeAll(async () => {
    root = tempDir('vstdin');
    dir = path.join(root, 'state');
    listen = path.join(root, 'controller.sock');
    configFile = path.join(root, 'config.toml');
    fs.writeFileSync(configFile, `[vmm]\nkernel = "${GUEST_DIR}/vmlinux"\ninitrd = "${GUEST_DIR}/initramfs.img"\naccel = "tcg"\nboot_timeout_ms = 60000\n`);
    script = path.join(root, 'vmm-sandboxer.js');
    await build({
      entryPoints: [path.join(__dirname, '..', 'src', 'main.ts')],
      bundle: true, platform: 'node', target: 'node20', format: 'cjs', outfile: script, external: ['koffi'], logLevel: 'error',
    });
    sink = new EventsSink(path.join(root, 'ev.sock'));
    await sink.server.listen(sink.path);
  });

  afterAll(async () => {
    if (clients) {
      await controllerCall(clients.controller, 'stop', { sandboxId: 'spod', timeoutSecs: 0 }, NS).catch(() => undefined);
      await controllerCall(clients.controller, 'shutdown', { sandboxId: 'spod' }, NS).catch(() => undefined);
      await clients.close().catch(() => undefined);
    }
    if (sb && sb.child.exitCode === null && sb.child.signalCode === null) {
      sb.child.kill('SIGTERM');
      await sb.exited;
    }
    if (dir) killVms(dir);
    for (const w of writers) w.destroy();
    for (const x of ios) x.close();
    if (bundle) removeBundle(bundle);
    await sink?.server.close(500);
    for (const m of mountsUnder(root).reverse()) execFileSync('umount', ['-l', m]);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('bytes written to the stdin FIFO after the restart reach the container and its exec; EOF ends both with 0', async () => {
    // a retry starts from nothing: the previous attempt's sandboxer, VM and state go first
    await clients?.close().catch(() => undefined);
    clients = undefined;
    if (sb && sb.child.exitCode === null && sb.child.signalCode === null) {
      sb.child.kill('SIGKILL');
      await sb.exited;
    }
    killVms(dir);
    for (const m of mountsUnder(dir).reverse()) execFileSync('umount', ['-l', m]);
    fs.rmSync(dir, { recursive: true, force: true });
    let { tasks, controller } = await start();
    await controllerCall(controller, 'create', { sandboxId: 'spod', options: podSandboxOptions({ metadata: { name: 'spod', namespace: 'default', uid: 'spod' }, hostname: 'spod' }), netnsPath: '' }, NS);
    await controllerCall(controller, 'start', { sandboxId: 'spod' }, NS);

    const c = new ClientIO(root, { stdin: true });
    ios.push(c);
    bundle = makeBundle(root, 's1', 'spod', ['cat']);
    await tasks.create({ id: 's1', bundle, stdin: c.stdin, stdout: c.stdout, stderr: c.stderr });
    const cw = stdinWriter(c.stdin);
    writers.push(cw);
    await tasks.start({ id: 's1' });
    const x = new ClientIO(root, { stdin: true });
    ios.push(x);
    await tasks.exec({
      id: 's1', execId: 'x1', stdin: x.stdin, stdout: x.stdout, stderr: x.stderr,
      spec: { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify({ args: ['cat'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } })) },
    });
    await tasks.start({ id: 's1', execId: 'x1' });
    const xw = stdinWriter(x.stdin);
    writers.push(xw);

    // before the crash: seen echoed, so nothing of it is in flight at the kill
    const before = randomBytes(16 * 1024);
    const xBefore = randomBytes(4 * 1024);
    await cw.write(before);
    await xw.write(xBefore);
    await until(() => received(c) >= before.length, 60_000, 'first part echoed by s1');
    await until(() => received(x) >= xBefore.length, 60_000, 'first part echoed by x1');

    await clients!.close();
    clients = undefined;
    sb!.child.kill('SIGKILL');
    await sb!.exited;
    ({ tasks, controller } = await start());
    expect((await tasks.state({ id: 's1' })).status).toBe(2); // RUNNING

    const after = randomBytes(64 * 1024);
    const xAfter = randomBytes(8 * 1024);
    const waited = tasks.wait({ id: 's1' });
    const xWaited = tasks.wait({ id: 's1', execId: 'x1' });
    await xw.write(xAfter);
    await xw.end();
    expect((await xWaited).exitStatus).toBe(0);
    const xEchoed = await x.out;
    expect(xEchoed.length).toBe(xBefore.length + xAfter.length);
    expect(xEchoed.equals(Buffer.concat([xBefore, xAfter]))).toBe(true);

    await cw.write(after);
    await cw.end();
    expect((await waited).exitStatus).toBe(0);
    const echoed = await c.out;
    expect(echoed.length).toBe(before.length + after.length);
    expect(echoed.equals(Buffer.concat([before, after]))).toBe(true);

    await tasks.delete({ id: 's1', execId: 'x1' });
    await tasks.delete({ id: 's1' });
  });
});
