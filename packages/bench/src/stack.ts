// One private containerd 2.1 with BOTH CRI handlers: its default `runc` (runc-v2 shim + pause container, the anchor)
// and `kuasar-runc` (sandbox proxy plugin → a resident runc-sandboxer). Assembled like packages/e2e/test/stack.ts.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { cri } from '@kuasar/api';
import { REPO_ROOT, SandboxerProcess, handlerName, kuasarContainerdConfig, leftoverMounts, processTable } from '@kuasar/e2e';
import { BUSYBOX_IMAGE, CriClient, CriError, PAUSE_IMAGE, PrivateContainerd, importTestImages, processesMentioning, type PodWithContainer } from '@kuasar/testkit';

export const RUNC_HANDLER = '';
export const KUASAR_HANDLER = handlerName('runc');

/** The packaged single-file runc-sandboxer (`pnpm build`). */
export const SEA_BINARY = path.join(REPO_ROOT, 'dist/bin/runc-sandboxer');

export class StackError extends Error {
  override readonly name = 'StackError';
}

export interface BenchStackOptions {
  /** argv of the sandboxer before the framework flags; default the SEA binary. */
  command?: string[];
  logLevel?: 'debug' | 'info' | 'warn';
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class BenchStack {
  ctrd!: PrivateContainerd;
  sb!: SandboxerProcess;
  client!: CriClient;
  readonly base: string;

  private constructor() {
    // Short: the task socket path lives under it and must fit a unix socket address.
    this.base = mkdtempSync('/tmp/kbench-');
    mkdirSync(path.join(this.base, 'logs'));
  }

  get sbDir(): string {
    return path.join(this.base, 'sb');
  }

  static async start(opts: BenchStackOptions = {}): Promise<BenchStack> {
    const command = opts.command ?? [SEA_BINARY];
    if (!existsSync(command[0]!)) throw new StackError(`${command[0]} is missing: run \`pnpm build\` first`);
    const s = new BenchStack();
    try {
      const listen = path.join(s.base, 'sb.sock');
      s.ctrd = await PrivateContainerd.start({ version: '2.1', extraConfig: kuasarContainerdConfig('2.1', 'runc', listen) });
      s.sb = await SandboxerProcess.start({
        kind: 'runc', command, listen, dir: s.sbDir, ttrpcAddress: s.ctrd.ttrpcAddress,
        logPath: path.join(s.base, 'sandboxer.log'), logLevel: opts.logLevel ?? 'info',
      });
      s.client = new CriClient(s.ctrd.grpcAddress);
      await s.client.waitReady();
      await importTestImages(s.ctrd);
      await s.client.waitImage(BUSYBOX_IMAGE);
      await s.client.waitImage(PAUSE_IMAGE);
    } catch (err) {
      await s.stop();
      throw err;
    }
    return s;
  }

  logDir(): string {
    return mkdtempSync(path.join(this.base, 'logs', 'pod-'));
  }

  /** Removes every pod CRI still lists, then stops containerd and the sandboxer (and its relay). */
  async stop(): Promise<void> {
    if (this.client) {
      for (const p of await this.client.listPodSandbox().catch(() => [])) {
        await this.client.stopPodSandbox(p.id).catch(() => undefined);
        await this.client.removePodSandbox(p.id).catch(() => undefined);
      }
      this.client.close();
    }
    await this.ctrd?.stop();
    await this.sb?.stopAll();
    if (leftoverMounts([this.base], []).length === 0) rmSync(this.base, { recursive: true, force: true });
  }

  /**
   * RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus until RUNNING: the time kubelet waits
   * before a pod's container is up. Host network, so CNI is not part of what is measured.
   */
  async startPod(handler: string, command: string[] = ['sleep', '3600']): Promise<{ ms: number; pod: PodWithContainer }> {
    const t0 = process.hrtime.bigint();
    const pod = await this.client.runPodWithContainer({ handler, hostNetwork: true, logDirectory: this.logDir(), command });
    for (;;) {
      const st = await this.client.containerStatus(pod.containerId);
      if (st.state === cri.ContainerState.CONTAINER_RUNNING) break;
      if (st.state !== cri.ContainerState.CONTAINER_CREATED) {
        await pod.cleanup().catch(() => undefined);
        throw new CriError('ContainerStatus', undefined, `container ${pod.containerId} is ${cri.containerStateToJSON(st.state)}, not RUNNING`);
      }
      await sleep(5);
    }
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, pod };
  }

  /** The runc-v2 shims serving this containerd and the pause processes (catatonit) they started. */
  runcManagementPids(): { shims: number[]; pauses: number[] } {
    const shims = processesMentioning(this.ctrd.grpcAddress);
    const pauses = processTable().filter((p) => shims.includes(p.ppid) && p.args[0] === '/catatonit').map((p) => p.pid);
    return { shims, pauses };
  }
}
