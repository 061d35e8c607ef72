// A sandboxer's graceful close() leaves nothing of itself in the process: every timer, signal listener, socket and
// child handle created while it ran is gone afterwards, including the engine's and the kind's own (a reaper and its
// SIGCHLD listener, poll timers), as RunscEngine, VmmEngine, RuncSandboxer and VmmSandboxer hold them.
import { createHook } from 'node:async_hooks';
import * as path from 'node:path';
import { Reaper } from '@kuasar/sys';
import { OciCliEngine } from '@kuasar/task';
import { createLogger, startSandboxer, type SandboxerSpec } from '../src';
import { EMPTY_SCHEMA, sleepSandboxerSpec, tempDir } from './harness';
import { SleepKind } from './sleep-kind';

/** handle types that can outlive their owner */
const HANDLES = new Set(['Timeout', 'SIGNALWRAP', 'PIPEWRAP', 'PIPESERVERWRAP', 'TCPWRAP', 'TCPSERVERWRAP', 'PROCESSWRAP', 'FSEVENTWRAP', 'UDPWRAP']);

/** An engine as the real ones are built: a reaper (SIGCHLD listener + poll timer) and a periodic sweep. */
class ReapingEngine extends OciCliEngine {
  readonly reaper = new Reaper();
  private readonly sweep = setInterval(() => undefined, 60_000).unref();
  closed = 0;

  watch(pid: number): void {
    this.reaper.track(pid);
  }

  close(): void {
    this.closed += 1;
    clearInterval(this.sweep);
    this.reaper.close();
  }
}

/** A kind that polls its pods' main processes, as RuncSandboxer does. */
class PollingKind extends SleepKind {
  private readonly poll = setInterval(() => undefined, 60_000).unref();
  closed = 0;

  close(): void {
    this.closed += 1;
    clearInterval(this.poll);
  }
}

test('close() releases the engine and the kind: no timer, signal listener or socket of the sandboxer is left', async () => {
  const root = tempDir('kuasar-close-');
  const live = new Map<number, string>();
  const stacks = new Map<number, string>();
  const hook = createHook({
    init(id, type) {
      if (!HANDLES.has(type)) return;
      const stack = new Error().stack ?? '';
      // jest's own reporter ticks in this process when tests run in band (CI): not the sandboxer's
      if (stack.includes('/@jest/')) return;
      live.set(id, type);
      // where each handle came from, for the failure message
      stacks.set(id, stack.split('\n').slice(6, 14).join('\n'));
    },
    destroy(id) {
      live.delete(id);
    },
  });
  const sigchld = process.listenerCount('SIGCHLD');
  let engine: ReapingEngine | undefined;
  const kind = new PollingKind();
  const base = sleepSandboxerSpec(kind);
  const spec: SandboxerSpec<typeof EMPTY_SCHEMA, PollingKind> = {
    ...base,
    createSandboxer: () => kind,
    createEngine: (ctx) => (engine = new ReapingEngine({ root: path.join(ctx.dir, '.runc'), logger: ctx.logger })),
  };

  hook.enable();
  try {
    const running = await startSandboxer(spec, { listen: path.join(root, 'c.sock'), dir: path.join(root, 'state') }, createLogger({ level: 'fatal' }));
    // a tracked pid is what makes a reaper listen for SIGCHLD (our own pid is never reaped by it)
    engine!.watch(process.pid);
    expect(process.listenerCount('SIGCHLD')).toBeGreaterThan(sigchld);
    expect([...live.values()]).toEqual(expect.arrayContaining(['Timeout', 'PIPESERVERWRAP']));

    await running.close();
    // destroy hooks run asynchronously after the close
    await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setImmediate(r));
    expect(engine!.closed).toBe(1);
    expect(kind.closed).toBe(1);
    expect(process.listenerCount('SIGCHLD')).toBe(sigchld);
    expect([...live.entries()].map(([id, type]) => `${type}\n${stacks.get(id)}`)).toEqual([]);
  } finally {
    hook.disable();
  }
});
