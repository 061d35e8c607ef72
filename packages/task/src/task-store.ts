// What the task core keeps on disk so a restarted sandboxer can re-adopt running containers:
//   <stateDir>/tasks/<namespace>/<id>/task.json   the TaskRecord below (never torn: see TaskStore.save)
//   <stateDir>/tasks/<namespace>/<id>/<name>-stdin.pipe   private stdin pipe of a process (the process holds its
//                                                         read end; after a restart we reopen the write end)
// Writes: see TaskStore. Everything else is re-derived: the runtime's own state (`runc --root`), pid files in the bundle, the cgroup from
// /proc/<pid>/cgroup. Output FIFOs need nothing: the processes hold their write ends themselves.
import { closeSync, constants, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { OciProcess } from './oci';
import type { StdioPaths } from './process-io';

export interface ProcessRecord {
  /** '' for the init process */
  execId: string;
  pid: number;
  /** /proc/<pid>/stat start time (field 22): tells a re-adopted pid from a recycled one */
  startTime?: string;
  status: 'created' | 'running' | 'stopped';
  exitStatus?: number;
  /** ISO time */
  exitedAt?: string;
  stdio: StdioPaths;
  /** exec processes: the OCI process, so a created exec can still be started after a restart */
  spec?: OciProcess;
}

export interface TaskRecord {
  version: 1;
  id: string;
  namespace: string;
  bundle: string;
  /**
   * 'creating' while Create runs: written before anything is mounted or created, so a sandboxer killed
   * mid-Create leaves a record recover() uses to remove what the Create left behind. Absent means created.
   */
  status?: 'creating';
  /** rootfs mount targets we mounted (while creating: are about to mount) and must unmount on Delete */
  mounts: string[];
  /** no own pid namespace: on init exit the rest of the container is killed (kill --all) */
  sharedPidNs: boolean;
  paused: boolean;
  createdAt: string;
  processes: ProcessRecord[];
}

/**
 * An update that fits in the file's first page is written there in one write(2): the kernel copies a single page in
 * one step, so a process killed during the call leaves the old or the new record. JSON ignores trailing whitespace,
 * so a shorter record is padded to the file's length instead of truncating it (a truncate and a write could tear).
 */
const IN_PLACE_MAX = 4096;
/** <root>/.spare: a task dir holding an empty task.json, made ahead so a new record is a rename (not a valid namespace) */
const SPARE = '.spare';
/** prefix of removed task dirs whose files are still being deleted */
const TRASH = '.trash-';

export class TaskStore {
  readonly root: string;
  private readonly fsync: boolean;
  /** length of each task.json this store wrote, by "<namespace>/<id>": those records are updated in place */
  private readonly written = new Map<string, number>();
  private spareReady = false;
  private spareFilling = false;
  private trashed = 0;

  /**
   * Records are never torn: a sandboxer killed mid-write leaves the old or the new one. They only have to outlive
   * the sandboxer process (the page cache survives kill -9); after a host crash no container they describe is
   * alive. So fsync is optional, and without it an update is overwritten in place (see IN_PLACE_MAX): on this
   * ext4 a new file or a rename costs ~0.7-1 ms each (inode and journal work, auto_da_alloc), an in-place write
   * 0.08 ms, and a container's start path writes three records. A new record moves a spare task dir into place
   * (a rename, 0.04 ms) and writes it in place; the next spare is made off the event loop. Without a spare, and in
   * fsync mode, a record is a temp file + rename.
   */
  constructor(stateDir: string, opts: { fsync?: boolean } = {}) {
    this.root = join(stateDir, 'tasks');
    this.fsync = opts.fsync ?? false;
  }

  dir(namespace: string, id: string): string {
    return join(this.root, namespace, id);
  }

  save(r: TaskRecord): void {
    const key = `${r.namespace}/${r.id}`;
    const text = JSON.stringify(r, null, 1);
    if (!this.fsync && (this.overwrite(key, text) || this.claimSpare(r, key, text))) return;
    const dir = this.dir(r.namespace, r.id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, 'task.json');
    const tmp = `${file}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, text);
      if (this.fsync) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    this.written.set(key, Buffer.byteLength(text));
    if (!this.fsync) {
      this.fillSpare();
      return;
    }
    // with fsync, the rename itself must reach the disk too
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  }

  /**
   * A new record: rename the spare to the task dir, then write it in place. A sandboxer killed in between leaves an
   * empty task.json, which list() drops: the first record of a container is written before anything is done for it.
   */
  private claimSpare(r: TaskRecord, key: string, text: string): boolean {
    if (!this.spareReady) {
      this.fillSpare();
      return false;
    }
    this.spareReady = false;
    try {
      mkdirSync(join(this.root, r.namespace), { recursive: true, mode: 0o700 });
      renameSync(join(this.root, SPARE), this.dir(r.namespace, r.id)); // ENOTEMPTY if the task dir has content
    } catch {
      this.fillSpare();
      return false;
    }
    this.written.set(key, 0);
    this.fillSpare();
    return this.overwrite(key, text);
  }

  /** Make the next spare on libuv's thread pool; errors only mean the next new record takes the slow path. */
  private fillSpare(): void {
    if (this.fsync || this.spareReady || this.spareFilling) return;
    this.spareFilling = true;
    const spare = join(this.root, SPARE);
    void (async () => {
      await rm(spare, { recursive: true, force: true });
      // not recursive: a store whose state dir was removed must not create it again
      await mkdir(spare, { mode: 0o700 });
      await writeFile(join(spare, 'task.json'), '', { mode: 0o600 });
      this.spareReady = true;
    })()
      .catch(() => undefined)
      .finally(() => (this.spareFilling = false));
  }

  /** The in-place update; false when it does not apply (record not ours, too long, file gone). */
  private overwrite(key: string, text: string): boolean {
    const had = this.written.get(key);
    if (had === undefined) return false;
    const data = Buffer.from(text);
    if (data.length > IN_PLACE_MAX || had > IN_PLACE_MAX) return false;
    const out = data.length >= had ? data : Buffer.concat([data, Buffer.alloc(had - data.length, ' ')]);
    let fd: number;
    try {
      fd = openSync(join(this.root, key, 'task.json'), constants.O_WRONLY);
    } catch {
      this.written.delete(key);
      return false;
    }
    try {
      if (writeSync(fd, out, 0, out.length, 0) !== out.length) throw new Error(`short write of task record ${key}`);
    } finally {
      closeSync(fd);
    }
    this.written.set(key, out.length);
    return true;
  }

  /**
   * The record goes at once: its dir is renamed to a dot name, which list() never reads. Its files are deleted off
   * the event loop (freeing a record's blocks took 1-7 ms here); list() deletes what a killed sandboxer left there.
   */
  remove(namespace: string, id: string): void {
    this.written.delete(`${namespace}/${id}`);
    const dir = this.dir(namespace, id);
    const trash = join(this.root, `${TRASH}${process.pid}-${++this.trashed}`);
    try {
      renameSync(dir, trash);
      void rm(trash, { recursive: true, force: true }).catch(() => undefined);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') rmSync(dir, { recursive: true, force: true });
    }
    try {
      // drop the namespace dir once it is empty
      if (readdirSync(join(this.root, namespace)).length === 0) rmSync(join(this.root, namespace), { recursive: true });
    } catch {
      /* already gone */
    }
  }

  /** Every readable record; unreadable ones (and dirs without one) are reported with their namespace and id. */
  list(onError: (path: string, err: unknown, where: { namespace: string; id: string }) => void): TaskRecord[] {
    const out: TaskRecord[] = [];
    let namespaces: string[];
    try {
      namespaces = readdirSync(this.root);
    } catch {
      return out;
    }
    for (const ns of namespaces) {
      if (ns.startsWith(TRASH)) rmSync(join(this.root, ns), { recursive: true, force: true }); // left by a killed sandboxer
      if (ns.startsWith('.')) continue; // the spare, removed records
      let ids: string[];
      try {
        ids = readdirSync(join(this.root, ns));
      } catch {
        continue;
      }
      for (const id of ids) {
        const file = join(this.root, ns, id, 'task.json');
        try {
          const text = readFileSync(file, 'utf8');
          if (text === '') {
            // a spare claimed by a sandboxer killed before it wrote the first record: nothing was done yet
            rmSync(join(this.root, ns, id), { recursive: true, force: true });
            continue;
          }
          const r = JSON.parse(text) as TaskRecord;
          if (r.version !== 1 || r.id !== id || r.namespace !== ns) throw new Error('record does not match its path');
          out.push(r);
        } catch (err) {
          onError(file, err, { namespace: ns, id });
        }
      }
    }
    return out;
  }
}

/** Field 22 of /proc/<pid>/stat, or undefined if the process is gone or a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: fields resume after the last ')'
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
  return rest[19];
}
