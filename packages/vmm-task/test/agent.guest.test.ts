// The agent in a real guest: QEMU TCG boots the cached kernel + initramfs, the agent (this
// package's dist/vmm-task.js) serves the protocol on the virtio-serial port, and this test drives it
// with the same Session class the sandboxer uses. Skipped, with the reason printed, when qemu, the
// cached guest or the built agent is missing. Timeouts are sized for TCG on a loaded 2-core machine.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RpcError, Session, type Stream, utf8Decode, utf8Encode } from '@kuasar/vmm-protocol';
import { agentSource, Guest, HostLink, imageInfo, manifest, skipReason, waitFor, writeBundle } from './guest';

const reason = skipReason();
if (reason) console.warn(`vmm-task guest tests skipped: ${reason}`);
const describeGuest = reason ? describe.skip : describe;

const T = 120_000; // per test
const EVENT_MS = 60_000;

/** Host side of a process's output: bytes as they arrive, credit handed back as a FIFO writer would. */
function collect(s: Stream): { bytes: () => Buffer; ended: () => boolean; firstAt: () => number | undefined } {
  const chunks: Buffer[] = [];
  let ended = false;
  let firstAt: number | undefined;
  s.onData((b) => {
    firstAt ??= Date.now();
    chunks.push(Buffer.from(b));
    s.consume(b.length);
  });
  s.onEnd(() => (ended = true));
  return { bytes: () => Buffer.concat(chunks), ended: () => ended, firstAt: () => firstAt };
}

