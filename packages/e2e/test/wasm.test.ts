// WASI pods through a REAL containerd with the wasm sandboxer, the kubelet's CRI flow end to end: 2.1 reaches the
// sandboxer as a sandbox proxy plugin, 1.6 and 1.7 through the thin shim containerd-shim-kuasar-wasm-v2 (CRI's pause
// container then arrives as a task, which the wasm engine holds as a placeholder). `ctr run --rm` has no pod on any
// version, so it takes the thin shim everywhere. The image is testkit's runwasi-style WASM_IMAGE: CMD ["/hello.wasm"]
// plus /fail.wasm and /sleep.wasm.
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { cri } from '@kuasar/api';
import {
  CriError, CtrError, WASM_IMAGE, WASM_IMAGE_OUTPUT, containerdAvailability, criLogStream, importImage, readCriLog, wasmImage,
} from '@kuasar/testkit';
import { runtimeType, shimBinaryName } from '@kuasar/shim';
import { shimEnv, usesShim, type MatrixEntry } from '../src';
import { Stack, eventually, type RunningPod } from './stack';

jest.setTimeout(240_000);

const MATRIX: MatrixEntry[] = [
  { containerd: '2.1', sandboxer: 'wasm' },
  { containerd: '1.7', sandboxer: 'wasm' },
  { containerd: '1.6', sandboxer: 'wasm' },
];
/** `ctr run` tasks live outside CRI's namespace, as a user's would */
const CTR_NS = 'default';

