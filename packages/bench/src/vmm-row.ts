// The vmm-sandboxer row: microVM pod + container start against the floor, what the parts cost alone, in the same
// run on the same machine (TCG here: this host's KVM is PVM-only).
//   floor  the pod VM's own QEMU command line (read from the running VM, so the same kernel, initrd, machine, CPU,
//          memory and devices), with kuasar.selftest=1 and a share holding one bundle: launch to the guest's ready
//          marker on the console (/init), plus the `crun run` of that bundle as the guest timed it
//   ours   the sandboxer as a real process driven as containerd 2.x drives it: Controller Create + Start (the VM
//          boots, the agent answers), Task Create + Start of a container, until its first byte of output
// Rounds alternate the order (./alternate). Then memory: the sandboxer's PSS and that of its helper processes (not
// QEMU) with no VM and with N VMs, per VM; and the agent's RSS, read by each container from /proc/1/status (the
// container shares the guest's pid namespace, where the agent is PID 1).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { sandboxApi, task } from '@kuasar/api';
import { SANDBOXERS, SandboxerProcess, leftoverMounts, pssKiB, vmmSkipReason } from '@kuasar/e2e';
import { ClientIO, controllerCall } from '@kuasar/testkit';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { alternate } from './alternate';
import type { RatioRow } from './report';
import { podContainerBundle, podOptions } from './reliability-target';
import { ratio, summarize } from './stats';

const NS = 'k8s.io';
const READY_MARKER = 'KUASAR-GUEST-READY';
/** The pod's container: first output, then the agent's name and RSS, then it idles (kept for the memory phase). */
const POD_ARGS = ['sh', '-c', 'echo hi; echo "agent=$(cat /proc/1/comm) $(grep VmRSS /proc/1/status)"; exec sleep 1000'];
const FLOOR_ARGS = ['sh', '-c', 'echo hi'];
const BOOT_TIMEOUT_MS = 120_000;

export class VmmRowError extends Error {
  override readonly name = 'VmmRowError';
}

export function vmmRowSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (bind mounts, cgroups, QEMU)';
  return vmmSkipReason();
}

export interface VmmRowResults {
  /** floor per round: boot to the ready marker + the guest's crun run */
  floorMs: number[];
  floorBootMs: number[];
  floorCrunMs: number[];
  /** pod + container start to first output */
  podMs: number[];
  /** boot to agent ready as the sandboxer recorded it (vm.json bootMs) */
  podBootMs: number[];
  /** guest uptime (s) at /init's ready marker: the floor VMs, and the pod VMs with their agent's ready marker */
  guestUptime: { floorInit: number[]; podInit: number[]; podAgent: number[] };
  memory: { vms: number; idleKiB: number; withVmsKiB: number; helperKiB: number; perVmKiB: number };
  /** the agent's VmRSS in each guest that ran a container */
  agentRssKiB: number[];
}


async function until<T>(fn: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new VmmRowError(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** podContainerBundle without the pid namespace, so that /proc/1 in the container is the guest's agent. */
function bundle(parent: string, pod: string | undefined, args: string[]): string {
  const dir = podContainerBundle(parent, pod, args);
  const file = path.join(dir, 'config.json');
  const spec = JSON.parse(readFileSync(file, 'utf8')) as { linux: { namespaces: { type: string }[] } };
  spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== 'pid');
  writeFileSync(file, JSON.stringify(spec));
  return dir;
}

function vmRecord(sbDir: string, pod: string): { pid: number; bootMs?: number } {
  const r = JSON.parse(readFileSync(path.join(sbDir, pod, 'vm.json'), 'utf8')) as { identity: { pid: number }; bootMs?: number };
  return { pid: r.identity.pid, ...(r.bootMs !== undefined ? { bootMs: r.bootMs } : {}) };
}

/** Host processes below `root` that are not QEMU (stdio holders and the like), by /proc's parent links. */
function helperPids(root: number): number[] {
  const parent = new Map<number, number>();
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const stat = readFileSync(`/proc/${n}/stat`, 'utf8');
      parent.set(Number(n), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited meanwhile
    }
  }
  const below = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === root) return true;
    return false;
  };
  return [...parent.keys()].filter((pid) => {
    if (!below(pid)) return false;
    try {
      return !path.basename(readlinkSync(`/proc/${pid}/exe`)).startsWith('qemu-system');
    } catch {
      return false;
    }
  });
}

