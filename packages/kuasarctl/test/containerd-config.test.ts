import { parse } from 'smol-toml';
import {
  ContainerdConfigError,
  containerdSnippet,
  kindTables,
  mergeSnippet,
  registration,
  renderTable,
  unmergeSnippet,
  type ContainerdMajor,
} from '../src/containerd-config';
import { KINDS } from '../src/kinds';

const V2 = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n';
const V3 = "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n";
const base = (major: ContainerdMajor) => (major === 1 ? V2 : V3);

describe.each([1, 2] as ContainerdMajor[])('containerd %i.x snippet', (major) => {
  it('is valid TOML that registers every kind it names, and only those', () => {
    const text = `${base(major)}\n${containerdSnippet(['runc', 'vmm'], major)}`;
    const doc = parse(text) as Record<string, unknown>;
    expect(registration(doc, 'runc', major).registered).toBe(true);
    expect(registration(doc, 'vmm', major).registered).toBe(true);
    expect(registration(doc, 'wasm', major)).toMatchObject({ registered: false });
    expect(registration(doc, 'runc', major === 1 ? 2 : 1).registered).toBe(false);
  });

  it('merges idempotently: a second merge returns the text unchanged', () => {
    const first = mergeSnippet(base(major), 'c.toml', KINDS, major);
    expect(first.added).toEqual([...KINDS]);
    expect(first.text.startsWith(base(major))).toBe(true);
    const second = mergeSnippet(first.text, 'c.toml', KINDS, major);
    expect(second.added).toEqual([]);
    expect(second.text).toBe(first.text);
    expect(second.unchanged.map((u) => u.reason)).toEqual(KINDS.map(() => 'already registered'));
  });

  it('adds only the kinds that are missing', () => {
    const once = mergeSnippet(base(major), 'c.toml', ['runc'], major).text;
    const twice = mergeSnippet(once, 'c.toml', ['runc', 'wasm'], major);
    expect(twice.added).toEqual(['wasm']);
    expect(parse(twice.text)).toBeTruthy();
  });

  it('unmerge removes exactly what merge added', () => {
    const merged = mergeSnippet(base(major), 'c.toml', ['runc', 'wasm'], major).text;
    const r = unmergeSnippet(merged, ['runc', 'wasm']);
    expect(r.removed).toEqual(['runc', 'wasm']);
    expect(r.text).toBe(base(major));
    expect(unmergeSnippet(base(major), ['runc']).removed).toEqual([]);
  });

  it('refuses a config of the other version', () => {
    expect(() => mergeSnippet(major === 1 ? V3 : V2, 'c.toml', ['runc'], major)).toThrow(ContainerdConfigError);
    expect(() => mergeSnippet(major === 1 ? V3 : V2, 'c.toml', ['runc'], major)).toThrow(/config version/);
  });
});

it('never redefines a table the operator wrote with other values', () => {
  const text = `${V2}\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-runc]\n  runtime_type = "io.containerd.runc.v2"\n`;
  const r = mergeSnippet(text, 'c.toml', ['runc', 'wasm'], 1);
  expect(r.added).toEqual(['wasm']);
  expect(r.unchanged).toEqual([{ kind: 'runc', reason: expect.stringContaining('other values') }]);
  expect(registration(parse(text) as Record<string, unknown>, 'runc', 1).problems[0]).toContain('has other values');
});

it('rejects invalid TOML with the file name', () => {
  expect(() => mergeSnippet('version = = 2', '/etc/containerd/config.toml', ['runc'], 1)).toThrow(
    /^\/etc\/containerd\/config.toml: invalid TOML/,
  );
});

it('points 2.x proxy plugins at the socket given', () => {
  const [proxy] = kindTables('quark', 2, { socketOf: () => '/run/custom/q.sock' });
  expect(renderTable(proxy)).toBe('[proxy_plugins.kuasar-quark]\n  type = "sandbox"\n  address = "/run/custom/q.sock"');
});

it('an unterminated block is an error, not a guess', () => {
  const merged = mergeSnippet(V2, 'c.toml', ['runc'], 1).text.replace('# END kuasar-runc', '');
  expect(() => unmergeSnippet(merged, ['runc'])).toThrow(/no matching "# END kuasar-runc"/);
});
