import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WasmRunnerPool, WasmContextError, WasmLoadError, WasmStartError, type WasmRunContext } from '../src';
import { inputFifo, openFdCount, outputFifo, tempDir, wasm } from './stdio';

const MiB = 1048576;
let pool: WasmRunnerPool;
let dir: string;
let rootfs: string;
let devnull: number;

beforeAll(async () => {
  pool = new WasmRunnerPool({ size: 2 });
  await pool.warm();
  dir = tempDir('test');
  rootfs = path.join(dir, 'rootfs');
  fs.mkdirSync(rootfs);
  devnull = fs.openSync('/dev/null', 'r+');
});

afterAll(async () => {
  await pool.close();
  fs.closeSync(devnull);
  fs.rmSync(dir, { recursive: true, force: true });
});

function ctx(name: string, extra: Partial<WasmRunContext> = {}): WasmRunContext {
  return {
    modulePath: wasm(name),
    args: [`/${name}.wasm`],
    env: [],
    preopens: { '/': rootfs },
    stdin: devnull,
    stdout: devnull,
    stderr: devnull,
    ...extra,
  };
}

/** a regular file holding `content`, opened for reading: a stdin that ends */
async function echoInput(content: string): Promise<number> {
  const file = path.join(dir, `stdin-${Math.random().toString(36).slice(2)}`);
  fs.writeFileSync(file, content);
  const fd = fs.openSync(file, 'r');
  openedFds.push(fd);
  return fd;
}
const openedFds: number[] = [];
afterEach(() => {
  for (const fd of openedFds.splice(0)) fs.closeSync(fd);
});

