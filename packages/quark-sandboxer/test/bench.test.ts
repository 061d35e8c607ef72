// Measures (prints, asserts nothing about speed): pod + container start through the Controller and the Task API
// against a bare `runsc run` of the same kind of bundle with the same flags, in the same run; and the host memory
// a pod costs beyond gVisor's own processes (the sandboxer's PSS growth per idle pod).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { sandboxApi } from '@kuasar/api';
import type { TtrpcClient } from '@kuasar/ttrpc';
import {
  bundleSandboxer, controllerClient, createBusyboxBundle, criBundle, median, podOptions, pssKb, rpc, runscPath,
  startSandboxerProcess, taskClient, tempDir, type BusyboxBundle, type SandboxerProcess, type TaskClient,
} from './helpers';

jest.setTimeout(180_000);

const runsc = runscPath();
const maybe = runsc ? describe : describe.skip;
const ROUNDS = 5;

maybe('start time and memory (printed)', () => {
  let work: string;
  let sb: SandboxerProcess;
  let controller: sandboxApi.ControllerClient;
  let conn: TtrpcClient;
  let tasks: TaskClient;
  let dir: string;
  const bundles: BusyboxBundle[] = [];

  beforeAll(async () => {
    work = tempDir('kuasar-quark-bench-');
    const script = await bundleSandboxer(work);
    dir = path.join(work, 'state');
    fs.writeFileSync(path.join(work, 'config.toml'), `[quark]\nrunsc = "${runsc}"\nexit_poll_ms = 100\n`);
    sb = await startSandboxerProcess(script, ['--listen', path.join(work, 'q.sock'), '--dir', dir, '--config', path.join(work, 'config.toml'), '--log-level', 'info']);
    controller = controllerClient(path.join(work, 'q.sock'));
  });

  afterAll(async () => {
    conn?.close();
    controller?.close();
    sb.child.kill('SIGTERM');
    await sb.exited;
    bundles.forEach((b) => b.remove());
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** `prepared`: a bundle made beforehand, so its busybox copy is not timed (bare runsc gets one too) */
  const runPod = async (id: string, args: string[], prepared?: BusyboxBundle): Promise<{ sandboxPid: number; exited: Promise<unknown> }> => {
    await rpc(controller, 'create', { sandboxId: id, options: podOptions(id), netnsPath: '', sandboxer: 'quark' });
    const started = await rpc(controller, 'start', { sandboxId: id });
    if (!tasks) ({ conn, tasks } = await taskClient(started.address));
    const b = prepared ?? criBundle(id, started.pid, args, work);
    bundles.push(b);
    await tasks.create({ id: `${id}-c`, bundle: b.path } as never);
    const exited = tasks.wait({ id: `${id}-c` } as never);
    await tasks.start({ id: `${id}-c` } as never);
    return { sandboxPid: started.pid, exited };
  };

  const removePod = async (id: string): Promise<void> => {
    await tasks.kill({ id: `${id}-c`, signal: 9 } as never).catch(() => undefined);
    await tasks.wait({ id: `${id}-c` } as never);
    await tasks.delete({ id: `${id}-c` } as never);
    await rpc(controller, 'stop', { sandboxId: id, timeoutSecs: 0 });
    await rpc(controller, 'shutdown', { sandboxId: id });
  };

  test('pod + container start vs bare `runsc run` (same flags, same run)', async () => {
    const bare: number[] = [];
    const ours: number[] = [];
    const root = path.join(work, 'bare-root');
    for (let i = 0; i < ROUNDS; i++) {
      const b = createBusyboxBundle({ args: ['echo', 'hi'], parent: work });
      bundles.push(b);
      let t = performance.now();
      const r = spawnSync(runsc!, ['--root', root, '--platform=systrap', '--network=host', 'run', '--bundle', b.path, `bare${i}`], { encoding: 'utf8' });
      bare.push(performance.now() - t);
      expect(r.stdout).toBe('hi\n');
      const prepared = criBundle(`bench${i}`, 0, ['echo', 'hi'], work);
      if (!tasks) await runPod('connect', ['true']).then(async ({ exited }) => {
        await exited;
        await tasks.delete({ id: 'connect-c' } as never);
        await rpc(controller, 'stop', { sandboxId: 'connect', timeoutSecs: 0 });
        await rpc(controller, 'shutdown', { sandboxId: 'connect' });
      });
      t = performance.now();
      const { exited } = await runPod(`bench${i}`, ['echo', 'hi'], prepared);
      await exited;
      ours.push(performance.now() - t);
      await tasks.delete({ id: `bench${i}-c` } as never);
      await rpc(controller, 'stop', { sandboxId: `bench${i}`, timeoutSecs: 0 });
      await rpc(controller, 'shutdown', { sandboxId: `bench${i}` });
    }
    const ratio = median(ours) / median(bare);
    process.stderr.write(`quark bench: bare runsc run (echo) median ${median(bare).toFixed(0)} ms [${bare.map((x) => x.toFixed(0)).join(' ')}]; ` +
      `Controller Create+Start + Task Create+Start+exit median ${median(ours).toFixed(0)} ms [${ours.map((x) => x.toFixed(0)).join(' ')}]; ` +
      `ratio ${ratio.toFixed(2)} (goal <= 1.15)\n`);
    expect(ratio).toBeGreaterThan(0);
  });

  test('host memory per idle pod: the sandboxer part vs gVisor\'s own processes', async () => {
    const PODS = 3;
    // settle the sandboxer's heap with one pod made and removed
    await runPod('warm', ['sleep', '1000']);
    await removePod('warm');
    global.gc?.();
    await new Promise((r) => setTimeout(r, 500));
    const before = pssKb(sb.pid);
    const pids: number[] = [];
    for (let i = 0; i < PODS; i++) pids.push((await runPod(`mem${i}`, ['sleep', '1000'])).sandboxPid);
    await new Promise((r) => setTimeout(r, 1000));
    const after = pssKb(sb.pid);
    // gVisor's processes of those pods: everything started with their runsc state roots
    let gvisor = 0;
    for (const line of execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')) {
      const m = /^\s*(\d+)\s+(.*)$/.exec(line);
      if (m && /^runsc-/.test(m[2]!) && m[2]!.includes(path.join(dir, '.runsc', 'pods', 'mem'))) gvisor += pssKb(Number(m[1]));
    }
    // the sandbox's stub processes (systrap) are its children
    for (const pid of pids) {
      for (const child of execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean)) gvisor += pssKb(Number(child));
    }
    process.stderr.write(`quark memory: sandboxer PSS ${before} kB -> ${after} kB with ${PODS} idle pods: ` +
      `${((after - before) / PODS).toFixed(0)} kB per pod (our part; no per-pod host process of ours); ` +
      `gVisor's own processes ${(gvisor / PODS / 1024).toFixed(1)} MB PSS per pod\n`);
    for (let i = 0; i < PODS; i++) await removePod(`mem${i}`);
    expect(after).toBeGreaterThan(0);
  });
});
