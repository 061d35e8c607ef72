// Measures (prints, asserts nothing about speed): pod + container start through the Controller and the Task API
// against a bare `runsc run` of the same kind of bundle with the same flags, in the same run, plus the floor of the
// one-kernel-per-pod design: the same runsc calls from a plain loop (root create+start, app create+start+wait), no
// sandboxer; the decomposition of our path (each Controller/Task call from the client, and the runsc calls the
// sandboxer made for it, from its debug log); and the host memory a pod costs beyond gVisor's own processes (the
// sandboxer's PSS growth per idle pod).
// QUARK_BENCH_ROUNDS sets the rounds (default 5); rounds alternate the order of the three so load drift is shared.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { sandboxApi } from '@kuasar/api';
import type { TtrpcClient } from '@kuasar/ttrpc';
import { podSettings } from '@kuasar/runc-sandboxer';
import { sandboxSpec } from '../src/quark-sandboxer';
import {
  bundleSandboxer, controllerClient, createBusyboxBundle, criBundle, median, podOptions, pssKb, rpc, runscPath,
  startSandboxerProcess, taskClient, tempDir, type BusyboxBundle, type SandboxerProcess, type TaskClient,
} from './helpers';

jest.setTimeout(180_000);

const runsc = runscPath();
const maybe = runsc ? describe : describe.skip;
const ROUNDS = Number(process.env['QUARK_BENCH_ROUNDS'] ?? 5);

/**
 * The runsc calls the sandboxer logged for pod `pod` (root = the pod id, app = `<pod>-c`), named "root create",
 * "app start", …, with the duration the engine measured around each.
 */
function runscCalls(lines: string[], pod: string): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const l of lines) {
    if (!l.includes('"oci runtime call"')) continue;
    const e = JSON.parse(l) as { args?: string[]; ms?: number };
    const args = e.args ?? [];
    // runsc ids are containerd ids + '+' (runsc resolves ids by prefix)
    const target = args[args.length - 1]?.replace(/\+$/, '');
    const who = target === pod ? 'root' : target === `${pod}-c` ? 'app' : undefined;
    if (who && typeof e.ms === 'number') out.push([`${who} ${args[0]}`, e.ms]);
  }
  return out;
}

