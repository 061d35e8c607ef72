// Real peer: our ttrpc client forwards task events to a private containerd 1.6 (Debian's package) over its ttrpc
// socket, exactly as a shim or sandboxer does.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { events, eventsTtrpc, packAny, timestampNow, types } from '@kuasar/api';
import { Code, createClient, NAMESPACE_KEY, TtrpcClient, TtrpcError } from '@kuasar/ttrpc';
import { PrivateContainerd } from '../src';

jest.setTimeout(60_000);

describe('Events.Forward against a real containerd 1.6', () => {
  let containerd: PrivateContainerd;
  let client: TtrpcClient;
  let watcher: ChildProcessWithoutNullStreams;
  let seen = '';

  beforeAll(async () => {
    containerd = await PrivateContainerd.start({ version: '1.6' });
    watcher = spawn(containerd.binaries.ctr, ['--address', containerd.grpcAddress, 'events']);
    watcher.stdout.setEncoding('utf8').on('data', (chunk: string) => (seen += chunk));
    client = await TtrpcClient.connect(containerd.ttrpcAddress);
  });

  afterAll(async () => {
    client?.close();
    watcher?.kill('SIGKILL');
    await containerd?.stop();
  });

  const forward = (envelope: Partial<types.Envelope>) => {
    const stub = createClient(eventsTtrpc.EventsDefinition, client);
    return stub.forward(eventsTtrpc.ForwardRequest.fromPartial({ envelope }), {
      metadata: { [NAMESPACE_KEY]: 'default' },
      timeoutMs: 5_000,
    });
  };

  const exitEvent = (id: string) =>
    packAny('containerd.events.TaskExit', events.TaskExit, events.TaskExit.fromPartial({
      containerId: id, id, pid: 4242, exitStatus: 42, exitedAt: timestampNow(),
    }));

  it('accepts a valid /tasks/exit envelope, which ctr events then shows', async () => {
    const id = `kuasar-forward-${process.pid}`;
    // `ctr events` subscribes asynchronously; forward until the subscriber has seen one (each forward is accepted).
    const deadline = Date.now() + 15_000;
    while (!seen.includes(id) && Date.now() < deadline) {
      await forward({ timestamp: timestampNow(), namespace: 'default', topic: '/tasks/exit', event: exitEvent(id) });
      await new Promise((r) => setTimeout(r, 200));
    }
    const line = seen.split('\n').find((l) => l.includes(id));
    expect(line).toBeDefined();
    expect(line).toMatch(/\sdefault\s+\/tasks\/exit\s/);
    expect(line).toContain('"exit_status":42');
    expect(line).toContain('"pid":4242');
  });

  it('rejects an envelope without a timestamp with INVALID_ARGUMENT', async () => {
    const err = await forward({ namespace: 'default', topic: '/tasks/exit', event: exitEvent('no-ts') }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TtrpcError);
    expect((err as TtrpcError).code).toBe(Code.INVALID_ARGUMENT);
  });

});
