// `kuasarctl list` and `inspect` over state dirs holding records written by @kuasar/sandbox's own store and
// serializer (so a change of the record format shows up here), plus a task record with its bundle.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri } from '@kuasar/api';
import { SandboxStore, recordToJSON, type SandboxRecord } from '@kuasar/sandbox';
import { readSandboxes, summarizeRecord } from '../src/sandboxes';
import { kuasarctl, kuasarctlBundle } from './cli';

jest.setTimeout(60_000);

let tmp: string;
let runcDir: string;
let wasmDir: string;
const NOW = Date.now();
const POD_A = 'a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9';

function record(id: string, over: Partial<SandboxRecord>): SandboxRecord {
  return {
    id,
    state: 'ready',
    netnsPath: `/var/run/netns/cni-${id.slice(0, 8)}`,
    annotations: {},
    rootfs: [],
    config: cri.PodSandboxConfig.fromPartial({ metadata: { name: `name-${id.slice(0, 5)}`, namespace: 'default', uid: 'u', attempt: 1 } }),
    options: undefined,
    sandbox: undefined,
    createdAt: new Date(NOW - 3 * 60_000),
    pid: 4242,
    startedAt: new Date(NOW - 3 * 60_000 + 500),
    labels: {},
    exit: undefined,
    kindState: { holderPid: 4243 },
    ...over,
  };
}

async function writeRecord(dir: string, r: SandboxRecord): Promise<void> {
  const store = new SandboxStore(dir);
  await store.init();
  await store.createDir(r.id);
  await store.write(r.id, recordToJSON(r));
}

function writeTask(stateDir: string, ns: string, id: string, sandboxId: string, type: string, name: string): void {
  const bundle = path.join(tmp, 'bundles', id);
  fs.mkdirSync(bundle, { recursive: true });
  fs.writeFileSync(
    path.join(bundle, 'config.json'),
    JSON.stringify({
      ociVersion: '1.0.2',
      annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId, 'io.kubernetes.cri.container-type': type, 'io.kubernetes.cri.container-name': name },
    }),
  );
  const dir = path.join(stateDir, 'tasks', ns, id);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'task.json'),
    JSON.stringify({
      version: 1,
      id,
      namespace: ns,
      bundle,
      mounts: [],
      sharedPidNs: false,
      paused: false,
      createdAt: new Date(NOW - 60_000).toISOString(),
      processes: [
        { execId: '', pid: 5000, status: 'running', stdio: {} },
        { execId: 'e1', pid: 5001, status: 'stopped', exitStatus: 0, stdio: {} },
      ],
    }),
  );
}

