// `kuasarctl config containerd`: prints, merges or removes the containerd registration of Kuasar sandboxers.
// scripts/install.sh and uninstall.sh call this, so the snippet text exists only in ../containerd-config.ts.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseContainerdVersion, majorOf } from '../check/containerd';
import { containerdSnippet, mergeSnippet, unmergeSnippet, type ContainerdMajor } from '../containerd-config';
import { UsageError, parseKinds, type Kind } from '../kinds';
import { findExecutable, parseOverrides } from '../locations';

export interface ConfigFlags {
  containerdVersion: string;
  kinds: string;
  socket?: string[];
  merge?: string;
  unmerge?: string;
  dryRun?: boolean;
}

export function parseMajor(v: string): ContainerdMajor {
  const m = /^(\d+)(\.\d+)*(\.x)?$/.exec(v.trim());
  const major = m ? Number(m[1]) : NaN;
  if (major !== 1 && major !== 2) throw new UsageError(`--containerd-version must be 1, 2 (or 1.7, 2.1...) or auto, got ${JSON.stringify(v)}`);
  return major;
}

/** The major version of the containerd on PATH. */
export function detectMajor(): ContainerdMajor {
  const bin = findExecutable('containerd');
  if (!bin) throw new UsageError('containerd is not on PATH; pass --containerd-version 1 or 2');
  let out: string;
  try {
    out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  } catch (err) {
    throw new UsageError(`${bin} --version failed (${(err as Error).message.split('\n')[0]}); pass --containerd-version 1 or 2`);
  }
  const major = majorOf(parseContainerdVersion(out));
  if (!major) throw new UsageError(`cannot tell containerd's version from "${out.trim()}"; pass --containerd-version 1 or 2`);
  return major;
}

function stamp(now = new Date()): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/** Copies `file` aside as `<file>.kuasar-backup-<UTC stamp>` (never over an existing backup). */
export function backupFile(file: string, now = new Date()): string {
  let backup = `${file}.kuasar-backup-${stamp(now)}`;
  for (let n = 1; fs.existsSync(backup); n++) backup = `${file}.kuasar-backup-${stamp(now)}-${n}`;
  fs.copyFileSync(file, backup, fs.constants.COPYFILE_EXCL);
  return backup;
}

/** Replaces `file` atomically, keeping its mode and owner. */
export function writeFileAtomic(file: string, text: string): void {
  const st = fs.statSync(file);
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.kuasar-${process.pid}`);
  fs.writeFileSync(tmp, text, { mode: st.mode & 0o7777, flag: 'wx' });
  try {
    if (process.getuid?.() === 0) fs.chownSync(tmp, st.uid, st.gid);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function readConfig(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(
      code === 'ENOENT' ? `${file} does not exist (create it with \`containerd config default > ${file}\`)` : `cannot read ${file}: ${code ?? (err as Error).message}`,
    );
  }
}

export function configContainerdCommand(flags: ConfigFlags): number {
  const kinds: Kind[] = parseKinds(flags.kinds);
  const socketOverrides = parseOverrides(flags.socket ?? [], '--socket');
  const opts = { socketOf: (k: Kind) => socketOverrides[k] ?? `/run/${k}-sandboxer.sock` };
  if (flags.merge && flags.unmerge) throw new UsageError('--merge and --unmerge exclude each other');
  const log = (s: string) => process.stderr.write(`kuasarctl: ${s}\n`);

  if (flags.unmerge) {
    const file = flags.unmerge;
    const text = readConfig(file);
    const r = unmergeSnippet(text, kinds);
    if (r.removed.length === 0) {
      log(`${file}: no Kuasar block for ${kinds.join(', ')}; unchanged`);
      return 0;
    }
    if (flags.dryRun) {
      log(`${file}: would remove the blocks of ${r.removed.join(', ')} (dry run, unchanged)`);
      return 0;
    }
    const backup = backupFile(file);
    writeFileAtomic(file, r.text);
    log(`${file}: removed the blocks of ${r.removed.join(', ')} (backup ${backup}); restart containerd`);
    return 0;
  }

  const major = flags.containerdVersion === 'auto' ? detectMajor() : parseMajor(flags.containerdVersion);
  if (!flags.merge) {
    process.stdout.write(containerdSnippet(kinds, major, opts));
    return 0;
  }
  const file = flags.merge;
  const text = readConfig(file);
  const r = mergeSnippet(text, file, kinds, major, { ...opts, note: `added by kuasarctl ${new Date().toISOString()}` });
  for (const u of r.unchanged) log(`${file}: kuasar-${u.kind} ${u.reason}`);
  if (r.added.length === 0) {
    log(`${file}: nothing to add; unchanged`);
    return r.unchanged.some((u) => u.reason !== 'already registered') ? 1 : 0;
  }
  if (flags.dryRun) {
    log(`${file}: would add ${r.added.join(', ')} for containerd ${major}.x (dry run, unchanged):`);
    process.stdout.write(r.text.slice(text.length));
    return 0;
  }
  const backup = backupFile(file);
  writeFileAtomic(file, r.text);
  log(`${file}: added ${r.added.join(', ')} for containerd ${major}.x (backup ${backup}); restart containerd`);
  return r.unchanged.some((u) => u.reason !== 'already registered') ? 1 : 0;
}
