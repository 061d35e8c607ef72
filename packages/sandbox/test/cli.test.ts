import * as grpc from '@grpc/grpc-js';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { OciCliEngine } from '@kuasar/task';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { buildCommand, createLogger, defineConfig, runSandboxer, type SandboxerSpec } from '../src';
import { isRunning } from '@kuasar/sys';
import { LogCapture, createRequest, rpc, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(30_000);

const kindSchema = defineConfig({ greeting: { type: 'string', default: 'hello' } });

function spec(kind: SleepKind, seen: { greeting?: string; taskServiceFor?: SleepKind } = {}): SandboxerSpec<typeof kindSchema, SleepKind> {
  return {
    kind: 'test',
    version: '1.2.3-test',
    description: 'test sandboxer',
    configSchema: kindSchema,
    createSandboxer: (ctx) => {
      seen.greeting = ctx.config.greeting;
      return kind;
    },
    createEngine: (ctx) => new OciCliEngine({ root: path.join(ctx.dir, '.runc'), logger: ctx.logger }),
    taskServiceReady: (_service, _ctx, sandboxer) => {
      seen.taskServiceFor = sandboxer;
    },
  };
}

/** Runs runSandboxer in this process and records what it would exit with and print. */
async function runCli(argv: string[], s = spec(new SandboxKindForCli())) {
  const exits: number[] = [];
  let out = '';
  let err = '';
  const outSpy = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += c.toString()), true));
  const errSpy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += c.toString()), true));
  try {
    const running = await runSandboxer(s, { argv, exit: (code) => exits.push(code), logger: createLogger({ level: 'fatal' }) });
    return { running, exits, out, err };
  } finally {
    outSpy.mockRestore();
    errSpy.mockRestore();
  }
}

class SandboxKindForCli extends SleepKind {}

test('--help lists every flag', async () => {
  const help = buildCommand({ kind: 'test', version: '1', description: 'test sandboxer' }).helpInformation();
  for (const flag of ['--listen <socket>', '--dir <dir>', '--config <file>', '--log-level <level>', '--version', '--help']) {
    expect(help).toContain(flag);
  }
  expect(help).toContain('/run/test-sandboxer.sock');
  expect(help).toContain('/run/kuasar-test');
  const r = await runCli(['--help']);
  expect(r.exits).toEqual([0]);
  expect(r.running).toBeUndefined();
  expect(r.out).toContain('--log-level <level>');
});

test('--version prints the version', async () => {
  const r = await runCli(['--version']);
  expect(r.exits).toEqual([0]);
  expect(r.out.trim()).toBe('1.2.3-test');
});

test('bad flags and bad config files fail with a clear message and no server', async () => {
  const bad = await runCli(['--bogus']);
  expect(bad.exits).toEqual([2]);
  expect(bad.err).toContain("unknown option '--bogus'");

  const level = await runCli(['--log-level', 'loud']);
  expect(level.exits).toEqual([2]);
  expect(level.err).toContain('loud');

  const root = tempDir('kuasar-sbx-cli-');
  const file = path.join(root, 'c.toml');
  writeFileSync(file, '[test]\ngreting = "hi"\n');
  const cfg = await runCli(['--config', file, '--listen', path.join(root, 'c.sock'), '--dir', path.join(root, 'state')]);
  expect(cfg.exits).toEqual([2]);
  expect(cfg.err).toContain('unknown key "test.greting"');
  expect(existsSync(path.join(root, 'c.sock'))).toBe(false);
});