beforeAll(async () => {
  kuasarctlBundle();
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-list-')));
  runcDir = path.join(tmp, 'kuasar-runc');
  wasmDir = path.join(tmp, 'kuasar-wasm');
  await writeRecord(runcDir, record(POD_A, {}));
  await writeRecord(
    runcDir,
    record('pod-b', { state: 'stopped', exit: { exitStatus: 137, exitedAt: new Date(NOW - 10_000) }, createdAt: new Date(NOW - 7200_000) }),
  );
  await writeRecord(wasmDir, record('pod-bb', { pid: 0, state: 'created', startedAt: undefined, createdAt: new Date(NOW - 30_000) }));
  // what the framework keeps beside the sandbox dirs, and a record that cannot be parsed
  fs.mkdirSync(path.join(runcDir, 'broken'), { mode: 0o700 });
  fs.writeFileSync(path.join(runcDir, 'broken', 'sandbox.json'), '{ "id": "broken", ');
  fs.mkdirSync(path.join(runcDir, '.runc'));
  fs.writeFileSync(path.join(runcDir, 'task.sock'), '');
  writeTask(runcDir, 'k8s.io', 'ctr-web', POD_A, 'container', 'web');
  writeTask(runcDir, 'k8s.io', 'ctr-other', 'some-other-pod', 'container', 'x');
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// Sockets that do not exist: these tests are about the state dirs (no sandboxer runs).
const flags = () => [
  '--dir', `runc=${runcDir}`, '--dir', `wasm=${wasmDir}`, '--dir', `quark=${path.join(tmp, 'none-q')}`, '--dir', `vmm=${path.join(tmp, 'none-v')}`,
  '--socket', `runc=${path.join(tmp, 'runc.sock')}`, '--socket', `wasm=${path.join(tmp, 'wasm.sock')}`,
];

describe('reading state dirs', () => {
  it('summarizes every sandbox dir, including an unreadable record, and skips framework entries', () => {
    const list = readSandboxes('runc', runcDir);
    expect(list.map((s) => [s.id, s.state])).toEqual([
      [POD_A, 'ready'],
      ['broken', 'corrupt'],
      ['pod-b', 'stopped'],
    ]);
    const a = list.find((s) => s.id === POD_A)!;
    expect(a).toMatchObject({ pid: 4242, name: `name-${POD_A.slice(0, 5)}`, namespace: 'default', attempt: 1 });
    expect(a.createdAt?.getTime()).toBe(NOW - 3 * 60_000);
    expect(a.containers).toEqual([expect.objectContaining({ id: 'ctr-web', name: 'web', type: 'container', state: 'running', pid: 5000, execs: 1 })]);
    expect(list.find((s) => s.id === 'pod-b')?.exit).toEqual({ exitStatus: 137, exitedAt: new Date(NOW - 10_000) });
  });

  it('a missing state dir is no sandboxes; a file in its place is an error', () => {
    expect(readSandboxes('quark', path.join(tmp, 'nope'))).toEqual([]);
    fs.writeFileSync(path.join(tmp, 'file'), '');
    expect(() => readSandboxes('quark', path.join(tmp, 'file'))).toThrow(/cannot read quark state dir .*ENOTDIR/);
  });

  it('tolerates records from other versions', () => {
    const s = summarizeRecord('runc', 'x', '/d', { id: 'x', version: 2, state: 'paused', pid: '12', createdAt: 'garbage' });
    expect(s).toMatchObject({ state: 'paused', pid: 12, createdAt: undefined, error: expect.stringContaining('version 2') });
    expect(summarizeRecord('runc', 'x', '/d', [1, 2]).error).toContain('not a JSON object');
  });
});

describe('kuasarctl list', () => {
  it('prints a crictl-style table, newest first, and says the sandboxers are not running', () => {
    const r = kuasarctl(['list', ...flags()]);
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^SANDBOX ID\s+CREATED\s+STATE\s+NAME\s+NAMESPACE\s+KIND\s+PID\s+CONTAINERS$/);
    const rows = lines.slice(1).map((l) => l.split(/\s{3,}/));
    expect(rows.map((c) => c[0])).toEqual(['pod-bb', POD_A.slice(0, 13), 'pod-b', 'broken']);
    expect(rows[1]).toEqual([POD_A.slice(0, 13), '3 minutes ago', 'ready', `name-${POD_A.slice(0, 5)}`, 'default', 'runc', '4242', '1']);
    expect(rows[2]).toEqual(['pod-b', '2 hours ago', 'stopped', 'name-pod-b', 'default', 'runc', '4242', '0']);
    expect(r.stderr).toContain(`runc: sandboxer socket ${path.join(tmp, 'runc.sock')} does not exist; showing recorded states`);
  });

  it('--no-trunc shows full ids; --kinds filters', () => {
    const r = kuasarctl(['list', '--no-trunc', '--kinds', 'runc', ...flags()]);
    expect(r.stdout).toContain(POD_A);
    expect(r.stdout).not.toContain('pod-bb');
  });

  it('-o json carries the recorded and the live side', () => {
    const r = kuasarctl(['list', '-o', 'json', '--offline', ...flags()]);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    const items = (JSON.parse(r.stdout) as { items: Record<string, unknown>[] }).items;
    expect(items.map((i) => i.id)).toEqual(['pod-bb', POD_A, 'pod-b', 'broken']);
    expect(items[1]).toMatchObject({ kind: 'runc', state: 'ready', recordedState: 'ready', pid: 4242, live: null, containers: [expect.objectContaining({ id: 'ctr-web' })] });
    expect(items[3]).toMatchObject({ state: 'corrupt', error: expect.stringContaining('sandbox.json') });
  });

  it('a stale socket (sandboxer killed) is noted, and the recorded states still list', () => {
    const sock = path.join(tmp, 'stale.sock');
    const killed = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(killed.signal).toBe('SIGKILL');
    const r = kuasarctl(['list', '--kinds', 'runc', '--dir', `runc=${runcDir}`, '--socket', `runc=${sock}`, '-o', 'json']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`runc: sandboxer at ${sock} unavailable \\(UNAVAILABLE: .*\\); showing recorded states`));
    const items = (JSON.parse(r.stdout) as { items: Record<string, unknown>[] }).items;
    expect(items).toHaveLength(3);
    for (const i of items) expect(i).toMatchObject({ live: null, liveError: expect.stringContaining('UNAVAILABLE') });
  });

  it('an empty node prints the header only', () => {
    const r = kuasarctl(['list', '--offline', ...['runc', 'wasm', 'quark', 'vmm'].flatMap((k) => ['--dir', `${k}=${path.join(tmp, `empty-${k}`)}`])]);
    expect(r.stdout.trim()).toMatch(/^SANDBOX ID\s+CREATED.*CONTAINERS$/);
    expect(r.status).toBe(0);
  });

  it('rejects malformed overrides', () => {
    const r = kuasarctl(['list', '--dir', 'docker=/x']);
    expect(r.stderr).toContain('--dir wants <kind>=<path>');
    expect(r.status).toBe(1);
    expect(kuasarctl(['list', '--dir', 'runc=relative']).stderr).toContain('is not an absolute path');
  });
});