/** wait until `cond` holds, failing after `ms` */
async function eventually(cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** run with FIFOs on stdout and stderr; resolves with the exit and both outputs read to EOF */
async function runCaptured(name: string, extra: Partial<WasmRunContext> = {}) {
  const out = outputFifo(dir);
  const err = outputFifo(dir);
  try {
    const m = await pool.run(ctx(name, { stdout: out.fd, stderr: err.fd, ...extra }));
    const exit = await m.exited;
    out.close();
    err.close();
    return { exit, stdout: (await out.data).toString(), stderr: (await err.data).toString(), threadId: m.threadId };
  } finally {
    out.close();
    err.close();
  }
}

describe('WASI modules through the pool', () => {
  test('hello: exact stdout bytes, exit 0 on return from _start', async () => {
    const r = await runCaptured('hello');
    expect(r.stdout).toBe('hello from wasm\n');
    expect(r.stderr).toBe('');
    expect(r.exit).toMatchObject({ exitCode: 0, reason: 'exit' });
    expect(r.exit.exitedAt).toBeInstanceOf(Date);
  });

  test('stdout and stderr go to their own fds', async () => {
    const r = await runCaptured('stderr');
    expect(r.stdout).toBe('to stdout\n');
    expect(r.stderr).toBe('to stderr\n');
    expect(r.exit.exitCode).toBe(0);
  });

  test('proc_exit(7) is the exit code and ends the module there', async () => {
    const r = await runCaptured('exit7');
    expect(r.exit).toMatchObject({ exitCode: 7, reason: 'exit' });
    expect(r.stderr).toBe(''); // the unreachable after proc_exit never ran
  });

  test('argv and environ arrive as given, "K" without "=" as an empty value', async () => {
    const args = ['/app/echo.wasm', 'one', 'two words', '', 'ünï'];
    const env = ['A=1', 'EMPTY=', 'NOEQ', 'X=a=b'];
    const r = await runCaptured('args-env', { args, env });
    expect(r.stdout).toBe(`${args.join('\n')}\nA=1\nEMPTY=\nNOEQ=\nX=a=b\n`);
    expect(r.exit.exitCode).toBe(0);
  });

  test('files: read from the rootfs, write to the rootfs and to a bind mount; stdout to a regular file', async () => {
    const root = tempDir('rootfs');
    const mnt = tempDir('mnt');
    const content = 'line one\nline two\n';
    fs.writeFileSync(path.join(root, 'in.txt'), content);
    const outFile = path.join(dir, 'files-stdout');
    const stdout = fs.openSync(outFile, 'w');
    try {
      const m = await pool.run(ctx('files', { preopens: { '/mnt': mnt, '/': root }, stdout }));
      expect(await m.exited).toMatchObject({ exitCode: 0, reason: 'exit' });
    } finally {
      fs.closeSync(stdout);
    }
    expect(fs.readFileSync(path.join(root, 'out.txt'), 'utf8')).toBe(content);
    expect(fs.readFileSync(path.join(mnt, 'out.txt'), 'utf8')).toBe(content);
    expect(fs.readFileSync(outFile, 'utf8')).toBe(content);
    fs.rmSync(root, { recursive: true });
    fs.rmSync(mnt, { recursive: true });
  });

  test('files: a missing input file fails inside the module (exit 11), not in the runner', async () => {
    const r = await runCaptured('files', { preopens: { '/': rootfs, '/mnt': rootfs } });
    expect(r.exit).toMatchObject({ exitCode: 11, reason: 'exit' });
  });

  test('stdin echo: 256 KiB through FIFOs both ways until EOF', async () => {
    const input = Buffer.alloc(256 * 1024);
    for (let i = 0; i < input.length; i++) input[i] = (i * 31 + (i >> 8)) & 0xff;
    const stdin = inputFifo(dir);
    const out = outputFifo(dir);
    try {
      const m = await pool.run(ctx('stdin-echo', { stdin: stdin.fd, stdout: out.fd }));
      await stdin.write(input.subarray(0, 1000));
      await stdin.write(input.subarray(1000));
      stdin.end();
      expect(await m.exited).toMatchObject({ exitCode: 0, reason: 'exit' });
      out.close();
      expect((await out.data).equals(input)).toBe(true);
    } finally {
      stdin.close();
      out.close();
    }
  });

  test('a reader that went away gives the module EPIPE; the sandboxer survives (SIGPIPE is ignored)', async () => {
    const out = outputFifo(dir);
    out.closeReader();
    try {
      const m = await pool.run(ctx('stdin-echo', { stdin: await echoInput('data\n'), stdout: out.fd }));
      // stdin-echo exits 2 when fd_write fails
      expect(await m.exited).toMatchObject({ exitCode: 2, reason: 'exit' });
    } finally {
      out.close();
    }
  });

  test('trap: exit 134 with the trap and the wasm frames on the module stderr', async () => {
    const r = await runCaptured('trap');
    expect(r.exit).toMatchObject({ exitCode: 134, reason: 'trap' });
    expect(r.stderr).toMatch(/^wasm trap: unreachable\n/);
    expect(r.stderr).toMatch(/wasm-function\[\d+\]/);
    expect(r.exit.message).toBe(r.stderr.trimEnd());
  });
});

describe('kill', () => {
  test('SIGKILL stops a tight infinite loop: exit 137, the worker is replaced', async () => {
    const m = await pool.run(ctx('infinite-loop'));
    await new Promise((r) => setTimeout(r, 20)); // let it spin
    const t0 = performance.now();
    m.kill('SIGKILL');
    const exit = await m.exited;
    const ms = performance.now() - t0;
    // the spec's bound is 100 ms; the assertion is loose so a loaded CI machine cannot flake it
    expect(ms).toBeLessThan(1000);
    process.stdout.write(`kill -> exited (tight loop): ${ms.toFixed(1)} ms\n`);
    expect(exit).toMatchObject({ exitCode: 137, reason: 'signal', signal: 9 });
    const next = await runCaptured('hello');
    expect(next.stdout).toBe('hello from wasm\n');
    expect(next.threadId).not.toBe(m.threadId);
  });

  test('SIGTERM (15) ends it too, as 143: a wasm module cannot handle signals', async () => {
    const m = await pool.run(ctx('infinite-loop'));
    m.kill(15);
    m.kill(9); // the first signal decides
    expect(await m.exited).toMatchObject({ exitCode: 143, reason: 'signal', signal: 15 });
  });

  test('a module blocked reading an empty stdin FIFO is killed too', async () => {
    const stdin = inputFifo(dir);
    try {
      const m = await pool.run(ctx('stdin-echo', { stdin: stdin.fd }));
      await new Promise((r) => setTimeout(r, 20)); // now inside fd_read
      const t0 = performance.now();
      m.kill('SIGKILL');
      const exit = await m.exited;
      const ms = performance.now() - t0;
      expect(ms).toBeLessThan(1000);
      process.stdout.write(`kill -> exited (blocked in fd_read): ${ms.toFixed(1)} ms\n`);
      expect(exit).toMatchObject({ exitCode: 137, reason: 'signal' });
      // the thread really stopped: the exit was not merely reported after killAbandonMs
      await eventually(() => pool.stats().stopping === 0);
    } finally {
      stdin.close();
    }
  });

  test('a module blocked writing a full stdout FIFO is killed too', async () => {
    const stdin = inputFifo(dir);
    const out = outputFifo(dir);
    const big = Buffer.alloc(1024 * 1024, 0x61);
    let m;
    try {
      m = await pool.run(ctx('stdin-echo', { stdin: stdin.fd, stdout: out.fd }));
      void stdin.write(big).catch(() => undefined); // more than the stdout pipe holds; nobody reads it
      await new Promise((r) => setTimeout(r, 50));
      m.kill('SIGKILL');
      expect(await m.exited).toMatchObject({ exitCode: 137, reason: 'signal' });
      await eventually(() => pool.stats().stopping === 0);
    } finally {
      stdin.close();
      out.close();
    }
  });

  test('a module asleep in poll_oneoff (60 s) is killed at once, and a short sleep still sleeps and wakes', async () => {
    const t0 = performance.now();
    const short = await runCaptured('sleep-short'); // 30 ms
    expect(performance.now() - t0).toBeGreaterThanOrEqual(30); // a lower bound: it did sleep
    expect(short.stdout).toBe('woke\n');
    expect(short.exit).toMatchObject({ exitCode: 0, reason: 'exit' });

    const m = await pool.run(ctx('sleep-long'));
    await new Promise((r) => setTimeout(r, 20)); // now asleep
    const t1 = performance.now();
    m.kill('SIGTERM');
    expect(await m.exited).toMatchObject({ exitCode: 143, reason: 'signal' });
    const ms = performance.now() - t1;
    expect(ms).toBeLessThan(1000);
    process.stdout.write(`kill -> exited (asleep in poll_oneoff): ${ms.toFixed(1)} ms\n`);
    await eventually(() => pool.stats().stopping === 0);
  });

  test('a module blocked where nothing can unblock it: the exit is reported anyway, the thread stops later', async () => {
    const root = tempDir('fifo-root');
    execFileSync('mkfifo', [path.join(root, 'fifo')]);
    try {
      const m = await pool.run(ctx('open-fifo', { preopens: { '/': root } }));
      await new Promise((r) => setTimeout(r, 20)); // now blocked in open(2) of the FIFO
      m.kill('SIGKILL');
      expect(await m.exited).toMatchObject({ exitCode: 137, reason: 'signal' }); // after killAbandonMs
      expect(pool.stats().stopping).toBe(1); // the thread is still in open(2)
      // a writer lets the open return; the pending termination must land then, not be lost
      const w = fs.openSync(path.join(root, 'fifo'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
      try {
        await eventually(() => pool.stats().stopping === 0);
      } finally {
        fs.closeSync(w);
      }
    } finally {
      fs.rmSync(root, { recursive: true });
    }
  });

  test('signal 0 and kill after exit are no-ops; an unknown signal is refused', async () => {
    const m = await pool.run(ctx('hello'));
    expect(() => m.kill('SIGNOPE' as NodeJS.Signals)).toThrow(/invalid signal/);
    m.kill(0);
    expect(await m.exited).toMatchObject({ exitCode: 0, reason: 'exit' });
    m.kill('SIGKILL');
    expect(await m.exited).toMatchObject({ exitCode: 0, reason: 'exit' });
  });
});

describe('prepare', () => {
  test('a prepared module runs nothing until start(), then runs once however often start() is called', async () => {
    const file = path.join(dir, `prepared-${Math.random().toString(36).slice(2)}`);
    const fd = fs.openSync(file, 'w');
    openedFds.push(fd);
    const prepared = await pool.prepare(ctx('hello', { stdout: fd }));
    await new Promise((r) => setTimeout(r, 50));
    expect(fs.readFileSync(file, 'utf8')).toBe('');
    const m = prepared.start();
    expect(prepared.start()).toBe(m);
    expect(m.threadId).toBe(prepared.threadId);
    expect(await m.exited).toMatchObject({ exitCode: 0, reason: 'exit' });
    expect(fs.readFileSync(file, 'utf8')).toBe('hello from wasm\n');
  });

  test('a prepared module killed before start() never runs: 128+signal, no output, start() then returns the ended module', async () => {
    const out = outputFifo(dir);
    try {
      const before = pool.stats();
      const prepared = await pool.prepare(ctx('hello', { stdout: out.fd }));
      prepared.kill('SIGTERM');
      expect(await prepared.exited).toMatchObject({ exitCode: 143, reason: 'signal', signal: 15 });
      const m = prepared.start();
      expect(await m.exited).toMatchObject({ exitCode: 143 });
      out.close();
      expect((await out.data).length).toBe(0);
      // its worker was stopped, not kept busy or returned to the idle list
      expect(pool.stats().busy).toBe(before.busy);
      await eventually(() => pool.stats().stopping === 0);
    } finally {
      out.close();
    }
  });
});

describe('memory limit', () => {
  test('a memory bomb meets the limit and fails clearly while a concurrent module in another worker succeeds', async () => {
    const stdin = inputFifo(dir);
    const echoOut = outputFifo(dir);
    try {
      // started first so it is running (blocked in fd_read) on its own worker during the bomb
      const echo = await pool.run(ctx('stdin-echo', { stdin: stdin.fd, stdout: echoOut.fd }));
      const bomb = runCaptured('memory-bomb', { memoryLimitBytes: 32 * MiB });
      const hello = runCaptured('hello');
      const [b, h] = await Promise.all([bomb, hello]);
      expect(b.exit).toMatchObject({ exitCode: 134, reason: 'trap' });
      expect(b.stderr).toMatch(/^memory\.grow failed\nwasm trap: unreachable\n/);
      expect(b.stderr).toContain("of the container's 32.0 MiB memory limit; memory.grow fails beyond the limit");
      expect(h.stdout).toBe('hello from wasm\n');
      // the echo module was running on its own worker during the whole bomb
      expect(echo.threadId).not.toBe(b.threadId);
      await stdin.write('still here\n');
      stdin.end();
      expect(await echo.exited).toMatchObject({ exitCode: 0 });
      echoOut.close();
      expect((await echoOut.data).toString()).toBe('still here\n');
    } finally {
      stdin.close();
      echoOut.close();
    }
  });

  test('the limit is whole pages: the bomb stops within it', async () => {
    // 1 page + 16-page steps: the last successful grow leaves 497 pages under a 512-page (32 MiB) cap
    const r = await runCaptured('memory-bomb', { memoryLimitBytes: 32 * MiB + 1000 });
    expect(r.stderr).toContain('linear memory in use: 31.1 MiB');
  });

  test('a module whose declared minimum exceeds the limit is refused before it starts', async () => {
    await expect(pool.run(ctx('big-minimum', { memoryLimitBytes: 64 * MiB }))).rejects.toMatchObject({
      name: 'WasmLoadError',
      code: 'ERR_WASM_MEMORY_LIMIT',
      message: expect.stringContaining('needs at least 268435456 bytes (4096 pages)'),
    });
    const r = await runCaptured('big-minimum', { memoryLimitBytes: 256 * MiB });
    expect(r.exit.exitCode).toBe(0);
  });
});

describe('bad input gets a clear error', () => {
  test('unusable modules', async () => {
    await expect(pool.run(ctx('foreign-import'))).rejects.toMatchObject({
      code: 'ERR_WASM_IMPORT',
      message: expect.stringContaining('imports function env.host_magic'),
    });
    await expect(pool.run(ctx('hello', { modulePath: path.join(dir, 'nope.wasm') }))).rejects.toMatchObject({
      code: 'ERR_WASM_NOT_FOUND',
    });
    const text = path.join(dir, 'text.wasm');
    fs.writeFileSync(text, '#!/bin/sh\necho hi\n');
    await expect(pool.run(ctx('hello', { modulePath: text }))).rejects.toBeInstanceOf(WasmLoadError);
    await expect(pool.run(ctx('hello', { modulePath: dir }))).rejects.toMatchObject({ code: 'ERR_WASM_NOT_FOUND' });
  });

  test('invalid contexts', async () => {
    const bad: Partial<WasmRunContext>[] = [
      { modulePath: 'relative.wasm' },
      { args: [] },
      { args: ['a\0b'] },
      { env: ['=x'] },
      { preopens: { 'relative': rootfs } },
      { preopens: { '/': 'relative' } },
      { stdout: 1_000_000 },
      { stdin: -1 },
      { memoryLimitBytes: 0 },
      { cwd: 'rel' },
    ];
    for (const b of bad) await expect(pool.run(ctx('hello', b))).rejects.toBeInstanceOf(WasmContextError);
  });

  test('a preopen that does not exist fails the start; the worker stays usable', async () => {
    const err = await pool.run(ctx('hello', { preopens: { '/': path.join(dir, 'missing') } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WasmStartError);
    expect((err as Error).message).toMatch(/cannot start wasm module/);
    expect((await runCaptured('hello')).stdout).toBe('hello from wasm\n');
  });
});

describe('pool', () => {
  test('a worker is reused after a clean exit; a module is compiled once per digest and memory cap', async () => {
    const p = new WasmRunnerPool({ size: 1, maxIdle: 2 });
    try {
      const copy = path.join(dir, 'copy-of-hello.wasm');
      fs.copyFileSync(wasm('hello'), copy);
      const a = await p.run(ctx('hello'));
      await a.exited;
      const b = await p.run(ctx('hello', { modulePath: copy }));
      await b.exited;
      expect(b.threadId).toBe(a.threadId);
      expect(b.digest).toBe(a.digest);
      expect(a.digest).toMatch(/^[0-9a-f]{64}$/);
      expect(p.stats().modules).toBe(1);
      await (await p.run(ctx('hello', { memoryLimitBytes: 16 * MiB }))).exited;
      expect(p.stats().modules).toBe(2);
    } finally {
      await p.close();
    }
  });

  test('a worker whose module ended with a large linear memory is replaced, not reused', async () => {
    const p = new WasmRunnerPool({ size: 1, maxIdle: 2, recycleAboveBytes: 8 * MiB });
    try {
      const bomb = await p.run(ctx('memory-bomb', { memoryLimitBytes: 16 * MiB }));
      expect((await bomb.exited).reason).toBe('trap');
      const small = await p.run(ctx('hello'));
      await small.exited;
      expect(small.threadId).not.toBe(bomb.threadId);
      const again = await p.run(ctx('hello'));
      await again.exited;
      expect(again.threadId).toBe(small.threadId); // a small module's worker is reused
    } finally {
      await p.close();
    }
  });

  test('preload() compiles ahead of run() and reports an unusable module early', async () => {
    const p = new WasmRunnerPool({ size: 0 });
    try {
      const { digest } = await p.preload(wasm('exit7'), 8 * MiB);
      expect(p.stats().modules).toBe(1);
      const m = await p.run(ctx('exit7', { memoryLimitBytes: 8 * MiB }));
      expect(m.digest).toBe(digest);
      expect(p.stats().modules).toBe(1); // the run used the preloaded module
      await m.exited;
      await expect(p.preload(wasm('big-minimum'), 8 * MiB)).rejects.toMatchObject({ code: 'ERR_WASM_MEMORY_LIMIT' });
      await expect(p.preload('rel.wasm')).rejects.toBeInstanceOf(WasmContextError);
    } finally {
      await p.close();
    }
  });

  test('a changed file is re-read: the digest follows the content', async () => {
    const p = new WasmRunnerPool({ size: 0 });
    try {
      const file = path.join(dir, 'changing.wasm');
      fs.copyFileSync(wasm('hello'), file);
      const first = await p.run(ctx('hello', { modulePath: file }));
      await first.exited;
      fs.copyFileSync(wasm('exit7'), file);
      const second = await p.run(ctx('hello', { modulePath: file }));
      expect((await second.exited).exitCode).toBe(7);
      expect(second.digest).not.toBe(first.digest);
    } finally {
      await p.close();
    }
  });

  test('runs leak no fds (preopens, files the module opened)', async () => {
    const root = tempDir('leak');
    fs.writeFileSync(path.join(root, 'in.txt'), 'x');
    const run = async () => (await pool.run(ctx('files', { preopens: { '/': root, '/mnt': root } }))).exited;
    await run();
    const before = openFdCount();
    for (let i = 0; i < 20; i++) expect((await run()).exitCode).toBe(0);
    expect(openFdCount()).toBeLessThanOrEqual(before);
    fs.rmSync(root, { recursive: true });
  });

  test('a killed module leaves no fds behind: its preopens and the files it opened are closed', async () => {
    const root = tempDir('held');
    fs.writeFileSync(path.join(root, 'in.txt'), 'x');
    const heldFds = () =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith(root);
        } catch {
          return false; // the readdir's own fd, already closed
        }
      });
    const out = outputFifo(dir);
    try {
      const m = await pool.run(ctx('hold-file', { preopens: { '/': root, '/data': root }, stdout: out.fd }));
      const opened = new Promise<void>((resolve) => {
        // the FIFO's reader sees "opened\n" once the module holds the file
        const check = setInterval(() => {
          if (heldFds().length >= 3) {
            clearInterval(check);
            resolve();
          }
        }, 5);
      });
      await opened;
      expect(heldFds().length).toBe(3); // "/", "/data" and in.txt
      m.kill('SIGKILL');
      expect(await m.exited).toMatchObject({ exitCode: 137 });
      expect(heldFds().map((fd) => fs.readlinkSync(`/proc/self/fd/${fd}`))).toEqual([]);
    } finally {
      out.close();
      fs.rmSync(root, { recursive: true });
    }
  });

  test('workers that cannot start fail the run clearly, and the pool stops starting spares', async () => {
    // a 1 MiB JS heap is too small for a worker to boot
    const p = new WasmRunnerPool({ size: 2, resourceLimits: { maxOldGenerationSizeMb: 1 } });
    try {
      await expect(p.run(ctx('hello'))).rejects.toMatchObject({
        code: 'ERR_WASM_WORKER',
        message: expect.stringContaining('JS heap out of memory'),
      });
      await eventually(() => p.stats().starting === 0);
      await new Promise((r) => setTimeout(r, 100));
      expect(p.stats()).toMatchObject({ starting: 0, idle: 0 }); // no respawn loop
    } finally {
      await p.close();
    }
    expect(() => new WasmRunnerPool({ resourceLimits: { stackSizeMb: 0.05 } })).toThrow(RangeError);
    expect(() => new WasmRunnerPool({ size: 3, maxIdle: 2 })).toThrow(RangeError);
  });

  test('close() kills running modules (137) and refuses new runs', async () => {
    const p = new WasmRunnerPool({ size: 1 });
    const m = await p.run(ctx('infinite-loop'));
    await p.close();
    expect(await m.exited).toMatchObject({ exitCode: 137, reason: 'signal' });
    await expect(p.run(ctx('hello'))).rejects.toMatchObject({ code: 'ERR_WASM_POOL_CLOSED' });
    expect(p.stats()).toMatchObject({ idle: 0, busy: 0, starting: 0 });
  });

  test('close() during a run() that is still starting settles it instead of leaving it pending', async () => {
    // size 0: every run starts its own worker, so close() can land while loading, booting or starting
    const outcomes = new Set<string>();
    for (const delay of [0, 5, 20, 60, 120]) {
      const p = new WasmRunnerPool({ size: 0 });
      const pending = p.run(ctx('infinite-loop'));
      await new Promise((r) => setTimeout(r, delay));
      await p.close();
      outcomes.add(
        await pending.then(
          async (m) => (await m.exited).reason, // it had started: close() killed it
          (e: unknown) => String((e as { code?: string }).code),
        ),
      );
    }
    for (const o of outcomes) expect(['ERR_WASM_POOL_CLOSED', 'signal']).toContain(o);
  });
});

