import { packAny, runcOptions, runtimeOptions } from '@kuasar/api';
import { parseSandboxerConfig } from '@kuasar/sandbox';
import {
  RUNC_CONFIG_SCHEMA,
  DEFAULT_ENGINE_OPTIONS,
  EngineOptionsError,
  engineOptionsFromAny,
  engineOptionsFromConfig,
  engineOptionsFromHandlerToml,
} from '../src/engine-options';

function handlerAny(toml: string) {
  return packAny('runtimeoptions.v1.Options', runtimeOptions.Options, runtimeOptions.Options.fromPartial({ configBody: Buffer.from(toml) }));
}

describe('engineOptionsFromConfig', () => {
  it('defaults to runc without a [runtime] table', () => {
    expect(engineOptionsFromConfig('[other]\nx = 1\n').binary).toBe('runc');
    expect(engineOptionsFromConfig(undefined)).toEqual(DEFAULT_ENGINE_OPTIONS);
  });

  it('selects crun and reads the other keys', () => {
    const o = engineOptionsFromConfig('[runtime]\nbinary = "crun"\nroot = "/run/kuasar/crun"\nsystemd_cgroup = true\n');
    expect(o).toEqual({ binary: 'crun', root: '/run/kuasar/crun', systemdCgroup: true, noPivotRoot: false, noNewKeyring: false });
  });

  it('reads the runc kind table the framework parsed with RUNC_CONFIG_SCHEMA', () => {
    const kind = parseSandboxerConfig('runc', RUNC_CONFIG_SCHEMA, '[runc.runtime]\nbinary = "crun"\n').kind;
    expect(engineOptionsFromConfig(kind)).toEqual({ ...DEFAULT_ENGINE_OPTIONS, binary: 'crun' });
    const defaults = parseSandboxerConfig('runc', RUNC_CONFIG_SCHEMA, '').kind;
    expect(engineOptionsFromConfig(defaults)).toEqual(DEFAULT_ENGINE_OPTIONS);
    expect(() => parseSandboxerConfig('runc', RUNC_CONFIG_SCHEMA, '[runc.runtime]\nbinary = 1\n')).toThrow(/must be a string/);
  });

  it('accepts an already parsed document and absolute paths', () => {
    expect(engineOptionsFromConfig({ runtime: { binary: '/usr/bin/crun' } }).binary).toBe('/usr/bin/crun');
  });

  it.each([
    ['[runtime]\nbinary = "runsc"\n', /unsupported runtime binary/],
    ['[runtime]\nbinary = "bin/runc"\n', /unsupported runtime binary/],
    ['[runtime]\nbinary = 3\n', /non-empty string/],
    ['[runtime]\nbinray = "crun"\n', /unknown key "binray"/],
    ['[runtime]\nroot = "relative"\n', /absolute path/],
    ['[runtime]\nsystemd_cgroup = "yes"\n', /boolean/],
    ['runtime = "crun"\n', /must be a table/],
    ['[runtime\n', /invalid TOML/],
  ])('rejects %j', (text, message) => {
    expect(() => engineOptionsFromConfig(text)).toThrow(EngineOptionsError);
    expect(() => engineOptionsFromConfig(text)).toThrow(message);
  });
});

describe('engineOptionsFromAny', () => {
  const base = engineOptionsFromConfig('[runtime]\nroot = "/run/r"\n');

  it('keeps the base for an absent or empty Any', () => {
    expect(engineOptionsFromAny(undefined, base)).toEqual(base);
    expect(engineOptionsFromAny({ typeUrl: '', value: Buffer.alloc(0) }, base)).toEqual(base);
    expect(engineOptionsFromAny(handlerAny(''), base)).toEqual(base);
  });

  it('reads BinaryName from a CRI handler options table (runtimeoptions config_body)', () => {
    const o = engineOptionsFromAny(handlerAny('BinaryName = "crun"\nSystemdCgroup = false\nNoPivotRoot = true\n'), base);
    expect(o).toEqual({ ...base, binary: 'crun', noPivotRoot: true });
  });

  it('accepts the type URL with a prefix', () => {
    const any = handlerAny('BinaryName = "crun"\n');
    expect(engineOptionsFromAny({ ...any, typeUrl: `type.googleapis.com/${any.typeUrl}` }, base).binary).toBe('crun');
  });

  it('ignores keys of other tools and empty strings, as containerd writes them', () => {
    const o = engineOptionsFromAny(handlerAny('BinaryName = ""\nShimCgroup = ""\nIoUid = 0\nConfigPath = "/x"\n'), base);
    expect(o).toEqual(base);
  });

  it('reads containerd.runc.v1.Options', () => {
    const any = packAny('containerd.runc.v1.Options', runcOptions.Options, runcOptions.Options.fromPartial({ binaryName: 'crun', systemdCgroup: true }));
    expect(engineOptionsFromAny(any, base)).toEqual({ ...base, binary: 'crun', systemdCgroup: true });
  });

  it('rejects bad input with a typed error', () => {
    expect(() => engineOptionsFromAny(handlerAny('BinaryName = "sh"\n'), base)).toThrow(/unsupported runtime binary "sh"/);
    expect(() => engineOptionsFromAny(handlerAny('BinaryName = [1\n'), base)).toThrow(/invalid TOML/);
    expect(() => engineOptionsFromAny({ typeUrl: 'foo.Bar', value: Buffer.from([1]) }, base)).toThrow(/unsupported runtime options type/);
    const withPath = packAny('runtimeoptions.v1.Options', runtimeOptions.Options, runtimeOptions.Options.fromPartial({ configPath: '/etc/x.toml' }));
    expect(() => engineOptionsFromAny(withPath, base)).toThrow(/config_path is not supported/);
    expect(() => engineOptionsFromHandlerToml('SystemdCgroup = 1\n', base)).toThrow(EngineOptionsError);
  });
});
