// `kuasarctl logs <id>`: one sandbox's or container's lines from its sandboxer's structured log.
import * as fs from 'node:fs';
import { UsageError, parseKinds, unitName, KINDS, type Kind } from '../kinds';
import { FileSource, IdFilter, JournalSource, formatText, parseSince, showLogs, type LogSource } from '../logs';

export interface LogsFlags {
  kinds?: string;
  file?: string[];
  journalDir?: string;
  since?: string;
  tail?: string;
  follow?: boolean;
  output: string;
}

/** The journals to read: --kinds, else the kinds whose unit is installed (what install.sh writes). */
function journalKinds(flags: LogsFlags, unitDirs: readonly string[]): Kind[] {
  if (flags.kinds) return parseKinds(flags.kinds);
  const installed = KINDS.filter((k) => unitDirs.some((d) => fs.existsSync(`${d}/${unitName(k)}`)));
  if (installed.length === 0) {
    throw new UsageError(
      `no kuasar-<kind>-sandboxer.service unit is installed (looked in ${unitDirs.join(', ')}); name the kinds with --kinds, ` +
        'or for a sandboxer started by hand pass its stderr log with --file',
    );
  }
  return installed;
}

export async function logsCommand(
  id: string,
  flags: LogsFlags,
  out: (s: string) => void = (s) => process.stdout.write(s),
  unitDirs: readonly string[] = ['/etc/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system'],
): Promise<number> {
  if (flags.output !== 'text' && flags.output !== 'json') throw new UsageError(`-o must be text or json, got ${JSON.stringify(flags.output)}`);
  let tail: number | undefined;
  if (flags.tail !== undefined) {
    tail = Number(flags.tail);
    if (!Number.isInteger(tail) || tail < 0) throw new UsageError(`--tail wants a number of lines, got ${JSON.stringify(flags.tail)}`);
  }
  const since = flags.since !== undefined ? parseSince(flags.since) : undefined;
  const filter = new IdFilter(id);
  if (flags.file?.length && (flags.kinds || flags.journalDir)) throw new UsageError('--file reads that file only; it does not combine with --kinds or --journal-dir');
  const sources: LogSource[] = flags.file?.length
    ? flags.file.map((f) => new FileSource(f))
    : journalKinds(flags, unitDirs).map((k) => new JournalSource(k, { since, directory: flags.journalDir }));

  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await showLogs(sources, filter, {
      since,
      tail,
      follow: flags.follow === true,
      signal: abort.signal,
      write: (l) => out(`${flags.output === 'json' ? l.raw : formatText(l)}\n`),
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
}
