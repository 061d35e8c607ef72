// The terminal helper (native/console.c) on the host, in its exec mode: a real pty, driven through
// its stdin/stdout pipes and control FIFO exactly as the agent drives it in the guest. Socket mode
// (crun's --console-socket) runs in the guest test with the guest's crun.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

let dir: string;
let helper: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kuasar-console-'));
  execFileSync(process.execPath, [path.join(__dirname, '..', 'build.mjs'), path.join(dir, 'dist')], { stdio: 'inherit' });
  helper = path.join(dir, 'dist', 'kuasar-console');
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
  waitOut: (re: RegExp) => Promise<void>;
}

function start(args: string[]): Run {
  const child = spawn(helper, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('latin1').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('latin1').on('data', (c: string) => (err += c));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const waitOut = async (re: RegExp) => {
    const deadline = Date.now() + 10_000;
    while (!re.test(out)) {
      if (Date.now() > deadline) throw new Error(`no ${re} in ${JSON.stringify(out)} (stderr ${JSON.stringify(err)})`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { child, out: () => out, err: () => err, exit, waitOut };
}

test('runs argv on a pty; control lines resize it; input is relayed; the exit status is argv\'s', async () => {
  const control = path.join(dir, 'a.ctl');
  const r = start(['exec', control, 'sh', '-c', 'tty; stty size; echo step1; read line; stty size; echo "got $line"; exit 5']);
  await r.waitOut(/step1/);
  expect(r.err()).toBe('ready\n');
  // Garbage lines are skipped; the last valid size wins.
  writeFileSync(control, 'nonsense\n99999 1\n43 132\n');
  r.child.stdin?.write('hello\n');
  expect(await r.exit).toBe(5);
  expect(r.out()).toMatch(/^\/dev\/pts\/\d+\r\n0 0\r\nstep1\r\nhello\r\n43 132\r\ngot hello\r\n$/);
  expect(existsSync(control)).toBe(false);
});

test('a size sent right after ready applies before argv reads it; a signal death is 128+signal', async () => {
  const control = path.join(dir, 'b.ctl');
  const r = start(['exec', control, 'sh', '-c', 'read go; stty size; kill -TERM $$']);
  await new Promise<void>((resolve) => r.child.stderr?.once('data', () => resolve()));
  writeFileSync(control, '30 90\n');
  r.child.stdin?.write('go\n');
  expect(await r.exit).toBe(128 + 15);
  expect(r.out()).toContain('30 90\r\n');
});

test('bad usage exits 2, a missing program 127 with the reason on the terminal', async () => {
  const usage = start(['bogus', path.join(dir, 'c.ctl'), 'x']);
  expect(await usage.exit).toBe(2);
  expect(usage.err()).toMatch(/^usage: kuasar-console/);
  const missing = start(['exec', path.join(dir, 'd.ctl'), '/nonexistent/prog']);
  expect(await missing.exit).toBe(127);
  expect(missing.out()).toMatch(/exec \/nonexistent\/prog: No such file or directory/);
});

test('socket mode: the console socket exists once the helper reports ready', async () => {
  const control = path.join(dir, 'e.ctl');
  const socket = path.join(dir, 'e.sock');
  const r = start(['socket', control, socket]);
  await new Promise<void>((resolve) => r.child.stderr?.once('data', () => resolve()));
  expect(existsSync(socket)).toBe(true);
  r.child.kill('SIGTERM');
  await r.exit;
});
