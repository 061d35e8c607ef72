// The wasm-sandboxer row: hello-world tasks per second through `ctr run --rm`, against runc in the same run and the
// same containerd. One private containerd 1.7 reaches both resident sandboxers through the thin shim
// (containerd-shim-kuasar-{wasm,runc}-v2) and runs its stock runc-v2 shim as well:
//   wasm-sandboxer  testkit's WASM_IMAGE, CMD ["/hello.wasm"] ("hello from wasm")
//   runc-sandboxer  busybox `echo hello`
//   runc-v2 shim    busybox `echo hello` (containerd's default runtime, a shim process per task)
// Each `ctr run --rm` is a whole task life: container record, snapshot, Create, Start, output, Wait, Delete, removal.
// Runs alternate between the three in rounds, so load from elsewhere on the machine hits them alike. Serial: one
// task at a time; parallel: PARALLEL clients at once.
// In the same run, the Task API without containerd, straight on each sandboxer's task socket:
//   lifecycle  Create, Start, Wait, Delete, stdout through a FIFO and checked: the sandboxers' own cost per task
//   start      Create+Start -> first stdout byte (cached module): the start-latency figure, p50 and p99
// `ctr version` gives the ctr process floor; `ctr run --rm` minus the Task API lifecycle is what containerd and ctr
// cost per task, which bounds the tasks/s ratio whatever the sandboxer does.
// Last, memory: the wasm sandboxer's RSS and PSS with 50 idle pods made through its Controller, each with a container
// blocked reading stdin.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { types } from '@kuasar/api';
import { REPO_ROOT, SandboxerProcess, buildShim, leftoverMounts, pssKiB, shimEnv } from '@kuasar/e2e';
import {
  BUSYBOX_IMAGE, ClientIO, PrivateContainerd, WASM_IMAGE, WASM_IMAGE_OUTPUT, busyboxImage, connectSandboxer, containerdAvailability,
  controllerCall, importImage, podSandboxOptions, runTask, wasmImage, wasmImageSpec, wat2wasm, type ControllerMethod,
} from '@kuasar/testkit';
import { busyboxBundle } from './bare-oci';
import type { RatioRow } from './report';
import { ratio, summarize } from './stats';

export const WASM_BINARY = path.join(REPO_ROOT, 'dist/bin/wasm-sandboxer');
export const RUNC_BINARY = path.join(REPO_ROOT, 'dist/bin/runc-sandboxer');
const CONTAINERD = '1.7' as const;
const NS = 'default';
/** the namespace of the calls made straight on the sandboxers, without containerd */
const DIRECT_NS = 'kbench';
/** what each hello-world task prints */
const HELLO = { wasm: WASM_IMAGE_OUTPUT['hello.wasm']!.stdout, runc: 'hello\n' };
const PARALLEL = 4;
/** idle pods for the memory figure */
export const IDLE_PODS = 50;
/** the Task API start-latency samples per sandboxer: at least this many, for a p99 worth the name */
const MIN_START_SAMPLES = 100;
/** a module that blocks in one fd_read of stdin, then returns: an idle container */
const READ_STDIN_WAT = `(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))))`;
/** the runtime name whose shim binary is containerd-shim-kuasar-<kind>-v2 (as @kuasar/shim's runtimeType) */
const runtimeType = (kind: 'wasm' | 'runc'): string => `io.containerd.kuasar-${kind}.v2`;

export class WasmRowError extends Error {
  override readonly name = 'WasmRowError';
}

interface Runner {
  label: string;
  /** ctr run arguments after `--rm` */
  args(id: string): string[];
  expect: string;
}

const RUNNERS: Runner[] = [
  { label: 'wasm-sandboxer (hello.wasm)', args: (id) => ['--runtime', runtimeType('wasm'), WASM_IMAGE, id], expect: HELLO.wasm },
  { label: 'runc-sandboxer (busybox echo)', args: (id) => ['--runtime', runtimeType('runc'), BUSYBOX_IMAGE, id, 'echo', 'hello'], expect: HELLO.runc },
  { label: 'runc-v2 shim (busybox echo)', args: (id) => ['--runtime', 'io.containerd.runc.v2', BUSYBOX_IMAGE, id, 'echo', 'hello'], expect: HELLO.runc },
];

/** Why the row cannot run here, or undefined. */
export function wasmRowSkipReason(): string | undefined {
  for (const bin of [WASM_BINARY, RUNC_BINARY]) if (!existsSync(bin)) return `${path.relative(REPO_ROOT, bin)} is not built (pnpm build)`;
  const avail = containerdAvailability(CONTAINERD);
  return 'reason' in avail ? `containerd ${CONTAINERD}: ${avail.reason}` : undefined;
}