describe('kuasarctl inspect', () => {
  it('finds a sandbox by unique prefix and prints its record and containers as JSON', () => {
    const r = kuasarctl(['inspect', POD_A.slice(0, 6), '--offline', ...flags()]);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ id: POD_A, kind: 'runc', stateDir: path.join(runcDir, POD_A), netnsPath: `/var/run/netns/cni-${POD_A.slice(0, 8)}` });
    expect((j.record as Record<string, unknown>).kindState).toEqual({ holderPid: 4243 });
  });

  it('an exact id wins over a longer id it prefixes', () => {
    const r = kuasarctl(['inspect', 'pod-b', '-o', 'table', ...flags()]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ID:\s+pod-b$/m);
    expect(r.stdout).toMatch(/^EXIT:\s+137 at /m);
    expect(r.stdout).toMatch(/^STATE:\s+stopped \(recorded; live status: sandboxer not running\)$/m);
  });

  it('an ambiguous prefix and an unknown id are errors (exit 1)', () => {
    const amb = kuasarctl(['inspect', 'pod-', '--offline', ...flags()]);
    expect(amb.stderr).toMatch(/ambiguous: .*runc\/pod-b.*wasm\/pod-bb/);
    expect(amb.status).toBe(1);
    const none = kuasarctl(['inspect', 'zzz', '--offline', ...flags()]);
    expect(none.stderr).toContain('sandbox "zzz" not found');
    expect(none.status).toBe(1);
  });
});

describe('kuasarctl exec outside VM sandboxes', () => {
  const dirs = () => flags().filter((_, i, a) => a[i] === '--dir' || a[i - 1] === '--dir');

  it('refuses a runc sandbox and points at crictl exec (exit 1)', () => {
    const r = kuasarctl(['exec', 'pod-b', ...dirs(), '--', 'true']);
    expect(r.stderr).toContain('is a runc sandbox: kuasarctl exec runs commands only in VM (vmm) sandboxes');
    expect(r.stderr).toContain('crictl exec');
    expect(r.status).toBe(1);
  });

  it('an unknown sandbox id is an error (exit 1)', () => {
    const r = kuasarctl(['exec', 'zzz', ...dirs(), '--', 'true']);
    expect(r.stderr).toContain('sandbox "zzz" not found');
    expect(r.status).toBe(1);
  });
});
