// The floor under every pod start: a bare OCI runtime creating, starting and deleting one container from a busybox
// bundle, with no containerd, no CRI and no image unpack. Context for the CRI numbers, not a competitor.
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export class BareRuntimeError extends Error {
  override readonly name = 'BareRuntimeError';
}

const BUSYBOX = '/bin/busybox';

function run(bin: string, args: string[], cwd?: string, errFile?: string): void {
  // The container inherits the runtime's stdio: a pipe there would stay open for as long as the container lives and
  // keep spawnSync waiting, so `create` gets a file for stderr instead.
  const errFd = errFile === undefined ? undefined : openSync(errFile, 'w');
  try {
    const r = spawnSync(bin, args, { cwd, encoding: 'utf8', stdio: ['ignore', errFd === undefined ? 'pipe' : 'ignore', errFd ?? 'pipe'], timeout: 30_000 });
    const err = errFile === undefined ? r.stderr || r.stdout : readFileSync(errFile, 'utf8');
    if (r.status !== 0) throw new BareRuntimeError(`${bin} ${args.join(' ')} failed (${r.status ?? r.signal}): ${(err || String(r.error ?? '')).trim()}`);
  } finally {
    if (errFd !== undefined) closeSync(errFd);
  }
}

/** A bundle whose container runs `/bin/true` from a static busybox, read-only rootfs, runc's default spec otherwise. */
export function busyboxBundle(parent: string): string {
  if (!existsSync(BUSYBOX)) throw new BareRuntimeError(`${BUSYBOX} is missing (apt package busybox-static)`);
  const bundle = mkdtempSync(path.join(parent, 'bundle-'));
  const rootfs = path.join(bundle, 'rootfs');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp']) mkdirSync(path.join(rootfs, d), { recursive: true });
  copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
  for (const l of ['sh', 'true']) symlinkSync('busybox', path.join(rootfs, 'bin', l));
  run('runc', ['spec'], bundle);
  const spec = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8')) as { process: { args: string[]; terminal: boolean } };
  spec.process.args = ['/bin/true'];
  spec.process.terminal = false;
  writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
  return bundle;
}

/** Wall time (ms) of `create` + `start` + `delete --force`, `n` times after one warm-up. */
export function bareRuntimeSamples(runtime: 'runc' | 'crun', n: number, parent = '/tmp'): number[] {
  const dir = mkdtempSync(path.join(parent, `kbench-${runtime}-`));
  const root = path.join(dir, 'state');
  const samples: number[] = [];
  try {
    const bundle = busyboxBundle(dir);
    for (let i = -1; i < n; i++) {
      const id = `kbench-${runtime}-${process.pid}-${i + 1}`;
      const t0 = process.hrtime.bigint();
      try {
        run(runtime, ['--root', root, 'create', '--bundle', bundle, id], undefined, path.join(dir, 'create.err'));
        run(runtime, ['--root', root, 'start', id]);
        run(runtime, ['--root', root, 'delete', '--force', id]);
      } catch (err) {
        // Leave no container, cgroup or state behind when a step fails.
        spawnSync(runtime, ['--root', root, 'delete', '--force', id], { stdio: 'ignore', timeout: 30_000 });
        throw err;
      }
      if (i >= 0) samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return samples;
}
