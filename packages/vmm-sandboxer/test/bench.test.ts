// Opt-in measurements (KUASAR_BENCH=1), printed not asserted: boot-to-ready, pod and container start, and the
// sandboxer's RSS per VM, against the bundled binary (dist/main.js) as a separate process like in production.
import * as grpc from '@grpc/grpc-js';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sandboxApi, task } from '@kuasar/api';
import { TtrpcClient, createClient } from '@kuasar/ttrpc';
import { GUEST_DIR, agentSkipReason } from './guest';
import { ClientIO, EventsSink, killVms, makeBundle, removeBundle, rpc, runPod, tempDir, type Harness, type TaskClient } from './harness';
jest.setTimeout(600_000);

const skip = process.env.KUASAR_BENCH !== '1' ? 'set KUASAR_BENCH=1 to run the vmm benchmark' : agentSkipReason();
if (skip) console.warn(`vmm bench skipped: ${skip}`);
const maybe = skip ? test.skip : test;
const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
maybe('boot-to-ready, pod+container start, sandboxer RSS per VM (3 pods)', async () => {
  const repo = path.join(__dirname, '../../..');
  const built = spawnSync(process.execPath, ['scripts/build-bin.mjs', 'vmm-sandboxer'], { cwd: repo, env: { ...process.env, KUASAR_NO_SEA: '1' }, encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`build failed: ${built.stderr}`);
  const root = tempDir('m');
  const sink = new EventsSink(path.join(root, 'ev.sock'));
  await sink.server.listen(sink.path);
  const dir = path.join(root, 'state');
  const cfg = path.join(root, 'c.toml');
  fs.writeFileSync(cfg, `[vmm]\nkernel = "${GUEST_DIR}/vmlinux"\ninitrd = "${GUEST_DIR}/initramfs.img"\naccel = "tcg"\nboot_timeout_ms = 120000\n`);
  const listen = path.join(root, 'c.sock');
  const child = spawn(process.execPath, [path.join(__dirname, '../dist/main.js'), '--listen', listen, '--dir', dir, '--config', cfg, '--log-level', 'warn'],
    { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, TTRPC_ADDRESS: sink.path, KUASAR_TASK_RELAY: '0' } });
  for (let i = 0; i < 100 && !fs.existsSync(listen); i++) await new Promise((r) => setTimeout(r, 100));
  const controller = new sandboxApi.ControllerClient(`unix:${listen}`, grpc.credentials.createInsecure());
  const client = await TtrpcClient.connect(path.join(dir, 'task.sock'), { metadata: { 'containerd-namespace-ttrpc': 'k8s.io' } });
  const tasks = createClient(task.TaskV3Definition, client) as unknown as TaskClient;
  const h = { controller, tasks, dir } as unknown as Harness;
  const bundles: string[] = [];
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const base = rss(child.pid!);
    const rows: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const t0 = Date.now();
      await runPod(h, `m${i}`);
      const tPod = Date.now() - t0;
      const io = new ClientIO(root);
      const b = makeBundle(root, `mc${i}`, `m${i}`, ['sh', '-c', 'echo up; exec sleep 1000']);
      bundles.push(b);
      const t1 = Date.now();
      await tasks.create({ id: `mc${i}`, bundle: b, stdout: io.stdout, stderr: io.stderr });
      await tasks.start({ id: `mc${i}` });
      while (io.outSoFar === '') await new Promise((r) => setTimeout(r, 5));
      const tCtr = Date.now() - t1;
      const st = await rpc(controller, 'status', { sandboxId: `m${i}`, verbose: true });
      const boot = JSON.parse(st.info.info).kuasar.kind.bootMs;
      const con = fs.readFileSync(path.join(dir, `m${i}`, 'console.log'), 'utf8');
      const initUp = /KUASAR-GUEST-READY uptime=([\d.]+)/.exec(con)?.[1];
      const agentUp = /KUASAR-AGENT-READY uptime=([\d.]+)/.exec(con)?.[1];
      await new Promise((r) => setTimeout(r, 1500));
      rows.push(`pod ${i}: boot-to-ready ${boot} ms (guest uptime at /init ${initUp} s, agent ${agentUp} s), pod create+start ${tPod} ms, container create+start→first output ${tCtr} ms, pod+container ${tPod + tCtr} ms, sandboxer RSS ${rss(child.pid!)} kB (+${rss(child.pid!) - base} kB over ${base} kB)`);
    }
    console.log(`${rows.join('\n')}\nload: ${fs.readFileSync('/proc/loadavg', 'utf8')}`);
  } finally {
    for (let i = 1; i <= 3; i++) await rpc(controller, 'shutdown', { sandboxId: `m${i}` }).catch(() => undefined);
    client.close().catch(() => undefined);
    controller.close();
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    killVms(dir);
    for (const b of bundles) removeBundle(b);
    await sink.server.close(100);
  }
});
