import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { credentials, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { cri } from '@kuasar/api';
import { BUSYBOX_IMAGE } from './oci-image';

type DeepPartial<T> = cri.DeepPartial<T>;

export class CriError extends Error {
  override readonly name = 'CriError';
  constructor(
    readonly method: string,
    /** gRPC status code (grpc-js `status`), undefined for client-side errors. */
    readonly code: number | undefined,
    readonly details: string,
  ) {
    super(`CRI ${method} failed${code !== undefined ? ` (${GrpcStatus[code] ?? code})` : ''}: ${details}`);
  }
}

export interface ExecResult {
  stdout: Buffer;
  stderr: Buffer;
  exitCode: number;
}

export interface CriClientOptions {
  /** Deadline of every call unless the method takes its own; default 60 s. */
  timeoutMs?: number;
}

// The generated client has three overloads per method; this is the one we call.
type Unary<Req, Res> = (req: Req, md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null, res: Res) => void) => unknown;

const isNotFound = (err: unknown): boolean => err instanceof CriError && err.code === GrpcStatus.NOT_FOUND;

/**
 * A small CRI (runtime.v1) client: what kubelet does, as promises. Requests are given as partial
 * messages; unset fields get proto3 defaults.
 */
export class CriClient {
  readonly runtime: cri.RuntimeServiceClient;
  readonly images: cri.ImageServiceClient;
  readonly address: string;
  private readonly timeoutMs: number;

  /** `socket` is a unix socket path or a `unix://` address (PrivateContainerd.grpcAddress). */
  constructor(socket: string, opts: CriClientOptions = {}) {
    if (typeof socket !== 'string' || socket === '') throw new TypeError('CriClient: socket path required');
    this.address = socket.startsWith('unix:') ? socket : `unix://${path.resolve(socket)}`;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    const chanOpts = { 'grpc.max_receive_message_length': 16 << 20 };
    this.runtime = new cri.RuntimeServiceClient(this.address, credentials.createInsecure(), chanOpts);
    this.images = new cri.ImageServiceClient(this.address, credentials.createInsecure(), chanOpts);
  }

  close(): void {
    this.runtime.close();
    this.images.close();
  }