export interface WasmRowResults {
  /** per runner label: wall-clock ms of each serial `ctr run --rm` */
  serialMs: Record<string, number[]>;
  /** per runner label: tasks/s with one client, and with PARALLEL clients */
  serialTasksPerSec: Record<string, number>;
  parallelTasksPerSec: Record<string, number>;
  /** Task API straight on the sandboxers: wall-clock ms of each Create+Start+Wait+Delete */
  taskApiMs: { wasm: number[]; runc: number[] };
  /** Task API: Create sent -> first stdout byte read (module cached / image warm) */
  startMs: { wasm: number[]; runc: number[] };
  /** `ctr version`: one ctr process and one call, the floor under every `ctr run` */
  ctrFloorMs: number[];
  /** the wasm sandboxer process, in KiB, before the idle pods and with them */
  memory: { pods: number; before: { rssKiB: number; pssKiB: number }; withPods: { rssKiB: number; pssKiB: number } };
  /** /proc/loadavg when the row started and when it ended */
  load: { start: string; end: string };
}

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const rssKiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);

/**
 * Task-API tasks on one sandboxer, `runs` after 3 warm-ups; each task's stdout is checked. `lifecycle` times
 * Create+Start+Wait+Delete. `start` times Create+Start -> first stdout byte, stamped when it is read, which may be
 * before Start's reply (the module runs as soon as it is woken); Wait and Delete follow, untimed.
 */
async function taskApiSamples(sb: SandboxerProcess, bundle: string, expect: string, runs: number, work: string, timed: 'lifecycle' | 'start'): Promise<number[]> {
  const c = await connectSandboxer({ listen: sb.opts.listen, taskSocket: sb.taskSocket, namespace: DIRECT_NS });
  const samples: number[] = [];
  try {
    for (let i = -3; i < runs; i++) {
      const id = `${timed === 'start' ? 'st' : 'ta'}${i + 3}`;
      const io = new ClientIO(work, { stderr: false });
      try {
        const firstByte = io.firstOutput().then(() => process.hrtime.bigint());
        const t0 = process.hrtime.bigint();
        const { exited } = await runTask(c.tasks, id, bundle, io);
        const t1 = timed === 'start' ? await firstByte : undefined;
        const { exitStatus } = await exited;
        await c.tasks.delete({ id });
        const ms = Number((t1 ?? process.hrtime.bigint()) - t0) / 1e6;
        const text = (await io.out).toString();
        if (exitStatus !== 0 || text !== expect) throw new WasmRowError(`Task API on ${sb.taskSocket}: exit ${exitStatus}, printed ${JSON.stringify(text)}`);
        if (i >= 0) samples.push(ms);
      } finally {
        io.close();
      }
    }
  } finally {
    await c.close();
  }
  return samples;
}

/**
 * The wasm sandboxer's RSS and PSS before and with `pods` idle pods: each made through the Controller (Create+Start)
 * and holding one container whose module blocks reading stdin (a FIFO we keep a writer open on). Torn down after.
 */
