// The [quark] table against this very host: what cannot work here is refused at start-up with the reason.
import * as fs from 'node:fs';
import { ConfigError, configDefaults } from '@kuasar/sandbox';
import {
  QUARK_CONFIG_SCHEMA, detectHost, goVersionOf, runscSettings, runscWarnings, type HostFacts, type QuarkConfig,
} from '../src';
import { runscPath, startWithConfig } from './helpers';

const runsc = runscPath();
const maybe = runsc ? test : test.skip;
const host = detectHost();
const config = (o: Partial<QuarkConfig> = {}): QuarkConfig => ({ ...configDefaults(QUARK_CONFIG_SCHEMA), ...(runsc ? { runsc } : {}), ...o });

maybe('defaults: the cached trixie runsc, systrap, host network; its Go build info is read', () => {
  const s = runscSettings(config({ runsc: '' }), host);
  expect(s.binary).toBe(runsc);
  expect(s.globalArgs).toEqual(['--platform=systrap', '--network=host']);
  expect(s.version.text).toMatch(/^runsc version 0\.0~20240729/);
  expect(s.version.date).toBe(20240729);
  expect(s.version.go).toMatch(/^go1\.24\./);
  expect(goVersionOf(runsc!)).toBe(s.version.go);
  expect(runscWarnings(s.version)).toEqual([]);
});

test("sid's rebuild with a newer Go is named as the broken build", () => {
  const w = runscWarnings({ text: 'runsc version 0.0~20240729.0', date: 20240729, go: 'go1.26.0' });
  expect(w).toHaveLength(1);
  expect(w[0]).toMatch(/sid's broken build/);
  expect(runscWarnings({ text: 'x', date: 20240729, go: 'go1.24.4' })).toEqual([]);
});

test('platform = "kvm" is refused on a KVM-PVM host, with the reason', () => {
  const pvm: HostFacts = { kvm: true, kvmPvm: true, netnsHasRmemDefault: false };
  expect(() => runscSettings(config({ platform: 'kvm' }), pvm)).toThrow(/KVM-PVM.*hangs in KVM_RUN/);
  expect(() => runscSettings(config({ platform: 'kvm' }), { ...pvm, kvm: false, kvmPvm: false })).toThrow(/needs \/dev\/kvm/);
  // and this host is one: the detection is real
  expect(host.kvmPvm).toBe(fs.existsSync('/sys/module/kvm_pvm'));
});

test('network = "sandbox" is refused where a fresh netns shows rmem_default (gVisor #10704)', () => {
  const hit: HostFacts = { kvm: false, kvmPvm: false, netnsHasRmemDefault: true };
  expect(() => runscSettings(config({ network: 'sandbox' }), hit)).toThrow(ConfigError);
  expect(() => runscSettings(config({ network: 'sandbox' }), hit)).toThrow(/#10704.*use network = "host"/);
  expect(host.netnsHasRmemDefault).toBe(true); // kernel 6.18 (machine-facts); the test documents it
});

test('bad runsc paths and flags are named', () => {
  expect(() => runscSettings(config({ runsc: 'runsc' }), host)).toThrow(/absolute path/);
  expect(() => runscSettings(config({ runsc: '/usr/bin/runc' }), host)).toThrow(/must be named "runsc"/);
  expect(() => runscSettings(config({ runsc: '/nonexistent/runsc' }), host)).toThrow(/does not exist/);
  expect(() => runscSettings(config({ flags: ['--root=/x'] }), host)).toThrow(/--root is set by the sandboxer/);
  expect(() => runscSettings(config({ flags: ['debug'] }), host)).toThrow(/not a flag/);
});

maybe('the sandboxer refuses to start with network = "sandbox": exit 2, the reason on stderr, no socket', async () => {
  const r = await startWithConfig('[quark]\nnetwork = "sandbox"\n');
  expect(r.exits).toEqual([2]);
  expect(r.stderr).toMatch(/network = "sandbox" cannot work on this kernel/);
  expect(r.served).toBe(false);
});
