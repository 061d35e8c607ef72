// TaskStore on a real file system: records written in place, the spare task dir, and what list() makes of the
// states a killed sandboxer can leave.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TaskStore, type TaskRecord } from '../src/task-store';

const record = (id: string, o: Partial<TaskRecord> = {}): TaskRecord => ({
  version: 1, id, namespace: 'k8s.io', bundle: `/b/${id}`, mounts: [], sharedPidNs: false, paused: false,
  createdAt: new Date(0).toISOString(), processes: [], ...o,
});
const list = (s: TaskStore): { records: TaskRecord[]; errors: string[] } => {
  const errors: string[] = [];
  const records = s.list((_p, _e, w) => errors.push(`${w.namespace}/${w.id}`));
  return { records, errors };
};
async function spareMade(root: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if (statSync(join(root, '.spare', 'task.json')).size === 0) {
        await new Promise((r) => setTimeout(r, 20)); // the store marks it ready once writeFile has resolved
        return;
      }
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('no spare task dir');
}

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'task-store-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('an update shorter than the record is padded and still reads back as the new record', () => {
  const s = new TaskStore(dir);
  const long = record('a', { mounts: ['/x'.repeat(200)] });
  s.save(long);
  const file = join(s.dir('k8s.io', 'a'), 'task.json');
  const ino = statSync(file).ino;
  s.save(record('a', { paused: true }));
  // written in place: same inode, old length kept, content is the new record
  expect(statSync(file).ino).toBe(ino);
  expect(statSync(file).size).toBe(JSON.stringify(long, null, 1).length);
  expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual(record('a', { paused: true }));
  expect(list(new TaskStore(dir)).records).toEqual([record('a', { paused: true })]);
});

test('a record longer than a page is replaced by rename, never written in place', () => {
  const s = new TaskStore(dir);
  s.save(record('big'));
  const file = join(s.dir('k8s.io', 'big'), 'task.json');
  const ino = statSync(file).ino;
  const big = record('big', { mounts: Array.from({ length: 300 }, (_, i) => `/mnt/${i}`) });
  s.save(big);
  expect(statSync(file).ino).not.toBe(ino);
  expect(list(s).records).toEqual([big]);
});

test('a new record takes the spare task dir; the spare is not listed and is made again', async () => {
  const s = new TaskStore(dir);
  s.save(record('first'));
  await spareMade(s.root);
  const spareIno = statSync(join(s.root, '.spare')).ino;
  s.save(record('second', { namespace: 'other' }));
  expect(statSync(s.dir('other', 'second')).ino).toBe(spareIno);
  await spareMade(s.root);
  expect(statSync(join(s.root, '.spare')).ino).not.toBe(spareIno);
  const { records, errors } = list(new TaskStore(dir));
  expect(records.map((r) => r.id).sort()).toEqual(['first', 'second']);
  expect(errors).toEqual([]);
});

test('a task dir that already exists with content is not replaced by the spare', async () => {
  const s = new TaskStore(dir);
  s.save(record('first'));
  await spareMade(s.root);
  mkdirSync(s.dir('k8s.io', 'x'), { recursive: true });
  writeFileSync(join(s.dir('k8s.io', 'x'), 'init-stdin.pipe'), '');
  s.save(record('x'));
  expect(readdirSync(s.dir('k8s.io', 'x')).sort()).toEqual(['init-stdin.pipe', 'task.json']);
  expect(list(s).records.map((r) => r.id).sort()).toEqual(['first', 'x']);
});

test('a claimed spare whose record was never written (killed in between) is dropped; other bad records are reported', () => {
  const s = new TaskStore(dir);
  mkdirSync(s.dir('k8s.io', 'claimed'), { recursive: true });
  writeFileSync(join(s.dir('k8s.io', 'claimed'), 'task.json'), '');
  mkdirSync(s.dir('k8s.io', 'torn'), { recursive: true });
  writeFileSync(join(s.dir('k8s.io', 'torn'), 'task.json'), '{"version":1,');
  const { records, errors } = list(s);
  expect(records).toEqual([]);
  expect(errors).toEqual(['k8s.io/torn']);
  expect(readdirSync(join(s.root, 'k8s.io'))).toEqual(['torn']);
});

test('remove: the record is gone at once, its files a moment later; list() deletes what a killed sandboxer left', async () => {
  const s = new TaskStore(dir);
  s.save(record('a'));
  s.save(record('b'));
  s.remove('k8s.io', 'a');
  expect(readdirSync(join(s.root, 'k8s.io'))).toEqual(['b']);
  expect(list(s).records.map((r) => r.id)).toEqual(['b']);
  for (let i = 0; i < 200 && readdirSync(s.root).some((n) => n.startsWith('.trash-')); i++) await new Promise((r) => setTimeout(r, 5));
  expect(readdirSync(s.root).filter((n) => n.startsWith('.trash-'))).toEqual([]);
  s.remove('k8s.io', 'b');
  expect(readdirSync(s.root).filter((n) => !n.startsWith('.'))).toEqual([]); // the empty namespace dir goes too
  s.remove('k8s.io', 'never-there'); // no error
  // a sandboxer killed before its deletes finished
  mkdirSync(join(s.root, '.trash-1-1'), { recursive: true });
  writeFileSync(join(s.root, '.trash-1-1', 'task.json'), JSON.stringify(record('old')));
  expect(list(new TaskStore(dir))).toEqual({ records: [], errors: [] });
  expect(readdirSync(s.root).filter((n) => n.startsWith('.trash-'))).toEqual([]);
});

test('fsync mode keeps temp file + rename and makes no spare', async () => {
  const s = new TaskStore(dir, { fsync: true });
  s.save(record('a'));
  const file = join(s.dir('k8s.io', 'a'), 'task.json');
  const ino = statSync(file).ino;
  s.save(record('a', { paused: true }));
  expect(statSync(file).ino).not.toBe(ino);
  await new Promise((r) => setTimeout(r, 100));
  expect(readdirSync(s.root)).toEqual(['k8s.io']);
});
