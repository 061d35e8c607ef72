// The built thin shim against a fake-but-real sandboxer task endpoint (ttrpc over a unix socket).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { task, timestampFromDate } from '@kuasar/api';
import { Code, TtrpcError } from '@kuasar/ttrpc';
import { runtimeType, sandboxerUnit, shimBinaryName, taskSocketEnvName, taskSocketPath } from '../src';
import { buildShim, FakeSandboxer, KINDS, removeShimBuild, runShim, shimPath, tempDir } from './helpers';

const NS = 'k8s.io';
const ID = 'c0ffee';
const startArgs = (id = ID, ns = NS) => ['-namespace', ns, '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'];
const deleteArgs = (bundle: string, id = ID, ns = NS) => ['-namespace', ns, '-address', '/run/containerd/containerd.sock', '-publish-binary', '/usr/bin/containerd', '-id', id, '-bundle', bundle, 'delete'];

/** ELF64 little-endian: does any program header have type PT_INTERP (3)? */
function hasInterpreter(elf: Buffer): boolean {
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return true;
  return false;
}

let tmp: { dir: string; cleanup: () => void };
let sock: string;
let bundle: string;
let fake: FakeSandboxer;
let env: Record<string, string>;

beforeAll(() => {
  buildShim();
});

afterAll(() => {
  removeShimBuild();
});

beforeEach(async () => {
  tmp = tempDir();
  sock = path.join(tmp.dir, 'task.sock');
  bundle = path.join(tmp.dir, 'bundle');
  fs.mkdirSync(bundle);
  env = { KUASAR_RUNC_TASK_SOCKET: sock };
  fake = await new FakeSandboxer(sock).listen();
});

afterEach(async () => {
  await fake.close();
  tmp.cleanup();
});

describe('build', () => {
  test('one binary under every kind name, statically linked when libc.a exists', () => {
    const inodes = new Set(KINDS.map((k) => fs.statSync(shimPath(k)).ino));
    expect(inodes.size).toBe(1);
    const elf = fs.readFileSync(shimPath('runc'));
    expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const libcA = spawnSync('cc', ['-print-file-name=libc.a'], { encoding: 'utf8' }).stdout.trim();
    // A dynamically linked ELF has a PT_INTERP program header (the loader); a static one has none.
    expect(hasInterpreter(elf)).toBe(!(path.isAbsolute(libcA) && fs.existsSync(libcA)));
  });
});

