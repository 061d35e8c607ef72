// Test harness: builds the real shim binary from native/ and runs a fake-but-real sandboxer task
// endpoint (a @kuasar/ttrpc server with the Task v2 service) that records every call.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { task } from '@kuasar/api';
import { CallContext, Code, TtrpcError, TtrpcServer } from '@kuasar/ttrpc';

export const KINDS = ['runc', 'wasm', 'quark', 'vmm'] as const;
const PACKAGE_DIR = path.resolve(__dirname, '..');

let built: string | undefined;

/**
 * Builds the shim with the package's own build script into a private dir (so a test never runs a stale
 * dist/bin) and returns that dir. Built once per test file (see removeShimBuild).
 */
export function buildShim(): string {
  if (built) return built;
  // A prebuilt dir (e.g. an -fsanitize=address build) instead of a fresh one; it is never removed.
  if (process.env.KUASAR_SHIM_TEST_BIN) return (built = process.env.KUASAR_SHIM_TEST_BIN);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kshim-bin-'));
  const r = spawnSync('sh', [path.join(PACKAGE_DIR, 'native/build.sh'), out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`shim build failed (${r.status}): ${r.stderr}${r.stdout}`);
  built = out;
  return out;
}

/** Removes the build dir; call from afterAll (jest workers do not run exit handlers reliably). */
export function removeShimBuild(): void {
  if (built && built !== process.env.KUASAR_SHIM_TEST_BIN) fs.rmSync(built, { recursive: true, force: true });
  built = undefined;
}

export function shimPath(kind: string = 'runc'): string {
  return path.join(buildShim(), `containerd-shim-kuasar-${kind}-v2`);
}

export interface ShimRun {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

export interface ShimRunOptions {
  cwd?: string;
  /** Environment added to a minimal base (PATH only), so the host's variables cannot leak in. */
  env?: Record<string, string | undefined>;
  /** Bytes written to stdin, then stdin is closed. `keepStdinOpen` leaves it open (never written). */
  stdin?: Uint8Array;
  keepStdinOpen?: boolean;
  binary?: string;
  timeoutMs?: number;
}

export function runShim(args: string[], opts: ShimRunOptions = {}): Promise<ShimRun> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (const [k, v] of Object.entries(opts.env ?? {})) if (v !== undefined) env[k] = v;
  const started = Date.now();
  const child = spawn(opts.binary ?? shimPath(), args, { cwd: opts.cwd ?? os.tmpdir(), env, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  if (opts.stdin) child.stdin.end(Buffer.from(opts.stdin));
  else if (!opts.keepStdinOpen) child.stdin.end();
  child.stdin.on('error', () => { /* the shim may exit before reading stdin: EPIPE is fine, as in Go */ });
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 10_000);
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      if (opts.keepStdinOpen) child.stdin.destroy();
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8'), ms: Date.now() - started });
    });
  });
}

/** A fresh dir to act as a bundle (containerd runs the shim with cwd = bundle). */
export function tempDir(prefix = 'kshim-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface RecordedCall {
  method: string;
  request: any;
  namespace: string | undefined;
  /** ttrpc deadline the caller sent, in ms from the call's arrival (undefined = none). */
  timeoutMs: number | undefined;
}

type TaskImpl = { [K in keyof (typeof task.TaskV2Definition)['methods']]?: (req: any, ctx: CallContext) => Promise<any> };

/**
 * The sandboxer side the shim talks to: a ttrpc server serving containerd.task.v2.Task on `sock`.
 * Every call is recorded; methods without an override answer UNIMPLEMENTED like a real server would.
 */
export class FakeSandboxer {
  readonly calls: RecordedCall[] = [];
  private server: TtrpcServer | undefined;

  constructor(readonly sock: string, private impl: TaskImpl = {}) {}

  setImpl(impl: TaskImpl): void {
    this.impl = impl;
  }

  async listen(): Promise<this> {
    const server = new TtrpcServer();
    const handlers: Record<string, (req: any, ctx: CallContext) => Promise<any>> = {};
    for (const [key, def] of Object.entries(task.TaskV2Definition.methods)) {
      handlers[key] = async (req: any, ctx: CallContext) => {
        this.calls.push({ method: def.name, request: req, namespace: ctx.namespace, timeoutMs: ctx.deadline === undefined ? undefined : ctx.deadline - Date.now() });
        const fn = (this.impl as Record<string, ((r: any, c: CallContext) => Promise<any>) | undefined>)[key];
        if (!fn) throw new TtrpcError(Code.UNIMPLEMENTED, `fake sandboxer: ${def.name} not implemented`);
        return fn(req, ctx);
      };
    }
    server.addService(task.TaskV2Definition, handlers as any);
    await server.listen(this.sock);
    this.server = server;
    return this;
  }

  methods(): string[] {
    return this.calls.map((c) => c.method);
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await s.close(200);
  }
}

/** Polls `check` until it returns true or the timeout passes. */
export async function eventually(check: () => boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  if (!check()) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
