// stdin across a sandboxer crash, for an engine that reports its own exits (gVisor through runsc): containerd keeps
// its stdin FIFO writer open while the sandboxer is killed and restarted, and what it writes afterwards must still
// reach the container. A real quark-sandboxer process, a real pod; `cat` echoes stdin to stdout, compared byte for
// byte. Needs trixie's runsc (scripts/fetch-debs.sh); skipped, and says so, without it.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { Socket } from 'node:net';
import * as path from 'node:path';
import { OCI_PROCESS_TYPE_URL, packJsonAny } from '@kuasar/api';
import type { TtrpcClient } from '@kuasar/ttrpc';
import { isRunning } from '@kuasar/sys';
import {
  SandboxerUnderTest, criBundle, podOptions, rpc, taskClient, until, withRunsc, type BusyboxBundle,
  type TaskClient,
} from './helpers';

jest.setTimeout(90_000);

const { runsc, maybe } = withRunsc('stdin restart test');

/** containerd's side of one process's IO: stdin writer held open for the process's life, stdout collected. */
interface ClientIO {
  stdin: string;
  stdout: string;
  stderr: string;
  /** everything read from stdout so far */
  received(): Buffer;
  /** resolves with all of stdout at EOF */
  out: Promise<Buffer>;
  /** opens the stdin writer (after Create, as containerd's cio does) */
  openStdin(): void;
  write(data: Buffer): Promise<void>;
  closeStdin(): Promise<void>;
  destroy(): void;
}

function clientIO(dir: string, name: string): ClientIO {
  const p = (s: string) => path.join(dir, `${name}-${s}`);
  for (const s of ['stdin', 'stdout', 'stderr']) execFileSync('mkfifo', ['-m', '0700', p(s)]);
  const chunks: Buffer[] = [];
  const sockets: Socket[] = [];
  const reader = (f: string) => {
    const s = new Socket({ fd: fs.openSync(f, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    sockets.push(s);
    return s;
  };
  const stdout = reader(p('stdout'));
  reader(p('stderr')).resume();
  const out = new Promise<Buffer>((resolve) => {
    stdout.on('data', (d: Buffer) => chunks.push(d));
    stdout.on('error', () => resolve(Buffer.concat(chunks)));
    stdout.on('end', () => resolve(Buffer.concat(chunks)));
  });
  let writer: Socket | undefined;
  return {
    stdin: p('stdin'), stdout: p('stdout'), stderr: p('stderr'), out,
    received: () => Buffer.concat(chunks),
    openStdin() {
      writer = new Socket({ fd: fs.openSync(p('stdin'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK), readable: false, writable: true });
      sockets.push(writer);
    },
    write: (data) => new Promise<void>((resolve, reject) => writer!.write(data, (err) => (err ? reject(err) : resolve()))),
    closeStdin: () => new Promise<void>((resolve) => writer!.end(() => resolve())),
    destroy() {
      for (const s of sockets) s.destroy();
    },
  };
}

maybe('stdin of gVisor containers across a sandboxer kill -9 + restart', () => {
  let q: SandboxerUnderTest;
  let conn: TtrpcClient;
  let tasks: TaskClient;
  let sandboxPid = 0;
  const pod = `qstdin${process.pid}`;
  const bundles: BusyboxBundle[] = [];
  const ios: ClientIO[] = [];

  beforeAll(async () => {
    q = await SandboxerUnderTest.start(runsc!, 'kuasar-quark-stdin-');
  });

  afterAll(async () => {
    // a test that failed half-way leaves c1: deleting its task also ends the holders of its stdin pipes
    if (tasks) {
      await tasks.kill({ id: 'c1', signal: 9 } as never).catch(() => undefined);
      await until(async () => (await tasks.state({ id: 'c1' } as never).catch(() => ({ status: 3 }))).status === 3, 10_000).catch(() => undefined);
      await tasks.delete({ id: 'c1' } as never).catch(() => undefined);
    }
    await q?.stop([pod], conn);
    if (sandboxPid > 0 && isRunning(sandboxPid)) process.kill(sandboxPid, 'SIGKILL');
    ios.forEach((io) => io.destroy());
    bundles.forEach((b) => b.remove());
    q?.remove();
  });

  test('bytes written to the stdin FIFO after the restart reach the container and its exec', async () => {
    await rpc(q.controller, 'create', { sandboxId: pod, options: podOptions(pod), sandboxer: 'quark' });
    const started = await rpc(q.controller, 'start', { sandboxId: pod });
    sandboxPid = started.pid;
    ({ conn, tasks } = await taskClient(started.address));

    // the container: cat from stdin to stdout
    const b = criBundle(pod, sandboxPid, ['cat'], q.work);
    bundles.push(b);
    const c = clientIO(q.work, 'c1');
    ios.push(c);
    await tasks.create({ id: 'c1', bundle: b.path, stdin: c.stdin, stdout: c.stdout, stderr: c.stderr } as never);
    c.openStdin();
    await tasks.start({ id: 'c1' } as never);
    // an exec with its own stdin, also cat
    const x = clientIO(q.work, 'x1');
    ios.push(x);
    await tasks.exec({
      id: 'c1', execId: 'x1', stdin: x.stdin, stdout: x.stdout, stderr: x.stderr,
      spec: packJsonAny(OCI_PROCESS_TYPE_URL, { args: ['cat'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } }),
    } as never);
    // an exec's IO is opened at its Start
    await tasks.start({ id: 'c1', execId: 'x1' } as never);
    x.openStdin();

    // before the crash: a first part goes through (and is seen echoed, so none of it is in flight at the kill)
    const before = randomBytes(64 * 1024);
    const xBefore = randomBytes(16 * 1024);
    await c.write(before);
    await x.write(xBefore);
    await until(() => c.received().length >= before.length, 20_000, 'first part echoed by the container');
    await until(() => x.received().length >= xBefore.length, 20_000, 'first part echoed by the exec');

    conn.close();
    q.sb.child.kill('SIGKILL');
    await q.sb.exited;
    expect(isRunning(sandboxPid)).toBe(true);
    await q.restart();
    ({ conn, tasks } = await taskClient(started.address));
    expect((await tasks.state({ id: 'c1' } as never)).status).toBe(2); // RUNNING

    // after the restart: the same (still open) writers; then EOF ends both cats with status 0
    const after = randomBytes(256 * 1024);
    const xAfter = randomBytes(32 * 1024);
    const waited = tasks.wait({ id: 'c1' } as never) as Promise<{ exitStatus: number }>;
    const xWaited = tasks.wait({ id: 'c1', execId: 'x1' } as never) as Promise<{ exitStatus: number }>;
    await x.write(xAfter);
    await x.closeStdin();
    expect((await xWaited).exitStatus).toBe(0);
    const xEchoed = await x.out;
    expect(xEchoed.length).toBe(xBefore.length + xAfter.length);
    expect(xEchoed.equals(Buffer.concat([xBefore, xAfter]))).toBe(true);

    await c.write(after);
    await c.closeStdin();
    expect((await waited).exitStatus).toBe(0);
    const echoed = await c.out;
    expect(echoed.length).toBe(before.length + after.length);
    expect(echoed.equals(Buffer.concat([before, after]))).toBe(true);

    await tasks.delete({ id: 'c1', execId: 'x1' } as never);
    await tasks.delete({ id: 'c1' } as never);
  });
});
