// criConfig/createCniSetup, checked with containerd's own config parser (`containerd config dump`
// on the file PrivateContainerd wrote), so a fragment that merely looks like TOML cannot pass.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import {
  CniSetupError,
  PAUSE_IMAGE,
  PrivateContainerd,
  containerdAvailability,
  createCniSetup,
  criConfig,
  tomlTable,
  type ContainerdVersion,
} from '../src';

jest.setTimeout(60_000);

describe('tomlTable', () => {
  it('quotes keys that are not bare and puts sub-tables after scalars', () => {
    const t = tomlTable(`plugins."x"`, { options: { BinaryName: 'crun' }, 'a.b': 1, flag: true, list: ['p', 'q'], s: 'say "hi"' });
    expect(t).toBe([
      '[plugins."x"]',
      '  "a.b" = 1',
      '  flag = true',
      '  list = ["p", "q"]',
      '  s = "say \\"hi\\""',
      '',
      '[plugins."x".options]',
      '  BinaryName = "crun"',
    ].join('\n'));
  });

  it('rejects values TOML cannot hold', () => {
    expect(() => tomlTable('t', { n: Number.NaN })).toThrow(TypeError);
    expect(() => tomlTable('t', { n: null as never })).toThrow(TypeError);
    expect(() => tomlTable('t', [] as never)).toThrow(TypeError);
  });
});

describe('criConfig', () => {
  it('rejects an unknown version and an empty handler name', () => {
    expect(() => criConfig('1.5' as ContainerdVersion)).toThrow(TypeError);
    expect(() => criConfig('2.1', { runtimes: { '': { runtime_type: 'x' } } })).toThrow(TypeError);
  });

  it.each((['2.1', '1.7', '1.6'] as ContainerdVersion[]).map((v) => [v]))('containerd %s parses it into the intended settings', async (version) => {
    const avail = containerdAvailability(version);
    if ('reason' in avail) {
      // eslint-disable-next-line no-console
      console.warn(`skipping containerd ${version}: ${avail.reason}`);
      return;
    }
    const cni = createCniSetup();
    const ctrd = await PrivateContainerd.start({
      version,
      extraConfig: criConfig(version, { cni, runtimes: { 'kuasar-x': { runtime_type: 'io.containerd.kuasar.v1', options: { BinaryName: 'crun' } } } }),
    });
    try {
      const dump = execFileSync(avail.bins.containerd, ['--config', ctrd.configPath, 'config', 'dump'], { encoding: 'utf8' });
      const norm = dump.replace(/'/g, '"');
      const value = (table: string, key: string): string | undefined => {
        const start = norm.indexOf(`[${table}]\n`);
        if (start < 0) return undefined;
        const body = norm.slice(start).split('\n').slice(1);
        for (const l of body) {
          if (/^\s*\[/.test(l)) break;
          const m = new RegExp(`^\\s*${key} = (.*)$`).exec(l);
          if (m) return m[1];
        }
        return undefined;
      };
      const q = JSON.stringify;
      if (version === '2.1') {
        const rt = 'plugins."io.containerd.cri.v1.runtime"';
        expect(value('plugins."io.containerd.cri.v1.images".pinned_images', 'sandbox')).toBe(q(PAUSE_IMAGE));
        expect(value('plugins."io.containerd.cri.v1.images"', 'snapshotter')).toBe(q('overlayfs'));
        expect(value(rt, 'restrict_oom_score_adj')).toBe('true');
        expect(value(`${rt}.cni`, 'conf_dir')).toBe(q(cni.confDir));
        expect(value(`${rt}.cni`, 'bin_dirs')).toBe(`[${q(cni.binDir)}]`);
        expect(value(`${rt}.containerd.runtimes.runc`, 'runtime_type')).toBe(q('io.containerd.runc.v2'));
        expect(value(`${rt}.containerd.runtimes.kuasar-x`, 'runtime_type')).toBe(q('io.containerd.kuasar.v1'));
        expect(value(`${rt}.containerd.runtimes.kuasar-x.options`, 'BinaryName')).toBe(q('crun'));
      } else {
        const c = 'plugins."io.containerd.grpc.v1.cri"';
        expect(value(c, 'sandbox_image')).toBe(q(PAUSE_IMAGE));
        expect(value(c, 'restrict_oom_score_adj')).toBe('true');
        expect(value(`${c}.containerd`, 'snapshotter')).toBe(q('overlayfs'));
        expect(value(`${c}.cni`, 'conf_dir')).toBe(q(cni.confDir));
        expect(value(`${c}.cni`, 'bin_dir')).toBe(q(cni.binDir));
        expect(value(`${c}.containerd.runtimes.runc`, 'runtime_type')).toBe(q('io.containerd.runc.v2'));
        expect(value(`${c}.containerd.runtimes.kuasar-x`, 'runtime_type')).toBe(q('io.containerd.kuasar.v1'));
        expect(norm).toMatch(/runtimes\.kuasar-x\.options\]\s*\n\s*BinaryName = "crun"/);
      }
      // No registry mirrors configured.
      expect(norm).not.toMatch(/registry\.mirrors\."/);
    } finally {
      await ctrd.stop();
      cni.cleanup();
    }
  });
});

describe('createCniSetup', () => {
  it('writes a bridge + host-local + loopback conflist on an unused private /24 and cleans up', () => {
    const cni = createCniSetup();
    try {
      expect(Buffer.byteLength(cni.bridge)).toBeLessThanOrEqual(15);
      expect(cni.subnet).toMatch(/^10\.88\.\d{1,3}\.0\/24$/);
      const conf = JSON.parse(readFileSync(`${cni.confDir}/10-kuasar.conflist`, 'utf8'));
      expect(conf.name).toBe(cni.networkName);
      expect(conf.plugins.map((p: { type: string }) => p.type)).toEqual(['bridge', 'loopback']);
      expect(conf.plugins[0]).toMatchObject({ bridge: cni.bridge, isGateway: true, ipMasq: false, ipam: { type: 'host-local', dataDir: cni.ipamDataDir } });
      expect(conf.plugins[0].ipam.ranges).toEqual([[{ subnet: cni.subnet, gateway: cni.gateway }]]);
      const routes = execFileSync('ip', ['-o', '-4', 'route', 'show', 'table', 'all'], { encoding: 'utf8' });
      expect(routes).not.toContain(cni.subnet.replace('/24', ''));
      // Two setups never share a network name, bridge or conf dir.
      const other = createCniSetup();
      expect([other.bridge, other.networkName, other.confDir]).not.toEqual(expect.arrayContaining([cni.bridge, cni.networkName, cni.confDir]));
      other.cleanup();
    } finally {
      cni.cleanup();
    }
    expect(existsSync(cni.confDir)).toBe(false);
    cni.cleanup(); // idempotent
  });

  it('rejects a bad subnet octet', () => {
    expect(() => createCniSetup({ octet: 300 })).toThrow(CniSetupError);
    expect(() => createCniSetup({ octet: 1.5 })).toThrow(CniSetupError);
  });
});
