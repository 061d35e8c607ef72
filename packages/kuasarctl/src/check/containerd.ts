import {
  CONFIG_VERSION,
  ContainerdConfigError,
  configVersion,
  parseContainerdConfig,
  registration,
  type ContainerdMajor,
  type SnippetOptions,
  type TomlDoc,
} from '../containerd-config';
import { shimBinary, type Kind } from '../kinds';
import { fail, ok, warn, type Finding } from './finding';
import type { ToolProbe } from './tools';

/** "containerd github.com/containerd/containerd/v2 2.1.9+unknown" → "2.1.9+unknown". */
export function parseContainerdVersion(output: string): string | undefined {
  const m = /^containerd\s+\S+\s+v?(\d+\.\d+[^\s]*)/m.exec(output.trim());
  return m?.[1];
}

export function majorOf(version: string | undefined): ContainerdMajor | undefined {
  const n = Number(version?.split('.')[0]);
  return n === 1 || n === 2 ? n : undefined;
}

/** The containerd that serves this node (first in the list: the one on PATH) and any others found (caches). */
export function checkContainerdBinaries(probes: readonly ToolProbe[]): { finding: Finding; major: ContainerdMajor | undefined } {
  const [main, ...others] = probes;
  const describe = (p: ToolProbe) =>
    `${parseContainerdVersion(p.versionOutput ?? '') ?? '(version unknown)'} at ${p.path}${p.source ? ` (${p.source})` : ''}`;
  const extra = others.filter((p) => p.path && !p.error);
  const cached = (p: ToolProbe) => `${parseContainerdVersion(p.versionOutput ?? '') ?? '?'}${p.source ? ` (${p.source})` : ''}`;
  const also = extra.length > 0 ? `; also ${extra.map(cached).join(', ')}` : '';
  if (!main?.path) {
    return {
      finding: fail('containerd', `containerd not found in PATH${also}`, 'apt-get install containerd (1.6), or install containerd 2.x'),
      major: undefined,
    };
  }
  if (main.error) {
    return { finding: fail('containerd', `${main.path} does not run: ${main.error}`, 'reinstall containerd'), major: undefined };
  }
  const version = parseContainerdVersion(main.versionOutput ?? '');
  const major = majorOf(version);
  if (!major) {
    return {
      finding: warn('containerd', `cannot tell the version of ${main.path} from "${(main.versionOutput ?? '').trim()}"`, 'pass --containerd-version 1 or 2'),
      major: undefined,
    };
  }
  const minor = Number(version?.split('.')[1]);
  if (major === 1 && minor < 6) {
    return {
      finding: fail('containerd', `containerd ${version} is older than 1.6, which the shim v2 path needs`, 'upgrade containerd to 1.6 or newer'),
      major,
    };
  }
  return { finding: ok('containerd', `containerd ${describe(main)}${also}`), major };
}

export interface ContainerdConfigFacts {
  path: string;
  /** The file's text; undefined with `readError` when it could not be read. */
  text: string | undefined;
  readError?: string;
  /** The major version of the containerd that reads this config. */
  major: ContainerdMajor | undefined;
  kinds: readonly Kind[];
  /** Where each shim binary was found on PATH (1.x only needs them). */
  shimPaths: ReadonlyMap<Kind, string | undefined>;
  snippet?: SnippetOptions;
}

/** `restrict_oom_score_adj` of the CRI plugin for this config version, if set. */
export function restrictOomScoreAdj(doc: TomlDoc): boolean | undefined {
  const plugins = doc.plugins as Record<string, Record<string, unknown> | undefined> | undefined;
  const table = configVersion(doc) >= 3 ? plugins?.['io.containerd.cri.v1.runtime'] : plugins?.['io.containerd.grpc.v1.cri'];
  const v = table?.restrict_oom_score_adj;
  return typeof v === 'boolean' ? v : undefined;
}

/** Parses the config and checks that each kind is registered the way its containerd major expects. */
export function checkContainerdConfig(f: ContainerdConfigFacts): { findings: Finding[]; doc: TomlDoc | undefined } {
  const mergeFix = (kinds: readonly Kind[], major: ContainerdMajor) =>
    `kuasarctl config containerd --containerd-version ${major} --kinds ${kinds.join(',')} --merge ${f.path} && systemctl restart containerd`;
  if (f.text === undefined) {
    return {
      findings: [
        warn(
          'containerd-config',
          `cannot read ${f.path}: ${f.readError ?? 'unknown error'}; containerd runs on built-in defaults, which register no Kuasar handler`,
          `containerd config default > ${f.path}, then ${f.major ? mergeFix(f.kinds.length ? f.kinds : ['runc'], f.major) : 'merge the Kuasar snippet'}`,
        ),
      ],
      doc: undefined,
    };
  }
  let doc: TomlDoc;
  try {
    doc = parseContainerdConfig(f.text, f.path);
  } catch (err) {
    return { findings: [fail('containerd-config', (err as ContainerdConfigError).message, `fix the TOML syntax in ${f.path}`)], doc: undefined };
  }
  const findings: Finding[] = [];
  const version = configVersion(doc);
  if (f.major && version !== CONFIG_VERSION[f.major]) {
    const migrate = f.major === 2 ? 'containerd config migrate' : 'containerd config default';
    const severity = f.major === 2 && version === 2 ? warn : fail; // 2.x migrates v2 configs on every start
    findings.push(
      severity(
        'containerd-config',
        `${f.path} is config version ${version}, containerd ${f.major}.x expects version ${CONFIG_VERSION[f.major]}`,
        `rewrite it with \`${migrate}\` and re-apply your changes`,
      ),
    );
  } else {
    findings.push(ok('containerd-config', `${f.path} parses (config version ${version})`));
  }
  if (!f.major) return { findings, doc };
  const other: ContainerdMajor = f.major === 1 ? 2 : 1;
  for (const kind of f.kinds) {
    const check = `containerd/${kind}`;
    const reg = registration(doc, kind, f.major, f.snippet);
    if (!reg.registered) {
      const wrongMajor = registration(doc, kind, other, f.snippet).registered;
      findings.push(
        warn(
          check,
          wrongMajor
            ? `kuasar-${kind} is registered the containerd ${other}.x way, but this is containerd ${f.major}.x`
            : `kuasar-${kind} not registered: ${reg.problems.join('; ')}`,
          mergeFix([kind], f.major),
        ),
      );
      continue;
    }
    if (f.major === 1 && !f.shimPaths.get(kind)) {
      findings.push(
        fail(
          check,
          `kuasar-${kind} registered, but ${shimBinary(kind)} is not on PATH: containerd 1.x cannot start the handler's pods`,
          `scripts/install.sh --kinds ${kind} (installs ${shimBinary(kind)} to /usr/local/bin)`,
        ),
      );
      continue;
    }
    findings.push(ok(check, `kuasar-${kind} registered for containerd ${f.major}.x${f.major === 1 ? ` (shim ${f.shimPaths.get(kind)})` : ''}`));
  }
  return { findings, doc };
}