describe.each(MATRIX.map((e) => [`containerd ${e.containerd} × wasm-sandboxer`, e] as const))('%s', (_name, entry) => {
  const avail = containerdAvailability(entry.containerd);
  // eslint-disable-next-line no-console
  if ('reason' in avail) console.warn(`skipping containerd ${entry.containerd}: ${avail.reason}`);
  const maybe = 'bins' in avail ? it : it.skip;
  const stack = new Stack(entry);

  beforeAll(async () => {
    if (!('bins' in avail)) return;
    await stack.start();
    await importImage(stack.ctrd, wasmImage().tarPath);
    await importImage(stack.ctrd, wasmImage().tarPath, { namespace: CTR_NS });
    await stack.client.waitImage(WASM_IMAGE);
  });
  afterAll(async () => {
    if ('bins' in avail) await stack.stop();
  });
  beforeEach(() => {
    if ('bins' in avail) stack.begin();
  });

  /** A pod with one container of WASM_IMAGE, on the host network unless told; no `command` runs the image's CMD (/hello.wasm). */
  function runWasmPod(o: { command?: string[]; hostNetwork?: boolean } = {}): Promise<RunningPod> {
    return stack.runPod({ name: 'wasm', image: WASM_IMAGE, command: o.command ?? [], hostNetwork: o.hostNetwork !== false });
  }

  async function removePod(p: { podId: string; containerId: string }): Promise<void> {
    await stack.client.removeContainer(p.containerId);
    await stack.client.stopPodSandbox(p.podId);
    await stack.client.removePodSandbox(p.podId);
  }

  /** The CRI log once containerd has copied everything the container wrote (it closes the log at exit). */
  async function logStreams(logPath: string, want: { stdout: string; stderr: string }): Promise<{ stdout: string; stderr: string }> {
    return eventually('the CRI log', () => {
      const lines = readCriLog(logPath);
      return { stdout: criLogStream(lines, 'stdout'), stderr: criLogStream(lines, 'stderr') };
    }, (v) => v.stdout === want.stdout && v.stderr === want.stderr, 5_000).catch(() => {
      const lines = readCriLog(logPath);
      return { stdout: criLogStream(lines, 'stdout'), stderr: criLogStream(lines, 'stderr') };
    });
  }

  maybe("the image's CMD (/hello.wasm): output in the CRI log, exit 0, the pod Ready, then stop/remove with nothing left", async () => {
    const pod = await runWasmPod();
    const podSt = await stack.client.podSandboxStatus(pod.podId, false);
    expect(podSt.status?.state).toBe(cri.PodSandboxState.SANDBOX_READY);
    expect(podSt.status?.runtimeHandler).toBe(stack.handler);
    const st = await stack.client.waitContainerExit(pod.containerId);
    expect({ state: st.state, exitCode: st.exitCode, image: st.image?.image })
      .toEqual({ state: cri.ContainerState.CONTAINER_EXITED, exitCode: 0, image: WASM_IMAGE });
    const want = WASM_IMAGE_OUTPUT['hello.wasm']!;
    expect(await logStreams(pod.logPath, want)).toEqual({ stdout: want.stdout, stderr: want.stderr });
    // the pod outlives its exited container
    expect((await stack.client.podSandboxStatus(pod.podId, false)).status?.state).toBe(cri.PodSandboxState.SANDBOX_READY);
    await removePod(pod);
    expect(await stack.client.listPodSandbox({ id: pod.podId })).toEqual([]);
    await stack.expectClean();
  });

  maybe('a module that fails: its stderr in the CRI log and its proc_exit code as the exit code', async () => {
    const pod = await runWasmPod({ command: ['/fail.wasm'] });
    const st = await stack.client.waitContainerExit(pod.containerId);
    const want = WASM_IMAGE_OUTPUT['fail.wasm']!;
    expect({ state: st.state, exitCode: st.exitCode }).toEqual({ state: cri.ContainerState.CONTAINER_EXITED, exitCode: want.exitCode });
    expect(await logStreams(pod.logPath, want)).toEqual({ stdout: want.stdout, stderr: want.stderr });
    await removePod(pod);
    await stack.expectClean();
  });

  maybe('a running container (CNI pod): ExecSync runs other modules of the image, StopContainer ends it (143)', async () => {
    const pod = await runWasmPod({ command: ['/sleep.wasm'], hostNetwork: false });
    await eventually('sleep.wasm running', () => stack.client.containerStatus(pod.containerId), (s) => s.state === cri.ContainerState.CONTAINER_RUNNING);
    const hello = await stack.client.execSync(pod.containerId, { cmd: ['/hello.wasm'], timeout: 10 });
    expect({ stdout: hello.stdout.toString(), stderr: hello.stderr.toString(), exitCode: hello.exitCode })
      .toEqual({ stdout: 'hello from wasm\n', stderr: '', exitCode: 0 });
    const fail = await stack.client.execSync(pod.containerId, { cmd: ['/fail.wasm'], timeout: 10 });
    expect({ stdout: fail.stdout.toString(), stderr: fail.stderr.toString(), exitCode: fail.exitCode })
      .toEqual({ stdout: '', stderr: 'failing with 7\n', exitCode: 7 });
    // a module that is not in the image: the exec fails, the container keeps running
    await expect(stack.client.execSync(pod.containerId, { cmd: ['/no-such.wasm'], timeout: 10 })).rejects.toBeInstanceOf(CriError);
    expect((await stack.client.containerStatus(pod.containerId)).state).toBe(cri.ContainerState.CONTAINER_RUNNING);

    // a module cannot catch SIGTERM: Stop ends it at once, well inside the grace period
    const t0 = Date.now();
    await stack.client.stopContainer(pod.containerId, 10);
    expect(Date.now() - t0).toBeLessThan(5_000);
    const st = await stack.client.containerStatus(pod.containerId);
    expect({ state: st.state, exitCode: st.exitCode }).toEqual({ state: cri.ContainerState.CONTAINER_EXITED, exitCode: 143 });
    expect(await logStreams(pod.logPath, WASM_IMAGE_OUTPUT['sleep.wasm']!)).toEqual({ stdout: 'sleeping\n', stderr: '' });
    await removePod(pod);
    await stack.expectClean([/ExecSync for .* failed.*module \/no-such\.wasm not found/]); // the exec we made fail
  });

  maybe('StopPodSandbox ends a running container of the pod; RemovePodSandbox then removes everything', async () => {
    const pod = await runWasmPod({ command: ['/sleep.wasm'] });
    await eventually('sleep.wasm running', () => stack.client.containerStatus(pod.containerId), (s) => s.state === cri.ContainerState.CONTAINER_RUNNING);
    await stack.client.stopPodSandbox(pod.podId);
    const st = await stack.client.containerStatus(pod.containerId);
    expect(st.state).toBe(cri.ContainerState.CONTAINER_EXITED);
    // SIGTERM or, if containerd went straight to it, SIGKILL
    expect([143, 137]).toContain(st.exitCode);
    expect((await stack.client.podSandboxStatus(pod.podId, false)).status?.state).toBe(cri.PodSandboxState.SANDBOX_NOTREADY);
    await stack.client.removePodSandbox(pod.podId);
    expect(await stack.client.listContainers({ podSandboxId: pod.podId })).toEqual([]);
    await stack.expectClean();
  });

  /**
   * The runtime `ctr run --runtime` names. 1.x: the shim's runtime type (containerd has the thin shim on PATH and its
   * task socket in the environment). 2.1 has neither, because CRI pods need no shim there, so ctr names a shim binary
   * by absolute path: a wrapper with the right basename that sets the socket and execs the thin shim.
   */
  function ctrRuntime(): string {
    if (usesShim(entry.containerd)) return runtimeType('wasm');
    const dir = path.join(stack.base, 'ctr-shim');
    const wrapper = path.join(dir, shimBinaryName('wasm'));
    if (!existsSync(wrapper)) {
      mkdirSync(dir, { recursive: true });
      const [name, value] = Object.entries(shimEnv('wasm', path.join(stack.sbDir, 'relay.sock')))[0]!;
      writeFileSync(wrapper, `#!/bin/sh\n${name}='${value}' exec '${path.join(stack.relayDir, shimBinaryName('wasm'))}' "$@"\n`);
      chmodSync(wrapper, 0o755);
    }
    return wrapper;
  }

  maybe('ctr run --rm: stdout byte for byte, args reach the module, its exit code is ctr\'s, nothing left behind', async () => {
    const id = `ctr-${randomBytes(4).toString('hex')}`;
    stack.ids.push(id, `${id}-fail`);
    const run = (cid: string, args: string[] = []) =>
      stack.ctrd.ctr(['run', '--rm', '--runtime', ctrRuntime(), WASM_IMAGE, cid, ...args], { namespace: CTR_NS, timeoutMs: 60_000 });
    // the image's CMD, twice: the second run finds the module compiled and the id free again
    for (let i = 0; i < 2; i++) expect(await run(id)).toEqual({ stdout: WASM_IMAGE_OUTPUT['hello.wasm']!.stdout, stderr: '' });
    const want = WASM_IMAGE_OUTPUT['fail.wasm']!;
    const err = await run(`${id}-fail`, ['/fail.wasm']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CtrError);
    const failed = err as CtrError;
    expect({ exitCode: failed.exitCode, stdout: failed.stdout, stderr: failed.stderr.slice(0, want.stderr.length) })
      .toEqual({ exitCode: want.exitCode, stdout: want.stdout, stderr: want.stderr });
    // --rm removed the containers and their tasks; the sandboxer kept no record of them
    for (const what of ['containers', 'tasks']) {
      expect((await stack.ctrd.ctr([what, 'ls', '-q'], { namespace: CTR_NS })).stdout.trim()).toBe('');
    }
    const records = path.join(stack.sbDir, 'tasks', CTR_NS);
    expect(existsSync(records) ? readdirSync(records) : []).toEqual([]);
    await stack.expectClean();
  });

  if (usesShim(entry.containerd)) {
    maybe("1.x: CRI's pause container is a task of the sandboxer that runs no module", async () => {
      const pod = await runWasmPod({ command: ['/sleep.wasm'] });
      const { stdout } = await stack.ctrd.ctr(['tasks', 'ls'], { namespace: 'k8s.io' });
      const rows = stdout.split('\n').slice(1).filter(Boolean).map((l) => l.trim().split(/\s+/));
      // TASK PID STATUS: both tasks RUNNING with pid 0 (modules are threads of the sandboxer, the pause is nothing)
      expect(rows.map((r) => [r[0], r[1], r[2]]).sort()).toEqual([[pod.containerId, '0', 'RUNNING'], [pod.podId, '0', 'RUNNING']].sort());
      await stack.client.stopContainer(pod.containerId, 2);
      await removePod(pod);
      await stack.expectClean();
    });
  }
});
