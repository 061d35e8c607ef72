// A real wasm sandboxer for tests: the framework's startSandboxer with the wasm kind, driven like containerd drives
// it through testkit's sandboxer clients — the Task API through a ttrpc client on <dir>/task.sock, the Controller
// through grpc-js, task events received by a ttrpc Events server at TTRPC_ADDRESS, stdio through FIFOs opened the way
// containerd's cio opens them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { sandboxApi, task } from '@kuasar/api';
import { createLogger, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import type { TtrpcClient } from '@kuasar/ttrpc';
import {
  ClientIO, EventsSink, connectSandboxer, controllerCall, podSandboxOptions, runTask as kitRunTask, tempDir as kitTempDir,
  until as kitUntil, type ControllerMethod, type TaskClient,
} from '../../testkit/src/sandboxer-clients';
import { wasmSandboxerSpec, type WasmSandboxerSpec } from '../src/sandboxer-spec';

export { ClientIO, EventsSink, type PartialClient, type ReceivedEvent, type TaskClient } from '../../testkit/src/sandboxer-clients';
export const BUILD = path.join(__dirname, '..', 'testdata', 'build');
export const wasm = (name: string): string => path.join(BUILD, `${name}.wasm`);
export const NS = 'k8s.io';

export function tempDir(prefix: string): string {
  return kitTempDir(`kw-${prefix}`);
}

export function until<T>(fn: () => T | undefined | false, ms = 5000, what = 'condition'): Promise<T> {
  return kitUntil(fn, ms, what);
}

export interface WasmHarness {
  root: string;
  dir: string;
  running: RunningSandboxer;
  spec: WasmSandboxerSpec;
  tasks: TaskClient;
  client: TtrpcClient;
  controller: sandboxApi.ControllerClient;
  sink: EventsSink;
  /** stop serving and end the runner, keeping the state dir: what a sandboxer restart leaves behind */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export async function startWasmSandboxer(o: { root?: string; config?: string; sink?: EventsSink } = {}): Promise<WasmHarness> {
  const root = o.root ?? tempDir('sb');
  const dir = path.join(root, 'state');
  let sink = o.sink;
  if (!sink) {
    sink = new EventsSink(path.join(root, `ev-${process.hrtime.bigint() % 100000n}.sock`));
    await sink.listen();
  }
  process.env['TTRPC_ADDRESS'] = sink.path;
  const configFile = path.join(root, 'config.toml');
  fs.writeFileSync(configFile, o.config ?? '[wasm]\npool_size = 2\n');
  const spec = wasmSandboxerSpec('test');
  const logger = createLogger({ level: (process.env['KUASAR_TEST_LOG'] as 'debug' | undefined) ?? 'fatal', kind: 'wasm' });
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec, { listen, dir, config: configFile }, logger);
  await spec.pool!.warm();
  const clients = await connectSandboxer({ listen, taskSocket: path.join(dir, 'task.sock'), namespace: NS });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await clients.close();
    await running.close();
    await spec.pool!.close();
  };
  const s = sink;
  return {
    root, dir, running, spec, tasks: clients.tasks, client: clients.client, controller: clients.controller, sink: s, stop,
    close: async () => {
      await stop();
      if (!o.sink) await s.server.close(500);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** One Controller call over gRPC, as containerd makes it. */
export function rpc(client: sandboxApi.ControllerClient, method: ControllerMethod, req: object): Promise<any> {
  return controllerCall(client, method, req, NS);
}

/** Create + Start of a pod through the Controller. */
export async function runPod(h: WasmHarness, id: string): Promise<{ pid: number; address: string }> {
  await rpc(h.controller, 'create', { sandboxId: id, options: podSandboxOptions({ metadata: { name: id, namespace: 'default', uid: id } }) });
  return rpc(h.controller, 'start', { sandboxId: id });
}

export interface BundleOptions {
  args: string[];
  env?: string[];
  cwd?: string;
  /** modules to put in the image: guest path → testdata module name */
  modules?: Record<string, string>;
  files?: Record<string, string>;
  mounts?: { destination: string; source: string; type?: string; options?: string[] }[];
  memoryLimit?: number;
  sandboxId?: string;
  terminal?: boolean;
}

/** A bundle as containerd writes one: config.json plus the image's files under rootfs/. */
export function makeBundle(root: string, name: string, o: BundleOptions): string {
  const bundle = path.join(root, 'bundles', name);
  const rootfs = path.join(bundle, 'rootfs');
  fs.mkdirSync(rootfs, { recursive: true });
  for (const [guest, mod] of Object.entries(o.modules ?? { [o.args[0]!]: 'hello' })) {
    fs.mkdirSync(path.dirname(path.join(rootfs, guest)), { recursive: true });
    fs.copyFileSync(wasm(mod), path.join(rootfs, guest));
  }
  for (const [guest, text] of Object.entries(o.files ?? {})) fs.writeFileSync(path.join(rootfs, guest), text);
  const spec = {
    ociVersion: '1.1.0',
    process: { terminal: o.terminal ?? false, args: o.args, env: o.env ?? ['PATH=/usr/bin:/bin'], cwd: o.cwd ?? '/' },
    root: { path: 'rootfs' },
    mounts: o.mounts ?? [],
    annotations: o.sandboxId ? { 'io.kubernetes.cri.sandbox-id': o.sandboxId } : {},
    linux: { namespaces: [{ type: 'pid' }], resources: o.memoryLimit ? { memory: { limit: o.memoryLimit } } : {} },
  };
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  return bundle;
}

/** Create + Start of a container; `exited` is its Wait, sent before Start. */
export function runTask(
  h: WasmHarness,
  id: string,
  bundle: string,
  io: ClientIO,
  extra: Partial<task.CreateTaskRequest> = {},
): Promise<{ exited: Promise<task.WaitResponse> }> {
  return kitRunTask(h.tasks, id, bundle, io, extra);
}