maybe('start time and memory (printed)', () => {
  let work: string;
  let sb: SandboxerProcess;
  let controller: sandboxApi.ControllerClient;
  /** unset: the next runPod connects to the sandboxer's task socket */
  let conn: TtrpcClient | undefined;
  let tasks: TaskClient;
  let script: string;
  let dir: string;
  const bundles: BusyboxBundle[] = [];

  beforeAll(async () => {
    work = tempDir('kuasar-quark-bench-');
    script = await bundleSandboxer(work);
    dir = path.join(work, 'state');
    fs.writeFileSync(path.join(work, 'config.toml'), `[quark]\nrunsc = "${runsc}"\nexit_poll_ms = 100\n`);
    // debug: the engine logs every runsc call with its duration, which the decomposition below reads
    await startSb('debug');
  });

  /** (Re)starts the sandboxer at `level`; pods of a previous one must be gone. */
  const startSb = async (level: 'debug' | 'info'): Promise<void> => {
    if (sb) {
      conn?.close();
      controller?.close();
      sb.child.kill('SIGTERM');
      await sb.exited;
    }
    sb = await startSandboxerProcess(script, ['--listen', path.join(work, 'q.sock'), '--dir', dir, '--config', path.join(work, 'config.toml'), '--log-level', level]);
    controller = controllerClient(path.join(work, 'q.sock'));
    conn = undefined;
  };

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
    if (!conn) ({ conn, tasks } = await taskClient(started.address));
    const b = prepared ?? criBundle(id, started.pid, args, work);
    bundles.push(b);
    await tasks.create({ id: `${id}-c`, bundle: b.path } as never);
    const exited = tasks.wait({ id: `${id}-c` } as never);
    await tasks.start({ id: `${id}-c` } as never);
    return { sandboxPid: started.pid, exited };
  };

  /** the pod root container as the sandboxer makes it: catatonit -P in an empty read-only rootfs */
  const pauseBundle = (pod: string): string => {
    const b = fs.mkdtempSync(path.join(work, 'pause-'));
    fs.mkdirSync(path.join(b, 'rootfs'));
    fs.writeFileSync(path.join(b, 'rootfs', 'pause'), '');
    fs.writeFileSync(path.join(b, 'config.json'), JSON.stringify(sandboxSpec(pod, path.join(b, 'rootfs'), '/usr/bin/catatonit', podSettings(pod, undefined, ''))));
    return b;
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
    const floor: number[] = [];
    const floorSteps: Record<string, number[]> = {};
    const ours: number[] = [];
    /** client-side time of each call of our path, and the runsc calls the sandboxer made for it (its debug log) */
    const phases: Record<string, number[]> = {};
    const calls: Record<string, number[]> = {};
    const flags = ['--platform=systrap', '--network=host'];
    const rs = (root: string, args: string[]) => {
      // create: no pipes, the sandbox would hold them open for its whole life
      const r = spawnSync(runsc!, ['--root', root, ...flags, ...args], { encoding: 'utf8', stdio: args[0] === 'create' ? 'ignore' : ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
      if (r.status !== 0) throw new Error(`runsc ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
      return r.stdout ?? '';
    };
    if (!conn) await runPod('connect', ['true']).then(async ({ exited }) => {
      await exited;
      await tasks.delete({ id: 'connect-c' } as never);
      await rpc(controller, 'stop', { sandboxId: 'connect', timeoutSecs: 0 });
      await rpc(controller, 'shutdown', { sandboxId: 'connect' });
    });
    const steps: Array<(i: number) => Promise<void>> = [
      async (i) => {
        const b = createBusyboxBundle({ args: ['echo', 'hi'], parent: work });
        bundles.push(b);
        const t = performance.now();
        const out = rs(path.join(work, 'bare-root'), ['run', '--bundle', b.path, `bare${i}`]);
        bare.push(performance.now() - t);
        expect(out).toBe('hi\n'); // `run` deletes the container when it ends
      },
      async (i) => {
        const pod = `floor${i}`;
        const root = path.join(work, 'floor-root', pod);
        const pause = pauseBundle(pod);
        const b = criBundle(pod, 0, ['echo', 'hi'], work);
        bundles.push(b);
        // what prepareContainer does: the container lives in the pod's kernel, no host namespace paths
        const linux = b.spec['linux'] as { namespaces: { type: string }[] };
        linux.namespaces = linux.namespaces.map((n) => ({ type: n.type }));
        b.writeSpec();
        const t = performance.now();
        const step = (name: string, args: string[]): string => {
          const t0 = performance.now();
          const out = rs(root, args);
          (floorSteps[name] ??= []).push(performance.now() - t0);
          return out;
        };
        step('root create', ['create', '--bundle', pause, '--pid-file', path.join(pause, 'pid'), pod]);
        step('root start', ['start', pod]);
        step('app create', ['create', '--bundle', b.path, '--pid-file', path.join(b.path, 'pid'), `app${i}`]);
        step('app start', ['start', `app${i}`]);
        const status = JSON.parse(step('app wait', ['wait', `app${i}`])) as { exitStatus: number };
        floor.push(performance.now() - t);
        expect(status.exitStatus).toBe(0);
        rs(root, ['kill', pod, '9']);
        try {
          rs(root, ['delete', '--force', pod]);
        } catch (err) {
          // as in OciCliEngine.delete: runsc removes its state even when its wait for the pod's gofers (zombies of
          // an init that reaps lazily: they are not this process's children) times out
          if (spawnSync(runsc!, ['--root', root, 'state', pod]).status === 0) throw err;
        }
      },
      async (i) => {
        const id = `bench${i}`;
        const prepared = criBundle(id, 0, ['echo', 'hi'], work);
        bundles.push(prepared);
        const logFrom = sb.logs.length;
        const marks: number[] = [performance.now()];
        const mark = () => marks.push(performance.now());
        await rpc(controller, 'create', { sandboxId: id, options: podOptions(id), netnsPath: '', sandboxer: 'quark' });
        mark();
        await rpc(controller, 'start', { sandboxId: id });
        mark();
        await tasks.create({ id: `${id}-c`, bundle: prepared.path } as never);
        mark();
        const exited = tasks.wait({ id: `${id}-c` } as never);
        await tasks.start({ id: `${id}-c` } as never);
        mark();
        expect((await exited as { exitStatus: number }).exitStatus).toBe(0);
        mark();
        ours.push(marks[5]! - marks[0]!);
        const phase = ['Controller.Create', 'Controller.Start', 'Task.Create', 'Task.Start', 'start to exit seen'];
        phase.forEach((name, k) => (phases[name] ??= []).push(marks[k + 1]! - marks[k]!));
        for (const [name, ms] of runscCalls(sb.logs.slice(logFrom), id)) (calls[name] ??= []).push(ms);
        await tasks.delete({ id: `bench${i}-c` } as never);
        await rpc(controller, 'stop', { sandboxId: `bench${i}`, timeoutSecs: 0 });
        await rpc(controller, 'shutdown', { sandboxId: `bench${i}` });
      },
    ];
    for (let i = 0; i < ROUNDS; i++) {
      for (let k = 0; k < steps.length; k++) await steps[(i + k) % steps.length]!(i);
    }
    const show = (xs: number[]) => `median ${median(xs).toFixed(0)} ms [${xs.map((x) => x.toFixed(0)).join(' ')}]`;
    process.stderr.write(`quark bench (${ROUNDS} rounds): bare runsc run (echo) ${show(bare)}; ` +
      `design floor (runsc root create+start, app create+start+wait; no sandboxer) ${show(floor)}, ratio ${(median(floor) / median(bare)).toFixed(2)}; ` +
      `quark-sandboxer Controller Create+Start + Task Create+Start+exit ${show(ours)}, ratio ${(median(ours) / median(bare)).toFixed(2)} (goal <= 1.15); ` +
      `floor steps: ${Object.entries(floorSteps).map(([k, v]) => `${k} ${median(v).toFixed(0)}`).join(', ')} ms; ` +
      `sandboxer phases (client side): ${Object.entries(phases).map(([k, v]) => `${k} ${median(v).toFixed(0)}`).join(', ')} ms; ` +
      `its runsc calls: ${Object.entries(calls).map(([k, v]) => `${k} ${median(v).toFixed(0)}`).join(', ')} ms\n`);
    expect(median(ours)).toBeGreaterThan(0);
  });

  test('host memory per idle pod: the sandboxer part vs gVisor\'s own processes', async () => {
    const PODS = 10;
    // info: debug lines of every runsc call would be heap churn counted as the pods' cost
    await startSb('info');
    // settle the sandboxer's heap (lazily compiled code, pools, first-use caches) with as many pods made and removed
    // as are measured: a fresh process grows by ~1-2 MB per pod for its first pods whatever they hold
    for (let i = 0; i < PODS; i++) await runPod(`warm${i}`, ['sleep', '1000']);
    for (let i = 0; i < PODS; i++) await removePod(`warm${i}`);
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
