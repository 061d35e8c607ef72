// The task relay between containerd and the task socket: real unix sockets, a real ttrpc client on containerd's side
// and real ttrpc servers standing in for the sandboxer before and after a crash.
import * as path from 'node:path';
import { task } from '@kuasar/api';
import { Code, TtrpcClient, TtrpcError, TtrpcServer, createClient, type ServiceImplementation } from '@kuasar/ttrpc';
import { TaskRelay, createLogger } from '../src';
import { tempDir } from './harness';

jest.setTimeout(30_000);

const logger = createLogger({ level: 'fatal' });
type Impl = ServiceImplementation<typeof task.TaskV3Definition>;
const unimplemented = (): Promise<never> => Promise.reject(new TtrpcError(Code.UNIMPLEMENTED, 'not in this fake'));

/** A fake sandboxer task server: `wait` answers `exitStatus` (or never, when undefined), `create` never answers. */
async function fakeSandboxer(socket: string, exitStatus: number | undefined, seen: string[]): Promise<TtrpcServer> {
  const impl = new Proxy({} as Impl, {
    get: (_t, name: string) => {
      if (name === 'wait') {
        return (req: task.WaitRequest) => {
          seen.push(`wait ${req.id}`);
          return exitStatus === undefined ? new Promise(() => undefined) : Promise.resolve({ exitStatus, exitedAt: undefined });
        };
      }
      if (name === 'create') return (req: task.CreateTaskRequest) => (seen.push(`create ${req.id}`), new Promise(() => undefined));
      if (name === 'state') return (req: task.StateRequest) => (seen.push(`state ${req.id}`), Promise.resolve(task.StateResponse.fromPartial({ id: req.id, pid: 42 })));
      return unimplemented;
    },
  });
  const server = new TtrpcServer({ logger });
  server.addService(task.TaskV3Definition, impl);
  await server.listen(socket);
  return server;
}

describe('TaskRelay', () => {
  let dir: string;
  let relay: TaskRelay | undefined;
  const servers: TtrpcServer[] = [];
  const clients: TtrpcClient[] = [];

  beforeEach(() => {
    dir = tempDir('kuasar-relay-');
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => undefined);
    for (const s of servers.splice(0)) await s.close(100).catch(() => undefined);
    await relay?.close();
    relay = undefined;
  });

  async function connect(): Promise<ReturnType<typeof createClient<typeof task.TaskV3Definition>>> {
    const c = await TtrpcClient.connect(path.join(dir, 'relay.sock'));
    clients.push(c);
    return createClient(task.TaskV3Definition, c);
  }

  test('a sandboxer crash: Wait in flight is re-sent to the new sandboxer, Create in flight fails UNAVAILABLE, the connection stays', async () => {
    const upstream = path.join(dir, 'task.sock');
    const seen1: string[] = [];
    const first = await fakeSandboxer(upstream, undefined, seen1);
    relay = await TaskRelay.start({ listen: path.join(dir, 'relay.sock'), upstream, logger });
    const client = await connect();

    expect((await client.state({ id: 'c1', execId: '' })).pid).toBe(42);
    const wait = client.wait({ id: 'c1', execId: '' });
    const create = client.create(task.CreateTaskRequest.fromPartial({ id: 'c2', bundle: '/b' }));
    create.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    expect(seen1).toEqual(['state c1', 'wait c1', 'create c2']);

    await first.close(0); // the crash: every connection drops with the calls unanswered
    await expect(create).rejects.toMatchObject({ code: Code.UNAVAILABLE });

    const seen2: string[] = [];
    servers.push(await fakeSandboxer(upstream, 7, seen2));
    await expect(wait).resolves.toMatchObject({ exitStatus: 7 });
    expect(seen2).toContain('wait c1');
    expect(seen2).not.toContain('create c2');
    // The same containerd connection keeps working.
    expect((await client.state({ id: 'c3', execId: '' })).id).toBe('c3');
    expect(relay.connections).toBe(1);
  });

  test('calls made while the sandboxer is down wait for it and then go through', async () => {
    const upstream = path.join(dir, 'task.sock');
    relay = await TaskRelay.start({ listen: path.join(dir, 'relay.sock'), upstream, logger });
    const client = await connect();
    const state = client.state({ id: 'late', execId: '' });
    await new Promise((r) => setTimeout(r, 300));
    servers.push(await fakeSandboxer(upstream, 0, []));
    await expect(state).resolves.toMatchObject({ id: 'late', pid: 42 });
  });

  test('a sandboxer that never comes back: pending calls fail UNAVAILABLE once the reconnect window ends', async () => {
    const upstream = path.join(dir, 'task.sock');
    relay = await TaskRelay.start({ listen: path.join(dir, 'relay.sock'), upstream, logger, reconnectMs: 300 });
    const client = await connect();
    await expect(client.state({ id: 'x', execId: '' })).rejects.toMatchObject({ code: Code.UNAVAILABLE });
  });

  test('refuses to take over a relay socket another live relay serves', async () => {
    const listen = path.join(dir, 'relay.sock');
    relay = await TaskRelay.start({ listen, upstream: path.join(dir, 'task.sock'), logger });
    await expect(TaskRelay.start({ listen, upstream: path.join(dir, 'task.sock'), logger })).rejects.toThrow(/another process is serving/);
  });
});
