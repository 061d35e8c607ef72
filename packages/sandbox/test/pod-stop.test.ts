// PodExit and stopPodMembers: the pod life every sandboxer shares (runc, wasm, quark, vmm).
import pino from 'pino';
import type { PodMember } from '../src/pod-members';
import { PodExit, removeLostMembers, stopPodMembers, type PodTasks } from '../src/pod-stop';

const logger = pino({ level: 'silent' });
const member = (id: string): PodMember => ({ namespace: 'k8s.io', id, bundle: '' });

/** Containers as the task core sees them: each ends on the signals it does not ignore. */
class FakeContainers implements PodTasks {
  readonly signals: string[] = [];
  readonly removed: string[] = [];
  private readonly running = new Map<string, { ignores: Set<number>; exit: () => void; exited: Promise<void> }>();

  add(id: string, ignores: number[] = []): void {
    let exit!: () => void;
    const exited = new Promise<void>((r) => (exit = r));
    this.running.set(id, { ignores: new Set(ignores), exit, exited });
  }

  async kill(m: PodMember, signal: number): Promise<void> {
    this.signals.push(`${m.id}:${signal}`);
    const c = this.running.get(m.id);
    if (c && !c.ignores.has(signal)) c.exit();
  }

  waitExit(m: PodMember, signal: AbortSignal): Promise<void> {
    const c = this.running.get(m.id);
    if (!c) return Promise.resolve();
    return new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => reject(new Error('aborted')));
      void c.exited.then(resolve);
    });
  }

  async remove(m: PodMember): Promise<void> {
    if (m.id === 'broken') throw new Error('runtime state is corrupt');
    this.removed.push(m.id);
  }
}

describe('PodExit', () => {
  test('the first exit wins and later ones are ignored', async () => {
    const p = new PodExit();
    expect(p.accepting).toBe(true);
    p.resolveExit(137);
    p.resolveExit(0);
    expect(p.hasExited).toBe(true);
    expect(p.accepting).toBe(false);
    await expect(p.exited).resolves.toMatchObject({ exitStatus: 137 });
  });

  test('a stopping pod refuses new containers before it has exited', () => {
    const p = new PodExit();
    p.stopping = true;
    expect(p.hasExited).toBe(false);
    expect(p.accepting).toBe(false);
  });
});

describe('stopPodMembers', () => {
  test('SIGTERM is enough for containers that honour it; no SIGKILL follows', async () => {
    const c = new FakeContainers();
    c.add('a');
    c.add('b');
    await expect(stopPodMembers([member('a'), member('b')], c, { timeoutSecs: 5, logger })).resolves.toBe(true);
    expect(c.signals.sort()).toEqual(['a:15', 'b:15']);
  });

  test('a container that ignores SIGTERM gets SIGKILL after the grace period, then afterKill runs', async () => {
    const c = new FakeContainers();
    c.add('stubborn', [15]);
    const order: string[] = [];
    const started = Date.now();
    const ok = await stopPodMembers([member('stubborn')], c, { timeoutSecs: 0.2, logger, afterKill: async () => order.push('afterKill') });
    expect(ok).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(180);
    expect(c.signals).toEqual(['stubborn:15', 'stubborn:9']);
    expect(order).toEqual(['afterKill']);
  });

  test('timeout 0 sends SIGKILL at once', async () => {
    const c = new FakeContainers();
    c.add('a');
    await stopPodMembers([member('a')], c, { timeoutSecs: 0, logger });
    expect(c.signals).toEqual(['a:9']);
  });

  test('reports false when a container outlives SIGKILL, and a failing kill does not stop the others', async () => {
    const c = new FakeContainers();
    c.add('immortal', [15, 9]);
    c.add('b');
    const failing: PodTasks = {
      kill: async (m, s) => {
        if (m.id === 'b') throw new Error('runtime crashed');
        return c.kill(m, s);
      },
      waitExit: (m, s) => c.waitExit(m, s),
    };
    await expect(stopPodMembers([member('immortal'), member('b')], failing, { timeoutSecs: 0, logger, killWaitMs: 50 })).resolves.toBe(false);
    expect(c.signals).toEqual(['immortal:9']);
  });

  test('no members: nothing to signal', async () => {
    const c = new FakeContainers();
    await expect(stopPodMembers([], c, { timeoutSecs: 1, logger })).resolves.toBe(true);
    expect(c.signals).toEqual([]);
  });
});

test('removeLostMembers removes every member it can and goes on past a failure', async () => {
  const c = new FakeContainers();
  await removeLostMembers([member('x'), member('broken'), member('y')], c, logger);
  expect(c.removed).toEqual(['x', 'y']);
});
