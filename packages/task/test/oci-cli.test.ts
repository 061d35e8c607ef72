import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OciCliEngine, lastLoggedError, runtimeError } from '../src/engines/oci-cli';
import type { ContainerRef } from '../src/engine';
import { Code, TtrpcError } from '../src/errors';
import { setChildSubreaper } from '@kuasar/sys';
import { createBusyboxBundle, type BusyboxBundle } from './helpers/bundle';

const NS = 'engine-test';

// These tests drive the engine alone, with nobody reaping container processes. A TaskService earlier in the same
// jest worker makes it a subreaper, and then an exec orphaned to us stays an unreaped zombie, which keeps the
// pid namespace's init from finishing its exit. Give the orphans back to pid 1, which reaps them.
beforeAll(() => setChildSubreaper(false));

function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (cond()) resolve();
      else if (Date.now() > until) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

describe.each(['runc', 'crun'])('OciCliEngine with %s', (runtime) => {
  let root: string;
  let engine: OciCliEngine;
  let bundle: BusyboxBundle;
  let ref: ContainerRef;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), `kuasar-${runtime}-root-`));
    engine = new OciCliEngine({ binary: runtime, root, timeoutMs: 10_000 });
  });
  afterEach(async () => {
    if (ref) await engine.delete(ref, { force: true }).catch(() => undefined);
    bundle?.remove();
    expect(execFileSync(runtime, ['--root', join(root, NS), 'list', '-q'], { encoding: 'utf8' }).trim()).toBe('');
    rmSync(root, { recursive: true, force: true });
  });

  test('create, start, exec, pause/resume, update, kill, delete', async () => {
    bundle = createBusyboxBundle({ args: ['sh', '-c', 'echo out-$((6*7)); echo err >&2; exec sleep 1000'] });
    ref = { id: `e-${runtime}-1`, namespace: NS, bundle: bundle.path };
    const outFile = join(bundle.path, 'out.txt');
    const out = openSync(outFile, 'a');
    const { pid } = await engine.create(ref, { spec: bundle.spec, stdio: { terminal: false, stdout: out, stderr: out } });
    closeSync(out);
    expect(pid).toBeGreaterThan(0);
    expect(await engine.state(ref)).toEqual({ status: 'created', pid });

    expect((await engine.start(ref)).pid).toBe(pid);
    await waitFor(() => readFileSync(outFile, 'utf8').includes('err'), 'init output');
    expect(readFileSync(outFile, 'utf8')).toBe('out-42\nerr\n');
    expect((await engine.state(ref)).status).toBe('running');

    const execOut = join(bundle.path, 'exec.txt');
    const eo = openSync(execOut, 'a');
    const exec = await engine.exec(ref, 'x1', { args: ['sh', '-c', 'echo exec-ran; sleep 1000'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 } },
      { terminal: false, stdout: eo });
    closeSync(eo);
    expect(exec.pid).toBeGreaterThan(0);
    await waitFor(() => existsSync(execOut) && readFileSync(execOut, 'utf8') === 'exec-ran\n', 'exec output');
    expect((await engine.pids(ref)).sort()).toEqual(expect.arrayContaining([pid, exec.pid]));

    await engine.pause(ref);
    expect((await engine.state(ref)).status).toBe('paused');
    await engine.resume(ref);
    expect((await engine.state(ref)).status).toBe('running');

    await engine.update(ref, { memory: { limit: 64 * 1024 * 1024 } });
    const cgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8').match(/:memory:(.*)/)![1];
    expect(readFileSync(`/sys/fs/cgroup/memory${cgroup}/memory.limit_in_bytes`, 'utf8').trim()).toBe(String(64 * 1024 * 1024));
    expect(await engine.oomKills(ref)).toBe(0n);

    await engine.kill(ref, 'x1', 9, false);
    await engine.kill(ref, undefined, 9, false);
    await waitFor(() => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z'), 'init exit');
    await engine.delete(ref, { force: false }).catch(async () => {
      // the init may still be a zombie of pid 1 for a moment
      await new Promise((r) => setTimeout(r, 200));
      await engine.delete(ref, { force: false });
    });
    await expect(engine.state(ref)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    // deleting what is gone is not an error
    await engine.delete(ref, { force: false });
  });

  test('unknown container → NOT_FOUND', async () => {
    bundle = createBusyboxBundle();
    ref = { id: 'nope', namespace: NS, bundle: bundle.path };
    await expect(engine.state(ref)).rejects.toMatchObject({ code: Code.NOT_FOUND });
    await expect(engine.kill(ref, undefined, 15, false)).rejects.toMatchObject({ code: Code.NOT_FOUND });
  });

  test('a runtime error surfaces the logged message', async () => {
    bundle = createBusyboxBundle({ args: ['/does/not/exist'] });
    ref = { id: `e-${runtime}-bad`, namespace: NS, bundle: bundle.path };
    // a bad command fails at create (runc) or at start (crun)
    const err = await engine.create(ref, { spec: bundle.spec, stdio: { terminal: false } })
      .then(() => engine.start(ref)).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(TtrpcError);
    expect((err as TtrpcError).message).toMatch(new RegExp(`^${runtime} (create|start) failed: .*(/does/not/exist|no such file)`, 'i'));
  });
});

