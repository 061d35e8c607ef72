// Each check function on facts that describe other hosts: fixture text for /proc files, real sockets and dirs in a
// temp dir for the socket checks.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parse } from 'smol-toml';
import { cgroupMode, cgroupMounts, checkCgroups } from '../src/check/cgroups';
import { checkContainerdBinaries, checkContainerdConfig, parseContainerdVersion, restrictOomScoreAdj } from '../src/check/containerd';
import { exitCodeOf, type Finding } from '../src/check/finding';
import { connectProbe, pathFacts, readDebCache, relayFacts } from '../src/check/host';
import { checkKvm, cpuFlags, kvmMode, type KvmFacts } from '../src/check/kvm';
import { checkOomScoreAdj, hasSysResource } from '../src/check/oom';
import { checkRelay } from '../src/check/relay';
import { checkSocket, checkStateDir, type SandboxerFacts } from '../src/check/sandboxer';
import { TOOLS, checkTool, parseToolVersion, type ToolProbe } from '../src/check/tools';
import { containerdSnippet } from '../src/containerd-config';
import type { Kind } from '../src/kinds';

const FIXTURES = path.join(__dirname, 'fixtures');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'utf8');

describe('kvm', () => {
  const pvmHost: KvmFacts = {
    devKvm: true,
    devKvmAccessible: true,
    cpuFlags: cpuFlags(fixture('cpuinfo-pvm')),
    modules: new Set(['kvm', 'kvm_pvm']),
    kernelConfig: 'CONFIG_KVM=y\n# CONFIG_KVM_INTEL is not set\nCONFIG_KVM_PVM=y\n',
  };
  const vmxHost: KvmFacts = {
    devKvm: true,
    devKvmAccessible: true,
    cpuFlags: cpuFlags(fixture('cpuinfo-vmx')),
    modules: new Set(['kvm', 'kvm_intel']),
    kernelConfig: 'CONFIG_KVM=y\nCONFIG_KVM_INTEL=y\n',
  };

  it('reads the flags of /proc/cpuinfo', () => {
    expect(cpuFlags(fixture('cpuinfo-vmx')).has('vmx')).toBe(true);
    expect(cpuFlags(fixture('cpuinfo-pvm')).has('vmx')).toBe(false);
    expect(cpuFlags(fixture('cpuinfo-pvm')).has('hypervisor')).toBe(true);
  });

  it('recognises KVM-PVM from each sign alone', () => {
    expect(kvmMode(pvmHost)).toEqual({ mode: 'pvm', evidence: expect.arrayContaining(['/sys/module/kvm_pvm']) });
    // only the module
    expect(kvmMode({ ...vmxHost, modules: new Set(['kvm', 'kvm_pvm']), kernelConfig: undefined }).mode).toBe('pvm');
    // only the kernel config
    expect(kvmMode({ ...vmxHost, modules: new Set(['kvm']), kernelConfig: 'CONFIG_KVM_PVM=y\n' }).mode).toBe('pvm');
    // only the missing CPU flags
    expect(kvmMode({ ...pvmHost, modules: new Set(), kernelConfig: undefined }).mode).toBe('pvm');
  });

  it('reports KVM-PVM as a warning with a fix', () => {
    const f = checkKvm(pvmHost);
    expect(f.severity).toBe('warn');
    expect(f.message).toMatch(/^KVM-PVM only/);
    expect(f.fix).toMatch(/TCG/);
  });

  it('accepts hardware KVM', () => {
    expect(kvmMode(vmxHost).mode).toBe('hardware');
    expect(checkKvm(vmxHost)).toMatchObject({ severity: 'ok', message: expect.stringContaining('vmx') });
  });

  it('warns without /dev/kvm and fails when it cannot be opened', () => {
    expect(checkKvm({ ...vmxHost, devKvm: false })).toMatchObject({ severity: 'warn', message: expect.stringContaining('not present') });
    expect(checkKvm({ ...vmxHost, devKvmAccessible: false }).severity).toBe('fail');
  });
});

