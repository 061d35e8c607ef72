import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { cri, types } from '@kuasar/api';
import { Code, TtrpcError } from '@kuasar/ttrpc';
import { AlreadyExistsError, ExitSignal, FailedPreconditionError, NotFoundError, UnavailableError, statusCodeOf, KeyedMutex, SandboxStore, recordFromJSON, recordToJSON, validateSandboxId, type SandboxRecord } from '../src';
import { tempDir } from './harness';

describe('SandboxStore', () => {
  test('init makes the root 0700, also tightening an existing one', async () => {
    const root = path.join(tempDir('kuasar-sbx-store-'), 'state');
    mkdirSync(root, { mode: 0o755 });
    await new SandboxStore(root).init();
    expect(statSync(root).mode & 0o777).toBe(0o700);
  });

  test('write is atomic: the record is replaced whole and no temp file stays behind', async () => {
    const store = new SandboxStore(tempDir('kuasar-sbx-store-'));
    await store.init();
    await store.createDir('s1');
    expect(statSync(store.dirOf('s1')).mode & 0o777).toBe(0o700);
    await store.write('s1', { n: 1 });
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.write('s1', { n: i, pad: 'x'.repeat(10_000) })));
    const data = (await store.read('s1')) as { n: number; pad: string };
    expect(data.pad).toHaveLength(10_000);
    expect(readdirSync(store.dirOf('s1'))).toEqual(['sandbox.json']);
    expect(statSync(path.join(store.dirOf('s1'), 'sandbox.json')).mode & 0o777).toBe(0o600);
  });

  test('createDir refuses a taken id', async () => {
    const store = new SandboxStore(tempDir('kuasar-sbx-store-'));
    await store.init();
    await store.createDir('s1');
    await expect(store.createDir('s1')).rejects.toBeInstanceOf(AlreadyExistsError);
  });

  test('list skips framework entries, reports missing records and quarantines corrupt ones', async () => {
    const store = new SandboxStore(tempDir('kuasar-sbx-store-'));
    await store.init();
    for (const id of ['good', 'empty', 'bad']) await store.createDir(id);
    await store.write('good', { ok: true });
    writeFileSync(path.join(store.dirOf('bad'), 'sandbox.json'), 'nope{');
    mkdirSync(path.join(store.root, 'tasks'));
    writeFileSync(path.join(store.root, 'task.sock'), '');
    mkdirSync(path.join(store.root, 'not..an-id'));
    const entries = await store.list();
    expect(entries.map((e) => [e.id, e.kind])).toEqual([
      ['bad', 'corrupt'],
      ['empty', 'missing'],
      ['good', 'record'],
    ]);
    const bad = entries[0] as { movedTo: string };
    expect(path.dirname(bad.movedTo)).toBe(store.dirOf('bad'));
    expect(readFileSync(bad.movedTo, 'utf8')).toBe('nope{');
    expect(existsSync(path.join(store.dirOf('bad'), 'sandbox.json'))).toBe(false);
    expect(await store.removeIfEmpty('empty')).toBe(true);
    expect(await store.removeIfEmpty('good')).toBe(false);
  });
});

