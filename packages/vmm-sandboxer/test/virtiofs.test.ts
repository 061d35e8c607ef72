// share_fs = "virtiofs" with QEMU's own virtiofsd: a pod whose container rootfs and a bind mount made after the VM
// booted reach the guest through virtiofs, not 9p; virtiofsd lives and ends with the VM.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startSandboxer } from '@kuasar/sandbox';
import { connectSandboxer } from '../../testkit/src/sandboxer-clients';
import { vmmSandboxerSpec } from '../src/sandboxer-spec';
import type { VmmSandboxer } from '../src/vmm-sandboxer';
import { GUEST_DIR, agentSkipReason, testLogger } from './guest';
import { ClientIO, EventsSink, NS, killVms, makeBundle, mountsUnder, removeBundle, rpc, runPod, runTask, tempDir, type Harness } from './harness';

jest.setTimeout(Number(process.env.KUASAR_TEST_TIMEOUT_MS) || 240_000);

const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
const skip = agentSkipReason() ?? (fs.existsSync(VIRTIOFSD) ? undefined : `${VIRTIOFSD} missing (apt-get install qemu-system-common)`);
if (skip) console.warn(`virtiofs tests skipped: ${skip}`);
const describeVm = skip ? describe.skip : describe;

/** startHarness with share_fs = "virtiofs" (the harness has no config override). */
async function startVirtiofsHarness(root: string, sink: EventsSink): Promise<Harness> {
  const dir = path.join(root, 'state');
  process.env['TTRPC_ADDRESS'] = sink.path;
  const configFile = path.join(root, 'config.toml');
  fs.writeFileSync(configFile, [
    '[vmm]', `kernel = "${GUEST_DIR}/vmlinux"`, `initrd = "${GUEST_DIR}/initramfs.img"`, 'accel = "tcg"', 'boot_timeout_ms = 60000',
    'share_fs = "virtiofs"', `virtiofsd = "${VIRTIOFSD}"`, '',
  ].join('\n'));
  const spec = vmmSandboxerSpec('test');
  let sandboxer: VmmSandboxer | undefined;
  const create = spec.createSandboxer.bind(spec);
  spec.createSandboxer = async (ctx) => (sandboxer = await create(ctx));
  const listen = path.join(root, 'controller.sock');
  const running = await startSandboxer(spec, { listen, dir, config: configFile }, testLogger());
  const clients = await connectSandboxer({ listen, taskSocket: path.join(dir, 'task.sock'), namespace: NS });
  return {
    root, dir, running, sandboxer: sandboxer!, tasks: clients.tasks, controller: clients.controller, sink,
    stop: async () => {
      await clients.close();
      await running.close();
      sandboxer!.close();
    },
  };
}

/** pids of virtiofsd processes serving `dir` */
function virtiofsdFor(dir: string): number[] {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return argv[0] === VIRTIOFSD && argv.some((a) => a === `source=${dir}`);
    } catch {
      return false;
    }
  }).map(Number);
}

describeVm('share_fs = "virtiofs" (QEMU TCG + virtiofsd)', () => {
  let root: string;
  let sink: EventsSink;
  let h: Harness | undefined;

  beforeAll(async () => {
    root = tempDir('vfs');
    sink = new EventsSink(path.join(root, 'ev.sock'));
    await sink.server.listen(sink.path);
  });

  afterAll(async () => {
    await h?.stop();
    if (h) killVms(h.dir);
    await sink.server.close(500);
    for (const m of mountsUnder(root).reverse()) execFileSync('umount', ['-l', m]);
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('a container runs from a rootfs shared over virtiofs, with a bind mount made after boot; virtiofsd ends with the VM', async () => {
    h = await startVirtiofsHarness(root, sink);
    await runPod(h, 'vpod');
    const vmPid = JSON.parse(fs.readFileSync(path.join(h.dir, 'vpod', 'vm.json'), 'utf8')).identity.pid as number;
    const cmdline = fs.readFileSync(`/proc/${vmPid}/cmdline`, 'utf8').split('\0');
    expect(cmdline.join(' ')).toContain('vhost-user-fs-device');
    expect(cmdline.join(' ')).not.toContain('virtio-9p-device');
    const shared = path.join(h.dir, 'vpod', 'shared');
    expect(virtiofsdFor(shared)).toHaveLength(1);

    const data = path.join(root, 'data');
    fs.mkdirSync(data, { recursive: true });
    fs.writeFileSync(path.join(data, 'greeting'), 'over virtiofs\n');
    const io = new ClientIO(root);
    const bundle = makeBundle(root, 'v1', 'vpod', ['sh', '-c', 'cat /data/greeting; echo "$(wc -c </data/big)"'], {
      mounts: [{ destination: '/data', type: 'bind', source: data, options: ['rbind', 'ro'] }],
    });
    fs.writeFileSync(path.join(data, 'big'), Buffer.alloc(3_000_000, 7));
    await runTask(h, 'v1', bundle, io);
    expect((await h.tasks.wait({ id: 'v1' })).exitStatus).toBe(0);
    expect((await io.out).toString()).toBe('over virtiofs\n3000000\n');
    await h.tasks.delete({ id: 'v1' });
    io.close();
    removeBundle(bundle);

    const gone = rpc(h.controller, 'wait', { sandboxId: 'vpod' });
    await rpc(h.controller, 'stop', { sandboxId: 'vpod', timeoutSecs: 0 });
    await gone;
    await rpc(h.controller, 'shutdown', { sandboxId: 'vpod' });
    const end = Date.now() + 5000;
    while (virtiofsdFor(shared).length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(virtiofsdFor(shared)).toEqual([]);
    expect(fs.existsSync(path.join(h.dir, 'vpod'))).toBe(false);
  });
});
