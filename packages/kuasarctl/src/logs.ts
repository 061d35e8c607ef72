// `kuasarctl logs`: the sandboxers' own structured log lines (pino JSON, one per line) about one sandbox or container,
// read from the journal of kuasar-<kind>-sandboxer.service or from a file a hand-started sandboxer writes its stderr to.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { unitName, type Kind } from './kinds';

/**
 * Fields that name an id in the sandboxers' log lines: `sandbox` (Controller, per-pod loggers), `id` (task core: the
 * container, or the exec's container), `container`. A task line carrying both `sandbox` and `id` ties a container to
 * its pod, which is how a pod's logs come to include its containers'.
 */
export const ID_FIELDS = ['sandbox', 'id', 'container'] as const;

export class LogsError extends Error {
  override readonly name = 'LogsError';
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

export interface LogLine {
  /** The line as logged. */
  raw: string;
  fields: Record<string, unknown>;
  /** ms since the epoch, from the line's `time`; undefined when it has none. */
  time: number | undefined;
}

/** A pino JSON line, or undefined for anything else (a crash trace, a blank line). */
export function parseLogLine(raw: string): LogLine | undefined {
  const t = raw.trim();
  if (!t.startsWith('{')) return undefined;
  try {
    const fields = JSON.parse(t) as unknown;
    if (!fields || typeof fields !== 'object' || Array.isArray(fields)) return undefined;
    const f = fields as Record<string, unknown>;
    const time = typeof f.time === 'string' ? Date.parse(f.time) : typeof f.time === 'number' ? f.time : NaN;
    return { raw: t, fields: f, time: Number.isFinite(time) ? time : undefined };
  } catch {
    return undefined;
  }
}

/**
 * Which lines are about `query`, a full id or a prefix of one (as `kuasarctl list` truncates them). Every id that
 * starts with the query is a candidate; a line belongs to a candidate when it names it, or names a container that an
 * earlier line tied to the candidate sandbox (a task line with both `sandbox` and `id`). `resolve()` then picks the
 * one the query means: the exact id, or the only candidate.
 */
export class IdFilter {
  /** Candidate ids, and each container id mapped to its candidate sandbox. */
  private readonly owners = new Map<string, string>();
  readonly candidates = new Set<string>();

  constructor(readonly query: string) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(query)) throw new LogsError(`${JSON.stringify(query)} is not a sandbox or container id (or a prefix of one)`);
  }

  /** The candidates the line is about (empty: not about the query at all). */
  ownersOf(line: LogLine): string[] {
    const out = new Set<string>();
    for (const k of ID_FIELDS) {
      const id = line.fields[k];
      if (typeof id !== 'string' || id === '') continue;
      const owner = this.owners.get(id);
      if (owner !== undefined) out.add(owner);
      else if (id.startsWith(this.query)) {
        this.candidates.add(id);
        this.owners.set(id, id);
        out.add(id);
      }
    }
    const sandbox = line.fields.sandbox;
    if (typeof sandbox === 'string' && this.owners.get(sandbox) === sandbox) {
      for (const k of ['id', 'container'] as const) {
        const c = line.fields[k];
        if (typeof c === 'string' && c !== '' && c !== sandbox && !this.owners.has(c)) this.owners.set(c, sandbox);
      }
    }
    return [...out];
  }

  /** The id the query means, undefined when nothing matched; throws when a prefix matches several ids. */
  resolve(): string | undefined {
    if (this.candidates.has(this.query)) return this.query;
    if (this.candidates.size <= 1) return [...this.candidates][0];
    const all = [...this.candidates].sort();
    throw new LogsError(`id prefix ${JSON.stringify(this.query)} matches ${all.length} ids: ${all.join(', ')}; give more of it`);
  }
}

/** `--since`: an absolute time (ISO 8601, or anything Date.parse reads) or a duration back from now: 90s, 10m, 2h, 1d. */
export function parseSince(value: string, now = Date.now()): number {
  const rel = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(value.trim());
  if (rel) return now - Number(rel[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[rel[2] as 's' | 'm' | 'h' | 'd'];
  const abs = Date.parse(value);
  if (Number.isFinite(abs)) return abs;
  throw new LogsError(`--since wants a time (2026-11-28T21:00:00Z) or a duration (90s, 10m, 2h, 1d), got ${JSON.stringify(value)}`);
}

const BASE_FIELDS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'sandboxer']);

