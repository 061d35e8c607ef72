import type { Kind } from '../kinds';
import { fail, ok, warn, type Finding } from './finding';

export interface ToolSpec {
  name: string;
  /** The sandboxer kinds that cannot work without it (runc is satisfied by crun too, see `alternatives`). */
  neededBy: Kind[];
  /** Other tools that do the same job: missing this one is then only a warning. */
  alternatives: string[];
  install: string;
}

export const TOOLS: ToolSpec[] = [
  { name: 'runc', neededBy: ['runc'], alternatives: ['crun'], install: 'apt-get install runc' },
  { name: 'crun', neededBy: ['runc'], alternatives: ['runc'], install: 'apt-get install crun' },
  {
    name: 'runsc',
    neededBy: ['quark'],
    alternatives: [],
    install: "bash scripts/fetch-debs.sh (trixie's runsc 0.0~20240729.0-4+b7; sid's build panics here) and put its runsc in PATH",
  },
  { name: 'qemu-system-x86_64', neededBy: ['vmm'], alternatives: [], install: 'apt-get install qemu-system-x86' },
];

/** What looking for one tool found. */
export interface ToolProbe {
  /** Absolute path, or undefined when not found. */
  path: string | undefined;
  /** Output of `<tool> --version` (stdout + stderr). */
  versionOutput?: string;
  /** Why `--version` failed (spawn error, exit code, timeout). */
  error?: string;
  /** Where it was found when not in PATH (e.g. the fetch-debs cache). */
  source?: string;
}

/** The version number from a tool's `--version` output ("runc version 1.1.5+ds1" → "1.1.5+ds1"). */
export function parseToolVersion(output: string): string | undefined {
  const first = output.split('\n').find((l) => l.trim() !== '') ?? '';
  const m = /\bversion\s+v?([0-9][^\s,;()]*)/i.exec(first) ?? /\b(\d+\.\d+(?:\.\d+)?[^\s,;()]*)/.exec(first);
  return m?.[1];
}

/**
 * A tool is a failure only when a kind in `kinds` (the sandboxers installed or asked about) needs it and nothing
 * replaces it; otherwise its absence is a warning naming who would need it.
 */
export function checkTool(spec: ToolSpec, probe: ToolProbe, kinds: readonly Kind[], others: ReadonlyMap<string, ToolProbe>): Finding {
  const where = probe.source ? ` (${probe.source})` : '';
  if (probe.path) {
    if (probe.error) {
      return fail(spec.name, `${probe.path}${where} does not run: ${probe.error}`, `reinstall it: ${spec.install}`);
    }
    const version = parseToolVersion(probe.versionOutput ?? '');
    return ok(spec.name, `${spec.name} ${version ?? '(version unknown)'} at ${probe.path}${where}`);
  }
  const covered = spec.alternatives.find((a) => others.get(a)?.path && !others.get(a)?.error);
  const needing = spec.neededBy.filter((k) => kinds.includes(k));
  const who = `${spec.neededBy.map((k) => `${k}-sandboxer`).join(', ')}`;
  if (needing.length > 0 && !covered) {
    return fail(spec.name, `not found; the ${who} cannot run containers without it`, spec.install);
  }
  return warn(
    spec.name,
    covered ? `not found (${covered} is there and does the same job)` : `not found; only the ${who} needs it`,
    spec.install,
  );
}
