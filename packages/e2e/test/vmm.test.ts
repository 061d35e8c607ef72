// microVM pods through a REAL containerd 2.1 with the vmm sandboxer: the kubelet's CRI flow end to end. Each pod is a
// QEMU guest (TCG here: the machines have KVM-PVM only) running the busybox image's containers with crun under the
// vmm-task agent; containerd reaches the sandboxer as a sandbox proxy plugin.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import path from 'node:path';
import { cri } from '@kuasar/api';
import { BUSYBOX_IMAGE, containerdAvailability, criLogStream, readCriLog } from '@kuasar/testkit';
import { vmmGuestDir, vmmSkipReason, type MatrixEntry } from '../src';
import { Stack, eventually, type RunningPod } from './stack';

// a TCG boot takes seconds on a loaded 2-core machine, and every container start is a crun run in the guest
jest.setTimeout(300_000);

const entry: MatrixEntry = { containerd: '2.1', sandboxer: 'vmm' };
const avail = containerdAvailability(entry.containerd);
const reason = 'reason' in avail ? avail.reason : vmmSkipReason();
// eslint-disable-next-line no-console
if (reason) console.warn(`skipping vmm e2e: ${reason}`);
const maybe = reason ? it.skip : it;

describe('containerd 2.1 × vmm-sandboxer', () => {
  const stack = new Stack(entry);

  beforeAll(async () => {
    if (!reason) await stack.start();
  });
  afterAll(async () => {
    if (!reason) await stack.stop();
  });
  beforeEach(() => {
    if (!reason) stack.begin();
  });

  function runPod(o: { command: string[]; hostNetwork: boolean }): Promise<RunningPod> {
    return stack.runPod({ name: 'vm', image: BUSYBOX_IMAGE, timeoutMs: 180_000, ...o });
  }

  async function removePod(p: { podId: string; containerId: string }): Promise<void> {
    await stack.client.stopPodSandbox(p.podId);
    await stack.client.removeContainer(p.containerId);
    await stack.client.removePodSandbox(p.podId);
  }

  maybe('a host-network pod: the guest kernel, CRI log, exit code; the VM is gone after RemovePodSandbox', async () => {
    const pod = await runPod({ hostNetwork: true, command: ['sh', '-c', 'uname -r; echo to-stderr >&2; exit 3'] });
    const st = await stack.client.waitContainerExit(pod.containerId, 120_000);
    expect({ state: st.state, exitCode: st.exitCode }).toEqual({ state: cri.ContainerState.CONTAINER_EXITED, exitCode: 3 });
    const release = (JSON.parse(fs.readFileSync(path.join(vmmGuestDir(), 'manifest.json'), 'utf8')) as { kernel: { release: string } }).kernel.release;
    const lines = await eventually('the CRI log', () => readCriLog(pod.logPath), (l) => l.length >= 2);
    expect({ out: criLogStream(lines, 'stdout'), err: criLogStream(lines, 'stderr') }).toEqual({ out: `${release}\n`, err: 'to-stderr\n' });
    const podSt = await stack.client.podSandboxStatus(pod.podId, false);
    expect(podSt.status?.state).toBe(cri.PodSandboxState.SANDBOX_READY);
    await removePod(pod);
    expect(await stack.client.listPodSandbox({ id: pod.podId })).toEqual([]);
    await stack.expectClean();
  });

  maybe('a CNI pod: the guest has the pod IP and serves it; ExecSync; StopContainer; StopPodSandbox ends the VM', async () => {
    const pod = await runPod({
      hostNetwork: false,
      command: ['sh', '-c', 'trap "exit 7" TERM; mkdir -p /tmp/w; hostname > /tmp/w/index.html; httpd -p 8080 -h /tmp/w; while :; do sleep 1; done'],
    });
    await eventually('running', () => stack.client.containerStatus(pod.containerId), (s) => s.state === cri.ContainerState.CONTAINER_RUNNING, 120_000);
    const ip = (await stack.client.podSandboxStatus(pod.podId, false)).status?.network?.ip ?? '';
    expect(ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    const ex = await stack.client.execSync(pod.containerId, { cmd: ['sh', '-c', `ip -4 addr show | grep -c "inet ${ip}/"; printf '\\000\\377'; exit 4`], timeout: 60 });
    expect({ stdout: ex.stdout.toString('latin1'), exitCode: ex.exitCode }).toEqual({ stdout: '1\n\x00\xff', exitCode: 4 });

    // the host reaches the guest's httpd at the pod IP: the veth is mirrored into the VM
    const page = await eventually('httpd in the guest', () => {
      try {
        return execFileSync('curl', ['-s', '--max-time', '5', `http://${ip}:8080/`], { encoding: 'utf8' });
      } catch {
        return '';
      }
    }, (v) => v !== '', 30_000);
    expect(page.trim()).toMatch(/^vm-[0-9a-f]{12}$/);

    await stack.client.stopContainer(pod.containerId, 10);
    const st = await stack.client.containerStatus(pod.containerId);
    expect({ state: st.state, exitCode: st.exitCode }).toEqual({ state: cri.ContainerState.CONTAINER_EXITED, exitCode: 7 });
    await removePod(pod);
    await stack.expectClean();
  });
});
