// scripts/install.sh and uninstall.sh into temp roots. The executables they copy are stand-ins (the install scripts
// never look inside them; binaries.test.ts covers the real ones); kuasarctl is the real CLI, since the scripts use it
// to print and merge the containerd snippets. A `systemctl` on PATH records any call: with DESTDIR there must be none.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseSandboxerConfig } from '@kuasar/sandbox';
import { RUNC_CONFIG_SCHEMA } from '@kuasar/runc-sandboxer';
import { VMM_CONFIG_SCHEMA } from '@kuasar/vmm-sandboxer';
import { ROOT, kuasarctlBundle } from './cli';

jest.setTimeout(120_000);

const INSTALL = path.join(ROOT, 'scripts/install.sh');
const UNINSTALL = path.join(ROOT, 'scripts/uninstall.sh');
const V2 = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n';

let tmp: string;
let dist: string;
let fakeBin: string;
let systemctlLog: string;

beforeAll(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-install-')));
  dist = path.join(tmp, 'dist');
  fs.mkdirSync(dist);
  const exe = (name: string, body: string) => {
    fs.writeFileSync(path.join(dist, name), `#!/bin/sh\n${body}\n`);
    fs.chmodSync(path.join(dist, name), 0o755);
  };
  for (const k of ['runc', 'wasm', 'quark', 'vmm']) exe(`${k}-sandboxer`, `echo ${k}-sandboxer stand-in`);
  exe('containerd-shim-kuasar-runc-v2', 'echo shim stand-in'); // only runc's shim is "built"
  exe('kuasarctl', `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(kuasarctlBundle())} "$@"`);
  fakeBin = path.join(tmp, 'fakebin');
  fs.mkdirSync(fakeBin);
  systemctlLog = path.join(tmp, 'systemctl.log');
  fs.writeFileSync(path.join(fakeBin, 'systemctl'), `#!/bin/sh\necho "$@" >> ${JSON.stringify(systemctlLog)}\n`);
  fs.chmodSync(path.join(fakeBin, 'systemctl'), 0o755);
});

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sh(script: string, args: string[], destdir: string | undefined): SpawnSyncReturns<string> {
  const env: NodeJS.ProcessEnv = { PATH: `${fakeBin}:/usr/sbin:/usr/bin:/sbin:/bin`, KUASAR_DIST: dist };
  if (destdir !== undefined) env.DESTDIR = destdir;
  return spawnSync('bash', [script, ...args], { encoding: 'utf8', env, timeout: 60_000 });
}
const install = (args: string[], destdir?: string) => sh(INSTALL, args, destdir);
const uninstall = (args: string[], destdir?: string) => sh(UNINSTALL, args, destdir);

function freshRoot(): string {
  return fs.mkdtempSync(path.join(tmp, 'root-'));
}