describe('cgroups', () => {
  it('tells the three layouts apart from mountinfo', () => {
    expect(cgroupMode(cgroupMounts(fixture('mountinfo-hybrid')))).toBe('hybrid');
    expect(cgroupMode(cgroupMounts(fixture('mountinfo-unified')))).toBe('unified');
    expect(cgroupMode(cgroupMounts(fixture('mountinfo-legacy')))).toBe('legacy');
    expect(cgroupMode(cgroupMounts(fixture('mountinfo-none')))).toBe('none');
  });

  it('reads mount points and v1 controllers', () => {
    const mounts = cgroupMounts(fixture('mountinfo-hybrid'));
    expect(mounts.find((m) => m.fsType === 'cgroup2')?.mountPoint).toBe('/sys/fs/cgroup/unified');
    expect(mounts.find((m) => m.mountPoint === '/sys/fs/cgroup/systemd')?.options).toEqual(['name=systemd']);
  });

  it('hybrid with hugetlb on the cgroup2 side warns about crun and gives the mount fix', () => {
    const f = checkCgroups({ mounts: cgroupMounts(fixture('mountinfo-hybrid')), unifiedControllers: ['hugetlb'] });
    expect(f.severity).toBe('warn');
    expect(f.message).toContain('crun');
    expect(f.fix).toContain('mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb');
  });

  it('hybrid with an empty cgroup2 side is fine', () => {
    expect(checkCgroups({ mounts: cgroupMounts(fixture('mountinfo-hybrid')), unifiedControllers: [] })).toMatchObject({
      severity: 'ok',
      message: expect.stringMatching(/^hybrid/),
    });
  });

  it('unified is ok, legacy warns, none fails', () => {
    expect(checkCgroups({ mounts: cgroupMounts(fixture('mountinfo-unified')), unifiedControllers: ['cpu', 'memory'] }).severity).toBe('ok');
    expect(checkCgroups({ mounts: cgroupMounts(fixture('mountinfo-legacy')), unifiedControllers: undefined }).severity).toBe('warn');
    expect(checkCgroups({ mounts: [], unifiedControllers: undefined }).severity).toBe('fail');
  });
});

describe('oom_score_adj', () => {
  const without = 'Name:\tx\nCapEff:\t000001fffeffffff\n';
  const full = 'Name:\tx\nCapEff:\t000001ffffffffff\n';

  it('reads CAP_SYS_RESOURCE (bit 24) from CapEff', () => {
    expect(hasSysResource(without)).toBe(false);
    expect(hasSysResource(full)).toBe(true);
    expect(hasSysResource('Name:\tx\n')).toBeUndefined();
  });

  it('warns when missing unless containerd restricts oom_score_adj', () => {
    expect(checkOomScoreAdj(without, undefined)).toMatchObject({ severity: 'warn', fix: expect.stringContaining('restrict_oom_score_adj = true') });
    expect(checkOomScoreAdj(without, false).severity).toBe('warn');
    expect(checkOomScoreAdj(without, true).severity).toBe('ok');
    expect(checkOomScoreAdj(full, undefined).severity).toBe('ok');
  });
});

