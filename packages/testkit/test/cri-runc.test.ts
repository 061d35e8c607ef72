// End-to-end CRI against a real private containerd with its DEFAULT runc handler (the anchor the
// kuasar sandboxers are compared against): images imported from local OCI archives, pods on the
// host network and on a CNI bridge, exec, logs, stop grace, resource update, stats, teardown.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cri } from '@kuasar/api';
import { isRunning } from '@kuasar/sys';
import {
  BUSYBOX_IMAGE,
  CONTAINERD_VERSIONS,
  CriClient,
  CriError,
  PAUSE_IMAGE,
  PrivateContainerd,
  containerdAvailability,
  createCniSetup,
  criConfig,
  criLogStream,
  importTestImages,
  mountsUnder,
  processesMentioning,
  readCriLog,
  type BuiltImage,
  type CniSetup,
  type ContainerdVersion,
} from '../src';

jest.setTimeout(180_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x))}`);
    await sleep(100);
    v = await fn();
  }
  return v;
}

/** Pid and netns path CRI reports in the verbose status info (JSON under key "info"). */
function verboseInfo(info: Record<string, string>): { pid?: number; netns?: string } {
  const raw = info.info;
  if (!raw) return {};
  const j = JSON.parse(raw) as { pid?: number; runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } } };
  const netns = j.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  return { pid: j.pid, netns };
}

const ORDER: ContainerdVersion[] = ['2.1', '1.7', '1.6'];

describe.each(ORDER.filter((v) => CONTAINERD_VERSIONS.includes(v)).map((v) => [v]))('CRI with default runc, containerd %s', (version: ContainerdVersion) => {
  const avail = containerdAvailability(version);
  if ('reason' in avail) {
    // eslint-disable-next-line no-console
    console.warn(`skipping containerd ${version}: ${avail.reason}`);
  }
  const maybe = 'bins' in avail ? it : it.skip;

  let ctrd: PrivateContainerd;
  let client: CriClient;
  let cni: CniSetup;
  let logRoot: string;
  let images: { busybox: BuiltImage; pause: BuiltImage };

  beforeAll(async () => {
    if (!('bins' in avail)) return;
    cni = createCniSetup();
    logRoot = mkdtempSync(path.join(os.tmpdir(), 'kcri-logs-'));
    // A second handler the way a later engineer adds kuasar's: one entry in `runtimes`.
    const runtimes = { 'runc-alias': { runtime_type: 'io.containerd.runc.v2' } };
    ctrd = await PrivateContainerd.start({ version, extraConfig: criConfig(version, { cni, runtimes }) });
    client = new CriClient(ctrd.grpcAddress);
    try {
      await client.waitReady();
    } catch (err) {
      (err as Error).message += `\n--- containerd log ---\n${ctrd.logs().split('\n').slice(-30).join('\n')}`;
      throw err;
    }
    images = await importTestImages(ctrd);
    await client.waitImage(BUSYBOX_IMAGE);
    await client.waitImage(PAUSE_IMAGE);
  });

  afterAll(async () => {
    if (!('bins' in avail)) return;
    client?.close();
    await ctrd?.stop();
    cni?.cleanup();
    if (logRoot) rmSync(logRoot, { recursive: true, force: true });
  });

  const logDir = (): string => mkdtempSync(path.join(logRoot, 'pod-'));

  maybe('reports version, readiness and the imported images', async () => {
    const v = await client.version();
    expect(v.runtimeName).toBe('containerd');
    expect(v.runtimeApiVersion).toBe('v1');
    expect(v.runtimeVersion).toMatch(new RegExp(`^v?${version.replace('.', '\\.')}\\.`));
    const st = await client.status();
    const cond = Object.fromEntries(st.status!.conditions.map((c) => [c.type, c.status]));
    expect(cond).toMatchObject({ RuntimeReady: true, NetworkReady: true });
    const bb = await client.imageStatus(BUSYBOX_IMAGE);
    expect(bb?.id).toBe(images.busybox.configDigest);
    expect(bb?.repoTags).toContain(BUSYBOX_IMAGE);
    expect((await client.imageStatus(PAUSE_IMAGE))?.id).toBe(images.pause.configDigest);
    expect(await client.imageStatus('docker.io/kuasar/absent:latest')).toBeUndefined();
  });

  maybe('host-network pod: run, exec, logs, update, stats, stop with grace, teardown', async () => {
    const dir = logDir();
    const pod = await client.runPodWithContainer({
      hostNetwork: true,
      logDirectory: dir,
      command: ['sh', '-c', 'echo hello; echo err >&2; sleep 30'],
    });
    let cleaned = false;
    try {
      const podSt = await client.podSandboxStatus(pod.podId, true);
      expect(podSt.status?.state).toBe(cri.PodSandboxState.SANDBOX_READY);
      expect(podSt.status?.linux?.namespaces?.options?.network).toBe(cri.NamespaceMode.NODE);
      const podPid = verboseInfo(podSt.info).pid;
      expect(podPid).toBeGreaterThan(0);
      // The pause container really is catatonit from our pause image.
      expect(readFileSync(`/proc/${podPid}/cmdline`, 'utf8').split('\0')).toEqual(['/catatonit', '-P', '']);

      const { status: cst, info: cinfo } = await client.containerStatusVerbose(pod.containerId);
      expect(cst.state).toBe(cri.ContainerState.CONTAINER_RUNNING);
      expect(cst.image?.image).toBe(BUSYBOX_IMAGE);
      expect(cst.logPath).toBe(pod.logPath);
      const ctrPid = verboseInfo(cinfo).pid!;
      expect(isRunning(ctrPid)).toBe(true);

      // ExecSync returns both streams and the exit code unchanged.
      const r = await client.execSync(pod.containerId, { cmd: ['sh', '-c', 'printf out; printf err >&2; exit 3'], timeout: 10 });
      expect(r.stdout.toString('latin1')).toBe('out');
      expect(r.stderr.toString('latin1')).toBe('err');
      expect(r.exitCode).toBe(3);
      const bin = await client.execSync(pod.containerId, { cmd: ['printf', '\\000\\377\\n'] });
      expect([...bin.stdout]).toEqual([0, 0xff, 0x0a]);
      expect(bin.exitCode).toBe(0);
      // Host network: the container sees the host's interfaces.
      const ifs = await client.execSync(pod.containerId, { cmd: ['ls', '/sys/class/net'] });
      expect(ifs.stdout.toString().split(/\s+/)).toEqual(expect.arrayContaining(['lo', ...os_ifaces().filter((i) => i !== 'lo').slice(0, 1)]));
      await expect(client.execSync(pod.containerId, { cmd: ['/no/such/binary'] })).rejects.toBeInstanceOf(CriError);

      // The container's output lands in the CRI log file, one entry per line, per stream.
      const lines = await eventually('log lines', () => (existsSync(pod.logPath) ? readCriLog(pod.logPath) : []), (l) => l.length >= 2);
      expect(criLogStream(lines, 'stdout')).toBe('hello\n');
      expect(criLogStream(lines, 'stderr')).toBe('err\n');
      for (const l of lines) expect(Number.isNaN(Date.parse(l.time))).toBe(false);

      // UpdateContainerResources reaches the container's memory cgroup.
      const limit = 96 * 1024 * 1024;
      await client.updateContainerResources(pod.containerId, { memoryLimitInBytes: limit });
      const seen = await client.execSync(pod.containerId, { cmd: ['cat', '/sys/fs/cgroup/memory/memory.limit_in_bytes'] });
      expect(seen.exitCode).toBe(0);
      expect(Number(seen.stdout.toString().trim())).toBe(limit);

      const stats = await client.containerStats(pod.containerId);
      expect(stats.attributes?.id).toBe(pod.containerId);
      expect(Number(stats.memory?.workingSetBytes?.value ?? 0n) + Number(stats.memory?.usageBytes?.value ?? 0n)).toBeGreaterThan(0);

      const listed = await client.listContainers({ podSandboxId: pod.podId });
      expect(listed.map((c) => c.id)).toEqual([pod.containerId]);

      // sh as pid 1 ignores SIGTERM, so StopContainer must wait out the grace period and SIGKILL.
      const t0 = Date.now();
      await client.stopContainer(pod.containerId, 2);
      const took = Date.now() - t0;
      expect(took).toBeGreaterThanOrEqual(1_900);
      expect(took).toBeLessThan(15_000);
      const exited = await client.waitContainerExit(pod.containerId, 5_000);
      expect(exited.exitCode).toBe(137);
      expect(exited.finishedAt).toBeGreaterThan(exited.startedAt);
      await eventually('container process gone', () => isRunning(ctrPid), (a) => !a);

      await client.stopPodSandbox(pod.podId);
      expect((await client.podSandboxStatus(pod.podId)).status?.state).toBe(cri.PodSandboxState.SANDBOX_NOTREADY);
      await eventually('pause process gone', () => isRunning(podPid!), (a) => !a);
      await client.removePodSandbox(pod.podId);
      cleaned = true;
      await expect(client.podSandboxStatus(pod.podId)).rejects.toMatchObject({ code: 5 /* NOT_FOUND */ });
      expect(await client.listPodSandbox({ id: pod.podId })).toEqual([]);
      expect(await client.listContainers({ podSandboxId: pod.podId })).toEqual([]);
      await expectNoLeftovers(ctrd, [pod.podId, pod.containerId]);
    } finally {
      if (!cleaned) await pod.cleanup();
    }
  });

  maybe('CNI pod: own netns with an address from the bridge, graceful stop, netns removed', async () => {
    const dir = logDir();
    const pod = await client.runPodWithContainer({
      logDirectory: dir,
      name: 'cnipod',
      command: ['sh', '-c', 'trap "echo bye; exit 7" TERM; echo hello; echo err >&2; while :; do sleep 1; done'],
    });
    let cleaned = false;
    try {
      const podSt = await client.podSandboxStatus(pod.podId, true);
      expect(podSt.status?.state).toBe(cri.PodSandboxState.SANDBOX_READY);
      const ip = podSt.status?.network?.ip ?? '';
      const prefix = cni.subnet.replace(/\.0\/24$/, '.');
      expect(ip.startsWith(prefix)).toBe(true);
      const netns = verboseInfo(podSt.info).netns ?? '';
      expect(netns).not.toBe('');
      expect(existsSync(netns)).toBe(true);

      const addr = await client.execSync(pod.containerId, { cmd: ['ip', '-4', '-o', 'addr', 'show', 'eth0'] });
      expect(addr.stdout.toString()).toContain(`inet ${ip}/24`);
      const host = await client.execSync(pod.containerId, { cmd: ['hostname'] });
      expect(host.stdout.toString()).toBe('cnipod\n');
      // The host's eth0 is not visible: the pod really has its own network namespace.
      const ifs = (await client.execSync(pod.containerId, { cmd: ['ls', '/sys/class/net'] })).stdout.toString().split(/\s+/).filter(Boolean).sort();
      expect(ifs).toEqual(['eth0', 'lo']);
      const ping = await client.execSync(pod.containerId, { cmd: ['ping', '-c', '1', '-W', '3', cni.gateway], timeout: 10 });
      expect(ping.exitCode).toBe(0);
      expect(existsSync(`/sys/class/net/${cni.bridge}`)).toBe(true);

      // The TERM trap runs, so the container exits with its own code well inside the grace period.
      const t0 = Date.now();
      await client.stopContainer(pod.containerId, 20);
      expect(Date.now() - t0).toBeLessThan(10_000);
      const st = await client.waitContainerExit(pod.containerId, 5_000);
      expect(st.exitCode).toBe(7);
      const lines = await eventually('bye in log', () => readCriLog(pod.logPath), (l) => criLogStream(l, 'stdout').includes('bye'));
      expect(criLogStream(lines, 'stdout')).toBe('hello\nbye\n');
      expect(criLogStream(lines, 'stderr')).toBe('err\n');

      await client.stopPodSandbox(pod.podId);
      await client.removePodSandbox(pod.podId);
      cleaned = true;
      expect(existsSync(netns)).toBe(false);
      // host-local released the lease.
      const leases = await eventually('lease released', () => leaseFiles(cni.ipamDataDir), (l) => !l.includes(ip));
      expect(leases).not.toContain(ip);
      await expectNoLeftovers(ctrd, [pod.podId, pod.containerId]);
    } finally {
      if (!cleaned) await pod.cleanup();
    }
  });

  maybe('an extra handler from criConfig({runtimes}) runs pods', async () => {
    const pod = await client.runPodWithContainer({ handler: 'runc-alias', hostNetwork: true, logDirectory: logDir(), command: ['sh', '-c', 'echo via-alias; printf tail; sleep 30'] });
    try {
      expect((await client.podSandboxStatus(pod.podId)).status?.runtimeHandler).toBe('runc-alias');
      expect((await client.listPodSandbox({ id: pod.podId })).map((p) => p.runtimeHandler)).toEqual(['runc-alias']);
      const r = await client.execSync(pod.containerId, { cmd: ['sh', '-c', 'echo $((6*7))'] });
      expect(r.stdout.toString()).toBe('42\n');
      const lines = await eventually('log', () => (existsSync(pod.logPath) ? readCriLog(pod.logPath) : []), (l) => l.length >= 1);
      expect(criLogStream(lines, 'stdout')).toBe('via-alias\n');
      // Output without a newline is logged once the stream closes, as a partial (P) entry.
      await client.stopContainer(pod.containerId, 0);
      const all = await eventually('partial entry', () => readCriLog(pod.logPath), (l) => l.length >= 2);
      expect(criLogStream(all, 'stdout')).toBe('via-alias\ntail');
      expect(all.map((l) => [l.stream, l.partial, l.text])).toEqual([['stdout', false, 'via-alias'], ['stdout', true, 'tail']]);
    } finally {
      await pod.cleanup();
    }
    expect(await client.listPodSandbox({ id: pod.podId })).toEqual([]);
    await expectNoLeftovers(ctrd, [pod.podId, pod.containerId]);
  });

  maybe('bad input gets a CRI error, not a hang', async () => {
    await expect(client.runPodSandbox({ metadata: { name: 'x', uid: 'u', namespace: 'default' } }, 'no-such-handler')).rejects.toBeInstanceOf(CriError);
    await expect(client.containerStatus('does-not-exist')).rejects.toMatchObject({ code: 5 });
    await expect(client.execSync('does-not-exist', { cmd: ['true'] })).rejects.toBeInstanceOf(CriError);
    await expect(client.execSync('x', { cmd: [] })).rejects.toBeInstanceOf(TypeError);
    const dir = logDir();
    await expect(client.runPodWithContainer({ hostNetwork: true, logDirectory: dir, image: 'docker.io/kuasar/absent:latest', command: ['true'] }))
      .rejects.toBeInstanceOf(CriError);
    // The failed attempt's pod was cleaned up.
    expect((await client.listPodSandbox()).filter((p) => p.state === cri.PodSandboxState.SANDBOX_READY)).toEqual([]);
  });

  if (version === '2.1') {
    maybe('timing: CRI pod + container start with runc (informational)', async () => {
      const samples: number[] = [];
      for (let i = 0; i < 7; i++) {
        const dir = logDir();
        const t0 = process.hrtime.bigint();
        const pod = await client.runPodWithContainer({ hostNetwork: true, logDirectory: dir, command: ['sleep', '30'] });
        samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
        await pod.cleanup();
      }
      samples.sort((a, b) => a - b);
      const p50 = samples[Math.floor(samples.length / 2)];
      // eslint-disable-next-line no-console
      console.log(`containerd ${version} runc: RunPodSandbox+CreateContainer+StartContainer p50 ${p50.toFixed(0)} ms (samples ${samples.map((s) => s.toFixed(0)).join(', ')})`);
      expect(p50).toBeGreaterThan(0);
      await expectNoLeftovers(ctrd, []);
    });
  }
});

function os_ifaces(): string[] {
  return Object.keys(os.networkInterfaces());
}

function leaseFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else out.push(e.name);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

/** No shim left for the pod, no mount naming its ids, no process mentioning them. */
async function expectNoLeftovers(ctrd: PrivateContainerd, ids: string[]): Promise<void> {
  await eventually('shims gone', () => processesMentioning(ctrd.grpcAddress), (p) => p.length === 0);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  for (const id of ids) {
    expect(mounts.filter((m) => m.includes(id))).toEqual([]);
  }
  // Only containerd's own long-lived mounts (none by default) may remain under its dir.
  expect(mountsUnder(ctrd.dir).filter((m) => /\/(rootfs|shm|netns|sandboxes)\b/.test(m))).toEqual([]);
}