describe('start', () => {
  test('containerd 1.6 (no GRPC_ADDRESS): plain unix:// address, address file written, stderr empty', async () => {
    const r = await runShim(startArgs(), { cwd: bundle, env: { ...env, TTRPC_ADDRESS: '/run/containerd/containerd.sock.ttrpc' } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`unix://${sock}\n`);
    expect(fs.readFileSync(path.join(bundle, 'address'), 'utf8')).toBe(`unix://${sock}`);
    expect(fs.readdirSync(bundle).sort()).toEqual(['address']); // no temp file left behind
  });

  test('containerd 1.7+ (GRPC_ADDRESS and NAMESPACE set): JSON version 2 ttrpc address', async () => {
    const r = await runShim(startArgs(), { cwd: bundle, env: { ...env, GRPC_ADDRESS: '/run/containerd/containerd.sock', NAMESPACE: NS, MAX_SHIM_VERSION: '2' } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout.toString())).toEqual({ version: 2, address: `unix://${sock}`, protocol: 'ttrpc' });
    // The address file stays plain: both 1.6 and 1.7 read that form back after a restart.
    expect(fs.readFileSync(path.join(bundle, 'address'), 'utf8')).toBe(`unix://${sock}`);
  });

  test('a NAMESPACE that does not match -namespace keeps the plain form (inherited, not set by containerd)', async () => {
    const r = await runShim(startArgs(), { cwd: bundle, env: { ...env, GRPC_ADDRESS: '/x.sock', NAMESPACE: 'other' } });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`unix://${sock}\n`);
  });

  test('consumes runtime options on stdin and does not wait for a stdin that never closes', async () => {
    const anyOptions = task.DeleteRequest.encode({ id: 'x'.repeat(300), execId: '' }).finish(); // arbitrary protobuf bytes
    const withInput = await runShim(startArgs(), { cwd: bundle, env, stdin: anyOptions });
    expect(withInput.code).toBe(0);
    expect(withInput.stdout.toString()).toBe(`unix://${sock}\n`);
    const open = await runShim(startArgs(), { cwd: bundle, env, keepStdinOpen: true, timeoutMs: 3_000 });
    expect(open.code).toBe(0);
    expect(open.stdout.toString()).toBe(`unix://${sock}\n`);
  });

  test('only connects: the sandboxer sees no RPC', async () => {
    const r = await runShim(startArgs(), { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(fake.calls).toEqual([]);
  });

  test('sandboxer not listening: non-zero, one actionable line on stdout naming socket and unit, nothing on stderr', async () => {
    await fake.close();
    const r = await runShim(startArgs(), { cwd: bundle, env });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toBe('');
    const out = r.stdout.toString();
    expect(out.trim().split('\n')).toHaveLength(1);
    expect(out).toContain(sock);
    expect(out).toContain('kuasar-runc-sandboxer.service');
    expect(out).toContain('KUASAR_RUNC_TASK_SOCKET');
    expect(fs.existsSync(path.join(bundle, 'address'))).toBe(false);
  });

  test('stale socket path with nobody accepting: connection refused is reported', async () => {
    await fake.close();
    fs.writeFileSync(sock, ''); // what is left when nothing listens any more: connect() is refused
    const r = await runShim(startArgs(), { cwd: bundle, env });
    expect(r.code).toBe(1);
    expect(r.stdout.toString()).toContain('Connection refused');
    expect(r.stdout.toString()).toContain('kuasar-runc-sandboxer.service');
  });

  test('bundle not writable: non-zero with the reason, nothing on stderr', async () => {
    fs.mkdirSync(path.join(bundle, 'address')); // rename onto a directory fails
    const bad = await runShim(startArgs(), { cwd: bundle, env });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe('');
    expect(bad.stdout.toString()).toContain('cannot write the address file');
    expect(fs.existsSync(path.join(bundle, '.address'))).toBe(false);
  });

  test('the kind comes from the program name and picks KUASAR_<KIND>_TASK_SOCKET', async () => {
    const r = await runShim(startArgs(), { cwd: bundle, binary: shimPath('wasm'), env: { KUASAR_WASM_TASK_SOCKET: sock, KUASAR_RUNC_TASK_SOCKET: '/nonexistent/x.sock' } });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`unix://${sock}\n`);
    const wrong = await runShim(startArgs(), { cwd: bundle, binary: shimPath('quark'), env });
    expect(wrong.code).toBe(1);
    expect(wrong.stdout.toString()).toContain('/run/kuasar-quark/task.sock');
    expect(wrong.stdout.toString()).toContain('kuasar-quark-sandboxer.service');
  });

  test('default socket path is /run/kuasar-<kind>/task.sock', async () => {
    for (const kind of KINDS) {
      const r = await runShim(['-v'], { binary: shimPath(kind) });
      expect(r.code).toBe(0);
      expect(r.stdout.toString()).toContain(`/run/kuasar-${kind}/task.sock`);
    }
  });

  test('a relative or oversized socket override is rejected', async () => {
    const rel = await runShim(startArgs(), { cwd: bundle, env: { KUASAR_RUNC_TASK_SOCKET: 'task.sock' } });
    expect(rel.code).toBe(1);
    expect(rel.stdout.toString()).toContain('absolute');
    const long = await runShim(startArgs(), { cwd: bundle, env: { KUASAR_RUNC_TASK_SOCKET: `/${'x'.repeat(120)}` } });
    expect(long.code).toBe(1);
    expect(long.stdout.toString()).toContain('107');
  });

  test('Go flag spellings: --flag=value and -flag=value', async () => {
    const r = await runShim([`--namespace=${NS}`, '-address=/a.sock', '-publish-binary', '/c', `-id=${ID}`, '-debug', 'start'], { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toBe(`unix://${sock}\n`);
  });
});

describe('delete', () => {
  const exitedAt = timestampFromDate(new Date('2026-01-02T03:04:05.678Z'));

  test('Kill(SIGKILL, all) -> Wait -> Delete with the namespace; prints the sandboxer DeleteResponse', async () => {
    fake.setImpl({
      kill: async () => ({}),
      wait: async () => ({ exitStatus: 137, exitedAt }),
      delete: async () => ({ pid: 4242, exitStatus: 137, exitedAt }),
    });
    const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fake.methods()).toEqual(['Kill', 'Wait', 'Delete']);
    for (const c of fake.calls) expect(c.namespace).toBe(NS);
    expect(fake.calls[0].request).toMatchObject({ id: ID, execId: '', signal: 9, all: true });
    expect(fake.calls[1].request).toMatchObject({ id: ID, execId: '' });
    expect(fake.calls[2].request).toMatchObject({ id: ID, execId: '' });
    // Bounded: every call carries a deadline, so a stuck sandboxer cannot hold containerd's cleanup.
    for (const c of fake.calls) expect(c.timeoutMs).toBeGreaterThan(0);
    const resp = task.DeleteResponse.decode(r.stdout);
    expect(resp).toEqual({ pid: 4242, exitStatus: 137, exitedAt });
  });

  test('task already gone (the delete containerd runs after every normal task delete): no Wait, no warning', async () => {
    fake.setImpl({
      kill: async () => { throw new TtrpcError(Code.NOT_FOUND, 'container c0ffee not found'); },
      delete: async () => { throw new TtrpcError(Code.NOT_FOUND, 'container c0ffee not found'); },
    });
    const before = Date.now();
    const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(fake.methods()).toEqual(['Kill', 'Delete']);
    const resp = task.DeleteResponse.decode(r.stdout);
    expect(resp.exitStatus).toBe(137);
    const at = Number(resp.exitedAt!.seconds) * 1000;
    expect(at).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(at).toBeLessThanOrEqual(Date.now());
  });

  test('Wait that never answers: gives up after its bound, still deletes, reports the exit from nothing', async () => {
    fake.setImpl({
      kill: async () => ({}),
      wait: (_req, ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))),
      delete: async () => { throw new TtrpcError(Code.FAILED_PRECONDITION, 'container still running'); },
    });
    const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(r.ms).toBeLessThan(4_500); // inside containerd's 5 s cleanup timeout
    expect(fake.methods()).toEqual(['Kill', 'Wait', 'Delete']);
    expect(r.stderr).toContain('did not exit');
    expect(r.stderr).toContain('code 9');
    expect(task.DeleteResponse.decode(r.stdout).exitStatus).toBe(137);
  });

  test('Wait result is used when Delete fails', async () => {
    fake.setImpl({
      kill: async () => ({}),
      wait: async () => ({ exitStatus: 3, exitedAt }),
      delete: async () => { throw new TtrpcError(Code.INTERNAL, 'disk on fire'); },
    });
    const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('disk on fire');
    expect(task.DeleteResponse.decode(r.stdout)).toEqual({ pid: 0, exitStatus: 3, exitedAt });
  });

  test('sandboxer unreachable: DeleteResponse{137, now} on stdout, exit 0, warning on stderr', async () => {
    await fake.close();
    const before = Date.now();
    const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(sock);
    expect(r.stderr).toContain('not reachable');
    const resp = task.DeleteResponse.decode(r.stdout);
    expect(resp.exitStatus).toBe(137);
    expect(resp.pid).toBe(0);
    const ms = Number(resp.exitedAt!.seconds) * 1000 + resp.exitedAt!.nanos / 1e6;
    expect(ms).toBeGreaterThanOrEqual(before - 1);
    expect(ms).toBeLessThanOrEqual(Date.now() + 1);
  });

  test('sandboxer that accepts and hangs up: still exit 0 with a DeleteResponse', async () => {
    await fake.close();
    const rude = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => rude.listen(sock, r));
    try {
      const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
      expect(r.code).toBe(0);
      expect(r.stderr).toContain('Kill');
      expect(task.DeleteResponse.decode(r.stdout).exitStatus).toBe(137);
    } finally {
      await new Promise<void>((r) => rude.close(() => r()));
    }
  });

  test('garbage instead of a ttrpc response: exit 0, DeleteResponse, no crash', async () => {
    await fake.close();
    const liar = net.createServer((s) => {
      s.once('data', () => s.end(Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 2, 0])));
    });
    await new Promise<void>((r) => liar.listen(sock, r));
    try {
      const r = await runShim(deleteArgs(bundle), { cwd: bundle, env });
      expect(r.code).toBe(0);
      expect(task.DeleteResponse.decode(r.stdout).exitStatus).toBe(137);
    } finally {
      await new Promise<void>((r) => liar.close(() => r()));
    }
  });
});