/** One line for a person: time, level, kind[pid], message, then the other fields as key=value. */
export function formatText(line: LogLine): string {
  const f = line.fields;
  const when = typeof f.time === 'string' ? f.time : line.time !== undefined ? new Date(line.time).toISOString() : '-';
  const level = String(f.level ?? '-').padEnd(5);
  // pino writes its own pid first; a line's own `pid` field (a pod's, a task's) repeats the key and wins in JSON.parse.
  const procPid = /"pid":(\d+)/.exec(line.raw)?.[1];
  const who = `${typeof f.sandboxer === 'string' ? f.sandboxer : 'sandboxer'}${procPid !== undefined ? `[${procPid}]` : ''}`;
  const rest = Object.entries(f)
    .filter(([k, v]) => !BASE_FIELDS.has(k) || (k === 'pid' && procPid !== undefined && String(v) !== procPid))
    .map(([k, v]) => `${k}=${typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v)}`);
  return [when, level, who, String(f.msg ?? ''), ...rest].join(' ').trimEnd();
}

/** Where lines come from. `history` ends at what exists now; `follow` then delivers what is written later. */
export interface LogSource {
  readonly describe: string;
  history(onLine: (raw: string) => void): Promise<void>;
  follow(onLine: (raw: string) => void, signal: AbortSignal): Promise<void>;
}

/** A file of JSON lines (a sandboxer's stderr redirected to it). Follows appends; starts over when it is truncated or replaced. */
export class FileSource implements LogSource {
  private offset = 0;
  private ino: number | undefined;

  constructor(readonly path: string, private readonly pollMs = 200) {}

  get describe(): string {
    return this.path;
  }

  async history(onLine: (raw: string) => void): Promise<void> {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.path);
    } catch (err) {
      throw new LogsError(`cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!st.isFile()) throw new LogsError(`${this.path} is not a file`);
    this.ino = st.ino;
    // Up to the size seen now; whatever is appended meanwhile belongs to follow().
    await this.readRange(0, st.size, onLine);
  }

  async follow(onLine: (raw: string) => void, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, this.pollMs);
        signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
      });
      if (signal.aborted) return;
      let st: fs.Stats;
      try {
        st = fs.statSync(this.path);
      } catch {
        continue; // rotated away; the new file appears shortly
      }
      if (st.ino !== this.ino || st.size < this.offset) {
        this.ino = st.ino;
        this.offset = 0;
        this.partial = '';
      }
      if (st.size > this.offset) await this.readRange(this.offset, st.size, onLine);
    }
  }

  private partial = '';

  private async readRange(from: number, to: number, onLine: (raw: string) => void): Promise<void> {
    const fd = await fs.promises.open(this.path, 'r');
    try {
      const chunk = Buffer.alloc(64 * 1024);
      let pos = from;
      while (pos < to) {
        const { bytesRead } = await fd.read(chunk, 0, Math.min(chunk.length, to - pos), pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
        const text = this.partial + chunk.subarray(0, bytesRead).toString('utf8');
        const lines = text.split('\n');
        this.partial = lines.pop()!;
        for (const l of lines) onLine(l);
      }
      this.offset = pos;
    } finally {
      await fd.close();
    }
  }
}

export interface JournalOptions {
  /** journalctl -D: a journal directory (e.g. copied from another node) instead of the system journal. */
  directory?: string;
  since?: number;
  journalctl?: string;
}

/** The journal of kuasar-<kind>-sandboxer.service, through journalctl (`-o cat`: the message is the JSON line). */
export class JournalSource implements LogSource {
  private cursor: string | undefined;

  constructor(readonly kind: Kind, private readonly o: JournalOptions = {}) {}

  get describe(): string {
    return `journal of ${unitName(this.kind)}${this.o.directory ? ` in ${this.o.directory}` : ''}`;
  }

  /** journalctl's arguments; `follow` continues after the history's last entry, so no line is lost or repeated. */
  args(mode: 'history' | 'follow'): string[] {
    const a = ['--no-pager', '--output', 'cat', '--unit', unitName(this.kind)];
    if (this.o.directory) a.push('--directory', this.o.directory);
    if (mode === 'history') {
      a.push('--show-cursor');
      if (this.o.since !== undefined) a.push('--since', `@${Math.floor(this.o.since / 1000)}`);
    } else {
      a.push('--follow');
      if (this.cursor) a.push('--after-cursor', this.cursor);
      else a.push('--lines', '0');
    }
    return a;
  }

  async history(onLine: (raw: string) => void): Promise<void> {
    await this.run(this.args('history'), (l) => {
      const c = /^-- cursor: (.+)$/.exec(l);
      if (c) this.cursor = c[1];
      else onLine(l);
    });
  }

  async follow(onLine: (raw: string) => void, signal: AbortSignal): Promise<void> {
    await this.run(this.args('follow'), onLine, signal);
  }

  private run(args: string[], onLine: (raw: string) => void, signal?: AbortSignal): Promise<void> {
    const bin = this.o.journalctl ?? 'journalctl';
    return new Promise((resolve, reject) => {
      const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const rl = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
      rl.on('line', onLine);
      const stop = () => child.kill('SIGTERM');
      signal?.addEventListener('abort', stop, { once: true });
      child.once('error', (err: NodeJS.ErrnoException) => {
        reject(new LogsError(err.code === 'ENOENT' ? `${bin} not found: reading the ${this.describe} needs systemd's journalctl; for a sandboxer not run by systemd use --file` : `${bin}: ${err.message}`));
      });
      child.once('close', (code, sig) => {
        signal?.removeEventListener('abort', stop);
        if (code === 0 || signal?.aborted || sig === 'SIGTERM') return resolve();
        const why = stderr.trim().split('\n').pop() || 'no journal entries could be read';
        reject(new LogsError(`journalctl failed (exit ${code}) reading the ${this.describe}: ${why}. Is systemd-journald running here? For a sandboxer not run by systemd, use --file <its stderr log>`));
      });
    });
  }
}