/** Every path below `dir` with its mode and content, to prove that nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (p: string) => {
    const st = fs.lstatSync(p);
    const rel = path.relative(dir, p) || '.';
    if (st.isDirectory()) {
      out[rel] = `dir ${(st.mode & 0o7777).toString(8)}`;
      for (const n of fs.readdirSync(p)) walk(path.join(p, n));
    } else {
      out[rel] = `${(st.mode & 0o7777).toString(8)} ${fs.readFileSync(p, 'utf8')}`;
    }
  };
  walk(dir);
  return out;
}

const mode = (p: string) => fs.statSync(p).mode & 0o7777;
const backups = (file: string) => fs.readdirSync(path.dirname(file)).filter((n) => n.startsWith(`${path.basename(file)}.kuasar-backup-`));

describe('install.sh into a temp DESTDIR', () => {
  let root: string;
  let result: SpawnSyncReturns<string>;
  beforeAll(() => {
    fs.rmSync(systemctlLog, { force: true });
    root = freshRoot();
    result = install(['--kinds', 'runc,wasm'], root);
  });

  it('succeeds without touching systemd', () => {
    expect(result.stderr).not.toContain('error');
    expect(result.status).toBe(0);
    expect(fs.existsSync(systemctlLog)).toBe(false);
    expect(result.stderr).toContain('systemctl daemon-reload && systemctl enable --now kuasar-runc-sandboxer kuasar-wasm-sandboxer');
  });

  it('installs the executables 0755 under $DESTDIR$PREFIX/bin, shims only when built', () => {
    const bin = path.join(root, 'usr/local/bin');
    expect(fs.readdirSync(bin).sort()).toEqual(['containerd-shim-kuasar-runc-v2', 'kuasarctl', 'runc-sandboxer', 'wasm-sandboxer']);
    for (const n of fs.readdirSync(bin)) expect(mode(path.join(bin, n))).toBe(0o755);
    expect(fs.readFileSync(path.join(bin, 'runc-sandboxer'), 'utf8')).toContain('runc-sandboxer stand-in');
    expect(result.stderr).toContain('containerd-shim-kuasar-wasm-v2 is not built');
  });

  it('writes a notify unit with watchdog, KillMode=process and delegation for each kind', () => {
    for (const k of ['runc', 'wasm']) {
      const unit = path.join(root, `etc/systemd/system/kuasar-${k}-sandboxer.service`);
      expect(mode(unit)).toBe(0o644);
      const text = fs.readFileSync(unit, 'utf8');
      for (const line of [
        'Type=notify',
        'WatchdogSec=30s',
        'KillMode=process',
        'Delegate=yes',
        'Restart=always',
        'Before=containerd.service',
        'Environment=TTRPC_ADDRESS=/run/containerd/containerd.sock.ttrpc',
        `ExecStart=/usr/local/bin/${k}-sandboxer --listen /run/${k}-sandboxer.sock --dir /run/kuasar-${k} --config /etc/kuasar/${k}-sandboxer.toml`,
        'WantedBy=multi-user.target',
      ]) {
        expect(text.split('\n')).toContain(line);
      }
      expect(text).not.toContain('@');
    }
  });

  it('installs the default configs', () => {
    for (const k of ['runc', 'wasm']) {
      const conf = path.join(root, `etc/kuasar/${k}-sandboxer.toml`);
      expect(mode(conf)).toBe(0o644);
      expect(fs.readFileSync(conf, 'utf8')).toBe(fs.readFileSync(path.join(ROOT, `packaging/config/${k}-sandboxer.toml`), 'utf8'));
    }
    expect(fs.existsSync(path.join(root, 'etc/kuasar/quark-sandboxer.toml'))).toBe(false);
  });

  it('prints the containerd snippets for 1.x and 2.x', () => {
    expect(result.stdout).toContain('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-runc]\n  runtime_type = "io.containerd.kuasar-runc.v2"');
    expect(result.stdout).toContain('[proxy_plugins.kuasar-wasm]\n  type = "sandbox"\n  address = "/run/wasm-sandboxer.sock"');
    expect(result.stdout).toContain('[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kuasar-wasm]\n  runtime_type = "io.containerd.kuasar-wasm.v2"\n  sandboxer = "kuasar-wasm"');
  });

  it('a second run keeps an edited config and replaces the rest', () => {
    const conf = path.join(root, 'etc/kuasar/runc-sandboxer.toml');
    fs.writeFileSync(conf, '[runc.runtime]\nbinary = "crun"\n');
    fs.writeFileSync(path.join(root, 'usr/local/bin/runc-sandboxer'), 'old');
    const again = install(['--kinds', 'runc'], root);
    expect(again.status).toBe(0);
    expect(again.stderr).toContain(`kept existing ${conf}`);
    expect(fs.readFileSync(conf, 'utf8')).toBe('[runc.runtime]\nbinary = "crun"\n');
    expect(fs.readFileSync(path.join(root, 'usr/local/bin/runc-sandboxer'), 'utf8')).toContain('stand-in');
    expect(fs.readdirSync(path.join(root, 'usr/local/bin')).filter((n) => n.startsWith('.'))).toEqual([]);
  });
});

it('--prefix moves the executables and the unit ExecStart', () => {
  const root = freshRoot();
  expect(install(['--kinds', 'quark', '--prefix', '/opt/kuasar'], root).status).toBe(0);
  expect(fs.existsSync(path.join(root, 'opt/kuasar/bin/quark-sandboxer'))).toBe(true);
  expect(fs.readFileSync(path.join(root, 'etc/systemd/system/kuasar-quark-sandboxer.service'), 'utf8')).toContain(
    'ExecStart=/opt/kuasar/bin/quark-sandboxer --listen /run/quark-sandboxer.sock',
  );
});

describe('--merge-containerd-config', () => {
  it('appends the snippet after a backup, and a second run changes nothing', () => {
    const root = freshRoot();
    const conf = path.join(root, 'config.toml');
    fs.writeFileSync(conf, V2);
    fs.chmodSync(conf, 0o640);
    const first = install(['--kinds', 'runc,vmm', '--merge-containerd-config', conf, '--containerd-version', '1'], root);
    expect(first.status).toBe(0);
    const merged = fs.readFileSync(conf, 'utf8');
    expect(merged.startsWith(V2)).toBe(true);
    expect(merged).toContain('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-vmm]');
    expect(mode(conf)).toBe(0o640);
    expect(backups(conf)).toHaveLength(1);
    expect(fs.readFileSync(path.join(root, backups(conf)[0]), 'utf8')).toBe(V2);

    const second = install(['--kinds', 'runc,vmm', '--merge-containerd-config', conf, '--containerd-version', '1'], root);
    expect(second.status).toBe(0);
    expect(second.stderr).toContain('nothing to add; unchanged');
    expect(fs.readFileSync(conf, 'utf8')).toBe(merged);
    expect(backups(conf)).toHaveLength(1);
  });

  it('detects the containerd on PATH (1.6 here) when no version is given', () => {
    const root = freshRoot();
    const conf = path.join(root, 'config.toml');
    fs.writeFileSync(conf, V2);
    const r = install(['--kinds', 'runc', '--merge-containerd-config', conf], root);
    expect(r.status).toBe(0);
    expect(fs.readFileSync(conf, 'utf8')).toContain('runtime_type = "io.containerd.kuasar-runc.v2"');
    expect(fs.readFileSync(conf, 'utf8')).not.toContain('proxy_plugins');
  });

  it('merges the 2.x form into a version 3 config', () => {
    const root = freshRoot();
    const conf = path.join(root, 'config.toml');
    fs.writeFileSync(conf, 'version = 3\n');
    expect(install(['--kinds', 'wasm', '--merge-containerd-config', conf, '--containerd-version', '2.1'], root).status).toBe(0);
    expect(fs.readFileSync(conf, 'utf8')).toContain('[proxy_plugins.kuasar-wasm]');
  });

  it('refuses a config it cannot merge into before installing anything', () => {
    const root = freshRoot();
    const conf = path.join(root, 'config.toml');
    fs.writeFileSync(conf, 'version = 3\n');
    const r = install(['--kinds', 'runc', '--merge-containerd-config', conf, '--containerd-version', '1'], root);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('is config version 3, containerd 1.x snippets need version 2');
    expect(r.stderr).toContain('nothing was installed');
    expect(fs.readdirSync(root)).toEqual(['config.toml']);
    expect(fs.readFileSync(conf, 'utf8')).toBe('version = 3\n');
  });
});

it('--dry-run changes nothing, even with a merge', () => {
  const root = freshRoot();
  const conf = path.join(root, 'config.toml');
  fs.writeFileSync(conf, V2);
  const before = snapshot(root);
  const r = install(['--kinds', 'runc,wasm', '--merge-containerd-config', conf, '--containerd-version', '1', '--dry-run'], root);
  expect(r.status).toBe(0);
  expect(r.stderr).toContain(`would install ${root}/usr/local/bin/runc-sandboxer`);
  expect(r.stderr).toContain('would add runc, wasm for containerd 1.x (dry run, unchanged)');
  expect(snapshot(root)).toEqual(before);
});

it('rejects bad arguments with a clear message', () => {
  const bad = install(['--kinds', 'runc,docker'], freshRoot());
  expect(bad.stderr).toContain("unknown kind 'docker'");
  expect(bad.status).toBe(1);
  expect(install(['--prefix', 'usr/local'], freshRoot()).stderr).toContain('--prefix must be an absolute path');
  expect(install(['--bogus'], freshRoot()).stderr).toContain("unknown argument '--bogus'");
});

describe('uninstall.sh', () => {
  it('reverses install: per kind, keeping configs unless --purge, and unmerges containerd', () => {
    const root = freshRoot();
    const conf = path.join(root, 'config.toml');
    fs.writeFileSync(conf, V2);
    expect(install(['--kinds', 'runc,wasm', '--merge-containerd-config', conf, '--containerd-version', '1'], root).status).toBe(0);
    const bin = path.join(root, 'usr/local/bin');

    const one = uninstall(['--kinds', 'runc'], root);
    expect(one.status).toBe(0);
    expect(fs.readdirSync(bin).sort()).toEqual(['kuasarctl', 'wasm-sandboxer']);
    expect(fs.existsSync(path.join(root, 'etc/systemd/system/kuasar-runc-sandboxer.service'))).toBe(false);
    expect(fs.existsSync(path.join(root, 'etc/kuasar/runc-sandboxer.toml'))).toBe(true);
    expect(one.stderr).toContain('kept');

    const dry = snapshot(root);
    expect(uninstall(['--purge', '--unmerge-containerd-config', conf, '--dry-run'], root).status).toBe(0);
    expect(snapshot(root)).toEqual(dry);

    const all = uninstall(['--purge', '--unmerge-containerd-config', conf], root);
    expect(all.status).toBe(0);
    expect(fs.readdirSync(bin)).toEqual([]);
    expect(fs.existsSync(path.join(root, 'etc/kuasar'))).toBe(false);
    expect(fs.readdirSync(path.join(root, 'etc/systemd/system'))).toEqual([]);
    expect(fs.readFileSync(conf, 'utf8')).toBe(V2);
    expect(fs.existsSync(systemctlLog)).toBe(false);
  });
});

describe('default configs in packaging/config', () => {
  // Commented keys are documentation: uncommented they must still be valid keys with their default values.
  const uncomment = (text: string) => text.replace(/^# ((?:[a-z_]+ = .*)|(?:\[[a-z_.]+\]))$/gm, '$1');

  it('the runc config parses against the runc sandboxer schema, commented and uncommented', () => {
    const text = fs.readFileSync(path.join(ROOT, 'packaging/config/runc-sandboxer.toml'), 'utf8');
    const asShipped = parseSandboxerConfig('runc', RUNC_CONFIG_SCHEMA, text);
    const spelledOut = parseSandboxerConfig('runc', RUNC_CONFIG_SCHEMA, uncomment(text));
    expect(uncomment(text)).not.toBe(text);
    expect(spelledOut).toEqual(asShipped);
    expect(spelledOut.sandboxer).toEqual({ listen: '/run/runc-sandboxer.sock', dir: '/run/kuasar-runc', log_level: 'info' });
  });

  it('the vmm config parses against the vmm sandboxer schema, commented and uncommented', () => {
    const text = fs.readFileSync(path.join(ROOT, 'packaging/config/vmm-sandboxer.toml'), 'utf8');
    const asShipped = parseSandboxerConfig('vmm', VMM_CONFIG_SCHEMA, text);
    const spelledOut = parseSandboxerConfig('vmm', VMM_CONFIG_SCHEMA, uncomment(text));
    expect(uncomment(text)).not.toBe(text);
    expect(spelledOut).toEqual(asShipped);
    expect(spelledOut.sandboxer).toEqual({ listen: '/run/vmm-sandboxer.sock', dir: '/run/kuasar-vmm', log_level: 'info' });
  });

  it.each(['wasm', 'quark'])('the %s config parses with its [sandboxer] keys spelled out', (kind) => {
    const text = fs.readFileSync(path.join(ROOT, `packaging/config/${kind}-sandboxer.toml`), 'utf8');
    expect(parseSandboxerConfig(kind, {}, uncomment(text)).sandboxer).toEqual({
      listen: `/run/${kind}-sandboxer.sock`,
      dir: `/run/kuasar-${kind}`,
      log_level: 'info',
    });
  });
});