describe('SandboxStore.remove', () => {
  test('refuses while something is mounted below the sandbox dir, and keeps what the mount shows', async () => {
    const store = new SandboxStore(tempDir('kuasar-sbx-store-'));
    await store.init();
    await store.createDir('m1');
    const point = path.join(store.dirOf('m1'), 'rootfs dir');
    mkdirSync(point);
    expect(spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', point]).status).toBe(0);
    try {
      writeFileSync(path.join(point, 'precious'), 'data');
      await expect(store.remove('m1')).rejects.toMatchObject({ code: 9, message: expect.stringContaining('rootfs dir') });
      expect(readFileSync(path.join(point, 'precious'), 'utf8')).toBe('data');
    } finally {
      spawnSync('umount', [point]);
    }
    await store.remove('m1');
    expect(existsSync(store.dirOf('m1'))).toBe(false);
  });
});

describe('record codec', () => {
  test('a full record survives JSON and back', () => {
    const record: SandboxRecord = {
      id: 'r1',
      state: 'ready',
      netnsPath: '/var/run/netns/x',
      annotations: { a: 'b' },
      rootfs: [types.Mount.fromPartial({ type: 'bind', source: '/a', target: '/b', options: ['rbind'] })],
      config: cri.PodSandboxConfig.fromPartial({
        hostname: 'h',
        linux: {
          cgroupParent: '/kubepods/x',
          securityContext: { namespaceOptions: { network: 2, pid: 1, ipc: 0 } },
          resources: { cpuPeriod: 100000n, cpuQuota: 50000n, memoryLimitInBytes: 1n << 40n },
        },
      }),
      options: undefined,
      sandbox: types.Sandbox.fromPartial({
        sandboxId: 'r1',
        runtime: { name: 'rt', options: { typeUrl: 'x', value: Buffer.from([1, 2, 3]) } },
        labels: { l: '1' },
        extensions: { metadata: { typeUrl: 'm', value: Buffer.from('{}') } },
      }),
      createdAt: new Date('2026-01-02T03:04:05.678Z'),
      pid: 42,
      startedAt: new Date('2026-01-02T03:04:06.000Z'),
      labels: { selinux_label: 's' },
      exit: { exitStatus: 137, exitedAt: new Date('2026-01-02T04:00:00.000Z') },
      kindState: { holder: 7, paths: ['/x'] },
    };
    const back = recordFromJSON('r1', JSON.parse(JSON.stringify(recordToJSON(record))));
    expect(back).toEqual(record);
    expect(back.config!.linux!.resources!.memoryLimitInBytes).toBe(1n << 40n);
  });

  test.each([
    [{}, /version/],
    [{ version: 1, id: 'other', state: 'ready', pid: 1, createdAt: '2026-01-01T00:00:00Z' }, /does not match/],
    [{ version: 1, id: 'r1', state: 'gone', pid: 1, createdAt: '2026-01-01T00:00:00Z' }, /bad state/],
    [{ version: 1, id: 'r1', state: 'ready', pid: -1, createdAt: '2026-01-01T00:00:00Z' }, /bad pid/],
    [{ version: 1, id: 'r1', state: 'ready', pid: 1, createdAt: 'yesterday' }, /createdAt/],
    [{ version: 1, id: 'r1', state: 'ready', pid: 1, createdAt: '2026-01-01T00:00:00Z', annotations: { a: 1 } }, /annotations\.a/],
  ])('rejects %j', (data, reason) => {
    expect(() => recordFromJSON('r1', data)).toThrow(reason);
  });
});

describe('ids', () => {
  test.each(['a', 'A-1', 'a.b_c-d', '0123456789abcdef'.repeat(4), 'x'.repeat(76)])('accepts %s', (id) => {
    expect(() => validateSandboxId(id)).not.toThrow();
  });
  test.each(['', '.', '..', 'a/b', '/a', 'a b', 'a\u0000', 'a--b', 'a.', '_a', 'x'.repeat(77), 'tasks', 'task.sock', 'é'])(
    'rejects %j',
    (id) => {
      expect(() => validateSandboxId(id)).toThrow(expect.objectContaining({ code: 3 }));
    },
  );
});

describe('KeyedMutex', () => {
  test('serialises one key, runs different keys together, survives failures, forgets idle keys', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const step = (key: string, tag: string, ms: number, fail = false) =>
      m.run(key, async () => {
        log.push(`${tag}+`);
        await new Promise((r) => setTimeout(r, ms));
        log.push(`${tag}-`);
        if (fail) throw new Error(tag);
        return tag;
      });
    const results = await Promise.allSettled([step('a', 'a1', 30, true), step('a', 'a2', 10), step('b', 'b1', 5)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    // a2 starts only after a1 ended; b1 ran while a1 was running.
    expect(log.indexOf('a2+')).toBeGreaterThan(log.indexOf('a1-'));
    expect(log.indexOf('b1+')).toBeLessThan(log.indexOf('a1-'));
    expect(m.size).toBe(0);
  });
});

describe('ExitSignal', () => {
  test('fans out one exit, and aborted waiters are removed', async () => {
    const s = new ExitSignal();
    const ac = new AbortController();
    const a = s.wait();
    const b = s.wait(ac.signal);
    expect(s.waiterCount).toBe(2);
    ac.abort();
    await expect(b).rejects.toMatchObject({ code: 1 });
    expect(s.waiterCount).toBe(1);
    const exit = { exitStatus: 3, exitedAt: new Date() };
    expect(s.resolve(exit)).toBe(true);
    expect(s.resolve({ exitStatus: 4, exitedAt: new Date() })).toBe(false);
    await expect(a).resolves.toBe(exit);
    await expect(s.wait()).resolves.toBe(exit);
    expect(s.waiterCount).toBe(0);
  });
});

describe('status codes', () => {
  test('typed errors, foreign rpc errors and plain errors map to google.rpc codes', () => {
    expect(statusCodeOf(new NotFoundError('x'))).toBe(5);
    expect(statusCodeOf(new AlreadyExistsError('x'))).toBe(6);
    expect(statusCodeOf(new FailedPreconditionError('x'))).toBe(9);
    expect(statusCodeOf(new UnavailableError('x'))).toBe(14);
    expect(statusCodeOf(new TtrpcError(Code.UNIMPLEMENTED, 'x'))).toBe(12);
    expect(statusCodeOf(Object.assign(new Error('enoent'), { code: 'ENOENT' }))).toBe(2);
    expect(statusCodeOf('boom')).toBe(2);
    expect(new NotFoundError('x').name).toBe('NotFoundError');
  });
});
