// The packaged executables must run where no node_modules exist: each is copied to a fresh temp
// dir and started with an empty environment. Builds whatever is missing or stale first
// (build-bin.mjs is a no-op for an up-to-date binary), so this works with or without `pnpm build`.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

// Each case starts a 85 MB executable; a busy machine can take seconds for that.
jest.setTimeout(60_000);

const ROOT = path.resolve(__dirname, '../../..');
const BUILD_BIN = path.join(ROOT, 'scripts/build-bin.mjs');
const CLEAN_ENV = { PATH: '/usr/bin:/bin' };

interface Binary {
  name: string;
  help: string[];
  /** argv that reaches a placeholder action (proves user args are parsed, not node's); absent once it is real. */
  placeholder?: string[];
  /** exit status of a usage error: 2 for sandboxers (framework CLI), 1 for kuasarctl (commander's default) */
  usageExit: number;
}

const sandboxer = (kind: string): Binary => ({
  name: `${kind}-sandboxer`,
  help: [
    `Usage: ${kind}-sandboxer [options]`,
    '--listen <socket>',
    `/run/${kind}-sandboxer.sock`,
    '--dir <dir>',
    `/run/kuasar-${kind}`,
    '--config <file>',
    '--log-level <level>',
    '--version',
  ],
  usageExit: 2,
});

const BINARIES: Binary[] = [
  {
    name: 'kuasarctl',
    help: ['Usage: kuasarctl [options] [command]', 'list', 'inspect <sandbox-id>', 'check', 'logs <id>', 'exec <sandbox-id>'],
    usageExit: 1,
  },
  sandboxer('runc'),
  sandboxer('wasm'),
  sandboxer('quark'),
  sandboxer('vmm'),
];

const rootVersion: string = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
const versionPattern = new RegExp(`^${rootVersion.replace(/\./g, '\\.')}(\\+[0-9a-f]{4,40})?$`);

let tmp: string;

function run(file: string, args: string[]): SpawnSyncReturns<string> {
  return spawnSync(file, args, { cwd: tmp, env: CLEAN_ENV, encoding: 'utf8', timeout: 30_000 });
}

beforeAll(() => {
  const env = { ...process.env };
  delete env.KUASAR_NO_SEA; // this test is about the executables
  for (const { name } of BINARIES) {
    const r = spawnSync(process.execPath, [BUILD_BIN, name], { cwd: ROOT, env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`build-bin ${name} failed (${r.status}):\n${r.stdout}${r.stderr}`);
  }
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-bin-')));
  for (let dir = tmp; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'node_modules'))) throw new Error(`${dir}/node_modules would leak into the test`);
    if (dir === path.dirname(dir)) break;
  }
  for (const { name } of BINARIES) {
    fs.copyFileSync(path.join(ROOT, 'dist/bin', name), path.join(tmp, name));
    fs.chmodSync(path.join(tmp, name), 0o755);
  }
  // The task relay each sandboxer starts is the thin shim binary, installed next to it (as install.sh does).
  const shim = spawnSync('sh', [path.join(ROOT, 'packages/shim/native/build.sh'), tmp], { encoding: 'utf8' });
  if (shim.status !== 0) throw new Error(`shim build failed (${shim.status}):\n${shim.stderr}`);
}, 900_000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.each(BINARIES)('$name outside the repository', ({ name, help, placeholder, usageExit }) => {
  const bin = (): string => path.join(tmp, name);

  it('is a native executable, not a script', () => {
    const head = Buffer.alloc(4);
    const fd = fs.openSync(bin(), 'r');
    fs.readSync(fd, head, 0, 4, 0);
    fs.closeSync(fd);
    expect(head.toString('latin1')).toBe('\x7fELF');
  });

  it('prints the build version, the same as its bundle', () => {
    const r = run(bin(), ['--version']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const version = r.stdout.trim();
    expect(version).toMatch(versionPattern);
    const bundle = spawnSync(process.execPath, [path.join(ROOT, 'packages', name, 'dist/main.js'), '--version'], {
      encoding: 'utf8',
    });
    expect(bundle.stdout.trim()).toBe(version);
  });

  it('prints help', () => {
    const r = run(bin(), ['--help']);
    expect(r.status).toBe(0);
    for (const text of help) expect(r.stdout).toContain(text);
  });

  if (placeholder) {
    it('parses its own arguments and reports the placeholder', () => {
      const r = run(bin(), placeholder);
      expect(r.stderr).toContain('not implemented yet');
      expect(r.status).toBe(2);
    });
  } else if (name.endsWith('-sandboxer')) {
    it('serves from a copy outside the repository and stops on SIGTERM', async () => {
      const listen = path.join(tmp, `${name}.sock`);
      const child = spawn(bin(), ['--listen', listen, '--dir', path.join(tmp, `${name}-state`)], {
        cwd: tmp, env: CLEAN_ENV, stdio: ['ignore', 'ignore', 'pipe'],
      });
      let log = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (log += chunk));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const deadline = Date.now() + 20_000;
      while (!log.includes('"sandboxer ready"') && Date.now() < deadline && child.exitCode === null) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(log).toContain('"sandboxer ready"');
      expect(fs.statSync(listen).mode & 0o777).toBe(0o600);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      // The task relay outlives the sandboxer on purpose (containerd's task connections survive a restart); a test
      // that is done with the sandboxer must end it itself.
      const relayPid = Number(fs.readFileSync(path.join(tmp, `${name}-state`, 'relay.pid'), 'utf8'));
      expect(relayPid).toBeGreaterThan(0);
      process.kill(relayPid, 'SIGTERM');
    }, 30_000);
  }

  it('rejects an unknown option', () => {
    const r = run(bin(), ['--no-such-option']);
    expect(r.stderr).toContain("unknown option '--no-such-option'");
    expect(r.status).toBe(usageExit);
  });
});

describe('native code in a packaged binary', () => {
  it('kuasarctl loads koffi from its SEA asset and calls libc', () => {
    const r = run(path.join(tmp, 'kuasarctl'), ['__selftest-native']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^ok koffi \d+\.\d+\.\d+\n$/);
    expect(r.status).toBe(0);
  });
});
