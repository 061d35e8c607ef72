import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, configDefaults, defineConfig, loadSandboxerConfig, parseSandboxerConfig, type ConfigOf } from '../src';
import { tempDir } from './harness';

const schema = defineConfig({
  runtime: { type: 'string', default: 'runc', enum: ['runc', 'crun'] },
  timeout_secs: { type: 'integer', default: 30, min: 1 },
  systemd_cgroup: { type: 'boolean', default: false },
  hooks: { type: 'string[]', default: [] },
  pause: { type: 'table', fields: { image: { type: 'string', default: 'pause:3.9' } } },
});

test('defaults when there is no file, typed per kind', async () => {
  const c = await loadSandboxerConfig('runc', schema, undefined);
  expect(c.sandboxer).toEqual({ listen: '/run/runc-sandboxer.sock', dir: '/run/kuasar-runc', log_level: 'info' });
  const kind: ConfigOf<typeof schema> = c.kind;
  expect(kind).toEqual({ runtime: 'runc', timeout_secs: 30, systemd_cgroup: false, hooks: [], pause: { image: 'pause:3.9' } });
  // Defaults are copies: mutating one config does not leak into the next.
  kind.hooks.push('x');
  expect(configDefaults(schema).hooks).toEqual([]);
});

test('a TOML file overrides only what it names', async () => {
  const file = path.join(tempDir('kuasar-sbx-config-'), 'runc.toml');
  writeFileSync(
    file,
    `[sandboxer]\nlisten = "/tmp/x.sock"\nlog_level = "debug"\n\n[runc]\nruntime = "crun"\ntimeout_secs = 5\nhooks = ["a", "b"]\n[runc.pause]\nimage = "p:1"\n`,
  );
  const c = await loadSandboxerConfig('runc', schema, file);
  expect(c.sandboxer).toEqual({ listen: '/tmp/x.sock', dir: '/run/kuasar-runc', log_level: 'debug' });
  expect(c.kind).toEqual({ runtime: 'crun', timeout_secs: 5, systemd_cgroup: false, hooks: ['a', 'b'], pause: { image: 'p:1' } });
});

test.each([
  ['[runc]\nruntim = "crun"', /unknown key "runc\.runtim"/],
  ['[sandboxer]\nlisten_addr = "x"', /unknown key "sandboxer\.listen_addr"/],
  ['[wasm]\nx = 1', /unknown key "wasm"/],
  ['top = 1', /unknown key "top"/],
  ['[runc.pause]\ntag = "x"', /unknown key "runc\.pause\.tag"/],
  ['[runc]\ntimeout_secs = "5"', /"runc\.timeout_secs" must be an integer, got string "5"/],
  ['[runc]\ntimeout_secs = 0', /"runc\.timeout_secs" must be at least 1/],
  ['[runc]\ntimeout_secs = 1.5', /must be an integer/],
  ['[runc]\nruntime = "kata"', /"runc\.runtime" must be one of "runc", "crun"/],
  ['[runc]\nhooks = [1]', /"runc\.hooks" must be an array of strings/],
  ['[runc]\nsystemd_cgroup = "yes"', /must be a boolean/],
  ['runc = 3', /"runc" must be a table/],
  ['[sandboxer]\nlog_level = "loud"', /"sandboxer\.log_level" must be one of/],
  ['[runc\nx=1', /invalid TOML/],
])('%j is a clear error', (text, message) => {
  let err: unknown;
  try {
    parseSandboxerConfig('runc', schema, text, '/etc/kuasar/runc.toml');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toMatch(message);
  expect((err as Error).message).toContain('/etc/kuasar/runc.toml');
});

test('a missing file is a ConfigError naming it', async () => {
  await expect(loadSandboxerConfig('runc', schema, '/nonexistent/x.toml')).rejects.toThrow(/cannot read config file \/nonexistent\/x\.toml/);
});
