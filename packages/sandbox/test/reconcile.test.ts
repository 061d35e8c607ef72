// Sandboxes containerd forgot: when a Create or Start reply is lost (the sandboxer was killed before sending it, or
// Start failed), containerd 2.x deletes its own sandbox record and never calls Stop or Shutdown. The framework checks
// every sandbox containerd has not addressed since against containerd's sandbox store, here a real containerd 2.1.
import * as grpc from '@grpc/grpc-js';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { types } from '@kuasar/api';
import { PrivateContainerd, containerdAvailability } from '@kuasar/testkit';
import { ContainerdSandboxView, SandboxController, SandboxStore, createLogger, decodeNamespaceNames, type ReconcileTiming } from '../src';
import { isRunning } from '@kuasar/sys';
import { LogCapture, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

jest.setTimeout(60_000);

const NS = 'k8s.io';
const FAIL_START = 'test.kuasar.io/fail-start';

/** SleepKind whose start fails for sandboxes annotated so, after create made its cgroups and files. */
class FailingStartKind extends SleepKind {
  override start(sandbox: Parameters<SleepKind['start']>[0]): ReturnType<SleepKind['start']> {
    if (sandbox.record.annotations[FAIL_START]) return Promise.reject(new Error('start refused by the test'));
    return super.start(sandbox);
  }
}
const avail = containerdAvailability('2.1');
// eslint-disable-next-line no-console
if ('reason' in avail) console.warn(`skipping: ${avail.reason}`);
const maybe = 'bins' in avail ? describe : describe.skip;

test('the view is taken from CONTAINERD_ADDRESS, else from a TTRPC_ADDRESS ending in .ttrpc, else there is none', () => {
  expect(ContainerdSandboxView.fromEnv({ CONTAINERD_ADDRESS: 'unix:///run/c.sock', TTRPC_ADDRESS: '/x.ttrpc' })?.address).toBe('/run/c.sock');
  expect(ContainerdSandboxView.fromEnv({ TTRPC_ADDRESS: '/run/containerd/containerd.sock.ttrpc' })?.address).toBe('/run/containerd/containerd.sock');
  expect(ContainerdSandboxView.fromEnv({ TTRPC_ADDRESS: 'unix:///a/c.sock.ttrpc' })?.address).toBe('/a/c.sock');
  // an events sink of another shape names no containerd: nothing may be concluded from it
  expect(ContainerdSandboxView.fromEnv({ TTRPC_ADDRESS: '/tmp/events.sock' })).toBeUndefined();
  expect(ContainerdSandboxView.fromEnv({ TTRPC_ADDRESS: '.ttrpc' })).toBeUndefined();
  expect(ContainerdSandboxView.fromEnv({})).toBeUndefined();
});

test('namespace names are read from a ListNamespacesResponse; a malformed one throws', () => {
  // namespaces { name "k8s.io" labels {...} } namespaces { name "default" }
  const ns = (name: string, extra: number[] = []): number[] => {
    const body = [0x0a, name.length, ...Buffer.from(name), ...extra];
    return [0x0a, body.length, ...body];
  };
  const label = [0x12, 6, 0x0a, 1, 0x61, 0x12, 1, 0x62];
  expect(decodeNamespaceNames(Buffer.from([...ns('k8s.io', label), ...ns('default')]))).toEqual(['k8s.io', 'default']);
  expect(decodeNamespaceNames(Buffer.alloc(0))).toEqual([]);
  expect(() => decodeNamespaceNames(Buffer.from([0x0a, 9, 0x0a]))).toThrow(RangeError);
});

maybe('against containerd 2.1', () => {
  let ctrd: PrivateContainerd;
  let store: grpc.Client;

  beforeAll(async () => {
    ctrd = await PrivateContainerd.start({ version: '2.1' });
    store = new grpc.Client(`unix:${ctrd.grpcAddress}`, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    store?.close();
    await ctrd?.stop();
  });

  /** containerd's own sandbox record, as CRI writes it before Controller.Create. */
  const storeCall = (method: 'Create' | 'Delete', body: Buffer): Promise<void> => {
    const md = new grpc.Metadata();
    md.set('containerd-namespace', NS);
    return new Promise((resolve, reject) => {
      store.makeUnaryRequest(`/containerd.services.sandbox.v1.Store/${method}`, (b: Buffer) => b, (b: Buffer) => b, body, md,
        (err) => (err ? reject(err) : resolve()));
    });
  };
  const field1 = (b: Uint8Array): Buffer => Buffer.concat([Buffer.from([0x0a, b.length]), Buffer.from(b)]);
  const remember = (id: string): Promise<void> =>
    storeCall('Create', field1(types.Sandbox.encode(types.Sandbox.fromPartial({ sandboxId: id, runtime: { name: 'io.containerd.kuasar-runc.v1' }, sandboxer: 'kuasar-runc' })).finish()));
  const forget = (id: string): Promise<void> => storeCall('Delete', field1(Buffer.from(id)));

  const TIMING: ReconcileTiming = { afterMs: 300, everyMs: 100, settleMs: 1500 };

  async function controllerOn(dir: string, view: ContainerdSandboxView, timing = TIMING, kind = new SleepKind()) {
    const logs = new LogCapture();
    const sandboxStore = new SandboxStore(dir);
    await sandboxStore.init();
    const controller = new SandboxController(kind, sandboxStore, createLogger({ level: 'debug', kind: 'test', destination: logs }), { address: '', version: 0 }, view, timing);
    return { controller, kind, logs };
  }
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const onDisk = (dir: string, id: string): { claimed?: boolean } => JSON.parse(readFileSync(path.join(dir, id, 'sandbox.json'), 'utf8'));

  test('lookup: true for a sandbox containerd stores, false for one it does not, no answer when containerd is unreachable', async () => {
    await remember('kept-1');
    const view = new ContainerdSandboxView(ctrd.grpcAddress);
    const answers = await view.lookup(['kept-1', 'never-stored']);
    expect([...answers]).toEqual([['kept-1', true], ['never-stored', false]]);
    await forget('kept-1');
    expect((await view.lookup(['kept-1'])).get('kept-1')).toBe(false);
    const gone = new ContainerdSandboxView(path.join(tempDir('kuasar-rec-'), 'no.sock'), 1000);
    expect((await gone.lookup(['kept-1'])).size).toBe(0);
  });

  test('a started sandbox containerd forgot is removed after the grace, with what the kind made; one it stores is kept', async () => {
    const dir = path.join(tempDir('kuasar-rec-'), 'state');
    const { controller, kind } = await controllerOn(dir, new ContainerdSandboxView(ctrd.grpcAddress), { ...TIMING, everyMs: 60_000 });
    await remember('known');
    await remember('ghost');
    for (const id of ['known', 'ghost']) {
      await controller.create({ sandboxId: id });
      await controller.start(id);
    }
    const ghostPid = controller.get('ghost').record.pid;
    // the lost reply of Start: containerd deletes its record and calls nothing more
    await forget('ghost');
    // before the grace nothing is even asked
    expect(await controller.reconcile()).toEqual([]);
    expect(controller.ids().sort()).toEqual(['ghost', 'known']);
    await sleep(TIMING.afterMs);
    expect(await controller.reconcile()).toEqual(['ghost']);
    expect(controller.ids()).toEqual(['known']);
    expect(existsSync(path.join(dir, 'ghost'))).toBe(false);
    expect(isRunning(ghostPid)).toBe(false);
    expect(kind.calls.filter((c) => c.id === 'ghost').map((c) => c.op)).toEqual(['create', 'start', 'stop', 'shutdown']);
    // containerd still holds 'known' past the settle time: claimed for good, on disk too
    expect(onDisk(dir, 'known').claimed).toBeUndefined();
    await sleep(TIMING.settleMs);
    expect(await controller.reconcile()).toEqual([]);
    expect(controller.doubtfulIds()).toEqual([]);
    await sleep(50); // the claim is persisted after the round
    expect(onDisk(dir, 'known').claimed).toBe(true);
    await controller.shutdown('known');
    await forget('known');
  });

  test('a sandbox containerd addressed (Status, Wait...) is never looked up again, even if containerd does not hold it', async () => {
    const dir = path.join(tempDir('kuasar-rec-'), 'state');
    const { controller } = await controllerOn(dir, new ContainerdSandboxView(ctrd.grpcAddress), { ...TIMING, everyMs: 60_000 });
    // a client that drives the Controller directly, without containerd's store
    await controller.create({ sandboxId: 'direct' });
    await controller.start('direct');
    await controller.status('direct', false);
    expect(controller.doubtfulIds()).toEqual([]);
    await sleep(TIMING.afterMs);
    expect(await controller.reconcile()).toEqual([]);
    expect(controller.ids()).toEqual(['direct']);
    await sleep(50); // the claim is persisted after the call
    expect(onDisk(dir, 'direct').claimed).toBe(true);
    await controller.shutdown('direct');
  });

  test('a sandbox whose Start never came, and one whose Start failed, are removed once containerd forgot them', async () => {
    const dir = path.join(tempDir('kuasar-rec-'), 'state');
    const kind = new FailingStartKind();
    const { controller } = await controllerOn(dir, new ContainerdSandboxView(ctrd.grpcAddress), TIMING, kind);
    await controller.create({ sandboxId: 'no-start' });
    await controller.create({ sandboxId: 'bad-start', annotations: { [FAIL_START]: 'yes' } });
    await expect(controller.start('bad-start')).rejects.toThrow();
    // nobody calls reconcile: the controller's own rounds find them
    const deadline = Date.now() + 10_000;
    while (controller.ids().length > 0 && Date.now() < deadline) await sleep(100);
    expect(controller.ids()).toEqual([]);
    expect(existsSync(path.join(dir, 'no-start'))).toBe(false);
    expect(existsSync(path.join(dir, 'bad-start'))).toBe(false);
    // the cgroups create made went with them
    expect(kind.calls.filter((c) => c.op === 'shutdown').map((c) => c.id).sort()).toEqual(['bad-start', 'no-start']);
  });

  test('after a restart: unclaimed sandboxes are in doubt again; containerd unreachable means kept', async () => {
    const dir = path.join(tempDir('kuasar-rec-'), 'state');
    const first = await controllerOn(dir, new ContainerdSandboxView(ctrd.grpcAddress), { ...TIMING, everyMs: 60_000 });
    await remember('survivor');
    for (const id of ['survivor', 'lost', 'claimed']) {
      await first.controller.create({ sandboxId: id });
      await first.controller.start(id);
    }
    await first.controller.wait('claimed', AbortSignal.abort()).catch(() => undefined);
    // the claim is persisted in the background: the successor must find it on disk
    for (let i = 0; i < 500 && onDisk(dir, 'claimed').claimed !== true; i++) await sleep(10);
    expect(onDisk(dir, 'claimed').claimed).toBe(true);
    // the sandboxer dies (nothing is stopped); a successor recovers from the same dir, containerd not reachable
    const down = await controllerOn(dir, new ContainerdSandboxView(path.join(tempDir('kuasar-rec-'), 'no.sock'), 500), { ...TIMING, everyMs: 60_000 }, first.kind);
    await down.controller.recover();
    expect(down.controller.doubtfulIds().sort()).toEqual(['lost', 'survivor']);
    await sleep(TIMING.afterMs);
    expect(await down.controller.reconcile()).toEqual([]);
    expect(down.controller.ids().sort()).toEqual(['claimed', 'lost', 'survivor']);
    // and once more with containerd answering
    const up = await controllerOn(dir, new ContainerdSandboxView(ctrd.grpcAddress), { ...TIMING, everyMs: 60_000 }, first.kind);
    await up.controller.recover();
    await sleep(TIMING.afterMs);
    expect(await up.controller.reconcile()).toEqual(['lost']);
    expect(up.controller.ids().sort()).toEqual(['claimed', 'survivor']);
    for (const id of up.controller.ids()) await up.controller.shutdown(id);
    await forget('survivor');
  });
});

test('a sandbox dir a crash left with only a half-written record (Create never answered) is removed at recovery; other content is kept', async () => {
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const dir = path.join(tempDir('kuasar-rec-'), 'state');
  const store = new SandboxStore(dir);
  await store.init();
  mkdirSync(path.join(dir, 'torn'), { mode: 0o700 });
  writeFileSync(path.join(dir, 'torn', '.sandbox.json.4242.0a1b2c3d'), '{"version":1,"id":"to');
  mkdirSync(path.join(dir, 'foreign'), { mode: 0o700 });
  writeFileSync(path.join(dir, 'foreign', 'notes.txt'), 'not ours to delete');
  const controller = new SandboxController(new SleepKind(), store, createLogger({ level: 'debug', kind: 'test', destination: new LogCapture() }), { address: '', version: 0 }, undefined);
  await controller.recover();
  expect(existsSync(path.join(dir, 'torn'))).toBe(false);
  expect(existsSync(path.join(dir, 'foreign', 'notes.txt'))).toBe(true);
});