async function idlePodMemory(sb: SandboxerProcess, pods: number, work: string): Promise<WasmRowResults['memory']> {
  const pid = sb.pid!;
  const rootfs = path.join(work, 'idle-rootfs');
  mkdirSync(rootfs, { recursive: true });
  writeFileSync(path.join(rootfs, 'read.wasm'), wat2wasm(READ_STDIN_WAT));
  const before = { rssKiB: rssKiB(pid), pssKiB: pssKiB(pid) };
  const { tasks, controller, close } = await connectSandboxer({ listen: sb.opts.listen, taskSocket: sb.taskSocket, namespace: DIRECT_NS });
  const call = (method: ControllerMethod, req: object): Promise<unknown> => controllerCall(controller, method, req, DIRECT_NS);
  const writers: number[] = [];
  const ids: string[] = [];
  try {
    for (let i = 0; i < pods; i++) {
      const podId = `idle${i}`;
      await call('create', { sandboxId: podId, options: podSandboxOptions({ metadata: { name: podId, namespace: 'default', uid: podId } }) });
      await call('start', { sandboxId: podId });
      ids.push(podId);
      const bundle = path.join(work, `idle-bundle-${i}`);
      mkdirSync(bundle);
      writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({
        ociVersion: '1.1.0', root: { path: rootfs }, mounts: [], annotations: { 'io.kubernetes.cri.sandbox-id': podId },
        process: { terminal: false, args: ['/read.wasm'], env: [], cwd: '/' }, linux: { namespaces: [{ type: 'pid' }] },
      }));
      writeFileSync(path.join(bundle, 'sandbox'), podId);
      const stdin = path.join(work, `idle-${i}.in`);
      execFileSync('mkfifo', [stdin]);
      writers.push(openSync(stdin, constants.O_RDWR)); // a writer that never writes: the read blocks
      await tasks.create({ id: `${podId}-c`, bundle, stdin });
      await tasks.start({ id: `${podId}-c` });
    }
    await new Promise((r) => setTimeout(r, 1000)); // spare workers settle
    const st = await tasks.state({ id: `idle${pods - 1}-c` });
    if (st.status !== types.TaskStatus.RUNNING) throw new WasmRowError(`idle container is not running (status ${st.status})`);
    return { pods, before, withPods: { rssKiB: rssKiB(pid), pssKiB: pssKiB(pid) } };
  } finally {
    await Promise.all(ids.map(async (podId) => {
      const id = `${podId}-c`;
      await tasks.kill({ id, signal: 9 }).catch(() => undefined);
      await tasks.wait({ id }).catch(() => undefined);
      await tasks.delete({ id }).catch(() => undefined);
      await call('stop', { sandboxId: podId, timeoutSecs: 0 }).catch(() => undefined);
      await call('shutdown', { sandboxId: podId }).catch(() => undefined);
    }));
    for (const fd of writers) closeSync(fd);
    await close();
  }
}

/** The two bundles: hello.wasm alone, and busybox `echo hello` with runc's default spec. Reused by every task. */
function taskApiBundles(work: string): { wasm: string; runc: string } {
  const wasm = path.join(work, 'wasm-bundle');
  mkdirSync(path.join(wasm, 'rootfs'), { recursive: true });
  const hello = wasmImageSpec().entries.find((e) => e.path === 'hello.wasm');
  if (!hello || hello.type !== 'file') throw new WasmRowError('WASM_IMAGE has no hello.wasm');
  writeFileSync(path.join(wasm, 'rootfs', 'hello.wasm'), hello.content);
  writeFileSync(path.join(wasm, 'config.json'), JSON.stringify({
    ociVersion: '1.1.0', root: { path: 'rootfs' }, mounts: [],
    process: { terminal: false, args: ['/hello.wasm'], env: ['PATH=/bin'], cwd: '/' }, linux: { namespaces: [{ type: 'pid' }] },
  }));
  const runc = busyboxBundle(work);
  symlinkSync('busybox', path.join(runc, 'rootfs', 'bin', 'echo'));
  const spec = JSON.parse(readFileSync(path.join(runc, 'config.json'), 'utf8')) as { process: { args: string[] } };
  spec.process.args = ['/bin/echo', 'hello'];
  writeFileSync(path.join(runc, 'config.json'), JSON.stringify(spec));
  return { wasm, runc };
}

