// `kuasarctl check` on this machine, through the bundled CLI. These facts are this machine's (see
// /work/shared/docs/machine-facts.md): KVM-PVM, hybrid cgroups, runc and crun installed, root without
// CAP_SYS_RESOURCE.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Finding } from '../src/check/finding';
import { containerdSnippet } from '../src/containerd-config';
import { kuasarctl, kuasarctlBundle } from './cli';

jest.setTimeout(60_000);

interface Report {
  findings: Finding[];
  exitCode: number;
}

const find = (r: Report, check: string) => r.findings.find((f) => f.check === check);

beforeAll(() => kuasarctlBundle());

describe('kuasarctl check on this machine', () => {
  let report: Report;
  let status: number | null;
  beforeAll(() => {
    const r = kuasarctl(['check', '-o', 'json']);
    status = r.status;
    report = JSON.parse(r.stdout) as Report;
  });

  it('finds KVM-PVM', () => {
    expect(find(report, 'kvm')).toMatchObject({ severity: 'warn', message: expect.stringMatching(/^KVM-PVM only/) });
  });

  it('finds hybrid cgroups', () => {
    expect(find(report, 'cgroups')?.message).toMatch(/^hybrid \(\d+ v1 hierarchies \+ cgroup2 at \/sys\/fs\/cgroup\/unified\)/);
  });

  it('finds runc and crun with their versions', () => {
    expect(find(report, 'runc')).toMatchObject({ severity: 'ok', message: expect.stringMatching(/^runc 1\.\d+\.\d+\S* at \//) });
    expect(find(report, 'crun')).toMatchObject({ severity: 'ok', message: expect.stringMatching(/^crun 1\.\d+\.\d+ at \//) });
  });

  it('finds that root lacks CAP_SYS_RESOURCE', () => {
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const capEff = BigInt(`0x${/^CapEff:\s*(\S+)/m.exec(status)![1]}`);
    const has = ((capEff >> 24n) & 1n) === 1n;
    expect(find(report, 'oom-score-adj')?.message).toMatch(has ? /present/ : /missing/);
  });

  it('gives every warning and failure a fix, and exits with the worst severity', () => {
    for (const f of report.findings) if (f.severity !== 'ok') expect(f.fix).toBeTruthy();
    const worst = report.findings.some((f) => f.severity === 'fail') ? 2 : report.findings.some((f) => f.severity === 'warn') ? 1 : 0;
    expect(report.exitCode).toBe(worst);
    expect(status).toBe(worst);
  });

  it('prints an aligned table with the fixes below it', () => {
    const r = kuasarctl(['check']);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^CHECK\s+STATUS\s+MESSAGE$/);
    const statusCol = lines[0].indexOf('STATUS');
    const kvm = lines.find((l) => l.startsWith('kvm '))!;
    expect(kvm.slice(statusCol, statusCol + 4)).toBe('warn');
    expect(r.stdout).toMatch(/\nFIXES\n(  .*\n)*  kvm: /);
    expect(r.status).toBe(status);
  });
});

describe('kuasarctl check for an installed runc sandboxer', () => {
  let tmp: string;
  let server: net.Server;
  beforeAll(async () => {
    tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-check-')));
    fs.mkdirSync(path.join(tmp, 'state'), { mode: 0o700 });
    fs.writeFileSync(path.join(tmp, 'config.toml'), `version = 3\n${containerdSnippet(['runc'], 2, { socketOf: () => path.join(tmp, 'runc.sock') })}`);
    server = net.createServer((c) => c.destroy());
    await new Promise<void>((r) => server.listen(path.join(tmp, 'runc.sock'), r));
    fs.chmodSync(path.join(tmp, 'runc.sock'), 0o600);
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const run = (extra: string[]) =>
    JSON.parse(
      kuasarctl([
        'check', '-o', 'json', '--kinds', 'runc', '--containerd-version', '2', '--containerd-config', path.join(tmp, 'config.toml'),
        '--socket', `runc=${path.join(tmp, 'runc.sock')}`, '--dir', `runc=${path.join(tmp, 'state')}`, ...extra,
      ]).stdout,
    ) as Report;

  it('sees the registration, the answering private socket and the 0700 state dir', () => {
    const r = run([]);
    expect(find(r, 'containerd/runc')).toMatchObject({ severity: 'ok', message: 'kuasar-runc registered for containerd 2.x' });
    expect(find(r, 'socket/runc')?.severity).toBe('ok');
    expect(find(r, 'state-dir/runc')?.severity).toBe('ok');
  });

  it('finds the task relay in PATH and sees that its relay mode runs', () => {
    const bin = path.join(tmp, 'bin');
    const r = spawnSync('sh', [path.join(__dirname, '../../shim/native/build.sh'), bin], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const args = [
      'check', '-o', 'json', '--kinds', 'runc', '--containerd-version', '2', '--containerd-config', path.join(tmp, 'config.toml'),
      '--socket', `runc=${path.join(tmp, 'runc.sock')}`, '--dir', `runc=${path.join(tmp, 'state')}`,
    ];
    const found = JSON.parse(kuasarctl(args, { ...process.env, PATH: `${bin}:${process.env.PATH}` }).stdout) as Report;
    expect(find(found, 'relay/runc')).toMatchObject({ severity: 'ok', message: `${path.join(bin, 'containerd-shim-kuasar-runc-v2')} runs its relay mode` });
    // without it in PATH (this machine has no installed one): a warning with the way to install it
    const missing = JSON.parse(kuasarctl(args, { ...process.env, PATH: '/usr/bin:/bin' }).stdout) as Report;
    expect(find(missing, 'relay/runc')).toMatchObject({ severity: 'warn', fix: expect.stringContaining('scripts/install.sh --kinds runc') });
  });

  it('fails when the socket is gone', () => {
    const r = run(['--socket', `runc=${path.join(tmp, 'gone.sock')}`]);
    expect(find(r, 'socket/runc')).toMatchObject({ severity: 'fail', fix: expect.stringContaining('systemctl start kuasar-runc-sandboxer.service') });
    expect(r.exitCode).toBe(2);
  });
});

it('rejects bad flags with a clear message and exit 1', () => {
  const r = kuasarctl(['check', '--kinds', 'docker']);
  expect(r.stderr).toContain('unknown sandboxer kind "docker"');
  expect(r.status).toBe(1);
  const o = kuasarctl(['check', '-o', 'yaml']);
  expect(o.stderr).toContain('-o must be table or json');
  expect(o.status).toBe(1);
});
