// `ctr run --rm` of a runwasi-style image (CMD ["/hello.wasm"]) through a private containerd, the thin shim and the
// SEA binary: the containerd 1.x/2.x task path end to end. (The CRI flow is packages/e2e's matrix.)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CtrError, PrivateContainerd, buildOciImage, containerdAvailability, importImage, type ContainerdVersion } from '@kuasar/testkit';
import { tempDir, wasm } from './sandboxer';

jest.setTimeout(180_000);
const REPO = path.resolve(__dirname, '../../..');
const root = tempDir('ctr');
const binDir = path.join(root, 'bin');

beforeAll(() => {
  fs.mkdirSync(binDir);
  for (const [cmd, args] of [
    [process.execPath, [path.join(REPO, 'scripts/build-bin.mjs'), 'wasm-sandboxer']],
    ['sh', [path.join(REPO, 'packages/shim/native/build.sh'), binDir]],
  ] as const) {
    const r = spawnSync(cmd, args, { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${args[0]} failed: ${r.stdout}${r.stderr}`);
  }
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function image(name: string, module: string): string {
  return buildOciImage({ name: `docker.io/kuasar/wasm-${name}:test`, entries: [{ type: 'file', path: `${name}.wasm`, content: fs.readFileSync(wasm(module)) }], config: { Cmd: [`/${name}.wasm`] } }).tarPath;
}

describe.each(['1.6', '1.7', '2.1'] as ContainerdVersion[])('containerd %s', (version) => {
  const available = containerdAvailability(version);
  const maybe = 'bins' in available ? test : test.skip;

  maybe('ctr run --rm: stdout byte for byte, the exit status, nothing left behind', async () => {
    const dir = path.join(root, `state-${version}`);
    let sb: ChildProcess | undefined;
    const saved = { PATH: process.env['PATH'], sock: process.env['KUASAR_WASM_TASK_SOCKET'] };
    // containerd passes its environment to the shims it starts: PATH finds ours, the variable points it at our socket
    process.env['PATH'] = `${binDir}:${saved.PATH}`;
    process.env['KUASAR_WASM_TASK_SOCKET'] = path.join(dir, 'task.sock');
    const ctrd = await PrivateContainerd.start({ version });
    try {
      sb = spawn(path.join(REPO, 'dist/bin/wasm-sandboxer'), ['--listen', path.join(root, `c-${version}.sock`), '--dir', dir], {
        env: { ...process.env, KUASAR_TASK_RELAY: '0', TTRPC_ADDRESS: ctrd.ttrpcAddress },
        stdio: 'ignore',
      });
      for (let i = 0; i < 500 && !fs.existsSync(path.join(dir, 'task.sock')); i++) await new Promise((r) => setTimeout(r, 20));
      for (const [name, module] of [['hello', 'hello'], ['exit7', 'exit7']]) await importImage(ctrd, image(name, module!), { namespace: 'default' });
      const run = (name: string, id: string) =>
        ctrd.ctr(['run', '--rm', '--runtime', 'io.containerd.kuasar-wasm.v2', `docker.io/kuasar/wasm-${name}:test`, id], { namespace: 'default' });
      for (let i = 0; i < 3; i++) expect(await run('hello', `hello${i}`)).toEqual({ stdout: 'hello from wasm\n', stderr: '' });
      const err = await run('exit7', 'exit7').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CtrError);
      expect((err as CtrError).exitCode).toBe(7);
      expect((await ctrd.ctr(['tasks', 'ls', '-q'], { namespace: 'default' })).stdout.trim()).toBe('');
      const records = path.join(dir, 'tasks', 'default');
      expect(fs.existsSync(records) ? fs.readdirSync(records) : []).toEqual([]); // no task record left
    } finally {
      process.env['PATH'] = saved.PATH;
      if (saved.sock === undefined) delete process.env['KUASAR_WASM_TASK_SOCKET'];
      else process.env['KUASAR_WASM_TASK_SOCKET'] = saved.sock;
      await ctrd.stop();
      sb?.kill('SIGTERM');
      if (sb && sb.exitCode === null) await new Promise((r) => sb!.once('exit', r));
    }
  });
});
