// Test harness: a real Controller server on a real unix socket, driven by a grpc-js client from @kuasar/api.
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, packAny, sandboxApi } from '@kuasar/api';
import { OciCliEngine } from '@kuasar/task';
import { createLogger, defineConfig, serveController, type SandboxerSpec, type ServingSandboxer } from '../src';
import { SleepKind } from './sleep-kind';

export interface LogLine {
  level: string;
  msg: string;
  sandbox?: string;
  [key: string]: unknown;
}

export class LogCapture {
  readonly lines: LogLine[] = [];
  write(chunk: string): void {
    for (const l of chunk.split('\n')) if (l) this.lines.push(JSON.parse(l) as LogLine);
  }
  find(msg: string | RegExp, sandbox?: string): LogLine | undefined {
    return this.lines.find((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)) && (!sandbox || l.sandbox === sandbox));
  }
}

const tempDirs: string[] = [];

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

// Registered for every test file that uses the harness (tests shut their sandboxes down first).
afterAll(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

export interface Harness {
  serving: ServingSandboxer;
  kind: SleepKind;
  client: sandboxApi.ControllerClient;
  logs: LogCapture;
  socket: string;
  dir: string;
}

export async function startHarness(opts: { root: string; kind?: SleepKind }): Promise<Harness> {
  const socket = path.join(opts.root, 'controller.sock');
  const dir = path.join(opts.root, 'state');
  const kind = opts.kind ?? new SleepKind();
  const logs = new LogCapture();
  const logger = createLogger({ level: 'debug', kind: 'test', destination: logs });
  const serving = await serveController({
    listen: socket,
    dir,
    sandboxer: kind,
    logger,
    taskEndpoint: { address: `ttrpc+unix://${path.join(dir, 'task.sock')}`, version: 3 },
  });
  const client = new sandboxApi.ControllerClient(`unix:${socket}`, grpc.credentials.createInsecure());
  return { serving, kind, client, logs, socket, dir };
}

type Method = 'create' | 'start' | 'platform' | 'stop' | 'wait' | 'status' | 'shutdown' | 'metrics' | 'update';

const REQUEST = {
  create: sandboxApi.ControllerCreateRequest,
  start: sandboxApi.ControllerStartRequest,
  platform: sandboxApi.ControllerPlatformRequest,
  stop: sandboxApi.ControllerStopRequest,
  wait: sandboxApi.ControllerWaitRequest,
  status: sandboxApi.ControllerStatusRequest,
  shutdown: sandboxApi.ControllerShutdownRequest,
  metrics: sandboxApi.ControllerMetricsRequest,
  update: sandboxApi.ControllerUpdateRequest,
} as const;

/** One unary call (request completed with defaults, as a Go client would send it); resolves the response or rejects with the grpc ServiceError (which has `.code`). */
export function rpc<M extends Method>(
  client: sandboxApi.ControllerClient,
  method: M,
  req: object,
  options: Partial<grpc.CallOptions> = {},
): Promise<any> {
  return new Promise((resolve, reject) => {
    const fn = client[method].bind(client) as unknown as (
      r: unknown,
      md: grpc.Metadata,
      o: Partial<grpc.CallOptions>,
      cb: (err: grpc.ServiceError | null, res: unknown) => void,
    ) => grpc.ClientUnaryCall;
    const md = new grpc.Metadata();
    md.set('containerd-namespace', 'k8s.io');
    fn((REQUEST[method] as { fromPartial(o: unknown): unknown }).fromPartial(req), md, options, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

export function podConfig(name: string): cri.PodSandboxConfig {
  return cri.PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'default', uid: `uid-${name}`, attempt: 0 },
    hostname: name,
    logDirectory: `/var/log/pods/${name}`,
    dnsConfig: { servers: ['10.0.0.10'], searches: ['svc.cluster.local'], options: ['ndots:5'] },
    labels: { app: name },
    linux: { cgroupParent: `/kubepods/pod-${name}` },
  });
}

export function createRequest(id: string, extra: Partial<sandboxApi.ControllerCreateRequest> = {}) {
  return sandboxApi.ControllerCreateRequest.fromPartial({
    sandboxId: id,
    options: packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, podConfig(id)),
    netnsPath: `/var/run/netns/cni-${id}`,
    sandboxer: 'test',
    ...extra,
  });
}

export async function stopHarness(h: Harness): Promise<void> {
  h.client.close();
  await h.serving.close();
}

export const EMPTY_SCHEMA = defineConfig({});

/** A whole sandboxer (framework + SleepKind + the runc engine's task server), as startSandboxer takes it. */
export function sleepSandboxerSpec(kind: SleepKind): SandboxerSpec<typeof EMPTY_SCHEMA, SleepKind> {
  return {
    kind: 'test',
    version: '1.0.0-test',
    description: 'test sandboxer',
    configSchema: EMPTY_SCHEMA,
    createSandboxer: () => kind,
    createEngine: (ctx) => new OciCliEngine({ root: path.join(ctx.dir, '.runc'), logger: ctx.logger }),
  };
}