/** Measures the three runners; `runs` tasks per runner and mode. */
export async function measureWasmTasks(runs: number, progress: (msg: string) => void): Promise<WasmRowResults> {
  const reason = wasmRowSkipReason();
  if (reason) throw new WasmRowError(reason);
  const base = mkdtempSync('/tmp/kbwasm-'); // short: socket paths must fit a unix socket address
  const binDir = buildShim(path.join(base, 'bin'));
  const dirs = { wasm: path.join(base, 'wasm'), runc: path.join(base, 'runc') };
  const sandboxers: Partial<Record<keyof typeof dirs, SandboxerProcess>> = {};
  let ctrd: PrivateContainerd | undefined;
  const loadStart = loadavg();
  try {
    const env = { PATH: `${binDir}:${process.env.PATH ?? '/usr/bin:/bin'}`, ...shimEnv('wasm', path.join(dirs.wasm, 'task.sock')), ...shimEnv('runc', path.join(dirs.runc, 'task.sock')) };
    ctrd = await PrivateContainerd.start({ version: CONTAINERD, env });
    for (const [kind, bin] of [['wasm', WASM_BINARY], ['runc', RUNC_BINARY]] as const) {
      mkdirSync(dirs[kind], { recursive: true });
      sandboxers[kind] = await SandboxerProcess.start({
        kind, command: [bin], listen: path.join(base, `${kind}.sock`), dir: dirs[kind], ttrpcAddress: ctrd.ttrpcAddress,
        logPath: path.join(base, `${kind}.log`), logLevel: 'warn',
        // the task relay keeps containerd's connections across sandboxer restarts; none happen here
        env: { KUASAR_TASK_RELAY: '0' },
      });
    }
    const sb = { wasm: sandboxers.wasm!, runc: sandboxers.runc! };
    for (const img of [wasmImage(), busyboxImage()]) await importImage(ctrd, img.tarPath, { namespace: NS });

    let seq = 0;
    const c = ctrd;
    const once = async (r: Runner): Promise<number> => {
      const id = `bw${seq++}`;
      const t0 = process.hrtime.bigint();
      const { stdout } = await c.ctr(['run', '--rm', ...r.args(id)], { namespace: NS, timeoutMs: 60_000 });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (stdout !== r.expect) throw new WasmRowError(`${r.label}: ctr run printed ${JSON.stringify(stdout)}, expected ${JSON.stringify(r.expect)}`);
      return ms;
    };
    progress('wasm row: warm-up (images, compiled module, shims)');
    for (const r of RUNNERS) for (let i = 0; i < 3; i++) await once(r);

    const serialMs: Record<string, number[]> = Object.fromEntries(RUNNERS.map((r) => [r.label, []]));
    const parallelWall: Record<string, number> = Object.fromEntries(RUNNERS.map((r) => [r.label, 0]));
    const parallelDone: Record<string, number> = Object.fromEntries(RUNNERS.map((r) => [r.label, 0]));
    const round = Math.max(1, Math.min(10, Math.floor(runs / 4)));
    for (let done = 0; done < runs; done += round) {
      const n = Math.min(round, runs - done);
      progress(`wasm row: ${done}/${runs} tasks per runner`);
      for (const r of RUNNERS) for (let i = 0; i < n; i++) serialMs[r.label]!.push(await once(r));
      for (const r of RUNNERS) {
        // PARALLEL clients share n tasks
        let left = n;
        const t0 = process.hrtime.bigint();
        await Promise.all(Array.from({ length: PARALLEL }, async () => {
          while (left > 0) {
            left--;
            await once(r);
          }
        }));
        parallelWall[r.label]! += Number(process.hrtime.bigint() - t0) / 1e6;
        parallelDone[r.label]! += n;
      }
    }
    progress(`wasm row: Task API, ${runs} tasks per sandboxer`);
    const work = mkdtempSync(path.join(base, 'ta-'));
    const bundles = taskApiBundles(work);
    const taskApi = async (timed: 'lifecycle' | 'start', n: number): Promise<WasmRowResults['taskApiMs']> => ({
      wasm: await taskApiSamples(sb.wasm, bundles.wasm, HELLO.wasm, n, work, timed),
      runc: await taskApiSamples(sb.runc, bundles.runc, HELLO.runc, n, work, timed),
    });
    const taskApiMs = await taskApi('lifecycle', runs);
    const startRuns = Math.max(runs, MIN_START_SAMPLES);
    progress(`wasm row: Task API start -> first output, ${startRuns} tasks per sandboxer`);
    const startMs = await taskApi('start', startRuns);
    progress('wasm row: ctr floor (`ctr version`)');
    const ctrFloorMs: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = process.hrtime.bigint();
      await c.ctr(['version'], { namespace: NS });
      ctrFloorMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    progress(`wasm row: memory with ${IDLE_PODS} idle pods`);
    const memory = await idlePodMemory(sb.wasm, IDLE_PODS, work);
    const perSec = (count: number, ms: number): number => (count * 1000) / ms;
    return {
      startMs,
      ctrFloorMs,
      memory,
      load: { start: loadStart, end: loadavg() },
      taskApiMs,
      serialMs,
      serialTasksPerSec: Object.fromEntries(RUNNERS.map((r) => [r.label, perSec(serialMs[r.label]!.length, serialMs[r.label]!.reduce((a, b) => a + b, 0))])),
      parallelTasksPerSec: Object.fromEntries(RUNNERS.map((r) => [r.label, perSec(parallelDone[r.label]!, parallelWall[r.label]!)])),
    };
  } finally {
    await ctrd?.stop();
    for (const s of Object.values(sandboxers)) await s.stopAll();
    if (leftoverMounts([base], []).length === 0) rmSync(base, { recursive: true, force: true });
  }
}

