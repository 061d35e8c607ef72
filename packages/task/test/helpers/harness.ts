// A TaskService behind a real ttrpc socket, a ttrpc client speaking containerd.task.v3.Task, and a real ttrpc
// Events server standing in for containerd's event socket.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, readdirSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { eventsTtrpc, task, unpackTaskEvent, dateFromTimestamp, type DecodedTaskEvent } from '@kuasar/api';
import { TtrpcClient, TtrpcServer, createClient, type ServiceClient } from '@kuasar/ttrpc';
import { EventPublisher } from '../../src/events';
import { OciCliEngine } from '../../src/engines/oci-cli';
import { TaskService, type TaskHooks } from '../../src/task-service';
import { registerTaskService } from '../../src/task-server';

export const logger = pino({ level: process.env['KUASAR_TEST_LOG'] ?? 'silent' }, pino.destination(2));

export interface ReceivedEvent {
  namespace: string;
  metadataNamespace: string | undefined;
  topic: string;
  timestamp: Date;
  decoded: DecodedTaskEvent;
}

export class EventsSink {
  readonly events: ReceivedEvent[] = [];
  readonly server = new TtrpcServer();
  constructor(readonly path: string) {
    this.server.addService(eventsTtrpc.EventsDefinition, {
      forward: async (req, ctx) => {
        const env = req.envelope!;
        this.events.push({
          namespace: env.namespace, metadataNamespace: ctx.namespace, topic: env.topic,
          timestamp: dateFromTimestamp(env.timestamp!), decoded: unpackTaskEvent(env.event!),
        });
        return {};
      },
    });
  }
  listen(): Promise<void> {
    return this.server.listen(this.path);
  }
  /** events of one container, as "topic[:id]" strings */
  of(containerId: string): string[] {
    return this.events
      .filter((e) => (e.decoded.event as { containerId?: string }).containerId === containerId)
      .map((e) => {
        const ev = e.decoded.event as { id?: string; execId?: string };
        return e.topic + (ev.execId ? `:${ev.execId}` : e.topic === '/tasks/exit' ? `:${ev.id}` : '');
      });
  }
}

/** the generated client encodes through fromPartial, so tests may leave proto3 defaults out */
export type PartialClient<C> = {
  [K in keyof C]: C[K] extends (req: infer Req, opts?: infer O) => Promise<infer Res> ? (req: Partial<Req>, opts?: O) => Promise<Res> : never;
};

export interface Harness {
  dir: string;
  stateDir: string;
  runtimeRoot: string;
  engine: OciCliEngine;
  service: TaskService;
  publisher: EventPublisher;
  sink: EventsSink;
  server: TtrpcServer;
  client: TtrpcClient;
  tasks: PartialClient<ServiceClient<typeof task.TaskV3Definition>>;
  tasksV2: PartialClient<ServiceClient<typeof task.TaskV2Definition>>;
  /** stop serving and drop the service WITHOUT deleting containers (a simulated crash) */
  crash(): Promise<void>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  runtime?: string;
  /** extra global runtime flags (runsc: --network=none) */
  globalArgs?: string[];
  hooks?: TaskHooks;
  /** reuse the state and runtime root of an earlier harness (restart) */
  dir?: string;
}

export async function startHarness(o: HarnessOptions = {}): Promise<Harness> {
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), 'kuasar-task-'));
  const stateDir = join(dir, 'state');
  const runtimeRoot = join(dir, 'runtime');
  const sink = new EventsSink(join(dir, `events-${process.hrtime.bigint()}.sock`));
  await sink.listen();
  const engine = new OciCliEngine({ binary: o.runtime ?? 'runc', root: runtimeRoot, logger, timeoutMs: 10_000, globalArgs: o.globalArgs });
  const publisher = new EventPublisher({ address: `unix://${sink.path}`, logger, retryDelayMs: 20 });
  const service = new TaskService({ engine, publisher, logger, stateDir, hooks: o.hooks, oomPollMs: 200, orphanSweepMs: 200 });
  const server = new TtrpcServer();
  registerTaskService(server, service);
  const sock = join(dir, `task-${process.hrtime.bigint()}.sock`);
  await server.listen(sock);
  const client = await TtrpcClient.connect(sock, { metadata: { 'containerd-namespace-ttrpc': 'k8s.io' } });
  const tasks = createClient(task.TaskV3Definition, client) as unknown as Harness['tasks'];
  const tasksV2 = createClient(task.TaskV2Definition, client) as unknown as Harness['tasksV2'];
  const crash = async () => {
    await client.close();
    await server.close(1000);
    service.close();
    await publisher.close(500);
    await sink.server.close(1000);
  };
  return {
    dir, stateDir, runtimeRoot, engine, service, publisher, sink, server, client, tasks, tasksV2, crash,
    close: async () => {
      await crash();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** ids the runtime still knows in a namespace (leftover check) */
export function runtimeList(runtime: string, root: string, namespace = 'k8s.io'): string[] {
  return execFileSync(runtime, ['--root', join(root, namespace), 'list', '--quiet'], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

/** Remove the empty /kuasar-test parent cgroups the busybox bundles use. */
export function removeTestCgroups(): void {
  for (const ctrl of readdirSync('/sys/fs/cgroup')) {
    const d = join('/sys/fs/cgroup', ctrl, 'kuasar-test');
    try {
      for (const child of readdirSync(d, { withFileTypes: true })) if (child.isDirectory()) rmdirSync(join(d, child.name));
      rmdirSync(d);
    } catch {
      /* absent or still busy */
    }
  }
}

export function until<T>(fn: () => T | undefined | false, ms = 5000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      const v = fn();
      if (v) resolve(v);
      else if (Date.now() > end) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

/** gVisor's runsc from scripts/fetch-debs.sh's cache (or $KUASAR_RUNSC), if present on this machine */
export function runscPath(): string | undefined {
  const env = process.env['KUASAR_RUNSC'];
  if (env) return env;
  try {
    const manifest = JSON.parse(readFileSync(join(process.env['KUASAR_CACHE'] ?? '/var/cache/kuasar', 'debs', 'manifest.json'), 'utf8')) as
      { key: string; bins: Record<string, string> }[];
    const p = manifest.find((m) => m.key === 'runsc')?.bins['runsc'];
    return p && existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

/** zombie children of this process (orphans re-parented to us as subreaper that nobody reaped) */
export function zombieChildren(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (f[0] === 'Z' && Number(f[1]) === process.pid) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}
