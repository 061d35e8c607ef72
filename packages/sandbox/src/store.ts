import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { AlreadyExistsError, FailedPreconditionError } from './errors';
import { isValidSandboxId } from './id';

export const RECORD_FILE = 'sandbox.json';
/** `write`'s temp file: `.sandbox.json.<pid>.<8 hex>`. */
const TEMP_RECORD = /^\.sandbox\.json\.\d+\.[0-9a-f]{8}$/;

/** What one state dir entry turned out to be when the store was listed at start-up. */
export type StoredEntry =
  | { id: string; kind: 'record'; data: unknown }
  | { id: string; kind: 'corrupt'; error: string; movedTo: string }
  | { id: string; kind: 'missing' };

/** A record that exists but cannot be parsed; `movedTo` is where it was put aside. */
export class CorruptRecordError extends Error {
  constructor(
    readonly id: string,
    readonly reason: string,
  ) {
    super(`sandbox ${id}: corrupt ${RECORD_FILE}: ${reason}`);
    this.name = 'CorruptRecordError';
  }
}

/**
 * Sandbox records on disk: `<root>/<id>/sandbox.json`, one dir per sandbox so a kind can keep its own files beside
 * the record. Writes are atomic (temp file, fsync, rename, fsync dir) so a crash leaves the old or the new record,
 * never a torn one.
 */
export class SandboxStore {
  constructor(readonly root: string) {}

  /** Creates the state dir 0700 (tightening an existing one): records hold pod configs and paths. */
  async init(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    await fs.chmod(this.root, 0o700);
  }

  dirOf(id: string): string {
    return path.join(this.root, id);
  }

  /** Makes the sandbox dir; a dir that is already there means the id is taken. */
  async createDir(id: string): Promise<string> {
    const dir = this.dirOf(id);
    try {
      await fs.mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new AlreadyExistsError(`sandbox ${id} already exists`);
      throw err;
    }
    return dir;
  }

  async write(id: string, data: unknown): Promise<void> {
    const dir = this.dirOf(id);
    const target = path.join(dir, RECORD_FILE);
    const temp = path.join(dir, `.${RECORD_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
    const body = JSON.stringify(data, null, 2) + '\n';
    const file = await fs.open(temp, 'wx', 0o600);
    try {
      await file.writeFile(body);
      await file.sync();
    } catch (err) {
      await file.close().catch(() => undefined);
      await fs.rm(temp, { force: true });
      throw err;
    }
    await file.close();
    try {
      await fs.rename(temp, target);
    } catch (err) {
      await fs.rm(temp, { force: true });
      throw err;
    }
    await syncDir(dir);
  }

  /** The parsed record; throws CorruptRecordError for unparsable JSON and ENOENT errors when there is none. */
  async read(id: string): Promise<unknown> {
    const text = await fs.readFile(path.join(this.dirOf(id), RECORD_FILE), 'utf8');
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new CorruptRecordError(id, (err as Error).message);
    }
  }

  /** Moves a bad record aside as `sandbox.json.corrupt-<ts>` so an operator can inspect it; returns the new path. */
  async quarantine(id: string): Promise<string> {
    const dir = this.dirOf(id);
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const movedTo = path.join(dir, `${RECORD_FILE}.corrupt-${stamp}`);
    await fs.rename(path.join(dir, RECORD_FILE), movedTo);
    await syncDir(dir);
    return movedTo;
  }

  /**
   * Every sandbox dir under the root, parsed. `validate` may throw to declare a well-formed JSON record unusable;
   * such records and unparsable ones are quarantined, never dropped. Names that are not sandbox ids (the task
   * socket, the tasks dir) are skipped.
   */
  async list(validate: (id: string, data: unknown) => void = () => undefined): Promise<StoredEntry[]> {
    const entries = await fs.readdir(this.root, { withFileTypes: true });
    const out: StoredEntry[] = [];
    for (const entry of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!entry.isDirectory() || !isValidSandboxId(entry.name)) continue;
      const id = entry.name;
      try {
        const data = await this.read(id);
        validate(id, data);
        out.push({ id, kind: 'record', data });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          out.push({ id, kind: 'missing' });
          continue;
        }
        const movedTo = await this.quarantine(id).catch((e: Error) => `(not moved: ${e.message})`);
        out.push({ id, kind: 'corrupt', error: (err as Error).message, movedTo });
      }
    }
    return out;
  }

  /**
   * Removes the sandbox dir only if it holds nothing but a record write a crash cut short (the temp file `write`
   * makes before its rename); returns whether it did.
   */
  async removeIfEmpty(id: string): Promise<boolean> {
    const dir = this.dirOf(id);
    try {
      for (const name of await fs.readdir(dir)) if (TEMP_RECORD.test(name)) await fs.rm(path.join(dir, name), { force: true });
      await fs.rmdir(dir);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Removes the sandbox dir and everything the kind left in it. Refuses while anything is still mounted below it:
   * a recursive delete would walk into a leftover bind mount and destroy what it shows.
   */
  async remove(id: string): Promise<void> {
    const dir = this.dirOf(id);
    const mounted = await mountsUnder(dir);
    if (mounted.length > 0) {
      throw new FailedPreconditionError(`sandbox ${id}: still mounted under its state dir: ${mounted.join(', ')}`);
    }
    await fs.rm(dir, { recursive: true, force: true });
    await syncDir(this.root).catch(() => undefined);
  }
}

/** Mount points at or below `dir`, from this process's mount table. */
export async function mountsUnder(dir: string): Promise<string[]> {
  let table: string;
  try {
    table = await fs.readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of table.split('\n')) {
    const field = line.split(' ')[4];
    if (!field) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const point = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (point === dir || point.startsWith(dir + '/')) out.push(point);
  }
  return out;
}

async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