/**
 * The floor once: the pod VM's QEMU argv with its dir swapped for `dir`, kuasar.selftest=1 and a share holding a
 * bundle. Returns launch → ready marker (host clock) and the crun run (guest clock).
 */
async function floorOnce(qemuArgv: string[], podDir: string, dir: string, bundles: string): Promise<{ bootMs: number; crunMs: number; uptime: number }> {
  mkdirSync(dir);
  const argv = qemuArgv.map((a) => a.split(podDir).join(dir));
  const append = argv.indexOf('-append');
  if (append < 0) throw new VmmRowError('the pod VM has no -append');
  argv[append + 1] = `${argv[append + 1]} kuasar.selftest=1`;
  const share = /(?:^|,)path=([^,]+)/.exec(argv[argv.indexOf('-fsdev') + 1] ?? '')?.[1];
  if (!argv.includes('-fsdev') || !share) throw new VmmRowError('the floor needs the pod VM on a 9p share (share_fs = "9p")');
  mkdirSync(share, { recursive: true });
  const b = bundle(bundles, undefined, FLOOR_ARGS);
  const spec = JSON.parse(readFileSync(path.join(b, 'config.json'), 'utf8')) as { root: { path: string } };
  spec.root.path = 'rootfs';
  writeFileSync(path.join(b, 'config.json'), JSON.stringify(spec));
  renameSync(b, path.join(share, 'bundle'));

  let out = '';
  let readyAt: bigint | undefined;
  const t0 = process.hrtime.bigint();
  const q = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  q.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (readyAt === undefined && out.includes(READY_MARKER)) readyAt = process.hrtime.bigint();
  });
  q.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((r) => q.once('exit', () => r()));
  let gone = false;
  void exited.then(() => (gone = true));
  try {
    await until(() => (out.includes('KUASAR-SELFTEST-DONE') || gone ? true : undefined), BOOT_TIMEOUT_MS, 'the floor VM\'s selftest');
    const m = /KUASAR-SELFTEST crun-exit=(\d+) bundle=\S+ started=([\d.]+) ended=([\d.]+)/.exec(out);
    if (readyAt === undefined || !m || m[1] !== '0' || !out.includes('hi')) throw new VmmRowError(`floor VM: no ready marker or crun run failed; console:\n${out.slice(-2000)}`);
    const uptime = Number(/KUASAR-GUEST-READY uptime=([\d.]+)/.exec(out)?.[1]);
    return { bootMs: Number(readyAt - t0) / 1e6, crunMs: (Number(m[3]) - Number(m[2])) * 1000, uptime };
  } finally {
    if (!gone) q.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `rounds` pod starts and as many floors, alternating; then the memory of `vms` VMs at once. */
export async function measureVmmStart(rounds: number, vms: number, progress: (msg: string) => void): Promise<VmmRowResults> {
  const reason = vmmRowSkipReason();
  if (reason) throw new VmmRowError(reason);
  SANDBOXERS.vmm!.build();
  const base = mkdtempSync('/tmp/kbvmm-'); // short: socket paths must fit a unix socket address
  const bundles = path.join(base, 'bundles');
  mkdirSync(bundles);
  const sbDir = path.join(base, 'sb');
  const sb = await SandboxerProcess.start({
    kind: 'vmm', command: SANDBOXERS.vmm!.command(), listen: path.join(base, 'sb.sock'), dir: sbDir,
    // nothing listens there: events are dropped after their retries
    ttrpcAddress: path.join(base, 'no-containerd.sock'), logPath: path.join(base, 'sandboxer.log'), logLevel: 'warn',
    env: { KUASAR_TASK_RELAY: '0', NOTIFY_SOCKET: '' },
  }).catch((err: Error) => {
    rmSync(base, { recursive: true, force: true });
    throw err;
  });
  const controller = new sandboxApi.ControllerClient(`unix:${path.join(base, 'sb.sock')}`, grpc.credentials.createInsecure());
  const call = <T>(method: 'create' | 'start' | 'stop' | 'shutdown', req: object): Promise<T> => controllerCall(controller, method, req, NS);
  const conn = await TtrpcClient.connect(path.join(sbDir, 'task.sock'), { metadata: { 'containerd-namespace-ttrpc': NS } }).catch(async (err: Error) => {
    controller.close();
    await sb.stopAll();
    rmSync(base, { recursive: true, force: true });
    throw err;
  });
  const tasks = createClient(task.TaskV3Definition, conn);
  const live = new Set<string>();
  const agentRssKiB: number[] = [];
  const fifos: ClientIO[] = [];
  let seq = 0;

  const startPod = async (): Promise<{ id: string; ms: number }> => {
    const id = `vb${seq++}`;
    const b = bundle(bundles, id, POD_ARGS);
    const out = new ClientIO(base, { stderr: false });
    fifos.push(out);
    const first = out.firstOutput();
    const t0 = process.hrtime.bigint();
    live.add(id);
    await call('create', { sandboxId: id, options: podOptions(id), netnsPath: '', sandboxer: 'vmm' });
    await call('start', { sandboxId: id });
    await tasks.create(task.CreateTaskRequest.fromPartial({ id: `${id}-c`, bundle: b, stdout: out.stdout }));
    await tasks.start(task.StartRequest.fromPartial({ id: `${id}-c` }));
    await first;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const m = await until(() => /agent=(\S+) VmRSS:\s+(\d+) kB/.exec(out.outSoFar) ?? undefined, 30_000, `${id}: the agent's RSS`);
    if (!out.outSoFar.startsWith('hi\n') || m[1] !== 'qjs') throw new VmmRowError(`${id}: container printed ${JSON.stringify(out.outSoFar)}`);
    agentRssKiB.push(Number(m[2]));
    return { id, ms };
  };
  const removePod = async (id: string): Promise<void> => {
    const cid = `${id}-c`;
    const waited = tasks.wait(task.WaitRequest.fromPartial({ id: cid }));
    // when Kill fails nobody awaits the Wait, which then rejects too: not an unhandled rejection
    waited.catch(() => undefined);
    await tasks.kill(task.KillRequest.fromPartial({ id: cid, signal: 9 }));
    await waited;
    await tasks.delete(task.DeleteRequest.fromPartial({ id: cid }));
    await call('stop', { sandboxId: id, timeoutSecs: 0 });
    await call('shutdown', { sandboxId: id });
    live.delete(id);
  };

  try {
    const out: VmmRowResults = { floorMs: [], floorBootMs: [], floorCrunMs: [], podMs: [], podBootMs: [], guestUptime: { floorInit: [], podInit: [], podAgent: [] }, agentRssKiB, memory: { vms, idleKiB: 0, withVmsKiB: 0, helperKiB: 0, perVmKiB: 0 } };
    let qemuArgv: string[] | undefined;
    let podDir = '';
    const floor = async (i: number): Promise<void> => {
      if (!qemuArgv) throw new VmmRowError('no pod VM to take the QEMU command line from');
      const f = await floorOnce(qemuArgv, podDir, path.join(base, `f${i}`), bundles);
      out.floorBootMs.push(f.bootMs);
      out.floorCrunMs.push(f.crunMs);
      out.floorMs.push(f.bootMs + f.crunMs);
      out.guestUptime.floorInit.push(f.uptime);
    };
    const pod = async (): Promise<void> => {
      const { id, ms } = await startPod();
      const rec = vmRecord(sbDir, id);
      if (!qemuArgv) {
        qemuArgv = readFileSync(`/proc/${rec.pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
        podDir = path.join(sbDir, id);
      }
      out.podMs.push(ms);
      if (rec.bootMs !== undefined) out.podBootMs.push(rec.bootMs);
      const log = readFileSync(path.join(sbDir, id, 'console.log'), 'utf8');
      out.guestUptime.podInit.push(Number(/KUASAR-GUEST-READY uptime=([\d.]+)/.exec(log)?.[1]));
      out.guestUptime.podAgent.push(Number(/KUASAR-AGENT-READY uptime=([\d.]+)/.exec(log)?.[1]));
      await removePod(id);
    };
    // the pod goes first in the first round: the floor runs that VM's QEMU command line
    await alternate(rounds, (i) => {
      progress(`vmm row: start ${i + 1}/${rounds}`);
      return [pod, () => floor(i)];
    });

    progress(`vmm row: memory with ${vms} VMs`);
    const pid = sb.pid!;
    // the median of a few reads: the heap grows and shrinks with garbage collection in between
    const pss = async (): Promise<number> => {
      const xs: number[] = [];
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setTimeout(r, 200));
        xs.push(pssKiB(pid));
      }
      return summarize(xs).p50;
    };
    out.memory.idleKiB = await pss();
    for (let i = 0; i < vms; i++) await startPod();
    out.memory.withVmsKiB = await pss();
    out.memory.helperKiB = helperPids(pid).reduce((a, p) => a + pssKiB(p), 0);
    // The per-VM cost is far below the sandboxer heap's GC swings: with few VMs the delta can come out below zero,
    // which only says "within noise" — reported as 0 (the raw reads stay in the results).
    out.memory.perVmKiB = Math.max(0, (out.memory.withVmsKiB - out.memory.idleKiB + out.memory.helperKiB) / vms);
    return out;
  } finally {
    for (const id of [...live]) await removePod(id).catch(() => call('shutdown', { sandboxId: id }).catch(() => undefined));
    for (const f of fifos) f.close();
    await conn.close();
    controller.close();
    await sb.stopAll();
    // a VM the sandboxer could not shut down must not outlive the run
    for (const n of existsSync(sbDir) ? readdirSync(sbDir) : []) {
      try {
        process.kill(vmRecord(sbDir, n).pid, 'SIGKILL');
      } catch {
        // no record, or gone
      }
    }
    if (leftoverMounts([base], []).length === 0) rmSync(base, { recursive: true, force: true });
  }
}

export function vmmRatioRows(r: VmmRowResults): RatioRow[] {
  const n = r.podMs.length;
  const floor = summarize(r.floorMs).p50;
  const bootFloor = summarize(r.floorBootMs).p50;
  return [
    {
      figure: `p50 microVM pod + container start to first output (N=${n}, TCG)`,
      anchor: 'floor: bare QEMU boot to /init + bare `crun run` in the guest', anchorValue: floor,
      ours: 'vmm-sandboxer (Controller + Task API)', oursValue: summarize(r.podMs).p50, unit: 'ms', ratio: ratio(summarize(r.podMs).p50, floor),
    },
    ...(r.podBootMs.length > 0 ? [{
      figure: `p50 VM boot to ready (N=${r.podBootMs.length}, TCG)`,
      anchor: 'bare QEMU boot to /init (same command line)', anchorValue: bootFloor,
      ours: 'vmm-sandboxer VM launch to agent ready', oursValue: summarize(r.podBootMs).p50, unit: 'ms', ratio: ratio(summarize(r.podBootMs).p50, bootFloor),
    }] : []),
    {
      figure: `host memory per VM beyond QEMU, PSS with ${r.memory.vms} VMs (goal ≤ 10 MB)`,
      anchor: 'goal', anchorValue: 10 * 1024,
      ours: 'vmm-sandboxer PSS delta + helper processes, per VM', oursValue: r.memory.perVmKiB, unit: 'KiB', ratio: ratio(r.memory.perVmKiB, 10 * 1024),
    },
    {
      figure: `p50 agent RSS in the guest (N=${r.agentRssKiB.length}; goal ≤ 5 MB)`,
      anchor: 'goal', anchorValue: 5 * 1024,
      ours: 'vmm-task agent (qjs, PID 1)', oursValue: summarize(r.agentRssKiB).p50, unit: 'KiB', ratio: ratio(summarize(r.agentRssKiB).p50, 5 * 1024),
    },
  ];
}

/** The SandboxerRow hook: quick 1 round and 2 VMs (TCG boots take seconds each), full 10 rounds and 5 VMs. */
export async function runVmmRow(mode: 'quick' | 'full', progress: (msg: string) => void): Promise<RatioRow[]> {
  return vmmRatioRows(await (mode === 'quick' ? measureVmmStart(1, 2, progress) : measureVmmStart(10, 5, progress)));
}