  private call<Req, Res>(client: object, method: string, fns: { fromPartial(o: never): Req }, req: DeepPartial<Req>, timeoutMs = this.timeoutMs): Promise<Res> {
    const fn = (client as Record<string, Unary<Req, Res>>)[method];
    const full = (fns.fromPartial as (o: DeepPartial<Req>) => Req)(req);
    return new Promise((resolve, reject) => {
      fn.call(client, full, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res);
      });
    });
  }

  private rt<Req, Res>(method: keyof cri.RuntimeServiceClient, fns: { fromPartial(o: never): Req }, req: DeepPartial<Req>, timeoutMs?: number): Promise<Res> {
    return this.call<Req, Res>(this.runtime, method, fns, req, timeoutMs);
  }

  version(): Promise<cri.VersionResponse> {
    return this.rt('version', cri.VersionRequest, { version: 'v1' });
  }

  status(verbose = false): Promise<cri.StatusResponse> {
    return this.rt('status', cri.StatusRequest, { verbose });
  }

  /**
   * Polls Version+Status until RuntimeReady is true (CRI starts serving shortly after containerd's
   * socket appears). NetworkReady is not required: host-network pods work without CNI.
   */
  async waitReady(timeoutMs = 30_000): Promise<cri.StatusResponse> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      try {
        const st = await this.rt<cri.StatusRequest, cri.StatusResponse>('status', cri.StatusRequest, { verbose: false }, 5_000);
        const rt = st.status?.conditions.find((c) => c.type === 'RuntimeReady');
        if (rt?.status) return st;
        last = `RuntimeReady=${rt?.status} ${rt?.reason ?? ''} ${rt?.message ?? ''}`;
      } catch (err) {
        // containerd serves gRPC only after every plugin loaded, so an unknown service means the
        // CRI plugin failed to load (bad config): waiting will not help.
        if (err instanceof CriError && err.code === GrpcStatus.UNIMPLEMENTED) {
          throw new CriError('Status', err.code, `CRI service not registered (the CRI plugin failed to load; see containerd's log): ${err.details}`);
        }
        last = (err as Error).message;
      }
      await sleep(100);
    }
    throw new CriError('Status', undefined, `CRI not ready within ${timeoutMs} ms: ${last}`);
  }

  async runPodSandbox(config: DeepPartial<cri.PodSandboxConfig>, handler = '', timeoutMs?: number): Promise<string> {
    const res = await this.rt<cri.RunPodSandboxRequest, cri.RunPodSandboxResponse>('runPodSandbox', cri.RunPodSandboxRequest, { config, runtimeHandler: handler }, timeoutMs);
    return res.podSandboxId;
  }

  podSandboxStatus(id: string, verbose = false): Promise<cri.PodSandboxStatusResponse> {
    return this.rt('podSandboxStatus', cri.PodSandboxStatusRequest, { podSandboxId: id, verbose });
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.rt('stopPodSandbox', cri.StopPodSandboxRequest, { podSandboxId: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.rt('removePodSandbox', cri.RemovePodSandboxRequest, { podSandboxId: id });
  }

  async listPodSandbox(filter?: DeepPartial<cri.PodSandboxFilter>): Promise<cri.PodSandbox[]> {
    const res = await this.rt<cri.ListPodSandboxRequest, cri.ListPodSandboxResponse>('listPodSandbox', cri.ListPodSandboxRequest, { filter });
    return res.items;
  }

  async createContainer(podSandboxId: string, config: DeepPartial<cri.ContainerConfig>, sandboxConfig: DeepPartial<cri.PodSandboxConfig>): Promise<string> {
    const res = await this.rt<cri.CreateContainerRequest, cri.CreateContainerResponse>('createContainer', cri.CreateContainerRequest, { podSandboxId, config, sandboxConfig });
    return res.containerId;
  }

  async startContainer(id: string): Promise<void> {
    await this.rt('startContainer', cri.StartContainerRequest, { containerId: id });
  }

  async containerStatus(id: string, verbose = false): Promise<cri.ContainerStatus> {
    const res = await this.rt<cri.ContainerStatusRequest, cri.ContainerStatusResponse>('containerStatus', cri.ContainerStatusRequest, { containerId: id, verbose });
    if (!res.status) throw new CriError('ContainerStatus', undefined, `no status for ${id}`);
    return res.status;
  }

  /** ContainerStatus(verbose): the status plus CRI's info map (key "info": JSON with pid, runtimeSpec, ...). */
  async containerStatusVerbose(id: string): Promise<{ status: cri.ContainerStatus; info: Record<string, string> }> {
    const res = await this.rt<cri.ContainerStatusRequest, cri.ContainerStatusResponse>('containerStatus', cri.ContainerStatusRequest, { containerId: id, verbose: true });
    if (!res.status) throw new CriError('ContainerStatus', undefined, `no status for ${id}`);
    return { status: res.status, info: res.info };
  }

  /** ExecSync; `timeout` is in seconds as in CRI (0 = none). The RPC deadline allows for it. */
  async execSync(id: string, opts: { cmd: string[]; timeout?: number }): Promise<ExecResult> {
    if (!opts || !Array.isArray(opts.cmd) || opts.cmd.length === 0) throw new TypeError('execSync: cmd must be a non-empty array');
    const timeout = opts.timeout ?? 0;
    const deadline = timeout > 0 ? timeout * 1000 + 10_000 : this.timeoutMs;
    const res = await this.rt<cri.ExecSyncRequest, cri.ExecSyncResponse>('execSync', cri.ExecSyncRequest, { containerId: id, cmd: opts.cmd, timeout: BigInt(timeout) }, deadline);
    return { stdout: Buffer.from(res.stdout), stderr: Buffer.from(res.stderr), exitCode: res.exitCode };
  }

  /** StopContainer with a grace period in seconds (SIGTERM, then SIGKILL after it). */
  async stopContainer(id: string, timeoutSec = 10): Promise<void> {
    await this.rt('stopContainer', cri.StopContainerRequest, { containerId: id, timeout: BigInt(timeoutSec) }, timeoutSec * 1000 + this.timeoutMs);
  }

  async removeContainer(id: string): Promise<void> {
    await this.rt('removeContainer', cri.RemoveContainerRequest, { containerId: id });
  }

  async updateContainerResources(id: string, linux: DeepPartial<cri.LinuxContainerResources>): Promise<void> {
    await this.rt('updateContainerResources', cri.UpdateContainerResourcesRequest, { containerId: id, linux });
  }

  async containerStats(id: string): Promise<cri.ContainerStats> {
    const res = await this.rt<cri.ContainerStatsRequest, cri.ContainerStatsResponse>('containerStats', cri.ContainerStatsRequest, { containerId: id });
    if (!res.stats) throw new CriError('ContainerStats', undefined, `no stats for ${id}`);
    return res.stats;
  }

  async listContainers(filter?: DeepPartial<cri.ContainerFilter>): Promise<cri.Container[]> {
    const res = await this.rt<cri.ListContainersRequest, cri.ListContainersResponse>('listContainers', cri.ListContainersRequest, { filter });
    return res.containers;
  }

  /** The image, or undefined when CRI does not know it. */
  async imageStatus(image: string): Promise<cri.Image | undefined> {
    const res = await this.call<cri.ImageStatusRequest, cri.ImageStatusResponse>(this.images, 'imageStatus', cri.ImageStatusRequest, { image: { image } });
    return res.image;
  }

  async listImages(): Promise<cri.Image[]> {
    const res = await this.call<cri.ListImagesRequest, cri.ListImagesResponse>(this.images, 'listImages', cri.ListImagesRequest, {});
    return res.images;
  }

  /** Polls ContainerStatus until EXITED; rejects with CriError on timeout. */
  async waitContainerExit(id: string, timeoutMs = 30_000): Promise<cri.ContainerStatus> {
    const deadline = Date.now() + timeoutMs;
    let st = await this.containerStatus(id);
    while (st.state !== cri.ContainerState.CONTAINER_EXITED) {
      if (Date.now() >= deadline) throw new CriError('ContainerStatus', undefined, `container ${id} still ${cri.containerStateToJSON(st.state)} after ${timeoutMs} ms`);
      await sleep(50);
      st = await this.containerStatus(id);
    }
    return st;
  }

  /** Waits until an image name is visible to CRI (ctr import and CRI's image store sync via events). */
  async waitImage(image: string, timeoutMs = 10_000): Promise<cri.Image> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const img = await this.imageStatus(image);
      if (img) return img;
      if (Date.now() >= deadline) throw new CriError('ImageStatus', GrpcStatus.NOT_FOUND, `image ${image} not visible to CRI after ${timeoutMs} ms`);
      await sleep(50);
    }
  }

  /**
   * RunPodSandbox + CreateContainer + StartContainer, as kubelet does for a one-container pod.
   * Without hostNetwork the pod gets a netns from CRI and an address from CNI. `cleanup()` stops
   * and removes the pod (and so its container); it tolerates a pod that is already gone.
   */
  async runPodWithContainer(opts: RunPodOptions): Promise<PodWithContainer> {
    if (!opts || !Array.isArray(opts.command) || opts.command.length === 0) throw new TypeError('runPodWithContainer: command must be a non-empty array');
    if (typeof opts.logDirectory !== 'string' || !path.isAbsolute(opts.logDirectory)) throw new TypeError('runPodWithContainer: logDirectory must be an absolute path');
    const uid = randomBytes(8).toString('hex');
    const name = opts.name ?? `pod-${uid.slice(0, 6)}`;
    const network = opts.hostNetwork ? cri.NamespaceMode.NODE : cri.NamespaceMode.POD;
    const namespaceOptions = { network, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD };
    const podConfig: DeepPartial<cri.PodSandboxConfig> = {
      metadata: { name, uid, namespace: opts.namespace ?? 'default', attempt: 0 },
      // runc refuses a hostname without a private UTS namespace, which host-network pods lack.
      hostname: opts.hostNetwork ? '' : name,
      logDirectory: opts.logDirectory,
      labels: { 'kuasar.test': 'true', ...(opts.labels ?? {}) },
      linux: { cgroupParent: opts.cgroupParent ?? '', securityContext: { namespaceOptions } },
    };
    const podId = await this.runPodSandbox(podConfig, opts.handler ?? '');
    const cleanup = async (): Promise<void> => {
      for (const step of [() => this.stopPodSandbox(podId), () => this.removePodSandbox(podId)]) {
        try { await step(); } catch (err) { if (!isNotFound(err)) throw err; }
      }
    };
    try {
      const containerName = opts.containerName ?? 'main';
      const containerConfig: DeepPartial<cri.ContainerConfig> = {
        metadata: { name: containerName, attempt: 0 },
        image: { image: opts.image ?? BUSYBOX_IMAGE },
        command: opts.command,
        args: opts.args ?? [],
        envs: Object.entries(opts.env ?? {}).map(([key, value]) => ({ key, value })),
        logPath: `${containerName}.log`,
        linux: { resources: opts.resources, securityContext: { namespaceOptions } },
      };
      const containerId = await this.createContainer(podId, containerConfig, podConfig);
      await this.startContainer(containerId);
      return { podId, containerId, podConfig, containerConfig, logPath: path.join(opts.logDirectory, `${containerName}.log`), cleanup };
    } catch (err) {
      await cleanup().catch(() => undefined);
      throw err;
    }
  }
}

