// Informational numbers for the closing note, measured in one run on containerd 2.1: pod+container start
// (RunPodSandbox+CreateContainer+StartContainer) and management memory (PSS) at 10 pods, kuasar-runc against
// containerd's default runc handler (containerd-shim-runc-v2 + pause). Printed, not asserted beyond sanity.
import { containerdAvailability, processesMentioning, type PodWithContainer } from '@kuasar/testkit';
import { p50, processTable, pssKiB } from '../src';
import { Stack } from './stack';

jest.setTimeout(600_000);

const N = Number(process.env.E2E_MEASURE_N ?? 10);
const avail = containerdAvailability('2.1');
const maybe = 'bins' in avail ? it : it.skip;
const stack = new Stack({ containerd: '2.1', sandboxer: 'runc' });

beforeAll(async () => {
  if ('bins' in avail) await stack.start();
});
afterAll(async () => {
  if ('bins' in avail) await stack.stop();
});

async function startPod(handler: string, hostNetwork = true): Promise<{ ms: number; pod: PodWithContainer }> {
  const t0 = process.hrtime.bigint();
  const pod = await stack.client.runPodWithContainer({ handler, hostNetwork, logDirectory: stack.logDir(), command: ['sleep', '600'] });
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, pod };
}

/** The runc-v2 shims serving this containerd and the pause processes under them (catatonit from our pause image). */
function runcManagementPids(): { shims: number[]; pauses: number[] } {
  const shims = processesMentioning(stack.ctrd.grpcAddress);
  const procs = processTable();
  const pauses = procs.filter((p) => shims.includes(p.ppid) && p.args[0] === '/catatonit').map((p) => p.pid);
  return { shims, pauses };
}

const results: string[] = [];

maybe(`p50 of pod+container start, kuasar-runc vs runc-v2+pause, N=${N} each, alternating`, async () => {
  const samples: Record<string, number[]> = { [stack.handler]: [], runc: [] };
  // One warm-up each (image unpack, first CNI/cgroup setup), then alternate so load drift hits both alike.
  for (const h of [stack.handler, '']) await (await startPod(h)).pod.cleanup();
  for (let i = 0; i < N; i++) {
    for (const h of [stack.handler, '']) {
      const { ms, pod } = await startPod(h);
      samples[h === '' ? 'runc' : h]!.push(ms);
      await pod.cleanup();
    }
  }
  for (const [h, s] of Object.entries(samples)) {
    expect(s).toHaveLength(N);
    results.push(`containerd 2.1 ${h}: RunPodSandbox+CreateContainer+StartContainer p50 ${p50(s).toFixed(0)} ms (min ${Math.min(...s).toFixed(0)}, max ${Math.max(...s).toFixed(0)})`);
  }
});

maybe('PSS of the management processes at 10 pods: the sandboxer vs runc-v2 shims + pause', async () => {
  const idle = pssKiB(stack.sb.pid!);
  const kuasarPods: PodWithContainer[] = [];
  const runcPods: PodWithContainer[] = [];
  try {
    for (let i = 0; i < 10; i++) kuasarPods.push((await startPod(stack.handler)).pod);
    // The relay is part of kuasar's per-node cost: it is a second (idle) Node process.
    const relay = stack.sb.relayPid();
    const relayPss = relay === undefined ? 0 : pssKiB(relay);
    const sb10 = pssKiB(stack.sb.pid!);
    for (let i = 0; i < 10; i++) runcPods.push((await startPod('')).pod);
    const { shims, pauses } = runcManagementPids();
    expect(shims.length).toBeGreaterThanOrEqual(10);
    expect(pauses).toHaveLength(10);
    const shimPss = shims.reduce((a, p) => a + pssKiB(p), 0);
    const pausePss = pauses.reduce((a, p) => a + pssKiB(p), 0);
    const mb = (k: number): string => `${(k / 1024).toFixed(1)} MB`;
    results.push(`PSS at 10 pods: kuasar runc-sandboxer ${mb(sb10)} (idle ${mb(idle)}) + task relay ${mb(relayPss)} = ${mb(sb10 + relayPss)} vs runc-v2: ${shims.length} shims ${mb(shimPss)} + ${pauses.length} pause ${mb(pausePss)} = ${mb(shimPss + pausePss)}`);
  } finally {
    for (const p of [...kuasarPods, ...runcPods]) await p.cleanup().catch(() => undefined);
  }
});

afterAll(() => {
  // eslint-disable-next-line no-console
  if (results.length > 0) console.log(results.join('\n'));
});