export interface LogsOptions {
  since?: number;
  /** Only the last n matching lines of the history. */
  tail?: number;
  follow?: boolean;
  signal?: AbortSignal;
  write: (line: LogLine) => void;
}

/**
 * Prints the history of every source (in time order across sources), then, with `follow`, new lines as they come.
 * Throws LogsError when the id matches nothing or an ambiguous prefix; returns the number of lines printed.
 */
export async function showLogs(sources: readonly LogSource[], filter: IdFilter, o: LogsOptions): Promise<number> {
  const parse = (raw: string): { line: LogLine; owners: string[] } | undefined => {
    const line = parseLogLine(raw);
    if (!line) return undefined;
    // Ownership is learned from every line, also those --since leaves out.
    const owners = filter.ownersOf(line);
    if (owners.length === 0) return undefined;
    if (o.since !== undefined && (line.time === undefined || line.time < o.since)) return undefined;
    return { line, owners };
  };
  const history: { line: LogLine; owners: string[] }[] = [];
  for (const s of sources) {
    await s.history((raw) => {
      const l = parse(raw);
      if (l) history.push(l);
    });
  }
  let target = filter.resolve();
  const mine = history.filter((h) => target !== undefined && h.owners.includes(target)).map((h) => h.line);
  if (mine.length === 0 && !o.follow) {
    throw new LogsError(`no log lines about ${JSON.stringify(filter.query)}${o.since !== undefined ? ` since ${new Date(o.since).toISOString()}` : ''} in ${sources.map((s) => s.describe).join(', ')}`);
  }
  // Stable: lines of one source keep their order when times tie.
  mine.sort((a, b) => (a.time ?? 0) - (b.time ?? 0));
  const shown = o.tail !== undefined ? mine.slice(Math.max(0, mine.length - o.tail)) : mine;
  for (const l of shown) o.write(l);
  let printed = shown.length;
  if (!o.follow) return printed;
  const signal = o.signal ?? new AbortController().signal;
  await Promise.all(sources.map((s) => s.follow((raw) => {
    const l = parse(raw);
    if (!l) return;
    // Following an id that has not logged yet: the first id that matches is the one.
    target ??= l.owners.includes(filter.query) ? filter.query : l.owners[0];
    if (!l.owners.includes(target!)) return;
    o.write(l.line);
    printed++;
  }, signal)));
  return printed;
}
