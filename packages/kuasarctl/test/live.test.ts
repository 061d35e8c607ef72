// `kuasarctl list` / `inspect` against a real runc sandboxer (the framework's startSandboxer with the runc kind)
// serving a real pod: the live side comes from Controller.Status over the sandboxer's gRPC socket.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, packAny } from '@kuasar/api';
import { createLogger, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { runcSandboxerSpec } from '@kuasar/runc-sandboxer';
import { kuasarctlAsync, kuasarctlBundle } from './cli';

jest.setTimeout(60_000);

let work: string;
let dir: string;
let socket: string;
let running: RunningSandboxer | undefined;
const ID = `live${process.pid}`;

const start = () =>
  startSandboxer(runcSandboxerSpec('test'), { listen: socket, dir, config: path.join(work, 'config.toml') }, createLogger({ level: 'error' }));

beforeAll(async () => {
  kuasarctlBundle();
  work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kuasarctl-live-')));
  dir = path.join(work, 'state');
  socket = path.join(work, 'c.sock');
  const config = path.join(work, 'config.toml');
  fs.writeFileSync(config, `[runc.runtime]\nroot = "${path.join(work, 'runc-root')}"\n`);
  running = await start();
  const podConfig = cri.PodSandboxConfig.fromPartial({ metadata: { name: 'live-pod', namespace: 'team-a', uid: 'u1', attempt: 0 } });
  await running.serving.controller.create({ sandboxId: ID, options: packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, podConfig) });
});

afterAll(async () => {
  // the pod's holder and namespace mounts go only through the sandboxer: bring it back if a test left it stopped
  running ??= await start();
  await running.serving.controller.shutdown(ID).catch(() => undefined);
  await running?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

const where = () => ['--dir', `runc=${dir}`, '--socket', `runc=${socket}`, '--kinds', 'runc'];

it('shows a created pod, then the started one with the pid and task address the sandboxer reports', async () => {
  const created = await kuasarctlAsync(['list', '-o', 'json', ...where()]);
  expect(created.stderr).toBe('');
  let [item] = (JSON.parse(created.stdout) as { items: Record<string, any>[] }).items;
  expect(item).toMatchObject({ id: ID, name: 'live-pod', namespace: 'team-a', state: 'created', live: { state: 'SANDBOX_NOTREADY', address: '' } });

  const started = await running!.serving.controller.start(ID);
  const list = await kuasarctlAsync(['list', '-o', 'json', ...where()]);
  [item] = (JSON.parse(list.stdout) as { items: Record<string, any>[] }).items;
  expect(item).toMatchObject({ state: 'ready', pid: started.pid, live: { state: 'SANDBOX_READY', pid: started.pid, version: 3 } });
  expect(item.live.address).toBe(`ttrpc+unix://${dir}/task.sock`);

  const table = await kuasarctlAsync(['list', ...where()]);
  expect(table.stdout.split('\n')[1].split(/\s{3,}/)).toEqual([ID.slice(0, 13), expect.stringMatching(/ago$|^now$/), 'ready', 'live-pod', 'team-a', 'runc', String(started.pid), '0']);
});

it('inspect carries the verbose Status info', async () => {
  const r = await kuasarctlAsync(['inspect', ID, ...where()]);
  expect(r.status).toBe(0);
  const j = JSON.parse(r.stdout) as Record<string, any>;
  expect(j.live.info.info).toMatchObject({ processStatus: 'running', kuasar: { record: { id: ID } } });
});

it('reports a sandboxer that stopped answering, falls back to the record, and sees it again after a restart', async () => {
  await running!.close();
  running = undefined;
  const r = await kuasarctlAsync(['list', '-o', 'json', ...where()]);
  expect(r.status).toBe(0);
  const [item] = (JSON.parse(r.stdout) as { items: Record<string, any>[] }).items;
  expect(item).toMatchObject({ id: ID, state: 'ready', live: null });
  expect(r.stderr).toMatch(/runc: sandboxer (socket .* does not exist|at .* unavailable)/);

  running = await start(); // recovery re-adopts the pod, which kept running (KillMode=process in production)
  const again = await kuasarctlAsync(['list', '-o', 'json', ...where()]);
  expect((JSON.parse(again.stdout) as { items: Record<string, any>[] }).items[0]).toMatchObject({ id: ID, live: { state: 'SANDBOX_READY' } });
});
