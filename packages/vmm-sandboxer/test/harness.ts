// A real vmm sandboxer for tests, driven as containerd drives it through testkit's sandboxer clients: the Controller
// over gRPC, the Task API over ttrpc on <dir>/task.sock, task events received by a ttrpc Events server, stdio through
// FIFOs opened as containerd's cio opens them. VMs are real QEMU (TCG) guests from the cached image.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { sandboxApi, task } from '@kuasar/api';
import { startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import {
  ClientIO, EventsSink, connectSandboxer, controllerCall, podSandboxOptions, runTask as kitRunTask, tempDir as kitTempDir,
  until as kitUntil, type ControllerMethod, type TaskClient,
} from '../../testkit/src/sandboxer-clients';
import { vmmSandboxerSpec } from '../src/sandboxer-spec';
import type { VmmSandboxer } from '../src/vmm-sandboxer';
import { GUEST_DIR, testLogger } from './guest';

export { ClientIO, EventsSink, type TaskClient } from '../../testkit/src/sandboxer-clients';
export const NS = 'k8s.io';

export interface Harness {
  root: string;
  dir: string;
  running: RunningSandboxer;
  sandboxer: VmmSandboxer;
  tasks: TaskClient;
  controller: sandboxApi.ControllerClient;
  sink: EventsSink;
  /** stop serving and detach from VMs, keeping them and the state dir: a sandboxer restart */
  stop(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return kitTempDir(`kv-${prefix}`);
}

export function until<T>(fn: () => T | undefined | false, ms = 10_000, what = 'condition'): Promise<T> {
  return kitUntil(fn, ms, what, 20);
}

export async function startHarness(root: string, sink: EventsSink): Promise<Harness> {
  const dir = path.join(root, 'state');
  process.env['TTRPC_ADDRESS'] = sink.path;
  const configFile = path.join(root, 'config.toml');
  fs.writeFileSync(configFile, [
    '[vmm]',
    `kernel = "${GUEST_DIR}/vmlinux"`,
    `initrd = "${GUEST_DIR}/initramfs.img"`,
    'accel = "tcg"',
    'boot_timeout_ms = 60000', ...(process.env.KV_DEBUG ? ['debug_console = true'] : []),
    '',
  ].join('\n'));
  const spec = vmmSandboxerSpec('test');
  let sandboxer: VmmSandboxer | undefined;
  const create = spec.createSandboxer.bind(spec);
  spec.createSandboxer = async (ctx) => (sandboxer = await create(ctx));
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec, { listen, dir, config: configFile }, testLogger());
  const clients = await connectSandboxer({ listen, taskSocket: path.join(dir, 'task.sock'), namespace: NS });
  let stopped = false;
  return {
    root, dir, running, sandboxer: sandboxer!, tasks: clients.tasks, controller: clients.controller, sink,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await clients.close();
      await running.close();
      sandboxer!.close();
    },
  };
}

/** One Controller call over gRPC, as containerd makes it. */
export function rpc(client: sandboxApi.ControllerClient, method: ControllerMethod, req: object): Promise<any> {
  return controllerCall(client, method, req, NS);
}

export async function runPod(h: Harness, id: string, hostname = id): Promise<{ pid: number }> {
  const options = podSandboxOptions({
    metadata: { name: id, namespace: 'default', uid: id },
    hostname,
    dnsConfig: { servers: ['10.0.0.10'], searches: ['svc.cluster.local'], options: ['ndots:5'] },
  });
  await rpc(h.controller, 'create', { sandboxId: id, options, netnsPath: '' });
  return rpc(h.controller, 'start', { sandboxId: id });
}

/** A busybox rootfs shared by the tests' bundles (bind-mounted into each VM's share, never written). */
export function busyboxRootfs(root: string): string {
  const rootfs = path.join(root, 'rootfs');
  if (fs.existsSync(rootfs)) return rootfs;
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin', 'busybox'));
  for (const applet of ['sh', 'cat', 'echo', 'uname', 'head', 'yes', 'sleep', 'hostname', 'printf', 'tr', 'wc', 'ls', 'true']) {
    fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  }
  return rootfs;
}

/** A bundle as containerd 2.x writes it for a pod's container: config.json, rootfs/, and the sandbox file. */
export function makeBundle(root: string, name: string, sandboxId: string, args: string[], o: { mounts?: object[] } = {}): string {
  const bundle = path.join(root, 'bundles', name);
  fs.mkdirSync(path.join(bundle, 'rootfs'), { recursive: true });
  execFileSync('mount', ['--bind', busyboxRootfs(root), path.join(bundle, 'rootfs')]);
  const spec = {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/' },
    root: { path: 'rootfs', readonly: true },
    hostname: 'ignored-in-pod',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev'] },
      ...(o.mounts ?? []),
    ],
    annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId },
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: '/proc/1/ns/net' }],
      resources: { memory: { limit: 64 * 1024 * 1024 } },
    },
  };
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  fs.writeFileSync(path.join(bundle, 'sandbox'), sandboxId);
  return bundle;
}

export function removeBundle(bundle: string): void {
  try {
    execFileSync('umount', [path.join(bundle, 'rootfs')], { stdio: 'ignore' });
  } catch {
    // not mounted
  }
  fs.rmSync(bundle, { recursive: true, force: true });
}

/** Create + Start of a container; `exited` is its Wait, sent before Start. */
export function runTask(h: Harness, id: string, bundle: string, io: ClientIO): Promise<{ exited: Promise<task.WaitResponse> }> {
  return kitRunTask(h.tasks, id, bundle, io);
}

/** Test cleanup after a failure: SIGKILL every VM recorded under the state dir (a restart keeps them running). */
export function killVms(dir: string): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    try {
      const { identity } = JSON.parse(fs.readFileSync(path.join(dir, n, 'vm.json'), 'utf8')) as { identity: { pid: number; startTime: string } };
      const stat = fs.readFileSync(`/proc/${identity.pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] === identity.startTime) process.kill(identity.pid, 'SIGKILL');
    } catch {
      // no record, or the VM is gone
    }
  }
}

/** Mount points below dir (what a pod must not leave behind). */
export function mountsUnder(dir: string): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p === dir || p.startsWith(`${dir}/`));
}
