// The quark-sandboxer row: application-kernel (gVisor) pod + container start against a bare `runsc run` of the same
// kind of busybox bundle with the same runsc flags, in the same run. The sandboxer runs as a real process (the
// tree's bundle) and is driven as containerd 2.x drives it: Controller Create + Start (the pod's kernel boots), then
// Task Create + Start of an `echo` container in it, until its exit is reported. Bare: `runsc run` (create, start,
// wait in one process). Rounds alternate the order (./alternate).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { sandboxApi, task } from '@kuasar/api';
import { SANDBOXERS, SandboxerProcess, leftoverMounts } from '@kuasar/e2e';
import { controllerCall } from '@kuasar/testkit';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { alternate } from './alternate';
import type { RatioRow } from './report';
import { podContainerBundle, podOptions } from './reliability-target';
import { ratio, summarize } from './stats';

const NS = 'k8s.io';
const RUNSC_FLAGS = ['--platform=systrap', '--network=host'];

export class QuarkRowError extends Error {
  override readonly name = 'QuarkRowError';
}

/** trixie's runsc as scripts/fetch-debs.sh cached it (the quark sandboxer's default), if any. */
export function cachedRunsc(cache = process.env.KUASAR_CACHE ?? '/var/cache/kuasar'): string | undefined {
  try {
    const m = JSON.parse(readFileSync(path.join(cache, 'debs', 'manifest.json'), 'utf8')) as { key?: string; bins?: Record<string, string> }[];
    const p = m.find((e) => e.key === 'runsc')?.bins?.runsc;
    return p && existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

export function quarkRowSkipReason(): string | undefined {
  return cachedRunsc() ? undefined : 'no runsc cached (scripts/fetch-debs.sh)';
}

export interface QuarkRowResults {
  bareMs: number[];
  podMs: number[];
  /** pods that failed to start (reported, not timed); see docs/quark-sandboxer.md */
  podFailures: string[];
}


/** `rounds` pod starts and as many bare `runsc run`s, alternating. */
export async function measureQuarkStart(rounds: number, progress: (msg: string) => void): Promise<QuarkRowResults> {
  const runsc = cachedRunsc();
  if (!runsc) throw new QuarkRowError('no runsc cached (scripts/fetch-debs.sh)');
  SANDBOXERS.quark!.build();
  const base = mkdtempSync('/tmp/kbquark-'); // short: socket paths must fit a unix socket address
  const config = path.join(base, 'config.toml');
  writeFileSync(config, `[quark]\nrunsc = "${runsc}"\n`);
  const bundles = path.join(base, 'bundles');
  mkdirSync(bundles);
  const sb = await SandboxerProcess.start({
    kind: 'quark', command: SANDBOXERS.quark!.command(), listen: path.join(base, 'sb.sock'), dir: path.join(base, 'sb'),
    // nothing listens there: events are dropped after their retries
    ttrpcAddress: path.join(base, 'no-containerd.sock'), logPath: path.join(base, 'sandboxer.log'), logLevel: 'warn', config,
    env: { KUASAR_TASK_RELAY: '0', NOTIFY_SOCKET: '' },
  });
  const controller = new sandboxApi.ControllerClient(`unix:${path.join(base, 'sb.sock')}`, grpc.credentials.createInsecure());
  const call = <T>(method: 'create' | 'start' | 'stop' | 'shutdown', req: object): Promise<T> => controllerCall(controller, method, req, NS);
  let conn: TtrpcClient | undefined;
  try {
    const pod = async (id: string, bundle: string): Promise<number> => {
      const t0 = process.hrtime.bigint();
      try {
        await call('create', { sandboxId: id, options: podOptions(id), netnsPath: '', sandboxer: 'quark' });
        const started = await call<{ address: string }>('start', { sandboxId: id });
        conn ??= await TtrpcClient.connect(started.address.replace(/^ttrpc\+unix:\/\//, ''), { metadata: { 'containerd-namespace-ttrpc': NS } });
        const tasks = createClient(task.TaskV3Definition, conn);
        await tasks.create({ id: `${id}-c`, bundle } as never);
        const exited = tasks.wait({ id: `${id}-c` } as never);
        // when Start fails nobody awaits the Wait, which rejects once the connection closes: that must not be an
        // unhandled rejection (it ended the whole bench)
        exited.catch(() => undefined);
        await tasks.start({ id: `${id}-c` } as never);
        const { exitStatus } = await exited;
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (exitStatus !== 0) throw new QuarkRowError(`pod ${id}: container exited ${exitStatus}`);
        await tasks.delete({ id: `${id}-c` } as never);
        await call('stop', { sandboxId: id, timeoutSecs: 0 });
        await call('shutdown', { sandboxId: id });
        return ms;
      } catch (err) {
        // a failed pod must not keep its kernel running through the remaining rounds
        if (conn) await createClient(task.TaskV3Definition, conn).delete({ id: `${id}-c` } as never).catch(() => undefined);
        await call('stop', { sandboxId: id, timeoutSecs: 0 }).catch(() => undefined);
        await call('shutdown', { sandboxId: id }).catch(() => undefined);
        throw err;
      }
    };
    const bare = (id: string, bundle: string): number => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(runsc, ['--root', path.join(base, 'bare-root'), ...RUNSC_FLAGS, 'run', '--bundle', bundle, id], { encoding: 'utf8', timeout: 60_000 });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.status !== 0 || r.stdout !== 'hi\n') throw new QuarkRowError(`bare runsc run: ${r.error?.message ?? r.stderr} (stdout ${JSON.stringify(r.stdout)})`);
      return ms;
    };
    progress('quark row: warm-up');
    await pod('warm', podContainerBundle(bundles, 'warm', ['echo', 'hi']));
    const out: QuarkRowResults = { bareMs: [], podMs: [], podFailures: [] };
    // A pod that fails to start is a finding to report, not a reason to lose the other samples.
    const timedPod = async (id: string, bundle: string): Promise<void> => {
      try {
        out.podMs.push(await pod(id, bundle));
      } catch (err) {
        out.podFailures.push(`${id}: ${(err as Error).message}`);
        progress(`quark row: pod ${id} failed: ${(err as Error).message}`);
      }
    };
    await alternate(rounds, (i) => {
      if (i % 5 === 0) progress(`quark row: ${i}/${rounds}`);
      // bundles (a busybox copy each) are made before the clock starts, for both
      const bb = podContainerBundle(bundles, undefined, ['echo', 'hi']);
      const pb = podContainerBundle(bundles, `qb${i}`, ['echo', 'hi']);
      return [() => out.bareMs.push(bare(`bare${i}`, bb)), () => timedPod(`qb${i}`, pb)];
    });
    if (out.podMs.length === 0) throw new Error(`quark row: every pod failed to start: ${out.podFailures.join('; ')}`);
    return out;
  } finally {
    conn?.close();
    controller.close();
    await sb.stopAll();
    if (leftoverMounts([base], []).length === 0) rmSync(base, { recursive: true, force: true });
  }
}

export function quarkRatioRows(r: QuarkRowResults): RatioRow[] {
  const bare = summarize(r.bareMs).p50;
  const ours = summarize(r.podMs).p50;
  return [{
    figure: `p50 app-kernel pod + container start to exit, echo (N=${r.podMs.length})`,
    anchor: 'bare `runsc run` (same flags)', anchorValue: bare,
    ours: 'quark-sandboxer (gVisor, systrap)', oursValue: ours, unit: 'ms', ratio: ratio(ours, bare),
  }];
}

/** The SandboxerRow hook: quick 10 rounds, full 40. */
export async function runQuarkRow(mode: 'quick' | 'full', progress: (msg: string) => void): Promise<RatioRow[]> {
  return quarkRatioRows(await measureQuarkStart(mode === 'quick' ? 10 : 40, progress));
}
