import { execFile, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { OciSpec } from '../src/spec-rewrite';

/** Real OCI bundles for tests: a busybox-static rootfs shared read-only by every bundle, and runc/crun CLIs. */

const execFileAsync = promisify(execFile);
const APPLETS = ['sh', 'hostname', 'readlink', 'sleep', 'ps', 'ip', 'cat', 'ls', 'stat', 'echo', 'true'];

export function hasTool(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function makeRootfs(dir: string): string {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'proc', 'dev', 'sys', 'tmp', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync('/usr/bin/busybox', path.join(rootfs, 'bin/busybox'));
  fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  return fs.realpathSync(rootfs); // runc refuses a symlinked rootfs path
}

/** The runtime's own default spec (`runc spec`), made non-interactive, over the shared rootfs. */
export function baseSpec(rootfs: string, args: string[]): OciSpec {
  const tmp = fs.mkdtempSync(path.join(path.dirname(rootfs), 'spec-'));
  try {
    execFileSync('runc', ['spec', '--bundle', tmp]);
    const spec = JSON.parse(fs.readFileSync(path.join(tmp, 'config.json'), 'utf8')) as OciSpec & {
      process: { terminal: boolean; args: string[] };
      root: { path: string; readonly: boolean };
    };
    spec.process.terminal = false;
    spec.process.args = args;
    spec.root = { path: rootfs, readonly: true };
    return spec;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export class OciCli {
  constructor(
    readonly binary: string,
    readonly root: string,
  ) {}

  private args(...rest: string[]): string[] {
    return ['--root', this.root, ...rest];
  }

  writeBundle(dir: string, id: string, spec: OciSpec): string {
    const bundle = path.join(dir, 'bundles', id);
    fs.mkdirSync(bundle, { recursive: true });
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    return bundle;
  }

  /** `run -d`: the container inherits runc's stdio, so it gets a file, never a pipe we would wait on. */
  async runDetached(bundle: string, id: string): Promise<void> {
    const errFile = path.join(bundle, 'stderr.log');
    const fd = fs.openSync(errFile, 'w');
    try {
      await new Promise<void>((resolve, reject) => {
        const child = spawn(this.binary, this.args('run', '-d', '--bundle', bundle, id), { stdio: ['ignore', fd, fd] });
        child.on('error', reject);
        child.on('exit', (code) =>
          code === 0 ? resolve() : reject(new Error(`${this.binary} run -d ${id}: exit ${code}: ${fs.readFileSync(errFile, 'utf8')}`)),
        );
      });
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Foreground run of a short container; returns its stdout. */
  async run(bundle: string, id: string): Promise<string> {
    const { stdout } = await execFileAsync(this.binary, this.args('run', '--bundle', bundle, id), { timeout: 20_000 });
    return stdout;
  }

  async exec(id: string, argv: string[]): Promise<string> {
    const { stdout } = await execFileAsync(this.binary, this.args('exec', id, ...argv), { timeout: 20_000 });
    return stdout;
  }

  async deleteForce(id: string): Promise<void> {
    await execFileAsync(this.binary, this.args('delete', '--force', id)).catch(() => undefined);
  }

  async state(id: string): Promise<{ pid: number; status: string }> {
    const { stdout } = await execFileAsync(this.binary, this.args('state', id));
    return JSON.parse(stdout) as { pid: number; status: string };
  }
}

/** Whether this engine can run a container here (crun refuses hybrid cgroups with hugetlb in cgroup2). */
export async function engineWorks(cli: OciCli, rootfs: string, dir: string): Promise<boolean> {
  const id = `probe-${process.pid}-${path.basename(cli.binary)}`;
  const spec = baseSpec(rootfs, ['true']);
  const cgroup = `/kuasar-engine-probe-${process.pid}`;
  spec.linux = { ...spec.linux, cgroupsPath: `${cgroup}/${id}` };
  const bundle = cli.writeBundle(dir, id, spec);
  try {
    await cli.run(bundle, id);
    return true;
  } catch {
    return false;
  } finally {
    await cli.deleteForce(id);
    removeCgroup(cgroup);
  }
}

/** Removes an (empty) cgroupfs path from every v1 hierarchy and cgroup2, bottom-up. */
export function removeCgroup(cgPath: string): void {
  const roots = fs
    .readdirSync('/sys/fs/cgroup', { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => path.join('/sys/fs/cgroup', e.name));
  for (const root of roots) {
    const top = path.join(root, cgPath);
    if (!fs.existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string): void => {
      dirs.push(d);
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
    };
    walk(top);
    for (const d of dirs.reverse()) {
      try {
        fs.rmdirSync(d);
      } catch {
        // busy: a test failed to stop something; the assertion that cares reports it
      }
    }
  }
}

export function nsInode(p: string): number {
  return fs.statSync(p).ino;
}
