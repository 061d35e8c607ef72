// The Quark adapter cannot run here (QuarkContainer is not installable); what can be checked is that a missing
// `quark` is a clear start-up error and that the binary lookup is real.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLogger, runSandboxer } from '@kuasar/sandbox';
import { QuarkNotInstalledError, quarkBinary, quarkSandboxerSpec } from '../src';
import { tempDir } from './helpers';

test('quarkBinary finds an executable quark in PATH and refuses a missing or non-executable one', () => {
  const dir = tempDir('kuasar-quark-bin-');
  expect(() => quarkBinary('quark', dir)).toThrow(QuarkNotInstalledError);
  const bin = path.join(dir, 'quark');
  fs.writeFileSync(bin, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
  expect(() => quarkBinary('quark', dir)).toThrow(/not installed/);
  fs.chmodSync(bin, 0o755);
  expect(quarkBinary('quark', `/nonexistent:${dir}`)).toBe(bin);
  expect(quarkBinary(bin, '')).toBe(bin);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('engine = "quark" without quark installed: exit 2 naming the binary, nothing served', async () => {
  const dir = tempDir('kuasar-quark-noquark-');
  const file = path.join(dir, 'config.toml');
  fs.writeFileSync(file, '[quark]\nengine = "quark"\nquark = "quark-not-installed-here"\n');
  const exits: number[] = [];
  let err = '';
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += c.toString()), true));
  try {
    await runSandboxer(quarkSandboxerSpec('test'), {
      argv: ['--listen', path.join(dir, 'q.sock'), '--dir', path.join(dir, 'state'), '--config', file],
      exit: (code) => exits.push(code), logger: createLogger({ level: 'fatal' }),
    });
  } finally {
    spy.mockRestore();
  }
  expect(exits).toEqual([2]);
  expect(err).toContain('"quark-not-installed-here" binary, which is not installed');
  expect(fs.existsSync(path.join(dir, 'q.sock'))).toBe(false);
  fs.rmSync(dir, { recursive: true, force: true });
});
