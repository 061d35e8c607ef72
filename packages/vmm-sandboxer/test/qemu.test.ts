// The QEMU adapter against real QEMU (TCG): the command line, the KVM probe's fallback, and what happens to a
// guest that never says HELLO, or to a VM whose QEMU is killed. None of this needs the guest agent.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { SandboxController, SandboxStore } from '@kuasar/sandbox';
import { Qemu, isAlive, probeKvm, qemuArgs, AGENT_SOCKET } from '../src/qemu';
import { VmmSandboxer } from '../src/vmm-sandboxer';
import { qemuSkipReason, testConfig, testLogger } from './guest';
import { killVms } from './harness';

jest.setTimeout(120_000);

const skip = qemuSkipReason();
if (skip) console.warn(`QEMU tests skipped: ${skip}`);
const describeQemu = skip ? describe.skip : describe;

describe('qemuArgs', () => {
  const cfg = { kernel: '/k/vmlinux', initrd: '/k/initrd', machine: 'microvm,acpi=off', shareFs: '9p' as const, debugConsole: false };
  const spec = { id: 'p1', dir: '/run/x/p1', size: { vcpus: 2, memoryMiB: 320 }, accel: 'tcg' as const, kernelParams: 'console=ttyS0 panic=-1' };

  it('builds a microvm with the agent port, the 9p share and the kuasar params', () => {
    const a = qemuArgs(cfg, spec);
    const joined = a.join(' ');
    expect(a.slice(0, 2)).toEqual(['-M', 'microvm,acpi=off']);
    expect(joined).toContain('-accel tcg');
    expect(joined).toContain('-smp 2 -m 320');
    expect(joined).toContain(`socket,id=agent,path=/run/x/p1/${AGENT_SOCKET},server=on,wait=off`);
    expect(joined).toContain('virtserialport,chardev=agent,name=agent');
    expect(joined).toContain('local,id=share,path=/run/x/p1/shared,security_model=none');
    expect(joined).toContain('virtio-9p-device,fsdev=share,mount_tag=kuasar');
    expect(a[a.length - 1]).toBe('console=ttyS0 panic=-1 kuasar.9p=kuasar quiet');
    expect(joined).not.toContain('-netdev');
  });

  it('virtiofs shares memory with virtiofsd and forces modern virtio-mmio; extra args (the pod network) are passed on', () => {
    const a = qemuArgs({ ...cfg, shareFs: 'virtiofs', debugConsole: true }, { ...spec, extraArgs: ['-netdev', 'tap,id=net0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-device,netdev=net0,mac=02:00:00:00:00:01'] });
    const joined = a.join(' ');
    expect(a[1]).toBe('microvm,acpi=off,memory-backend=mem');
    expect(joined).toContain('memory-backend-memfd,id=mem,size=320M,share=on');
    expect(joined).toContain('vhost-user-fs-device,chardev=vfs,tag=kuasar');
    expect(joined).toContain('virtio-mmio.force-legacy=false');
    expect(joined).not.toContain('virtio-9p-device');
    expect(joined).toContain('tap,id=net0,ifname=tap0,script=no,downscript=no');
    expect(joined).toContain('virtio-net-device,netdev=net0,mac=02:00:00:00:00:01');
    // /init mounts only 9p: the agent mounts the virtiofs share (guest.setup)
    expect(a[a.length - 1]).toBe('console=ttyS0 panic=-1 kuasar.debug=1');
  });
});

describeQemu('real QEMU (TCG)', () => {
  let work: string;
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'kv-q-'));
  });
  afterEach(() => fs.rmSync(work, { recursive: true, force: true }));

  it('accel auto falls back quickly when KVM does not boot the kernel, saying why', async () => {
    const cfg = testConfig({ accelProbeTimeoutMs: 2000 });
    const started = Date.now();
    const r = await probeKvm(cfg);
    const ms = Date.now() - started;
    // on a host with working KVM the probe succeeds; here (KVM-PVM) it must give up within the timeout
    if (r.ok) {
      expect(r.ms).toBeLessThan(2000);
    } else {
      expect(r.reason).toMatch(/printed nothing in 2000 ms|\/dev\/kvm|exited/);
      expect(ms).toBeLessThan(4000);
    }
    const q = new Qemu({ config: { ...cfg, accel: 'auto' }, logger: testLogger() });
    expect(await q.accel()).toBe(r.ok ? 'kvm' : 'tcg');
  });

  it('a guest without an agent is not ready: Start fails with the console tail, and nothing is left running', async () => {
    // kuasar.agent names no file: /init serves a shell instead, and no HELLO ever comes
    const base = testConfig();
    // long enough for /init's marker on a loaded machine (guest uptime there reaches 10 s), as the test checks it
    const cfg = { ...base, bootTimeoutMs: 15_000, kernelParams: `${base.kernelParams} kuasar.agent=/no-agent` };
    const logger = testLogger();
    const sandboxer = new VmmSandboxer({ config: cfg, hypervisor: new Qemu({ config: cfg, logger }), logger });
    const store = new SandboxStore(path.join(work, 'state'));
    await store.init();
    const controller = new SandboxController(sandboxer, store, logger, { address: '', version: 0 });
    await controller.create({ sandboxId: 'noagent', netnsPath: '' });
    const err = await controller.start('noagent').catch((e: Error) => e);
    sandboxer.close(); // a started VM (the assertion below fails then) must not outlive the test
    if (!(err instanceof Error)) killVms(path.join(work, 'state'));
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toContain('did not become ready');
    expect(msg).toContain('console.log');
    // this image's /init prints its readiness marker (or the kernel its banner) on the console
    expect(msg).toMatch(/KUASAR|Linux|init/);
    const rec = JSON.parse(fs.readFileSync(path.join(work, 'state', 'noagent', 'vm.json'), 'utf8'));
    expect(isAlive(rec.identity)).toBe(false);
    await controller.shutdown('noagent');
    expect(fs.existsSync(path.join(work, 'state', 'noagent'))).toBe(false);
    expect(fs.existsSync('/sys/fs/cgroup/memory/kuasar/noagent')).toBe(false);
  });

  it('a launched VM sits in the pod cgroup; killing QEMU resolves its exit', async () => {
    const cfg = testConfig();
    const q = new Qemu({ config: cfg, logger: testLogger(), pollMs: 50 });
    const cg = '/sys/fs/cgroup/pids/kuasar-test-q';
    fs.mkdirSync(cg, { recursive: true });
    let pid = 0;
    try {
      const vm = await q.launch({ id: 't', dir: work, size: { vcpus: 1, memoryMiB: 128 }, accel: 'tcg', kernelParams: cfg.kernelParams }, { cgroupDirs: [cg] });
      pid = vm.identity.pid;
      expect(isAlive(vm.identity)).toBe(true);
      expect(fs.readFileSync(`/proc/${vm.identity.pid}/cmdline`, 'utf8').split('\0')[0]).toMatch(/qemu-system-x86_64$/);
      expect(fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim().split('\n')).toContain(String(vm.identity.pid));
      // a new sandboxer process finds it by pid + start time
      const adopted = q.adopt(vm.identity);
      expect(adopted).toBeDefined();
      process.kill(vm.identity.pid, 'SIGKILL');
      expect(await vm.exited).toBe(137);
      expect(await adopted!.exited).toBe(255);
      expect(q.adopt(vm.identity)).toBeUndefined();
    } finally {
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      for (let i = 0; i < 100 && fs.readFileSync(path.join(cg, 'cgroup.procs'), 'utf8').trim() !== ''; i++) await new Promise((r) => setTimeout(r, 20));
      fs.rmdirSync(cg);
    }
  });
});