/** The ratio rows: wasm against each runc anchor, serial and parallel tasks/s, and the p50 of one `ctr run --rm`. */
export function wasmRatioRows(r: WasmRowResults): RatioRow[] {
  const [wasm, ...anchors] = RUNNERS.map((x) => x.label) as [string, ...string[]];
  const rows: RatioRow[] = [];
  const add = (figure: string, anchor: string, anchorValue: number, oursValue: number, unit: string): void => {
    rows.push({ figure, anchor, anchorValue, ours: wasm, oursValue, unit, ratio: ratio(oursValue, anchorValue) });
  };
  const n = r.serialMs[wasm]!.length;
  for (const a of anchors) {
    add(`hello-world tasks/s, \`ctr run --rm\` serial (N=${n})`, a, r.serialTasksPerSec[a]!, r.serialTasksPerSec[wasm]!, 'tasks/s');
    add(`hello-world tasks/s, \`ctr run --rm\` ${PARALLEL} clients (N=${n})`, a, r.parallelTasksPerSec[a]!, r.parallelTasksPerSec[wasm]!, 'tasks/s');
    add(`p50 \`ctr run --rm\` of one hello-world task (N=${n})`, a, summarize(r.serialMs[a]!).p50, summarize(r.serialMs[wasm]!).p50, 'ms');
  }
  const sum = (xs: number[]): number => xs.reduce((x, y) => x + y, 0);
  const mean = (xs: number[]): number => sum(xs) / xs.length;
  const taskApiAnchor = 'runc-sandboxer (busybox echo, Task API)';
  add(`hello-world tasks/s, Task API Create+Start+Wait+Delete serial (N=${r.taskApiMs.wasm.length})`, taskApiAnchor,
    (r.taskApiMs.runc.length * 1000) / sum(r.taskApiMs.runc), (r.taskApiMs.wasm.length * 1000) / sum(r.taskApiMs.wasm), 'tasks/s');
  const load = `load ${r.load.start} -> ${r.load.end}`;
  const ws = summarize(r.startMs.wasm);
  const rs = summarize(r.startMs.runc);
  for (const p of ['p50', 'p99'] as const) {
    add(`${p} Task API start, Create+Start -> first stdout byte, cached module (N=${ws.n}, goal p50 <= 5 ms; ${load})`, taskApiAnchor, rs[p], ws[p], 'ms');
  }
  // containerd's and ctr's share of a `ctr run --rm`: the whole run less the sandboxer's own Task API lifecycle
  const ctrWasm = mean(r.serialMs[wasm]!);
  const containerdShare = Math.max(0, ctrWasm - mean(r.taskApiMs.wasm));
  const floor = summarize(r.ctrFloorMs).p50;
  rows.push({ figure: `mean containerd + ctr share of one \`ctr run --rm\` (the run less the Task API lifecycle; \`ctr version\` p50 ${floor.toFixed(1)} ms)`,
    anchor: 'whole `ctr run --rm` of hello.wasm', anchorValue: ctrWasm, ours: 'containerd + ctr', oursValue: containerdShare, unit: 'ms', ratio: ratio(containerdShare, ctrWasm) });
  const runcAnchor = anchors[0]!;
  add(`ceiling: \`ctr run --rm\` tasks/s if the sandboxer took 0 ms (1000 / containerd + ctr share)`, runcAnchor,
    r.serialTasksPerSec[runcAnchor]!, containerdShare > 0 ? 1000 / containerdShare : Infinity, 'tasks/s');
  const mib = (kib: number): number => kib / 1024;
  const m = r.memory;
  const podsLabel = `${m.pods} idle pods (Controller Create+Start, one container blocked reading stdin each)`;
  rows.push({ figure: `wasm-sandboxer RSS with ${podsLabel}`, anchor: 'wasm-sandboxer before the pods', anchorValue: mib(m.before.rssKiB),
    ours: `wasm-sandboxer + ${m.pods} pods`, oursValue: mib(m.withPods.rssKiB), unit: 'MiB', ratio: ratio(m.withPods.rssKiB, m.before.rssKiB) });
  rows.push({ figure: `wasm-sandboxer PSS with ${podsLabel}`, anchor: 'wasm-sandboxer before the pods', anchorValue: mib(m.before.pssKiB),
    ours: `wasm-sandboxer + ${m.pods} pods`, oursValue: mib(m.withPods.pssKiB), unit: 'MiB', ratio: ratio(m.withPods.pssKiB, m.before.pssKiB) });
  return rows;
}

/** The SandboxerRow hook: quick 20 tasks per runner and mode, full 100. */
export async function runWasmRow(mode: 'quick' | 'full', progress: (msg: string) => void): Promise<RatioRow[]> {
  return wasmRatioRows(await measureWasmTasks(mode === 'quick' ? 20 : 100, progress));
}
