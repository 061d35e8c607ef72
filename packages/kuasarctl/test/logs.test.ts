// `kuasarctl logs` against the log of a real runc sandboxer (the framework's startSandboxer, its pino logger writing
// to a file the way `2>>file` would), and the journal path through the real journalctl.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, packAny } from '@kuasar/api';
import { createLogger, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { runcSandboxerSpec } from '@kuasar/runc-sandboxer';
import { FileSource, IdFilter, JournalSource, parseLogLine, parseSince, showLogs, type LogLine } from '../src';
import { logsCommand } from '../src/commands/logs';
import { kuasarctlAsync, kuasarctlBundle } from './cli';

jest.setTimeout(60_000);

let work: string;
let dir: string;
let logFile: string;
let running: RunningSandboxer | undefined;
// Two pods sharing a prefix, as `kuasarctl list` shows ids truncated.
const POD_A = `logsa${process.pid}`;
const POD_B = `logsb${process.pid}`;

const start = () => {
  const logger = createLogger({ level: 'debug', kind: 'runc', destination: { write: (line: string) => fs.appendFileSync(logFile, line) } });
  return startSandboxer(runcSandboxerSpec('test'), { listen: path.join(work, 'c.sock'), dir, config: path.join(work, 'config.toml') }, logger);
};

async function createPod(id: string): Promise<void> {
  const podConfig = cri.PodSandboxConfig.fromPartial({ metadata: { name: id, namespace: 'team-a', uid: id, attempt: 0 } });
  await running!.serving.controller.create({ sandboxId: id, options: packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, podConfig) });
}

function fileLines(): LogLine[] {
  return fs.readFileSync(logFile, 'utf8').split('\n').map(parseLogLine).filter((l): l is LogLine => l !== undefined);
}

beforeAll(async () => {
  kuasarctlBundle();
  work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-logs-')));
  dir = path.join(work, 'state');
  logFile = path.join(work, 'sandboxer.log');
  fs.writeFileSync(path.join(work, 'config.toml'), `[runc.runtime]\nroot = "${path.join(work, 'runc-root')}"\n`);
  running = await start();
  await createPod(POD_A);
  await createPod(POD_B);
  await running.serving.controller.start(POD_A);
});

