// The benchmark run: pod+container start latency (serial and parallel) and management memory, kuasar-runc against
// containerd's default runc handler in ONE containerd, then the bare OCI runtime floor and the per-sandboxer rows.
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { pssKiB } from '@kuasar/e2e';
import type { PodWithContainer } from '@kuasar/testkit';
import { bareRuntimeSamples } from './bare-oci';
import type { RatioRow } from './report';
import { SANDBOXER_ROWS } from './rows';
import { BenchStack, KUASAR_HANDLER, RUNC_HANDLER, type BenchStackOptions } from './stack';

export type BenchMode = 'quick' | 'full';

export interface BenchSizes {
  serial: number;
  parallel: number;
  memoryPods: number[];
  bareRuns: number;
}

export const SIZES: Record<BenchMode, BenchSizes> = {
  quick: { serial: 5, parallel: 5, memoryPods: [1, 10], bareRuns: 5 },
  full: { serial: 100, parallel: 50, memoryPods: [1, 10, 50], bareRuns: 50 },
};

/** Samples per handler: `runc` = containerd's runc-v2 shim + pause (anchor), `kuasar` = kuasar-runc. */
export interface Pair<T> {
  runc: T;
  kuasar: T;
}

export interface MemoryLevel {
  pods: number;
  kuasar: { sandboxerKiB: number; relayKiB: number; totalKiB: number };
  runc: { shims: number; shimKiB: number; pauses: number; pauseKiB: number; totalKiB: number };
}

export interface BenchResults {
  mode: BenchMode;
  sizes: BenchSizes;
  startedAt: string;
  finishedAt: string;
  machine: { cpus: number; cpuModel: string; memMiB: number; kernel: string; node: string };
  versions: { containerd: string; runc: string; crun: string; sandboxer: string };
  serialMs: Pair<number[]>;
  parallelMs: Pair<number[]>;
  parallelWallMs: Pair<number>;
  memory: { idleSandboxerKiB: number; levels: MemoryLevel[] };
  bareOciMs: { runc: number[]; crun: number[] };
  /** per sandboxer: its ratio rows, or why it was skipped, or the error that ended its measurement */
  sandboxerRows: { name: string; skipped?: string; failed?: string; rows?: RatioRow[] }[];
}

export type Progress = (msg: string) => void;

function firstLine(bin: string, args: string[]): string {
  const r = spawnSync(bin, args, { encoding: 'utf8' });
  return r.status === 0 ? (r.stdout.split('\n')[0] ?? '').trim() : `unavailable (${bin})`;
}

async function cleanupAll(pods: PodWithContainer[]): Promise<void> {
  // Sequential: teardown cost is not measured, and a burst of removals would only add noise to the next step.
  for (const p of pods.splice(0)) await p.cleanup();
}