test('missing runtime binary → FAILED_PRECONDITION naming the path', async () => {
  const engine = new OciCliEngine({ binary: '/opt/none/runc' });
  const ref = { id: 'x', namespace: NS, bundle: '/tmp' };
  await expect(engine.state(ref)).rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('/opt/none/runc') });
  await expect(new OciCliEngine({ binary: 'no-such-runtime-xyz' }).state(ref))
    .rejects.toMatchObject({ code: Code.FAILED_PRECONDITION, message: expect.stringContaining('no-such-runtime-xyz') });
});

test('a delete that fails after removing the container counts as done; one that leaves it does not', async () => {
  // runsc's delete removes its state files and still fails when its wait for the container's gofer times out (a
  // zombie that a lazily reaping init holds): wrappers around runc reproduce both kinds of failing delete
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-wrap-'));
  const wrapper = (name: string, onDelete: string): string => {
    const p = join(dir, name);
    writeFileSync(p, `#!/bin/sh\ncase " $* " in *" delete "*) ${onDelete} echo "stopping container: context deadline exceeded" >&2; exit 1;; esac\nexec runc "$@"\n`, { mode: 0o755 });
    return p;
  };
  const root = join(dir, 'root');
  const bundle = createBusyboxBundle({ args: ['sleep', '1000'] });
  const ref: ContainerRef = { id: 'wrapped', namespace: NS, bundle: bundle.path };
  const real = new OciCliEngine({ binary: 'runc', root, timeoutMs: 10_000 });
  try {
    for (const [name, onDelete, removes] of [['keeps-it', '', false], ['removes-it', 'runc "$@" >/dev/null 2>&1;', true]] as const) {
      const engine = new OciCliEngine({ binary: wrapper(name, onDelete), root, timeoutMs: 10_000 });
      await engine.create(ref, { spec: bundle.spec, stdio: { terminal: false } });
      await engine.kill(ref, undefined, 9, false);
      if (removes) {
        await engine.delete(ref, { force: true });
        await expect(real.state(ref)).rejects.toMatchObject({ code: Code.NOT_FOUND });
      } else {
        await expect(engine.delete(ref, { force: true })).rejects.toThrow(/context deadline exceeded/);
        expect((await real.state(ref)).status).toMatch(/created|stopped/);
        await real.delete(ref, { force: true });
      }
    }
  } finally {
    await real.delete(ref, { force: true }).catch(() => undefined);
    bundle.remove();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lastLoggedError reads only entries written after the offset', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kuasar-log-'));
  const f = join(dir, 'log.json');
  const old = '{"level":"error","msg":"old failure","time":"t"}\n';
  writeFileSync(f, old + '{"level":"warning","msg":"w"}\n{"level":"error","msg":"first"}\n{"level":"error","msg":"second"}\n');
  expect(lastLoggedError(f, old.length)).toBe('second');
  expect(lastLoggedError(f, 100_000)).toBe('second'); // truncated log: read it all
  expect(lastLoggedError(join(dir, 'none'), 0)).toBeUndefined();
  rmSync(dir, { recursive: true });
});

test('runtime errors map to containerd codes', () => {
  expect(runtimeError('runc', 'state', 'container "x" does not exist').code).toBe(Code.NOT_FOUND);
  expect(runtimeError('runc', 'kill', 'container not running').code).toBe(Code.NOT_FOUND);
  expect(runtimeError('runc', 'create', 'container with id exists: x').code).toBe(Code.UNKNOWN);
  expect(runtimeError('runc', 'pause', 'container not running').code).toBe(Code.FAILED_PRECONDITION);
  expect(runtimeError('crun', 'delete', "cannot open directory '/r/ns/c1': No such file or directory", '/r/ns/c1').code).toBe(Code.NOT_FOUND);
  expect(runtimeError('crun', 'exec', 'error opening file `/bin/x`: No such file or directory', '/r/ns/c1').code).toBe(Code.UNKNOWN);
  expect(runtimeError('runc', 'create', 'JSON specification file config.json not found').code).toBe(Code.UNKNOWN);
});