export interface RunPodOptions {
  /** CRI runtime handler; '' = containerd's default (runc). */
  handler?: string;
  /** Default BUSYBOX_IMAGE. */
  image?: string;
  command: string[];
  args?: string[];
  env?: Record<string, string>;
  /** Host network namespace; otherwise CRI makes a netns and runs CNI in it. */
  hostNetwork?: boolean;
  /** Pod log_directory (absolute); the container log is `<logDirectory>/<containerName>.log`. */
  logDirectory: string;
  name?: string;
  namespace?: string;
  containerName?: string;
  labels?: Record<string, string>;
  cgroupParent?: string;
  resources?: DeepPartial<cri.LinuxContainerResources>;
}

export interface PodWithContainer {
  podId: string;
  containerId: string;
  podConfig: DeepPartial<cri.PodSandboxConfig>;
  containerConfig: DeepPartial<cri.ContainerConfig>;
  logPath: string;
  cleanup(): Promise<void>;
}

export interface CriLogLine {
  /** RFC3339Nano, as written. */
  time: string;
  stream: 'stdout' | 'stderr';
  /** P: the text continues in the next entry of this stream (no newline yet). */
  partial: boolean;
  text: string;
}

export class CriLogFormatError extends Error {
  override readonly name = 'CriLogFormatError';
}

const LOG_LINE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})) (stdout|stderr) (F|P) (.*)$/s;

/** Parses a CRI container log: `<RFC3339Nano> <stdout|stderr> <F|P> <text>` per line. */
export function parseCriLog(content: string): CriLogLine[] {
  const lines = content.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((l, i) => {
    const m = LOG_LINE.exec(l);
    if (!m) throw new CriLogFormatError(`CRI log line ${i + 1} is malformed: ${JSON.stringify(l.slice(0, 200))}`);
    return { time: m[1], stream: m[2] as 'stdout' | 'stderr', partial: m[3] === 'P', text: m[4] };
  });
}

export function readCriLog(file: string): CriLogLine[] {
  return parseCriLog(readFileSync(file, 'utf8'));
}

/** Reassembles one stream's bytes from log entries (F ends a line, P does not). */
export function criLogStream(lines: CriLogLine[], stream: 'stdout' | 'stderr'): string {
  return lines.filter((l) => l.stream === stream).map((l) => (l.partial ? l.text : `${l.text}\n`)).join('');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
