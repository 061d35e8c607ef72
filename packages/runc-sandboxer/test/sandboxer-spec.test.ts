import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cri, packAny, task } from '@kuasar/api';
import { ConfigError, createLogger, startSandboxer, type RunningSandboxer } from '@kuasar/sandbox';
import { runcSandboxerSpec } from '../src/sandboxer-spec';
import { mountPointsUnder } from '../src/proc';
import { baseSpec, makeRootfs } from './oci-fixture';

jest.setTimeout(60_000);

const NS = 'k8s.io';
let work: string;
let running: RunningSandboxer | undefined;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kuasar-spec-'));
});

afterAll(async () => {
  await running?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

it('wires sandboxer, engine and hooks into the framework: a pod runs, Stop ends its containers through the engine', async () => {
  const rootfs = makeRootfs(work);
  const config = path.join(work, 'config.toml');
  fs.writeFileSync(config, `[runc.runtime]\nbinary = "runc"\nroot = "${path.join(work, 'runc-root')}"\n`);
  const dir = path.join(work, 'state');
  running = await startSandboxer(runcSandboxerSpec('test'), { listen: path.join(work, 'c.sock'), dir, config }, createLogger({ level: 'error' }));
  const controller = running.serving.controller;
  const tasks = running.taskService!;

  const id = `spec${process.pid}`;
  const podConfig = cri.PodSandboxConfig.fromPartial({ hostname: 'spec-pod', linux: { securityContext: { namespaceOptions: { pid: cri.NamespaceMode.CONTAINER } } } });
  await controller.create({ sandboxId: id, options: packAny('runtime.v1.PodSandboxConfig', cri.PodSandboxConfig, podConfig) });
  const started = await controller.start(id);
  expect(started.address).toBe(`ttrpc+unix://${dir}/task.sock`);
  expect(started.version).toBe(3);

  const spec = baseSpec(rootfs, ['sh', '-c', 'trap "exit 0" TERM; hostname; while true; do sleep 0.1; done']);
  spec.annotations = { 'io.kubernetes.cri.sandbox-id': id };
  const bundle = path.join(work, 'bundle-a');
  fs.mkdirSync(bundle);
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  const out = path.join(bundle, 'out.log');
  const cid = `${id}-a`;
  await tasks.create(task.CreateTaskRequest.fromPartial({ id: cid, bundle, stdout: `file://${out}` }), { namespace: NS });
  await tasks.start(task.StartRequest.fromPartial({ id: cid }), { namespace: NS });
  for (let i = 0; i < 100 && !fs.readFileSync(out, 'utf8').includes('\n'); i++) await new Promise((r) => setTimeout(r, 20));
  expect(fs.readFileSync(out, 'utf8').trim()).toBe('spec-pod');

  await controller.stop(id, 5);
  const exit = await tasks.wait(task.WaitRequest.fromPartial({ id: cid }), { namespace: NS });
  expect(exit.exitStatus).toBe(0); // SIGTERM reached the container's trap: a graceful stop
  expect((await controller.status(id, false)).state).toBe('SANDBOX_NOTREADY');

  await tasks.delete(task.DeleteRequest.fromPartial({ id: cid }), { namespace: NS });
  await controller.shutdown(id);
  expect(mountPointsUnder(path.join(dir, id))).toEqual([]);
  expect(fs.existsSync(path.join(dir, id))).toBe(false);
});

it('refuses a config that names an unsupported runtime', async () => {
  const config = path.join(work, 'bad.toml');
  fs.writeFileSync(config, '[runc.runtime]\nbinary = "runsc"\n');
  const err = await startSandboxer(runcSandboxerSpec('test'), { listen: path.join(work, 'd.sock'), dir: path.join(work, 'state2'), config }, createLogger({ level: 'fatal' })).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toMatch(/unsupported runtime binary "runsc"/);
});
