// A real quark-sandboxer process (bundled from src/main.ts like the shipped binary), a grpc-js Controller client,
// a ttrpc Task v3 client, binary-safe client FIFOs, and CRI-shaped busybox bundles.
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { Socket } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { build } from 'esbuild';
import { cri, packAny, sandboxApi, task, type google } from '@kuasar/api';
import { createLogger, runSandboxer } from '@kuasar/sandbox';
import { TtrpcClient, createClient, type ServiceClient } from '@kuasar/ttrpc';
import { createBusyboxBundle, type BusyboxBundle } from '../../task/test/helpers/bundle';
import { quarkSandboxerSpec } from '../src/sandboxer-spec';

export { createBusyboxBundle, type BusyboxBundle };

/** The trixie runsc scripts/fetch-debs.sh cached (or $KUASAR_RUNSC). */
export function runscPath(): string | undefined {
  if (process.env['KUASAR_RUNSC']) return process.env['KUASAR_RUNSC'];
  try {
    const m = JSON.parse(fs.readFileSync(path.join(process.env['KUASAR_CACHE'] ?? '/var/cache/kuasar', 'debs', 'manifest.json'), 'utf8')) as
      { key: string; bins: Record<string, string> }[];
    const p = m.find((e) => e.key === 'runsc')?.bins['runsc'];
    return p && fs.existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

export function tempDir(prefix: string): string {
  return fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
}

export async function bundleSandboxer(outDir: string): Promise<string> {
  const out = path.join(outDir, 'quark-sandboxer.js');
  await build({
    entryPoints: [path.join(__dirname, '..', 'src', 'main.ts')],
    bundle: true, platform: 'node', target: 'node20', format: 'cjs', outfile: out,
    external: ['koffi'], logLevel: 'error',
  });
  return out;
}

import { startSandboxerProcess, type SandboxerProcess } from '../../testkit/src/sandboxer-process';

export { startSandboxerProcess, type SandboxerProcess };

/** runsc, and `describe` that runs `what` only with it (skipped, and saying so, without). */
export function withRunsc(what: string): { runsc: string | undefined; maybe: jest.Describe } {
  const runsc = runscPath();
  if (!runsc) process.stderr.write(`quark-sandboxer ${what} skipped: no runsc (run scripts/fetch-debs.sh or set KUASAR_RUNSC)\n`);
  return { runsc, maybe: runsc ? describe : describe.skip };
}

/**
 * The bundled sandboxer as the pod tests drive it: a temp dir of its own (`work`) holding its state dir, Controller
 * socket and a config naming `runsc`; logging at debug; a Controller client to it.
 */
export class SandboxerUnderTest {
  sb!: SandboxerProcess;
  controller!: sandboxApi.ControllerClient;
  readonly dir: string;
  readonly listen: string;

  private constructor(readonly work: string, private readonly script: string, private readonly config: string) {
    this.dir = path.join(work, 'state');
    this.listen = path.join(work, 'quark.sock');
  }

  static async start(runsc: string, prefix: string): Promise<SandboxerUnderTest> {
    const work = tempDir(prefix);
    try {
      const config = path.join(work, 'config.toml');
      fs.writeFileSync(config, `[quark]\nrunsc = "${runsc}"\nexit_poll_ms = 200\n`);
      const s = new SandboxerUnderTest(work, await bundleSandboxer(work), config);
      await s.restart();
      return s;
    } catch (err) {
      fs.rmSync(work, { recursive: true, force: true });
      throw err;
    }
  }

  /** Starts the process (again, after a kill -9 of the last one) with a new Controller client. */
  async restart(): Promise<void> {
    this.sb = await startSandboxerProcess(this.script, ['--listen', this.listen, '--dir', this.dir, '--config', this.config, '--log-level', 'debug']);
    this.controller?.close();
    this.controller = controllerClient(this.listen);
  }

  /**
   * Stop + Shutdown of `pods`, which a test that failed half-way leaves (errors ignored: most are gone), then the
   * clients closed and the process SIGTERMed. The work dir stays for the caller's own checks: `remove` it after.
   */
  async stop(pods: string[], conn?: TtrpcClient): Promise<void> {
    for (const pod of pods) {
      await rpc(this.controller, 'stop', { sandboxId: pod, timeoutSecs: 0 }).catch(() => undefined);
      await rpc(this.controller, 'shutdown', { sandboxId: pod }).catch(() => undefined);
    }
    conn?.close();
    this.controller.close();
    if (this.sb.child.exitCode === null && this.sb.child.signalCode === null) {
      this.sb.child.kill('SIGTERM');
      await this.sb.exited;
    }
  }

  remove(): void {
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

type Method = 'create' | 'start' | 'stop' | 'wait' | 'status' | 'shutdown' | 'metrics';
const REQUEST = {
  create: sandboxApi.ControllerCreateRequest, start: sandboxApi.ControllerStartRequest, stop: sandboxApi.ControllerStopRequest,
  wait: sandboxApi.ControllerWaitRequest, status: sandboxApi.ControllerStatusRequest, shutdown: sandboxApi.ControllerShutdownRequest,
  metrics: sandboxApi.ControllerMetricsRequest,
} as const;

export function controllerClient(socket: string): sandboxApi.ControllerClient {
  return new sandboxApi.ControllerClient(`unix:${socket}`, grpc.credentials.createInsecure());
}

/** One unary Controller call with containerd's namespace metadata. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function rpc(client: sandboxApi.ControllerClient, method: Method, req: object): Promise<any> {
  return new Promise((resolve, reject) => {
    const fn = client[method].bind(client) as unknown as (r: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;
    const md = new grpc.Metadata();
    md.set('containerd-namespace', 'k8s.io');
    fn((REQUEST[method] as { fromPartial(o: unknown): unknown }).fromPartial(req), md, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

export function podOptions(name: string, cgroupParent = ''): google.Any {
  return packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, cri.PodSandboxConfig.fromPartial({
    metadata: { name, namespace: 'default', uid: `uid-${name}` },
    hostname: name,
    linux: {
      cgroupParent,
      securityContext: { namespaceOptions: { network: cri.NamespaceMode.POD, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD } },
    },
  }));
}

export type TaskClient = ServiceClient<typeof task.TaskV3Definition>;

export async function taskClient(address: string): Promise<{ conn: TtrpcClient; tasks: TaskClient }> {
  const conn = await TtrpcClient.connect(address.replace(/^ttrpc\+unix:\/\//, ''), { metadata: { 'containerd-namespace-ttrpc': 'k8s.io' } });
  return { conn, tasks: createClient(task.TaskV3Definition, conn) };
}

/** A container bundle as containerd 2.x CRI writes it: /proc/<sandbox pid>/ns paths, CRI annotations, `sandbox`. */
export function criBundle(pod: string, sandboxPid: number, args: string[], parent: string): BusyboxBundle {
  const b = createBusyboxBundle({ args, parent, cgroupsPath: '' });
  const linux = b.spec['linux'] as Record<string, unknown>;
  delete linux['cgroupsPath'];
  linux['namespaces'] = ['pid', 'ipc', 'uts', 'mount', 'network'].map((t) =>
    t === 'pid' || t === 'mount' ? { type: t } : { type: t, path: `/proc/${sandboxPid}/ns/${t === 'network' ? 'net' : t}` });
  b.spec['annotations'] = { 'io.kubernetes.cri.container-type': 'container', 'io.kubernetes.cri.sandbox-id': pod };
  delete b.spec['hostname'];
  b.writeSpec();
  fs.writeFileSync(path.join(b.path, 'sandbox'), pod);
  return b;
}

export interface Fifos {
  stdin: string;
  stdout: string;
  stderr: string;
  /** every byte read from stdout until EOF */
  out: Promise<Buffer>;
  err: Promise<Buffer>;
  write(data: Buffer): Promise<void>;
  close(): void;
}

/** containerd's cio, binary-safe: mkfifo, readers opened O_NONBLOCK before Create, stdin opened after. */
export function fifos(dir: string, name: string, withStdin = false): Fifos {
  const p = (s: string) => path.join(dir, `${name}-${s}`);
  const stdin = withStdin ? p('stdin') : '';
  for (const f of [stdin, p('stdout'), p('stderr')]) if (f) execFileSync('mkfifo', ['-m', '0700', f]);
  const sockets: Socket[] = [];
  const read = (f: string) => {
    const s = new Socket({ fd: fs.openSync(f, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    sockets.push(s);
    return new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('error', () => resolve(Buffer.concat(chunks)));
      s.on('end', () => resolve(Buffer.concat(chunks)));
    });
  };
  return {
    stdin, stdout: p('stdout'), stderr: p('stderr'), out: read(p('stdout')), err: read(p('stderr')),
    async write(data) {
      const w = new Socket({ fd: fs.openSync(stdin, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK), readable: false, writable: true });
      sockets.push(w);
      await new Promise<void>((r) => w.write(data, () => r()));
      await new Promise<void>((r) => w.end(() => r()));
    },
    close() {
      for (const s of sockets) s.destroy();
    },
  };
}

export function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = async () => {
      const v = await fn();
      if (v) resolve(v);
      else if (Date.now() > end) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(() => void tick(), 50);
    };
    void tick();
  });
}

/** PSS in kB from /proc/<pid>/smaps_rollup (0 if gone). */
export function pssKb(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * Runs the sandboxer in-process with `configToml` as its config file, for configs it must refuse: the exit codes it
 * asked for, what it wrote to stderr, and whether its Controller socket was made.
 */
export async function startWithConfig(configToml: string): Promise<{ exits: number[]; stderr: string; served: boolean }> {
  const dir = tempDir('kuasar-quark-cfg-');
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, configToml);
  const exits: number[] = [];
  let stderr = '';
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += c.toString()), true));
  try {
    await runSandboxer(quarkSandboxerSpec('test'), {
      argv: ['--listen', path.join(dir, 'q.sock'), '--dir', path.join(dir, 'state'), '--config', file],
      exit: (code) => exits.push(code), logger: createLogger({ level: 'fatal' }),
    });
  } finally {
    spy.mockRestore();
  }
  const served = fs.existsSync(path.join(dir, 'q.sock'));
  fs.rmSync(dir, { recursive: true, force: true });
  return { exits, stderr, served };
}