describeGuest(`vmm-task agent in the QEMU TCG guest (agent from ${agentSource})`, () => {
  let dir: string;
  let guest: Guest;
  let host: HostLink;
  let nextStream = 1;
  const sid = () => ((nextStream += 2), nextStream);
  const consoleText = () => guest.console;
  const metrics: Record<string, unknown> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'vmm-task-'));
    guest = new Guest(dir);
    host = new HostLink();
    await host.connect(guest.socketPath);
    try {
      await host.session.whenReady(90_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- guest console ---\n${guest.console.slice(-4000)}`);
    }
    metrics.launchToHelloMs = Date.now() - guest.startedAt;
    const up = guest.uptimes();
    metrics.guestUptimeInitReadyS = up.init;
    metrics.guestUptimeAgentReadyS = up.agent;
  }, 120_000);

  afterAll(() => {
    host?.disconnect();
    guest?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
    console.log(`vmm-task guest metrics: ${JSON.stringify(metrics)}; ${imageInfo()}`);
  });

  test('HELLO carries the guest kernel and boot id; guest.info reports agent RSS', async () => {
    expect(host.session.peer).toMatchObject({ version: 1, kernelRelease: manifest().kernel.release });
    expect(host.session.peer?.bootId).toMatch(/\S{8,}/);
    const info = await host.session.request<{ agentRssKb: number; memAvailableKb: number; uptimeMs: number; kernelRelease: string }>('guest.info');
    expect(info.kernelRelease).toBe(manifest().kernel.release);
    expect(info.agentRssKb).toBeGreaterThan(100);
    expect(info.memAvailableKb).toBeGreaterThan(10_000);
    metrics.agentRssKbIdle = info.agentRssKb;
    metrics.guestUptimeAtReadyMs = host.session.peer?.uptimeMs;
    // The budget; measured ~2.5 MB when idle.
    expect(info.agentRssKb).toBeLessThanOrEqual(5 * 1024);
  }, T);

  test('guest.setTime sets the guest clock', async () => {
    // Ten days ahead, so the check cannot pass by the clock having been right already.
    const ahead = 10 * 24 * 3600 * 1000;
    await host.session.request('guest.setTime', { unixMs: Date.now() + ahead });
    const info = await host.session.request<{ timeMs: number }>('guest.info');
    // Whole seconds (busybox date), plus the request's travel time under TCG.
    expect(Math.abs(info.timeMs - (Date.now() + ahead))).toBeLessThan(5000);
    await host.session.request('guest.setTime', { unixMs: Date.now() });
    const bad = await host.session.request('guest.setTime', { unixMs: 'soon' }).catch((e: RpcError) => e);
    expect((bad as RpcError).code).toBe('INVALID_ARGUMENT');
  }, T);

  test('bad requests get typed errors and garbage on the channel does not hurt the agent', async () => {
    const bad = await host.session.request('container.create', { id: '../etc', bundle: '/x', stdio: {} }).catch((e: RpcError) => e);
    expect(bad).toBeInstanceOf(RpcError);
    expect((bad as RpcError).code).toBe('INVALID_ARGUMENT');
    const missing = await host.session.request('container.start', { id: 'nope' }).catch((e: RpcError) => e);
    expect((missing as RpcError).code).toBe('NOT_FOUND');
    const unknown = await host.session.request('no.such.method').catch((e: RpcError) => e);
    expect((unknown as RpcError).code).toBe('UNIMPLEMENTED');
    host.writeRaw(utf8Encode('this is not a frame \u0000\u00ff KV\u0001'));
    const info = await host.session.request<{ uptimeMs: number }>('guest.info');
    expect(info.uptimeMs).toBeGreaterThan(0);
  }, T);

  test('create + start: stdout and stderr byte for byte, then the exit event with the code', async () => {
    const payload = 'line one\nünïcödé ✓\n';
    const bundle = writeBundle(guest.shareDir, 'c1', ['/bin/sh', '-c', `printf '%s' "$PAYLOAD"; printf '\\000\\001\\377'; echo to-stderr >&2; exit 7`], {
      env: [`PAYLOAD=${payload}`],
    });
    const out = sid();
    const err = sid();
    const stdout = collect(host.session.openStream(out, { direction: 'in', manualCredit: true }));
    const stderr = collect(host.session.openStream(err, { direction: 'in', manualCredit: true }));
    const t0 = Date.now();
    const created = await host.session.request<{ pid: number }>('container.create', { id: 'c1', bundle, stdio: { stdout: out, stderr: err, terminal: false } });
    metrics.createMs = Date.now() - t0;
    expect(created.pid).toBeGreaterThan(1);
    // crun's view: created until the agent writes the exec FIFO (its start without a crun process)
    expect(await host.session.request('container.state', { id: 'c1' })).toMatchObject({ status: 'created', pid: created.pid });
    expect(stdout.bytes().length).toBe(0);
    const t1 = Date.now();
    const started = await host.session.request<{ pid: number }>('container.start', { id: 'c1' });
    metrics.startMs = Date.now() - t1;
    expect(started.pid).toBe(created.pid);
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c1', EVENT_MS, 'exit of c1', consoleText);
    metrics.createToFirstOutputMs = (stdout.firstAt() ?? NaN) - t0;
    expect(exit).toMatchObject({ containerId: 'c1', pid: created.pid, status: 7 });
    expect(exit.execId).toBeUndefined();
    await waitFor(() => (stdout.ended() && stderr.ended() ? true : undefined), EVENT_MS, 'stdout/stderr CLOSE', consoleText);
    expect(stdout.bytes().equals(Buffer.concat([Buffer.from(payload), Buffer.from([0, 1, 255])]))).toBe(true);
    expect(stderr.bytes().toString()).toBe('to-stderr\n');
    host.session.ack(exit.seq);

    const state = await host.session.request<{ status: string }>('container.state', { id: 'c1' });
    expect(state.status).toBe('stopped');
    await host.session.request('container.delete', { id: 'c1' });
    const gone = await host.session.request('container.state', { id: 'c1' }).catch((e: RpcError) => e);
    expect((gone as RpcError).code).toBe('NOT_FOUND');
  }, T);

  test('exec, pause/resume, update and stats on a running container, then kill it', async () => {
    const bundle = writeBundle(guest.shareDir, 'c2', ['/bin/sleep', '1000']);
    await host.session.request('container.create', { id: 'c2', bundle, stdio: {} });
    const { pid } = await host.session.request<{ pid: number }>('container.start', { id: 'c2' });
    const state = await host.session.request<{ status: string; pid: number }>('container.state', { id: 'c2' });
    expect(state).toMatchObject({ status: 'running', pid });
    const pids = await host.session.request<{ pids: number[] }>('container.pids', { id: 'c2' });
    expect(pids.pids).toContain(pid);

    const out = sid();
    const stdout = collect(host.session.openStream(out, { direction: 'in', manualCredit: true }));
    const exec = await host.session.request<{ pid: number }>('process.exec', {
      containerId: 'c2',
      execId: 'e1',
      process: { args: ['/bin/sh', '-c', 'echo "exec-ok $(uname -r) $$"; exit 3'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } },
      stdio: { stdout: out },
    });
    expect(exec.pid).toBeGreaterThan(1);
    const exitE = await host.waitEvent((e) => e.type === 'exit' && e.execId === 'e1', EVENT_MS, 'exit of exec e1', consoleText);
    expect(exitE).toMatchObject({ containerId: 'c2', execId: 'e1', pid: exec.pid, status: 3 });
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 'exec stdout CLOSE', consoleText);
    // The exec runs in the container's pid namespace (its own pid there is small) on the guest kernel.
    expect(stdout.bytes().toString()).toMatch(new RegExp(`^exec-ok ${manifest().kernel.release.replace(/\./g, '\\.')} \\d+\\n$`));

    await host.session.request('container.pause', { id: 'c2' });
    expect(await host.session.request('container.state', { id: 'c2' })).toMatchObject({ status: 'paused' });
    await host.session.request('container.resume', { id: 'c2' });
    expect(await host.session.request('container.state', { id: 'c2' })).toMatchObject({ status: 'running' });
    await host.session.request('container.update', { id: 'c2', resources: { memory: { limit: 48 * 1024 * 1024 } } });
    const stats = await host.session.request<{ memoryLimit: number; pids: number; cpuUsageUsec: number }>('container.stats', { id: 'c2' });
    expect(stats.memoryLimit).toBe(48 * 1024 * 1024);
    expect(stats.pids).toBeGreaterThanOrEqual(1);

    await host.session.request('process.kill', { containerId: 'c2', signal: 'SIGKILL' });
    const exitC = await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c2' && !e.execId, EVENT_MS, 'exit of c2', consoleText);
    expect(exitC).toMatchObject({ pid, status: 137 });
    const again = await host.session.request('process.kill', { containerId: 'c2', signal: 9 }).catch((e: RpcError) => e);
    expect((again as RpcError).code).toBe('NOT_FOUND');
    await host.session.request('container.delete', { id: 'c2' });
  }, T);

  test('stdin is relayed: cat echoes it back and exits 0 on CLOSE', async () => {
    const bundle = writeBundle(guest.shareDir, 'c3', ['/bin/cat']);
    const inId = sid();
    const outId = sid();
    const stdout = collect(host.session.openStream(outId, { direction: 'in', manualCredit: true }));
    const stdin = host.session.openStream(inId, { direction: 'out' });
    await host.session.request('container.create', { id: 'c3', bundle, stdio: { stdin: inId, stdout: outId } });
    await host.session.request('container.start', { id: 'c3' });
    stdin.write(utf8Encode('ping\n'));
    await waitFor(() => (stdout.bytes().toString() === 'ping\n' ? true : undefined), EVENT_MS, 'echo of ping', consoleText);
    // More than one window's worth (256 KiB) proves credit flows back as the pipe drains.
    const big = Buffer.alloc(600 * 1024, 'x');
    for (let o = 0; o < big.length; o += 32 * 1024) stdin.write(big.subarray(o, o + 32 * 1024));
    stdin.end();
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c3', EVENT_MS, 'exit of c3', consoleText);
    expect(exit.status).toBe(0);
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 'c3 stdout CLOSE', consoleText);
    expect(stdout.bytes().length).toBe(5 + big.length);
    await host.session.request('container.delete', { id: 'c3' });
  }, 180_000);

  test('host disconnects; an exit while away is replayed to a new host Session, output kept', async () => {
    const bundle = writeBundle(guest.shareDir, 'c4', ['/bin/sh', '-c', 'read line; echo "got $line"; echo late; exit 5']);
    const inId = sid();
    const outId = sid();
    host.session.openStream(outId, { direction: 'in', manualCredit: true });
    const stdin = host.session.openStream(inId, { direction: 'out' });
    await host.session.request('container.create', { id: 'c4', bundle, stdio: { stdin: inId, stdout: outId } });
    await host.session.request('container.start', { id: 'c4' });
    // The line is delivered, then the host goes away before the container answers and exits.
    stdin.write(utf8Encode('hello\n'));
    await new Promise((r) => setTimeout(r, 50));
    host.disconnect();

    // A restarted sandboxer: a fresh Session that knows the stream ids it persisted.
    const restarted = new HostLink(new Session({ role: 'host', requestTimeoutMs: 90_000 }));
    const stdout = collect(restarted.session.openStream(outId, { direction: 'in', manualCredit: true }));
    await new Promise((r) => setTimeout(r, 3000)); // the exit happens while nobody is connected
    await restarted.connect(guest.socketPath);
    await restarted.session.whenReady(60_000);
    const exit = await restarted.waitEvent((e) => e.type === 'exit' && e.containerId === 'c4', EVENT_MS, 'replayed exit of c4', consoleText);
    expect(exit.status).toBe(5);
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 'c4 stdout after reconnect', consoleText);
    expect(stdout.bytes().toString()).toBe('got hello\nlate\n');
    // Events acknowledged by the first host (c1..c3's exits were not all ACKed) may come again;
    // each carries a seq the host can dedupe on.
    restarted.session.ack(exit.seq);
    const info = await restarted.session.request<{ agentRssKb: number }>('guest.info');
    metrics.agentRssKbAfterWork = info.agentRssKb;
    await restarted.session.request('container.delete', { id: 'c4' });
    host = restarted;
  }, T);

  test('a container killed by the OOM killer gets an oom event before its exit event', async () => {
    // Doubling a shell string passes the 16 MiB limit within a few iterations.
    const bundle = writeBundle(guest.shareDir, 'c5', ['/bin/sh', '-c', 'x=aaaaaaaaaaaaaaaa; while :; do x="$x$x"; done'], { memoryLimit: 16 * 1024 * 1024 });
    await host.session.request('container.create', { id: 'c5', bundle, stdio: {} });
    await host.session.request('container.start', { id: 'c5' });
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c5', EVENT_MS, 'exit of c5', consoleText);
    expect(exit.status).toBe(137);
    const oom = host.events.find((e) => e.type === 'oom' && e.containerId === 'c5');
    expect(oom).toBeDefined();
    expect((oom as { seq: number }).seq).toBeLessThan(exit.seq);
    // The cgroup stays until delete, so stats still read it.
    const stats = await host.session.request<{ oomKills: number; memoryLimit: number }>('container.stats', { id: 'c5' });
    expect(stats).toMatchObject({ memoryLimit: 16 * 1024 * 1024 });
    expect(stats.oomKills).toBeGreaterThan(0);
    await host.session.request('container.delete', { id: 'c5' });
  }, T);

  test('terminal: the container gets a pty (tty, stty size), process.resize reaches it, stdin is relayed', async () => {
    // Marks between the steps, so the test resizes only once the first size was printed.
    const script = 'tty; stty size; echo step1; read line; stty size; echo "got $line"; exit 6';
    const bundle = writeBundle(guest.shareDir, 'c6', ['/bin/sh', '-c', script], { terminal: true });
    const inId = sid();
    const outId = sid();
    const errId = sid();
    const stdout = collect(host.session.openStream(outId, { direction: 'in', manualCredit: true }));
    const stderr = collect(host.session.openStream(errId, { direction: 'in', manualCredit: true }));
    const stdin = host.session.openStream(inId, { direction: 'out' });
    await host.session.request('container.create', { id: 'c6', bundle, stdio: { stdin: inId, stdout: outId, stderr: errId, terminal: true } });
    await host.session.request('container.start', { id: 'c6' });
    await waitFor(() => (stdout.bytes().includes('step1') ? true : undefined), EVENT_MS, 'step1 of c6', consoleText);
    await host.session.request('process.resize', { containerId: 'c6', width: 132, height: 43 });
    stdin.write(utf8Encode('hello\n'));
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c6', EVENT_MS, 'exit of c6', consoleText);
    expect(exit.status).toBe(6);
    await waitFor(() => (stdout.ended() && stderr.ended() ? true : undefined), EVENT_MS, 'c6 stdout/stderr CLOSE', consoleText);
    // A pty turns \n into \r\n and echoes the input line. The first size is the spec's consoleSize (crun sets it).
    const text = stdout.bytes().toString();
    expect(text).toMatch(/^\/dev\/pts\/\d+\r\n25 80\r\nstep1\r\nhello\r\n43 132\r\ngot hello\r\n$/);
    expect(stderr.bytes().length).toBe(0);
    const gone = await host.session.request('process.resize', { containerId: 'c6', width: 80, height: 24 }).catch((e: RpcError) => e);
    expect((gone as RpcError).code).toBe('FAILED_PRECONDITION');
    await host.session.request('container.delete', { id: 'c6' });
  }, T);

  test('terminal exec in a running container; resize of a process without a terminal is refused', async () => {
    const bundle = writeBundle(guest.shareDir, 'c7', ['/bin/sleep', '1000']);
    // The spec does not ask crun for a pty, so no master would ever reach the helper.
    const mismatch = await host.session.request('container.create', { id: 'c7', bundle, stdio: { terminal: true } }).catch((e: RpcError) => e);
    expect((mismatch as RpcError).code).toBe('INVALID_ARGUMENT');
    await host.session.request('container.create', { id: 'c7', bundle, stdio: {} });
    await host.session.request('container.start', { id: 'c7' });
    const noTty = await host.session.request('process.resize', { containerId: 'c7', width: 80, height: 24 }).catch((e: RpcError) => e);
    expect((noTty as RpcError).code).toBe('FAILED_PRECONDITION');
    const outId = sid();
    const stdout = collect(host.session.openStream(outId, { direction: 'in', manualCredit: true }));
    await host.session.request('process.exec', {
      containerId: 'c7',
      execId: 't1',
      process: { args: ['/bin/sh', '-c', 'tty; stty size'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 }, terminal: true, consoleSize: { height: 30, width: 90 } },
      stdio: { stdout: outId, terminal: true },
    });
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.execId === 't1', EVENT_MS, 'exit of exec t1', consoleText);
    expect(exit.status).toBe(0);
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 't1 stdout CLOSE', consoleText);
    expect(stdout.bytes().toString()).toMatch(/^\/dev\/pts\/\d+\r\n30 90\r\n$/);
    await host.session.request('process.kill', { containerId: 'c7', signal: 'SIGKILL' });
    await host.waitEvent((e) => e.type === 'exit' && e.containerId === 'c7' && !e.execId, EVENT_MS, 'exit of c7', consoleText);
    await host.session.request('container.delete', { id: 'c7' });
  }, T);

  test('debug.exec with a terminal runs a shell on a pty in the guest', async () => {
    const inId = sid();
    const outId = sid();
    const stdout = collect(host.session.openStream(outId, { direction: 'in', manualCredit: true }));
    const stdin = host.session.openStream(inId, { direction: 'out' });
    const { pid, execId } = await host.session.request<{ pid: number; execId: string }>('debug.exec', { argv: ['sh'], stdio: { stdin: inId, stdout: outId }, terminal: true, width: 100, height: 20 });
    // the command is named by a sequence number, not its pid: guest pids wrap
    expect(execId).toMatch(/^debug-\d+$/);
    expect(pid).toBeGreaterThan(1);
    stdin.write(utf8Encode('tty; stty size; exit 9\n'));
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.execId === execId, EVENT_MS, 'debug tty exit', consoleText);
    expect(exit.pid).toBe(pid);
    expect(exit.status).toBe(9);
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 'debug tty stdout', consoleText);
    const text = stdout.bytes().toString();
    expect(text).toMatch(/\/dev\/pts\/\d+\r\n20 100\r\n/);
  }, T);

  test('debug.exec runs a command in the guest itself', async () => {
    const outId = sid();
    const stdout = collect(host.session.openStream(outId, { direction: 'in', manualCredit: true }));
    const first = await host.session.request<{ execId: string }>('debug.exec', { argv: ['true'], stdio: {} });
    const { execId } = await host.session.request<{ pid: number; execId: string }>('debug.exec', { argv: ['sh', '-c', 'cat /etc/hostname; exit 4'], stdio: { stdout: outId } });
    expect(execId).not.toBe(first.execId);
    const exit = await host.waitEvent((e) => e.type === 'exit' && e.execId === execId, EVENT_MS, 'debug exit', consoleText);
    expect(exit.status).toBe(4);
    await waitFor(() => (stdout.ended() ? true : undefined), EVENT_MS, 'debug stdout', consoleText);
    expect(stdout.bytes().toString()).toBe('kuasar-guest\n');
  }, T);

  test('guest.setup writes hostname, hosts, resolv.conf, mounts shares and configures the network', async () => {
    writeFileSync(path.join(guest.extraDir, 'marker'), 'from-the-host\n');
    const setup = {
      hostname: 'pod-1',
      hosts: '127.0.0.1 localhost pod-1\n',
      resolvConf: 'nameserver 10.88.0.1\n',
      // The share /init mounted is skipped (setup is repeatable); "extra" gets mounted.
      shares: [{ tag: 'kuasar', mountPoint: '/mnt/kuasar' }, { tag: 'extra', mountPoint: '/run/extra' }],
      // Only loopback exists in this VM; the same commands configure a pod's eth0.
      network: { interfaces: [{ name: 'lo', mtu: 65000, addresses: ['127.0.0.2/8'] }], routes: [{ dest: '10.99.0.0/16', device: 'lo' }] },
    };
    await host.session.request('guest.setup', setup);
    await host.session.request('guest.setup', setup); // idempotent: "File exists" from ip is fine
    const bad = await host.session.request('guest.setup', { network: { interfaces: [{ name: 'lo; reboot', addresses: [] }] } }).catch((e: RpcError) => e);
    expect((bad as RpcError).code).toBe('INVALID_ARGUMENT');
    const out = sid();
    const s = collect(host.session.openStream(out, { direction: 'in', manualCredit: true }));
    const script = 'hostname; cat /etc/hosts /etc/resolv.conf /run/extra/marker; cat /sys/class/net/lo/mtu; ip -4 addr show dev lo | grep -o "127.0.0.2/8"; ip route | grep -o "10.99.0.0/16 dev lo"';
    await host.session.request('debug.exec', { argv: ['sh', '-c', script], stdio: { stdout: out } });
    await waitFor(() => (s.ended() ? true : undefined), EVENT_MS, 'debug stdout of the setup check', consoleText);
    expect(s.bytes().toString()).toBe('pod-1\n127.0.0.1 localhost pod-1\nnameserver 10.88.0.1\nfrom-the-host\n65000\n127.0.0.2/8\n10.99.0.0/16 dev lo\n');
  }, T);
});