describe('a full run', () => {
  let notify: ChildProcess;
  const messages: string[] = [];
  const env = { ...process.env };

  beforeAll(async () => {
    const sock = path.join(tempDir('kuasar-sbx-notify-'), 'notify.sock');
    // systemd's side of sd_notify, played by a real datagram socket.
    notify = spawn('python3', [
      '-u',
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("listening")\nwhile True: print(s.recv(4096).decode())',
      sock,
    ]);
    notify.stdout!.setEncoding('utf8');
    await new Promise<void>((resolve) =>
      notify.stdout!.on('data', (chunk: string) => {
        for (const l of chunk.split('\n')) if (l) l === 'listening' ? resolve() : messages.push(l);
      }),
    );
    process.env.NOTIFY_SOCKET = sock;
    process.env.WATCHDOG_USEC = '200000';
  });

  afterAll(() => {
    process.env = env;
    notify.kill();
  });

  test('serves Controller and task API, notifies systemd, and SIGTERM leaves pods running', async () => {
    const root = tempDir('kuasar-sbx-cli-');
    const listen = path.join(root, 'run', 'test-sandboxer.sock');
    const dir = path.join(root, 'state');
    const config = path.join(root, 'test.toml');
    writeFileSync(config, '[test]\ngreeting = "from toml"\n[sandboxer]\nlog_level = "debug"\n');
    const kind = new SandboxKindForCli();
    const seen: { greeting?: string; taskServiceFor?: SleepKind } = {};
    const logs = new LogCapture();
    const exits: number[] = [];
    const running = await runSandboxer(spec(kind, seen), {
      argv: ['--listen', listen, '--dir', dir, '--config', config],
      exit: (code) => exits.push(code),
      logger: createLogger({ level: 'debug', destination: logs }),
    });
    expect(running).toBeDefined();
    expect(seen.greeting).toBe('from toml');
    expect(seen.taskServiceFor).toBe(kind);
    expect(running!.framework).toEqual({ listen, dir, log_level: 'debug' });

    // Sockets and dir.
    const taskSock = path.join(dir, 'task.sock');
    for (const s of [listen, taskSock]) {
      const st = statSync(s);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.uid).toBe(0);
    }
    expect(statSync(dir).mode & 0o777).toBe(0o700);

    // systemd: READY=1 once, then the watchdog every WATCHDOG_USEC/2.
    await waitFor(() => messages.filter((m) => m === 'WATCHDOG=1').length >= 2);
    expect(messages[0]).toBe('READY=1');
    expect(messages.filter((m) => m === 'WATCHDOG=1').length).toBeGreaterThanOrEqual(2);

    // Controller: Start hands out the task server, which answers the v3 Task API.
    const client = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
    await rpc(client, 'create', createRequest('cli-pod'));
    const started = await rpc(client, 'start', { sandboxId: 'cli-pod' });
    expect(started.address).toBe(`ttrpc+unix://${taskSock}`);
    expect(started.version).toBe(3);
    const ttrpc = await TtrpcClient.connect(taskSock);
    const tasks = createClient(task.TaskV3Definition, ttrpc);
    await expect(tasks.state(task.StateRequest.fromPartial({ id: 'no-such-container' }), { namespace: 'k8s.io' })).rejects.toMatchObject({
      code: 5,
    });
    await ttrpc.close();
    client.close();

    // SIGTERM: servers close, the process would exit 0, the pod keeps running.
    process.emit('SIGTERM');
    await waitFor(() => exits.length > 0);
    expect(exits).toEqual([0]);
    await waitFor(() => messages.includes('STOPPING=1'));
    expect(messages).toContain('STOPPING=1');
    expect(isRunning(started.pid)).toBe(true);
    expect(await connects(listen)).toBe(false);
    expect(await connects(taskSock)).toBe(false);
    expect(logs.find('sandboxer stopping; sandboxes keep running')).toBeDefined();
    expect(kind.calls.map((c) => c.op)).not.toContain('stop');

    // Clean up the pod the way the next sandboxer would.
    const sandbox = running!.serving.controller.get('cli-pod');
    process.kill(started.pid, 'SIGKILL');
    await waitFor(() => !isRunning(started.pid));
    await kind.shutdown(sandbox);
  });
});

function connects(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(socketPath);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
}