afterAll(async () => {
  for (const id of [POD_A, POD_B]) await running?.serving.controller.shutdown(id).catch(() => undefined);
  await running?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

test('prints the lines about one pod, by full id or unique prefix, as text or as the JSON lines logged', async () => {
  const expected = fileLines().filter((l) => l.fields.sandbox === POD_A).map((l) => l.raw);
  expect(expected.length).toBeGreaterThanOrEqual(2);

  const json = await kuasarctlAsync(['logs', POD_A, '--file', logFile, '-o', 'json']);
  expect(json.stderr).toBe('');
  expect(json.status).toBe(0);
  expect(json.stdout.trimEnd().split('\n')).toEqual(expected);

  const text = await kuasarctlAsync(['logs', POD_A.slice(0, 5 + 2), '--file', logFile]);
  expect(text.status).toBe(0);
  const lines = text.stdout.trimEnd().split('\n');
  expect(lines).toHaveLength(expected.length);
  expect(lines.find((l) => l.includes('sandbox started'))).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\S+Z info  runc\\[${process.pid}\\] sandbox started pid=\\d+ sandbox=${POD_A}$`));
  expect(text.stdout).not.toContain(POD_B);

  const tail = await kuasarctlAsync(['logs', POD_A, '--file', logFile, '-o', 'json', '--tail', '1']);
  expect(tail.stdout.trimEnd().split('\n')).toEqual(expected.slice(-1));
});

test('an ambiguous prefix, an unknown id, a future --since and bad flags fail with exit 1 and say why', async () => {
  const amb = await kuasarctlAsync(['logs', 'logs', '--file', logFile]);
  expect(amb.status).toBe(1);
  expect(amb.stderr).toBe(`kuasarctl: id prefix "logs" matches 2 ids: ${POD_A}, ${POD_B}; give more of it\n`);
  expect(amb.stdout).toBe('');

  const none = await kuasarctlAsync(['logs', 'nosuchpod', '--file', logFile]);
  expect(none).toMatchObject({ status: 1, stderr: expect.stringContaining(`no log lines about "nosuchpod" in ${logFile}`) });

  const later = await kuasarctlAsync(['logs', POD_A, '--file', logFile, '--since', '2999-01-01T00:00:00Z']);
  expect(later).toMatchObject({ status: 1, stderr: expect.stringContaining('since 2999-01-01T00:00:00.000Z') });

  for (const [args, why] of [
    [['--since', 'yesterday-ish'], /--since wants a time/],
    [['--tail', '-3'], /--tail wants a number/],
    [['-o', 'yaml'], /-o must be text or json/],
    [['--kinds', 'runc'], /does not combine/],
  ] as const) {
    const r = await kuasarctlAsync(['logs', POD_A, '--file', logFile, ...args]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(why);
  }
  const missing = await kuasarctlAsync(['logs', POD_A, '--file', path.join(work, 'absent.log')]);
  expect(missing).toMatchObject({ status: 1, stderr: expect.stringContaining('cannot read') });
  const badId = await kuasarctlAsync(['logs', '../etc', '--file', logFile]);
  expect(badId).toMatchObject({ status: 1, stderr: expect.stringContaining('is not a sandbox or container id') });
});

test('--since keeps the later lines only', async () => {
  const all = fileLines().filter((l) => l.fields.sandbox === POD_A);
  const cut = all[all.length - 1]!.time!;
  const r = await kuasarctlAsync(['logs', POD_A, '--file', logFile, '-o', 'json', '--since', new Date(cut).toISOString()]);
  expect(r.status).toBe(0);
  const got = r.stdout.trimEnd().split('\n');
  expect(got).toEqual(all.filter((l) => l.time! >= cut).map((l) => l.raw));
  expect(got.length).toBeLessThan(all.length + 1);
});

test('--follow prints new lines about the pod as the sandboxer writes them, and ends on SIGINT with 0', async () => {
  const child = spawn(process.execPath, [kuasarctlBundle(), 'logs', POD_B, '--file', logFile, '-o', 'json', '-f'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const closed = new Promise<number | null>((r) => child.once('close', r));
  const until = async (what: string, ok: () => boolean) => {
    const end = Date.now() + 15_000;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; got ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until('the history', () => out.includes('sandbox created'));
  expect(out).not.toContain('sandbox started');
  await running!.serving.controller.start(POD_B);
  await until('the new line', () => out.includes('sandbox started'));
  const lines = out.trimEnd().split('\n').map((l) => JSON.parse(l) as { sandbox: string });
  expect(lines.every((l) => l.sandbox === POD_B)).toBe(true);
  child.kill('SIGINT');
  expect(await closed).toBe(0);
});

test("a pod's logs include its containers' lines once a line ties them to it; a file truncated under --follow starts over", async () => {
  // Task-core shaped lines: Create names both the pod and the container; later lines name the container only.
  const f = path.join(work, 'task.log');
  const at = (s: number) => new Date(Date.UTC(2026, 10, 28, 21, 0, s)).toISOString();
  const w = (o: Record<string, unknown>) => fs.appendFileSync(f, `${JSON.stringify({ level: 'info', pid: 7, sandboxer: 'runc', ...o })}\n`);
  w({ time: at(1), sandbox: 'pod1', msg: 'sandbox started' });
  w({ time: at(2), id: 'ctr9', msg: 'container exited early' }); // before the tie: not known to be pod1's yet
  w({ time: at(3), sandbox: 'pod1', id: 'ctr1', namespace: 'k8s.io', msg: 'task created' });
  w({ time: at(4), id: 'ctr1', namespace: 'k8s.io', msg: 'task started' });
  w({ time: at(5), id: 'ctr2', namespace: 'k8s.io', msg: 'someone else' });
  fs.appendFileSync(f, 'Error: a crash trace line that is not JSON\n');
  const got: string[] = [];
  const src = new FileSource(f, 20);
  const ac = new AbortController();
  const done = showLogs([src], new IdFilter('pod1'), { follow: true, signal: ac.signal, write: (l) => got.push(String(l.fields.msg)) });
  const until = async (ok: () => boolean) => {
    const end = Date.now() + 5000;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`timed out; got ${got.join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until(() => got.length === 3);
  expect(got).toEqual(['sandbox started', 'task created', 'task started']);
  w({ time: at(6), id: 'ctr1', msg: 'task exited' });
  await until(() => got.length === 4);
  fs.truncateSync(f, 0); // logrotate copytruncate
  w({ time: at(7), sandbox: 'pod1', msg: 'sandbox stopped' });
  await until(() => got.length === 5);
  ac.abort();
  await done;
  expect(got.slice(3)).toEqual(['task exited', 'sandbox stopped']);
});

test('parseSince reads times and durations', () => {
  const now = Date.UTC(2026, 10, 28, 22, 0, 0);
  expect(parseSince('10m', now)).toBe(now - 600_000);
  expect(parseSince('1.5h', now)).toBe(now - 5_400_000);
  expect(parseSince('2026-11-28T21:00:00Z', now)).toBe(Date.UTC(2026, 10, 28, 21));
  expect(() => parseSince('10 minutes', now)).toThrow(/--since wants/);
});

describe('the journal of kuasar-<kind>-sandboxer.service', () => {
  test('asks journalctl for the unit as raw messages, then follows after the last entry it printed', () => {
    const since = Date.UTC(2026, 10, 28, 21, 0, 0, 500);
    const j = new JournalSource('runc', { since, directory: '/var/log/journal.copy' });
    expect(j.args('history')).toEqual([
      '--no-pager', '--output', 'cat', '--unit', 'kuasar-runc-sandboxer.service', '--directory', '/var/log/journal.copy', '--show-cursor', '--since', `@${(since - 500) / 1000}`,
    ]);
    expect(j.args('follow')).toEqual(['--no-pager', '--output', 'cat', '--unit', 'kuasar-runc-sandboxer.service', '--directory', '/var/log/journal.copy', '--follow', '--lines', '0']);
  });

  test('a journal journalctl cannot read (no journald here) is an error that points at --file', async () => {
    const empty = fs.mkdtempSync(path.join(work, 'journal-'));
    const r = await kuasarctlAsync(['logs', POD_A, '--kinds', 'runc', '--journal-dir', empty]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/journalctl failed \(exit \d+\) reading the journal of kuasar-runc-sandboxer.service in .*journal-.*Is systemd-journald running here\? For a sandboxer not run by systemd, use --file/);
  });

  test('without --kinds it reads the kinds whose unit is installed, and says what to do when there is none', async () => {
    const units = fs.mkdtempSync(path.join(work, 'units-'));
    await expect(logsCommand(POD_A, { output: 'text' }, () => undefined, [units])).rejects.toThrow(/no kuasar-<kind>-sandboxer.service unit is installed .*--file/);
    fs.writeFileSync(path.join(units, 'kuasar-wasm-sandboxer.service'), '[Service]\n');
    await expect(logsCommand(POD_A, { output: 'text' }, () => undefined, [units])).rejects.toThrow(/journal of kuasar-wasm-sandboxer.service/);
  });
});
