// The Quark adapter cannot run here (QuarkContainer is not installable); what can be checked is that a missing
// `quark` is a clear start-up error and that the binary lookup is real.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { QuarkNotInstalledError, quarkBinary } from '../src';
import { startWithConfig, tempDir } from './helpers';

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
  const r = await startWithConfig('[quark]\nengine = "quark"\nquark = "quark-not-installed-here"\n');
  expect(r.exits).toEqual([2]);
  expect(r.stderr).toContain('"quark-not-installed-here" binary, which is not installed');
  expect(r.served).toBe(false);
});
