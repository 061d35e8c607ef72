// One containerd + one sandboxer + CRI client + CNI network, private to a test file, and the per-test checks
// (leftovers, containerd errors) every matrix test runs.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { cri } from '@kuasar/api';
import { shimBinaryName } from '@kuasar/shim';
import {
  BUSYBOX_IMAGE, CriClient, PAUSE_IMAGE, PrivateContainerd, createCniSetup, importTestImages, processesMentioning,
  type CniSetup, type ContainerdVersion,
} from '@kuasar/testkit';
import {
  KUASARCTL, SANDBOXERS, SandboxerProcess, buildShim, containerdErrors, handlerName, kuasarContainerdConfig, leftoverCgroups,
  leftoverMounts, leftoverProcesses, leftoverSockets, leftoverStateDirs, shimEnv, usesShim, type MatrixEntry,
} from '../src';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function eventually<T>(what: string, fn: () => T | Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x))}`);
    await sleep(100);
    v = await fn();
  }
  return v;
}

export function ppidOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

export function verboseInfo(info: Record<string, string>): { pid?: number; netns?: string } {
  const raw = info.info;
  if (!raw) return {};
  const j = JSON.parse(raw) as { pid?: number; runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } } };
  return { pid: j.pid, netns: j.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path };
}

/** One sandbox as `kuasarctl list -o json` prints it (the fields the tests read). */
export interface ListedSandbox {
  id: string;
  kind: string;
  state: string;
  pid: number;
  containers: { id: string; namespace: string; type: string; state: string; pid: number }[];
  live: { state: string; pid: number; address: string; info?: Record<string, unknown> } | null;
  liveError: string | null;
}

/** A pod made by Stack.runPod and its one container; `logPath` is the container's CRI log. */
export interface RunningPod {
  podId: string;
  containerId: string;
  logPath: string;
}

export class Stack {
  ctrd!: PrivateContainerd;
  sb!: SandboxerProcess;
  client!: CriClient;
  cni!: CniSetup;
  readonly base: string;
  readonly logRoot: string;
  readonly handler: string;
  /** Ids (pods, containers) made by the current test; checked for leftovers after it. */
  ids: string[] = [];
  private logOffset = 0;
  private sbLogOffset = 0;

  constructor(readonly entry: MatrixEntry) {
    this.base = mkdtempSync('/tmp/ke2e-');
    this.logRoot = path.join(this.base, 'logs');
    mkdirSync(this.logRoot);
    this.handler = handlerName(entry.sandboxer);
  }

  get version(): ContainerdVersion {
    return this.entry.containerd;
  }

  get sbDir(): string {
    return path.join(this.base, 'sb');
  }

  get shimDir(): string {
    return path.join(this.base, 'bin');
  }

  get relayDir(): string {
    return path.join(this.base, 'relay-bin');
  }

  /** The sandboxer's Controller socket. */
  get listen(): string {
    return path.join(this.base, 'sb.sock');
  }

  /** `kuasarctl <command> -o json` against this stack's sandboxer (its state dir and Controller), parsed. */
  async kuasarctl(args: string[]): Promise<unknown> {
    const kind = SANDBOXERS[this.entry.sandboxer]!.kind;
    const [bin, ...pre] = KUASARCTL.command();
    const { stdout } = await promisify(execFile)(bin!, [
      ...pre, ...args, '-o', 'json', '--kinds', kind, '--dir', `${kind}=${this.sbDir}`, '--socket', `${kind}=${this.listen}`,
    ], { timeout: 30_000 });
    return JSON.parse(stdout) as unknown;
  }

  /** The sandboxes an operator sees (`kuasarctl list -o json`). */
  async listSandboxes(): Promise<ListedSandbox[]> {
    return ((await this.kuasarctl(['list'])) as { items: ListedSandbox[] }).items;
  }

  /** Env containerd runs with: for 1.x the thin shim first on PATH and its task socket. */
  private containerdEnv(withShim = usesShim(this.version)): Record<string, string> {
    if (!withShim) return {};
    // The shim hands containerd the sandboxer's task relay, so containerd's connections outlive a sandboxer restart.
    return { PATH: `${this.shimDir}:${process.env.PATH ?? '/usr/bin:/bin'}`, ...shimEnv(this.entry.sandboxer, path.join(this.sbDir, 'relay.sock')) };
  }

  async start(): Promise<void> {
    const kind = SANDBOXERS[this.entry.sandboxer]!;
    kind.build();
    KUASARCTL.build();
    if (usesShim(this.version)) buildShim(this.shimDir);
    // The task relay is the thin shim binary in relay mode: the one built from this tree, also where containerd must
    // not find a shim (2.1), so in a dir of its own.
    buildShim(this.relayDir);
    this.cni = createCniSetup();
    const listen = this.listen;
    const extraConfig = kuasarContainerdConfig(this.version, kind.kind, listen, this.cni);
    this.ctrd = await PrivateContainerd.start({ version: this.version, extraConfig, env: this.containerdEnv() });
    this.sb = await SandboxerProcess.start({
      kind: kind.kind,
      command: kind.command(),
      listen,
      dir: this.sbDir,
      ttrpcAddress: this.ctrd.ttrpcAddress,
      logPath: path.join(this.base, 'sandboxer.log'),
      env: { KUASAR_TASK_RELAY: path.join(this.relayDir, shimBinaryName(this.entry.sandboxer)) },
    });
    this.client = new CriClient(this.ctrd.grpcAddress);
    try {
      await this.client.waitReady();
    } catch (err) {
      (err as Error).message += `\n--- containerd log ---\n${this.ctrd.logs().split('\n').slice(-30).join('\n')}`;
      throw err;
    }
    await importTestImages(this.ctrd);
    await this.client.waitImage(BUSYBOX_IMAGE);
    await this.client.waitImage(PAUSE_IMAGE);
  }

  async stop(): Promise<void> {
    this.client?.close();
    await this.ctrd?.stop();
    await this.sb?.stopAll();
    this.cni?.cleanup();
    const left = leftoverMounts([this.base], []);
    if (left.length === 0) rmSync(this.base, { recursive: true, force: true });
  }

  logDir(): string {
    return mkdtempSync(path.join(this.logRoot, 'pod-'));
  }

  /**
   * The kubelet's flow to one started container: RunPodSandbox on this stack's handler, CreateContainer of `image`
   * (`command` [] runs the image's CMD), StartContainer. `name` prefixes the pod's name (and its hostname off the
   * host network). Both ids go into `ids`, so the test's leftover checks cover them.
   */
  async runPod(o: { name: string; image: string; command: string[]; hostNetwork: boolean; timeoutMs?: number }): Promise<RunningPod> {
    const uid = randomBytes(6).toString('hex');
    const namespaceOptions = { network: o.hostNetwork ? cri.NamespaceMode.NODE : cri.NamespaceMode.POD, pid: cri.NamespaceMode.CONTAINER, ipc: cri.NamespaceMode.POD };
    const logDirectory = this.logDir();
    const podConfig = {
      metadata: { name: `${o.name}-${uid}`, uid, namespace: 'default', attempt: 0 },
      hostname: o.hostNetwork ? '' : `${o.name}-${uid}`,
      logDirectory,
      linux: { securityContext: { namespaceOptions } },
    };
    const podId = await this.client.runPodSandbox(podConfig, this.handler, o.timeoutMs);
    this.ids.push(podId);
    const containerId = await this.client.createContainer(podId, {
      metadata: { name: 'main', attempt: 0 },
      image: { image: o.image },
      command: o.command,
      logPath: 'main.log',
      linux: { securityContext: { namespaceOptions } },
    }, podConfig);
    this.ids.push(containerId);
    await this.client.startContainer(containerId);
    return { podId, containerId, logPath: path.join(logDirectory, 'main.log') };
  }

  /** Marks the start of a test: leftovers and errors are checked from here. */
  begin(): void {
    this.ids = [];
    this.logOffset = this.ctrd.logs().length;
    this.sbLogOffset = this.sb.rawLogs().length;
  }

  /**
   * SIGTERM containerd and start it again on the same config, root and state (pods keep running). `withShim` puts
   * the thin shim on the restarted containerd's PATH: containerd 2.1 resolves every bundle's runtime binary when it
   * reloads tasks, even tasks it reaches through a sandbox endpoint and never runs a shim for.
   */
  async restartContainerd(withShim = usesShim(this.version)): Promise<void> {
    if (withShim) buildShim(this.shimDir);
    await this.ctrd.restart('SIGTERM', this.containerdEnv(withShim));
    await this.client.waitReady();
  }

  /** containerd level=error lines since begin() that mention our ids or the sandboxer (benign ones excepted). */
  containerdErrors(expected: RegExp[] = []): string[] {
    return containerdErrors(this.ctrd.logs(), [...this.ids, this.sbDir, this.handler, 'kuasar'], this.logOffset)
      .filter((l) => !expected.some((re) => re.test(l)));
  }

  /** error/fatal lines of the sandboxer since begin(). */
  sandboxerErrors(): string[] {
    return this.sb.rawLogs().slice(this.sbLogOffset).split('\n').filter((l) => /"level":"(error|fatal)"/.test(l));
  }

  /** Everything a finished test must not leave: asserts inside. */
  /** `expectedErrors`: containerd errors this test provokes on purpose (on top of BENIGN_ERRORS). */
  async expectClean(expectedErrors: RegExp[] = []): Promise<void> {
    const ids = this.ids;
    // Processes take a moment to be reaped after RemovePodSandbox returns.
    await eventually('no leftover processes', () => leftoverProcesses(this.sb.pid, ids, [this.sb.relayPid() ?? -1]), (l) => l.length === 0);
    expect(processesMentioning(this.ctrd.grpcAddress)).toEqual([]); // no containerd-shim-* serving this containerd
    expect(leftoverMounts([this.sbDir, path.join(this.ctrd.dir, 'state')], ids)).toEqual([]);
    expect(leftoverMounts([this.ctrd.root], ids).filter((m) => /\/(rootfs|shm|netns|sandboxes)\b/.test(m))).toEqual([]);
    expect(leftoverCgroups(ids)).toEqual([]);
    // The task core's records and the OCI runtimes' state dirs (OciCliEngine's default roots).
    expect(leftoverStateDirs([path.join(this.sbDir, 'tasks'), '/run/kuasar/runc', '/run/kuasar/crun'], ids)).toEqual([]);
    // sandbox dirs (records, namespace mounts, members) of the test's pods
    expect(ids.filter((id) => existsSync(path.join(this.sbDir, id)))).toEqual([]);
    // the sandboxer's own sockets: task API, its relay, and the vmm sandboxer's debug socket (kuasarctl exec)
    expect(leftoverSockets(this.sbDir, [this.sb.taskSocket, ...['relay.sock', 'debug.sock'].map((n) => path.join(this.sbDir, n))])).toEqual([]);
    expect(leftoverSockets(path.join(this.ctrd.dir, 'state'))).toEqual([]);
    expect(this.containerdErrors(expectedErrors)).toEqual([]);
  }
}
