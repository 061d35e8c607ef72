import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { ProcessIO, parseIOTarget } from '../src/process-io';
import { Code } from '../src/errors';
import { clientFifos } from './helpers/fifo';

const logger = pino({ level: 'silent' });
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kuasar-io-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** run a host process with the stdio the engine would hand to the runtime */
function run(io: ProcessIO, script: string): Promise<number> {
  if (io.stdio.terminal) throw new Error('terminal');
  const s = io.stdio;
  const child = spawn('sh', ['-c', script], { stdio: [s.stdin ?? 'ignore', s.stdout ?? 'ignore', s.stderr ?? 'ignore'] });
  io.handedOver();
  return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
}

test('parseIOTarget', () => {
  expect(parseIOTarget('')).toEqual({ kind: 'none' });
  expect(parseIOTarget('/run/x/c-stdout')).toEqual({ kind: 'fifo', path: '/run/x/c-stdout' });
  expect(parseIOTarget('fifo:///run/x/a')).toEqual({ kind: 'fifo', path: '/run/x/a' });
  expect(parseIOTarget('file:///var/log/c%20d.log')).toEqual({ kind: 'file', path: '/var/log/c d.log' });
  expect(parseIOTarget('binary:///usr/bin/logger?id=7&debug')).toEqual({ kind: 'binary', path: '/usr/bin/logger', args: ['id', '7', 'debug'] });
  expect(() => parseIOTarget('relative/path')).toThrow(expect.objectContaining({ code: Code.INVALID_ARGUMENT }));
  expect(() => parseIOTarget('tcp://1.2.3.4/x')).toThrow(expect.objectContaining({ code: Code.INVALID_ARGUMENT }));
});

test('FIFOs: stdin reaches EOF only after the client attached and closed; outputs are byte-exact and end', async () => {
  const c = clientFifos('p', { stdin: true });
  const io = await ProcessIO.open({ stdin: c.stdin, stdout: c.stdout, stderr: c.stderr, terminal: false },
    { dir, name: 'init', containerId: 'c', namespace: 'ns', logger });
  const exited = run(io, 'cat; echo done >&2');
  // no writer yet: the process must keep waiting rather than see EOF
  await new Promise((r) => setTimeout(r, 300));
  const payload = Buffer.from([0, 1, 2, 255, 10, 13]).toString('latin1') + 'héllo\n'.repeat(5000);
  await c.writeStdin(payload, true);
  expect(await exited).toBe(0);
  expect(await c.stdoutText).toBe(payload);
  expect(await c.stderrText).toBe('done\n');
  io.close();
  expect(readdirSync(dir)).toEqual([]);
  c.close();
});

test('CloseIO gives EOF while the client still holds its writer', async () => {
  const c = clientFifos('q', { stdin: true });
  const io = await ProcessIO.open({ stdin: c.stdin, stdout: c.stdout, stderr: '', terminal: false },
    { dir, name: 'e1', containerId: 'c', namespace: 'ns', logger });
  const exited = run(io, 'wc -c');
  await c.writeStdin('12345', false);
  await io.closeStdin();
  expect(await exited).toBe(0);
  expect((await c.stdoutText).trim()).toBe('5');
  io.close();
  c.close();
});

test('file:// appends stdout and stderr to one file, creating parent dirs', async () => {
  const log = join(dir, 'logs', 'sub', 'c.log');
  writeFileSync(join(dir, 'marker'), '');
  const io = await ProcessIO.open({ stdin: '', stdout: `file://${log}`, stderr: `file://${log}`, terminal: false },
    { dir: join(dir, 'state'), name: 'init', containerId: 'c', namespace: 'ns', logger });
  expect(await run(io, 'echo one; echo two >&2')).toBe(0);
  expect(await run(io, 'true')).toBe(0);
  expect(readFileSync(log, 'utf8')).toBe('one\ntwo\n');
  io.close();
});

test('binary:// starts the logger with fds 3/4, env and args, after it signalled readiness', async () => {
  const out = join(dir, 'logger-out');
  const logger_ = join(dir, 'logger.sh');
  writeFileSync(logger_, `#!/bin/sh
echo "args=$* id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE" > ${out}.meta
exec 5>&-
cat <&3 > ${out}.stdout &
cat <&4 > ${out}.stderr &
wait
touch ${out}.done
`);
  chmodSync(logger_, 0o755);
  const uri = `binary://${logger_}?mode=test`;
  const io = await ProcessIO.open({ stdin: '', stdout: uri, stderr: uri, terminal: false },
    { dir, name: 'init', containerId: 'cid', namespace: 'k8s.io', logger });
  expect(await run(io, 'echo to-out; echo to-err >&2')).toBe(0);
  for (let i = 0; i < 100 && !existsSync(`${out}.done`); i++) await new Promise((r) => setTimeout(r, 20));
  expect(readFileSync(`${out}.meta`, 'utf8')).toBe('args=mode test id=cid ns=k8s.io\n');
  expect(readFileSync(`${out}.stdout`, 'utf8')).toBe('to-out\n');
  expect(readFileSync(`${out}.stderr`, 'utf8')).toBe('to-err\n');
  io.close();
});

test('a missing FIFO is a clear FAILED_PRECONDITION and leaks nothing', async () => {
  await expect(ProcessIO.open({ stdin: '', stdout: join(dir, 'nope'), stderr: '', terminal: false },
    { dir, name: 'init', containerId: 'c', namespace: 'ns', logger }))
    .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('nope') });
});