describe('tools', () => {
  const spec = (name: string) => TOOLS.find((t) => t.name === name)!;
  const found = (p: string, out: string): ToolProbe => ({ path: p, versionOutput: out });
  const none: ToolProbe = { path: undefined };

  it('parses the versions these tools print', () => {
    expect(parseToolVersion('runc version 1.1.5+ds1\ncommit: x\n')).toBe('1.1.5+ds1');
    expect(parseToolVersion('crun version 1.8.1\ncommit: f8a0\n')).toBe('1.8.1');
    expect(parseToolVersion('runsc version 0.0~20240729.0\nspec: 1.2.0\n')).toBe('0.0~20240729.0');
    expect(parseToolVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n')).toBe('7.2.22');
  });

  it('present is ok; present but broken fails', () => {
    expect(checkTool(spec('runc'), found('/usr/sbin/runc', 'runc version 1.1.5'), [], new Map())).toMatchObject({
      severity: 'ok',
      message: 'runc 1.1.5 at /usr/sbin/runc',
    });
    expect(checkTool(spec('runc'), { path: '/usr/sbin/runc', error: 'exit 1' }, [], new Map()).severity).toBe('fail');
  });

  it('missing fails only when a checked kind needs it and nothing replaces it', () => {
    const crunThere = new Map([['crun', found('/usr/bin/crun', 'crun version 1.8.1')]]);
    expect(checkTool(spec('runc'), none, ['runc'], new Map()).severity).toBe('fail');
    expect(checkTool(spec('runc'), none, ['runc'], crunThere)).toMatchObject({ severity: 'warn', message: expect.stringContaining('crun') });
    expect(checkTool(spec('runsc'), none, ['quark'], new Map())).toMatchObject({ severity: 'fail', fix: expect.stringContaining('fetch-debs') });
    expect(checkTool(spec('qemu-system-x86_64'), none, ['runc'], new Map()).severity).toBe('warn');
  });

  it('reads the fetch-debs manifest', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-cache-'));
    try {
      fs.mkdirSync(path.join(dir, 'debs'));
      fs.writeFileSync(
        path.join(dir, 'debs/manifest.json'),
        JSON.stringify([{ key: 'runsc', name: 'runsc', version: '0.0~20240729.0-4+b7', bins: { runsc: '/x/usr/bin/runsc' } }]),
      );
      expect(readDebCache(dir)).toEqual([{ key: 'runsc:runsc', version: '0.0~20240729.0-4+b7', path: '/x/usr/bin/runsc' }]);
      fs.writeFileSync(path.join(dir, 'debs/manifest.json'), '{ not json');
      expect(readDebCache(dir)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('containerd', () => {
  const probe = (out: string): ToolProbe => ({ path: '/usr/bin/containerd', versionOutput: out });

  it('parses 1.x and 2.x version lines', () => {
    expect(parseContainerdVersion('containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n')).toBe('1.6.20~ds1');
    expect(parseContainerdVersion('containerd github.com/containerd/containerd/v2 2.1.9+unknown \n')).toBe('2.1.9+unknown');
    expect(checkContainerdBinaries([probe('containerd github.com/containerd/containerd/v2 2.1.9 x')]).major).toBe(2);
    expect(checkContainerdBinaries([probe('containerd github.com/containerd/containerd 1.5.9 x')]).finding.severity).toBe('fail');
    expect(checkContainerdBinaries([{ path: undefined }]).finding.severity).toBe('fail');
  });

  const shims = (kinds: Kind[]) => new Map(kinds.map((k) => [k, `/usr/local/bin/containerd-shim-kuasar-${k}-v2`] as [Kind, string]));
  const configCheck = (text: string | undefined, major: 1 | 2, kinds: Kind[] = ['runc'], shimPaths = shims(kinds)) =>
    checkContainerdConfig({ path: '/etc/containerd/config.toml', text, readError: 'ENOENT', major, kinds, shimPaths }).findings;
  const byCheck = (fs: Finding[], check: string) => fs.find((f) => f.check === check);

  it('finds a kind registered for its major, with its shim on PATH for 1.x', () => {
    const v2 = `version = 2\n${containerdSnippet(['runc'], 1)}`;
    expect(byCheck(configCheck(v2, 1), 'containerd/runc')?.severity).toBe('ok');
    expect(byCheck(configCheck(v2, 1, ['runc'], new Map()), 'containerd/runc')).toMatchObject({
      severity: 'fail',
      message: expect.stringContaining('containerd-shim-kuasar-runc-v2'),
    });
    const v3 = `version = 3\n${containerdSnippet(['runc'], 2)}`;
    expect(byCheck(configCheck(v3, 2, ['runc'], new Map()), 'containerd/runc')?.severity).toBe('ok');
  });

  it('warns with the merge command when a kind is not registered', () => {
    const f = byCheck(configCheck('version = 2\n', 1, ['wasm']), 'containerd/wasm');
    expect(f).toMatchObject({ severity: 'warn', fix: expect.stringContaining('--kinds wasm --merge /etc/containerd/config.toml') });
  });

  it('says when a kind is registered the other major way', () => {
    const text = `version = 3\n${containerdSnippet(['runc'], 1)}`;
    const findings = configCheck(text, 2);
    expect(byCheck(findings, 'containerd/runc')?.message).toContain('registered the containerd 1.x way');
    expect(byCheck(findings, 'containerd-config')?.severity).toBe('ok');
  });

  it('flags a config version that does not fit the containerd', () => {
    expect(byCheck(configCheck('version = 3\n', 1), 'containerd-config')?.severity).toBe('fail');
    expect(byCheck(configCheck('version = 2\n', 2), 'containerd-config')?.severity).toBe('warn');
  });

  it('fails on invalid TOML and warns on a missing file', () => {
    expect(configCheck('[plugins\n', 1)[0]).toMatchObject({ severity: 'fail', message: expect.stringContaining('invalid TOML') });
    expect(configCheck(undefined, 1)[0]).toMatchObject({ severity: 'warn', message: expect.stringContaining('ENOENT') });
  });

  it('reads restrict_oom_score_adj from the CRI table of the config version', () => {
    expect(restrictOomScoreAdj(parse('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nrestrict_oom_score_adj = true\n'))).toBe(true);
    expect(restrictOomScoreAdj(parse("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nrestrict_oom_score_adj = true\n"))).toBe(true);
    expect(restrictOomScoreAdj(parse('version = 3\n[plugins."io.containerd.grpc.v1.cri"]\nrestrict_oom_score_adj = true\n'))).toBeUndefined();
  });
});

describe('sandboxer socket and state dir', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-sock-')));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function facts(socket: string, dir: string): Promise<SandboxerFacts> {
    const s = pathFacts(socket);
    return { kind: 'runc', socket: s, connect: s.type === 'socket' ? await connectProbe(socket) : undefined, stateDir: pathFacts(dir) };
  }

  it('a private socket that answers is ok; a world-readable one fails', async () => {
    const sock = path.join(tmp, 's.sock');
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      fs.chmodSync(sock, 0o600);
      expect(checkSocket(await facts(sock, tmp))).toMatchObject({ severity: 'ok' });
      fs.chmodSync(sock, 0o666);
      expect(checkSocket(await facts(sock, tmp))).toMatchObject({ severity: 'fail', message: expect.stringContaining('mode 0666') });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('a socket left by a killed sandboxer is stale', async () => {
    const sock = path.join(tmp, 'stale.sock');
    // a real listener that dies without unlinking its socket, as a crashed sandboxer does
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(r.signal).toBe('SIGKILL');
    const f = checkSocket(await facts(sock, tmp));
    expect(f).toMatchObject({ severity: 'fail', message: expect.stringContaining('ECONNREFUSED'), fix: 'systemctl restart kuasar-runc-sandboxer.service' });
  });

  it('a missing socket or a plain file fails', async () => {
    expect(checkSocket(await facts(path.join(tmp, 'none.sock'), tmp)).message).toContain('not running');
    fs.writeFileSync(path.join(tmp, 'file.sock'), '');
    expect(checkSocket(await facts(path.join(tmp, 'file.sock'), tmp)).message).toContain('not a socket');
  });

  it('the state dir must be 0700', async () => {
    const dir = path.join(tmp, 'state');
    expect(checkStateDir(await facts('/nonexistent', dir)).severity).toBe('warn');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chmodSync(dir, 0o700);
    const uidOk = process.getuid?.() === 0;
    expect(checkStateDir(await facts('/nonexistent', dir)).severity).toBe(uidOk ? 'ok' : 'warn');
    fs.chmodSync(dir, 0o755);
    expect(checkStateDir(await facts('/nonexistent', dir))).toMatchObject({ severity: 'warn', message: expect.stringContaining('0755') });
  });
});

describe('task relay', () => {
  let tmp: string;
  let built: string;
  beforeAll(() => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-relay-')));
    built = path.join(tmp, 'built');
    const r = spawnSync('sh', [path.join(__dirname, '../../shim/native/build.sh'), built], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`shim build failed: ${r.stderr}`);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const executable = (file: string, text: string) => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text, { mode: 0o755 });
  };

  it('the real shim binary runs its relay mode', async () => {
    const f = await relayFacts('runc', path.join(tmp, 'no-state'), [built]);
    expect(f).toEqual({ kind: 'runc', path: path.join(built, 'containerd-shim-kuasar-runc-v2'), runs: 'ok', socket: undefined });
    expect(checkRelay(f)).toMatchObject({ check: 'relay/runc', severity: 'ok', message: `${f.path} runs its relay mode` });
  });

  it('missing is a warning naming what a restart then costs', async () => {
    const f = await relayFacts('quark', tmp, [path.join(tmp, 'empty')]);
    expect(f).toEqual({ kind: 'quark' });
    expect(checkRelay(f)).toMatchObject({ severity: 'warn', message: expect.stringContaining('containerd-shim-kuasar-quark-v2 (the task relay) is neither') });
  });

  it('a binary without the relay mode (an old shim) fails', async () => {
    const dir = path.join(tmp, 'old');
    executable(path.join(dir, 'containerd-shim-kuasar-wasm-v2'), '#!/bin/sh\necho "usage: shim -namespace <ns> start|delete" >&2\nexit 2\n');
    const f = await relayFacts('wasm', tmp, [dir]);
    expect(f.runs).not.toBe('ok');
    expect(checkRelay(f)).toMatchObject({ severity: 'fail', message: expect.stringContaining('does not run its relay mode') });
    // exits 0 but is something else
    executable(path.join(dir, 'containerd-shim-kuasar-vmm-v2'), '#!/bin/sh\necho hello\n');
    expect(checkRelay(await relayFacts('vmm', tmp, [dir]))).toMatchObject({ severity: 'fail', message: expect.stringContaining('no relay mode') });
  });

  it('the one next to the sandboxer wins over PATH, as the sandboxer picks it', async () => {
    const early = path.join(tmp, 'early');
    executable(path.join(early, 'containerd-shim-kuasar-runc-v2'), '#!/bin/sh\nexit 2\n');
    const beside = path.join(tmp, 'beside');
    executable(path.join(beside, 'runc-sandboxer'), '#!/bin/sh\n');
    fs.linkSync(path.join(built, 'containerd-shim-kuasar-runc-v2'), path.join(beside, 'containerd-shim-kuasar-runc-v2'));
    const f = await relayFacts('runc', tmp, [early, beside]);
    expect(f).toMatchObject({ path: path.join(beside, 'containerd-shim-kuasar-runc-v2'), runs: 'ok' });
  });

  it('reports the relay socket of the state dir: answering, or left by a dead relay', async () => {
    const state = path.join(tmp, 'state');
    fs.mkdirSync(state, { recursive: true });
    const sock = path.join(state, 'relay.sock');
    const server = net.createServer((c) => c.destroy());
    await new Promise<void>((r) => server.listen(sock, r));
    try {
      const f = await relayFacts('runc', state, [built]);
      expect(checkRelay(f)).toMatchObject({ severity: 'ok', message: expect.stringContaining(`; ${sock} answers`) });
    } finally {
      await new Promise((r) => server.close(r));
    }
    // a relay killed without removing its socket
    const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(r.signal).toBe('SIGKILL');
    expect(checkRelay(await relayFacts('runc', state, [built]))).toMatchObject({
      severity: 'warn', message: expect.stringContaining('ECONNREFUSED'), fix: expect.stringContaining('systemctl restart kuasar-runc-sandboxer.service'),
    });
  });
});

it('exit code: 0 all ok, 1 warnings only, 2 any failure', () => {
  const f = (severity: Finding['severity']): Finding => ({ check: 'x', severity, message: '' });
  expect(exitCodeOf([f('ok')])).toBe(0);
  expect(exitCodeOf([f('ok'), f('warn')])).toBe(1);
  expect(exitCodeOf([f('warn'), f('fail')])).toBe(2);
});