export async function runBench(mode: BenchMode, progress: Progress, stackOpts: BenchStackOptions = {}): Promise<BenchResults> {
  const sizes = SIZES[mode];
  const startedAt = new Date().toISOString();
  progress(`starting a private containerd 2.1 with handlers runc (runc-v2 shim + pause) and ${KUASAR_HANDLER} (runc-sandboxer)`);
  const stack = await BenchStack.start(stackOpts);
  const live: PodWithContainer[] = [];
  try {
    const versions = {
      containerd: await stack.ctrd.serverVersion(),
      runc: firstLine('runc', ['--version']),
      crun: firstLine('crun', ['--version']),
      sandboxer: stack.sb.opts.command.join(' '),
    };
    const handlers: [keyof Pair<unknown>, string][] = [['kuasar', KUASAR_HANDLER], ['runc', RUNC_HANDLER]];

    // Serial: one warm-up each (image unpack, first cgroup setup), then alternate so drift in load hits both alike.
    progress('warm-up: one pod per handler');
    for (const [, h] of handlers) await (await stack.startPod(h)).pod.cleanup();
    // Memory first, on a sandboxer that has served only the warm-up pod: measured after the latency runs it carries
    // their garbage (V8 keeps a grown heap a while), which says more about GC timing than about what N pods cost.
    // Memory: pods accumulate level by level; each handler's management processes are measured at the same count.
    const idleSandboxerKiB = pssKiB(stack.sb.pid!);
    const levels: MemoryLevel[] = [];
    const kuasarPods: PodWithContainer[] = [];
    const runcPods: PodWithContainer[] = [];
    try {
      for (const n of sizes.memoryPods) {
        progress(`memory: ${n} pods per handler`);
        while (kuasarPods.length < n) kuasarPods.push((await stack.startPod(KUASAR_HANDLER)).pod);
        while (runcPods.length < n) runcPods.push((await stack.startPod(RUNC_HANDLER)).pod);
        const relay = stack.sb.relayPid();
        const sandboxerKiB = pssKiB(stack.sb.pid!);
        const relayKiB = relay === undefined ? 0 : pssKiB(relay);
        const { shims, pauses } = stack.runcManagementPids();
        if (pauses.length !== n) throw new Error(`expected ${n} pause processes under the runc shims, found ${pauses.length}`);
        const shimKiB = shims.reduce((a, p) => a + pssKiB(p), 0);
        const pauseKiB = pauses.reduce((a, p) => a + pssKiB(p), 0);
        levels.push({
          pods: n,
          kuasar: { sandboxerKiB, relayKiB, totalKiB: sandboxerKiB + relayKiB },
          runc: { shims: shims.length, shimKiB, pauses: pauses.length, pauseKiB, totalKiB: shimKiB + pauseKiB },
        });
      }
    } finally {
      progress('memory: removing the pods');
      await cleanupAll(kuasarPods);
      await cleanupAll(runcPods);
    }

    const serialMs: Pair<number[]> = { runc: [], kuasar: [] };
    for (let i = 0; i < sizes.serial; i++) {
      for (const [k, h] of handlers) {
        const { ms, pod } = await stack.startPod(h);
        serialMs[k].push(ms);
        await pod.cleanup();
      }
      progress(`serial pod+container start ${i + 1}/${sizes.serial}: kuasar-runc ${serialMs.kuasar.at(-1)!.toFixed(0)} ms, runc ${serialMs.runc.at(-1)!.toFixed(0)} ms`);
    }

    const parallelMs: Pair<number[]> = { runc: [], kuasar: [] };
    const parallelWallMs: Pair<number> = { runc: 0, kuasar: 0 };
    for (const [k, h] of handlers) {
      progress(`parallel: ${sizes.parallel} pods at once through ${h || 'runc'}`);
      const t0 = process.hrtime.bigint();
      const settled = await Promise.allSettled(Array.from({ length: sizes.parallel }, () => stack.startPod(h)));
      parallelWallMs[k] = Number(process.hrtime.bigint() - t0) / 1e6;
      for (const s of settled) if (s.status === 'fulfilled') { parallelMs[k].push(s.value.ms); live.push(s.value.pod); }
      await cleanupAll(live);
      const failed = settled.filter((s) => s.status === 'rejected') as PromiseRejectedResult[];
      if (failed.length > 0) throw new Error(`${failed.length}/${sizes.parallel} parallel pods failed on ${h || 'runc'}: ${String(failed[0]!.reason)}`);
    }

    progress(`bare OCI runtime floor: runc and crun create+start+delete x${sizes.bareRuns}`);
    const bareOciMs = { runc: bareRuntimeSamples('runc', sizes.bareRuns), crun: bareRuntimeSamples('crun', sizes.bareRuns) };

    const sandboxerRows: BenchResults['sandboxerRows'] = [];
    for (const row of SANDBOXER_ROWS) {
      const skipped = row.skipReason() ?? (row.run ? undefined : 'no run() hook');
      if (skipped !== undefined || !row.run) {
        progress(`skipping ${row.name}: ${skipped}`);
        sandboxerRows.push({ name: row.name, skipped });
        continue;
      }
      progress(`running ${row.name}`);
      try {
        sandboxerRows.push({ name: row.name, rows: await row.run(mode, progress) });
      } catch (err) {
        // one sandboxer's failure is a result of the run, not a reason to lose every other figure
        const failed = (err as Error).message;
        progress(`${row.name} FAILED: ${failed}`);
        sandboxerRows.push({ name: row.name, failed });
      }
    }

    const cpus = os.cpus();
    return {
      mode, sizes, startedAt, finishedAt: new Date().toISOString(),
      machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', memMiB: Math.round(os.totalmem() / 2 ** 20), kernel: os.release(), node: process.version },
      versions, serialMs, parallelMs, parallelWallMs, memory: { idleSandboxerKiB, levels }, bareOciMs, sandboxerRows,
    };
  } finally {
    await cleanupAll(live).catch(() => undefined);
    progress('stopping containerd and the sandboxer');
    await stack.stop();
  }
}