describe('command line', () => {
  test('-v prints the version and exits 0', async () => {
    const r = await runShim(['-v']);
    expect(r.code).toBe(0);
    expect(r.stdout.toString()).toMatch(/^containerd-shim-kuasar-runc-v2:\n\s+Version:\s+\d+\.\d+\.\d+/);
  });

  test.each([
    [['-namespace', NS, '-id', ID, 'frobnicate'], /unknown action "frobnicate"/],
    [['-namespace', NS, '-id', ID], /missing action/],
    [['-namespace', NS, '-bogus', 'x', 'start'], /flag provided but not defined: -bogus/],
    [['-namespace'], /flag needs an argument: -namespace/],
    [['-debug=maybe', 'start'], /invalid boolean value/],
    [['-namespace', NS, '-id', ID, 'start', 'extra'], /unexpected argument "extra"/],
  ])('%j is a usage error (exit 2, reason on stderr)', async (args, message) => {
    const r = await runShim(args, { env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toContain('usage:');
  });

  test('start without -namespace or -id: exit 2, reason on stdout (containerd shows it)', async () => {
    const noNs = await runShim(['-id', ID, 'start'], { cwd: bundle, env });
    expect(noNs.code).toBe(2);
    expect(noNs.stderr).toBe('');
    expect(noNs.stdout.toString()).toContain('-namespace is required');
    const noId = await runShim(['-namespace', NS, 'start'], { cwd: bundle, env });
    expect(noId.code).toBe(2);
    expect(noId.stdout.toString()).toContain('-id is required');
  });

  test('the TypeScript names match what the binary does', async () => {
    for (const kind of KINDS) {
      expect(path.basename(shimPath(kind))).toBe(shimBinaryName(kind));
      expect(runtimeType(kind)).toBe(`io.containerd.kuasar-${kind}.v2`);
      const dflt = await runShim(['-v'], { binary: shimPath(kind) });
      expect(dflt.stdout.toString()).toContain(`Task socket: ${taskSocketPath(kind, {})}\n`);
      const env = { [taskSocketEnvName(kind)]: sock };
      const over = await runShim(startArgs(), { binary: shimPath(kind), cwd: bundle, env });
      expect(over.stdout.toString()).toBe(`unix://${taskSocketPath(kind, env)}\n`);
      const down = await runShim(startArgs(), { binary: shimPath(kind), cwd: bundle, env: { [taskSocketEnvName(kind)]: `${sock}.gone` } });
      expect(down.stdout.toString()).toContain(sandboxerUnit(kind));
    }
    expect(() => shimBinaryName('Bad-Kind')).toThrow(TypeError);
  });

  test('a program name that is not containerd-shim-kuasar-<kind>-v2 is refused', async () => {
    const other = path.join(tmp.dir, 'thin-shim');
    fs.copyFileSync(shimPath(), other);
    fs.chmodSync(other, 0o755);
    const r = await runShim(startArgs(), { binary: other, cwd: bundle, env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('containerd-shim-kuasar-<kind>-v2');
  });
});
