// The short churn-with-crashes run, part of every test run: pods created and removed through containerd 2.1 while the
// runc-sandboxer is SIGKILLed and restarted at random moments, and containerd itself once. Asserts correctness only
// (nothing lost, stuck, misreported or leaked, also no sandbox containerd forgot), never timing. The long run is
// test/reliability.test.ts (opt-in) and `pnpm reliability --full`.
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { cri } from '@kuasar/api';
import { SANDBOXERS, leftoverMounts } from '@kuasar/e2e';
import { CriError, containerdAvailability } from '@kuasar/testkit';
import { BenchStack, CHURN_SIZES, KUASAR_HANDLER, churnFailures, churnSummary, runChurn } from '../src';
import { sleep } from '../src/stack';

// setup (containerd, images) + 60 s of churn + checks: about 2 minutes on this machine
jest.setTimeout(300_000);

const avail = containerdAvailability('2.1');
// eslint-disable-next-line no-console
if ('reason' in avail) console.warn(`skipping churn: ${avail.reason}`);
const maybe = 'bins' in avail ? it : it.skip;
const size = CHURN_SIZES.quick;

maybe(`churn: ${size.pods} pods through CRI for ${size.durationMs / 1000} s with sandboxer kill -9 + restart and a containerd restart`, async () => {
  // The tree's code, bundled the way the e2e suite runs it (the packaged binary is what `pnpm bench` measures).
  const runc = SANDBOXERS.runc!;
  runc.build();
  const report = await runChurn({ ...size, stack: { command: runc.command() } });
  // eslint-disable-next-line no-console
  console.log(churnSummary(report));
  // A run in which nothing was killed proves nothing.
  expect(report.kills).toBeGreaterThan(0);
  expect(report.containerdRestarts).toBe(size.containerdRestarts);
  // lost, stuck, still listed, wrong or unaccounted exits, and every leak (mounts, processes, cgroups, dirs, sockets,
  // shims); the report's lists name each one
  expect(churnFailures(report)).toEqual([]);
  expect(report.podsRemoved).toBe(report.podsCreated);
  expect(report.leaks).toEqual({ mounts: [], processes: [], cgroups: [], stateDirs: [], sockets: [], shims: [] });
});

/** The sandboxer's log from byte `from` on (the log is a file the sandboxer writes line by line). */
function logSince(file: string, from: number): string {
  const size = statSync(file).size;
  if (size <= from) return '';
  const buf = Buffer.alloc(size - from);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, buf.length, from);
  } finally {
    closeSync(fd);
  }
  return buf.toString('utf8');
}

maybe('a kill -9 inside RunPodSandbox: a pod containerd dropped is removed by the sandboxer, a pod it kept is not', async () => {
  const runc = SANDBOXERS.runc!;
  runc.build();
  const stack = await BenchStack.start({ command: runc.command(), logLevel: 'debug' });
  const logFile = path.join(stack.base, 'sandboxer.log');
  const outcomes: string[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const from = statSync(logFile).size;
      const cfg = cri.PodSandboxConfig.fromPartial({
        metadata: { name: `cut-${i}`, uid: `cut-uid-${i}`, namespace: 'default', attempt: 0 },
        linux: { securityContext: { namespaceOptions: { network: cri.NamespaceMode.NODE, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } } },
      });
      const run = stack.client.runPodSandbox(cfg, KUASAR_HANDLER).then((id) => ({ id }), (err: unknown) => ({ err }));
      // Kill the moment Start arrives: the pod is being made, and the reply is not sent yet (alternate rounds give
      // the Start a moment, to land after the reply too).
      let id: string | undefined;
      const deadline = Date.now() + 20_000;
      while (!id && Date.now() < deadline) {
        id = /"method":"Start","sandbox":"([0-9a-f]{64})"/.exec(logSince(logFile, from))?.[1];
        if (!id) await sleep(2);
      }
      expect(id).toBeDefined();
      if (i % 2 === 1) await sleep(80);
      await stack.sb.kill('SIGKILL');
      const res = await run;
      await stack.sb.restart();
      const dir = path.join(stack.sbDir, id!);
      if ('id' in res) {
        // containerd kept it: it must still be there well after the sandboxer's look-ups, then go through CRI
        outcomes.push('kept');
        expect(res.id).toBe(id);
        await sleep(15_000);
        expect(existsSync(dir)).toBe(true);
        await stack.client.stopPodSandbox(id!);
        await stack.client.removePodSandbox(id!);
      } else {
        outcomes.push('dropped');
        expect(res.err).toBeInstanceOf(CriError);
        // containerd holds no record, so nothing will ever Stop or Shut it down: the sandboxer must remove it
        const gone = Date.now() + 30_000;
        while (existsSync(dir) && Date.now() < gone) await sleep(250);
        expect(existsSync(dir)).toBe(false);
        await expect(stack.client.podSandboxStatus(id!)).rejects.toThrow(/not found/i);
      }
      expect(leftoverMounts([stack.sbDir], [id!])).toEqual([]);
    }
    // eslint-disable-next-line no-console
    console.log(`kill -9 inside RunPodSandbox: ${outcomes.join(', ')}`);
    // at least one kill must have cut the reply off, or this proved nothing
    expect(outcomes).toContain('dropped');
  } finally {
    await stack.stop();
  }
});
