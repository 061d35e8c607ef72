// `kuasarctl exec` against a real vmm sandboxer (the framework's startSandboxer with the vmm kind, from the vmm
// sandboxer's own test harness) running a pod in a real QEMU (TCG) guest: the command runs in the guest through the
// sandboxer's debug socket and the agent's debug.exec.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { agentSkipReason, readManifest } from '../../vmm-sandboxer/test/guest';
import { EventsSink, killVms, rpc, runPod, startHarness, tempDir, type Harness } from '../../vmm-sandboxer/test/harness';
import { kuasarctlAsync, kuasarctlBundle } from './cli';

jest.setTimeout(Number(process.env.KUASAR_TEST_TIMEOUT_MS) || 240_000);

const skip = agentSkipReason();
if (skip) console.warn(`kuasarctl exec tests skipped: ${skip}`);
const describeVm = skip ? describe.skip : describe;

async function until(fn: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}

describeVm('kuasarctl exec in a vmm pod (QEMU TCG + guest agent)', () => {
  let root: string;
  let sink: EventsSink;
  let h: Harness;
  const exec = (args: string[], input?: string) => kuasarctlAsync(['exec', '--dir', `vmm=${h.dir}`, ...args], input);

  beforeAll(async () => {
    kuasarctlBundle();
    root = tempDir('exec');
    sink = new EventsSink(path.join(root, 'ev.sock'));
    await sink.server.listen(sink.path);
    h = await startHarness(root, sink);
    await runPod(h, 'xpod');
  });

  afterAll(async () => {
    if (h) {
      await rpc(h.controller, 'stop', { sandboxId: 'xpod', timeoutSecs: 0 }).catch(() => undefined);
      await rpc(h.controller, 'shutdown', { sandboxId: 'xpod' }).catch(() => undefined);
      await h.stop();
      killVms(h.dir);
    }
    await sink?.server.close(500);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('the debug socket is private to root', () => {
    expect(fs.statSync(path.join(h.dir, 'debug.sock')).mode & 0o777).toBe(0o600);
  });

  it('prints the guest kernel release and exits 0', async () => {
    const r = await exec(['xpod', '--', 'uname', '-r']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${readManifest()!.kernel.release}\n`);
    expect(r.status).toBe(0);
  });

  it("exits with the command's exit code, stderr apart from stdout", async () => {
    const r = await exec(['xpod', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r.stdout).toBe('out\n');
    expect(r.stderr).toBe('err\n');
    expect(r.status).toBe(3);
  });

  it('passes stdin with -i, through to its end', async () => {
    const input = 'line one\nline two\n'.repeat(5000);
    const r = await exec(['xpod', '-i', '--', 'sh', '-c', 'wc -c; echo done'], input);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n').map((l) => l.trim())).toEqual([String(Buffer.byteLength(input)), 'done']);
    expect(r.status).toBe(0);
  });

  it('runs on a terminal with -t (output as a pty gives it)', async () => {
    const r = await exec(['xpod', '-t', '--', 'sh', '-c', 'test -t 1 && echo tty; exit 4']);
    expect(r.stdout).toBe('tty\r\n');
    expect(r.status).toBe(4);
  });

  it('a client that goes away has its command killed', async () => {
    const child = spawn(process.execPath, [kuasarctlBundle(), 'exec', '--dir', `vmm=${h.dir}`, 'xpod', '--', 'sh', '-c', 'echo up; exec sleep 4321'], { stdio: ['ignore', 'pipe', 'pipe'] });
    await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
    const running = await exec(['xpod', '--', 'ps']);
    expect(running.stdout).toContain('sleep 4321');
    child.kill('SIGTERM');
    await until(async () => !(await exec(['xpod', '--', 'ps'])).stdout.includes('sleep 4321'), 30_000);
  });

  it('a missing program exits 127, as in a shell', async () => {
    expect((await exec(['xpod', '--', '/no/such/program'])).status).toBe(127);
  });

  it('an unknown sandbox id, and one this sandboxer does not run, are clear errors (exit 1)', async () => {
    const unknown = await exec(['nosuchpod', '--', 'true']);
    expect(unknown.stderr).toContain('sandbox "nosuchpod" not found');
    expect(unknown.status).toBe(1);
    // a VM the state dir lists but this sandboxer does not run
    fs.mkdirSync(path.join(h.dir, 'ghost'));
    fs.writeFileSync(path.join(h.dir, 'ghost', 'sandbox.json'), JSON.stringify({ id: 'ghost', version: 1, state: 'ready' }));
    const ghost = await exec(['ghost', '--', 'true']);
    expect(ghost.stderr).toContain('sandbox ghost is not a VM this vmm sandboxer runs (NOT_FOUND)');
    expect(ghost.status).toBe(1);
    fs.rmSync(path.join(h.dir, 'ghost'), { recursive: true });
  });
});
