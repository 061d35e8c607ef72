// Pod network mirroring against real network namespaces: a pod netns set up by the real CNI bridge
// plugin, the tap opened from this test (as QEMU would) to push ARP and ICMP through the tc mirred
// pipe, and, when the cached guest exists, a QEMU TCG guest pinged over it.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { type Socket, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadKoffi } from '@kuasar/sys';
import { createCniSetup, type CniSetup } from '@kuasar/testkit';
import {
  KUASAR_TC_COOKIE,
  NetworkCommandError,
  type PodNetwork,
  PodNetworkError,
  attachPodNetwork,
  detachPodNetwork,
  hostNetworkPod,
} from '../src/network';

// ---------------------------------------------------------------------------------------------
// Shell helpers

function run(cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
  return r.stdout;
}
const inNs = (ns: string, cmd: string, args: string[]): string => run('nsenter', [`--net=${ns}`, '--', cmd, ...args]);
const json = <T>(ns: string, cmd: string, args: string[]): T => {
  const out = inNs(ns, cmd, ['-json', ...args]).trim();
  return (out ? JSON.parse(out) : []) as T;
};

interface Link {
  ifname: string;
  address: string;
  mtu: number;
  ifalias?: string;
  flags: string[];
  linkinfo?: { info_kind?: string; info_data?: { type?: string; persist?: boolean } };
}
interface Filter {
  options?: { actions?: { kind: string; mirred_action?: string; direction?: string; to_dev?: string; cookie?: string }[] };
}
const links = (ns: string): Link[] => json<Link[]>(ns, 'ip', ['-details', 'link', 'show']);
const qdiscs = (ns: string): { kind: string; dev: string }[] => json(ns, 'tc', ['qdisc', 'show']);
const ingressFilters = (ns: string, dev: string): Filter[] => json<Filter[]>(ns, 'tc', ['filter', 'show', 'dev', dev, 'ingress']);
/** The mirred actions on dev's ingress, as "redirect egress -> <dev> cookie". */
const mirredTargets = (ns: string, dev: string): string[] =>
  ingressFilters(ns, dev).flatMap((f) => (f.options?.actions ?? []).map((a) => `${a.kind} ${a.mirred_action} ${a.direction} -> ${a.to_dev} ${a.cookie}`));

/** A fresh named netns (/run/netns/<name>); removed by the returned cleanup. */
function createNetns(): { name: string; path: string; cleanup(): void } {
  const name = `kn-${randomBytes(4).toString('hex')}`;
  run('ip', ['netns', 'add', name]);
  return { name, path: `/run/netns/${name}`, cleanup: () => spawnSync('ip', ['netns', 'del', name]) };
}

/** A pod netns as containerd would have it after CNI ADD with the bridge plugin (host-local IPAM). */
class CniPod {
  readonly netns = createNetns();
  readonly cni: CniSetup = createCniSetup();
  readonly containerId = randomBytes(8).toString('hex');
  readonly ip: string;
  readonly prefixLen: number;

  constructor() {
    const conflist = JSON.parse(readFileSync(path.join(this.cni.confDir, '10-kuasar.conflist'), 'utf8')) as {
      cniVersion: string;
      name: string;
      plugins: Record<string, unknown>[];
    };
    // isDefaultGateway: the pod also gets a default route via the bridge, as most clusters' CNI gives.
    this.netconf = JSON.stringify({ cniVersion: conflist.cniVersion, name: conflist.name, ...conflist.plugins[0], isDefaultGateway: true });
    let result: { ips: { address: string }[] };
    try {
      result = JSON.parse(this.cni_('ADD')) as typeof result;
    } catch (err) {
      this.netns.cleanup();
      this.cni.cleanup();
      throw err;
    }
    const [ip, len] = result.ips[0].address.split('/');
    this.ip = ip;
    this.prefixLen = Number(len);
    inNs(this.netns.path, 'ip', ['link', 'set', 'lo', 'up']);
  }

  private readonly netconf: string;

  private cni_(command: 'ADD' | 'DEL'): string {
    const r = spawnSync(path.join(this.cni.binDir, 'bridge'), [], {
      encoding: 'utf8',
      input: this.netconf,
      env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: this.containerId, CNI_NETNS: this.netns.path, CNI_IFNAME: 'eth0', CNI_PATH: this.cni.binDir },
    });
    if (r.status !== 0) throw new Error(`CNI bridge ${command} failed: ${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  cleanup(): void {
    try {
      this.cni_('DEL');
    } finally {
      this.netns.cleanup();
      this.cni.cleanup();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The guest side of a tap, opened by this process the way QEMU opens it: /dev/net/tun + TUNSETIFF,
// from inside the pod netns (the tap is looked up in the netns of the opener).

const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const CLONE_NEWNET = 0x40000000;

interface LibcFns {
  setns: (fd: number, type: number) => number;
  ioctl: (fd: number, req: number, arg: Buffer) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
  errno: () => number;
}
let libcFns: LibcFns | undefined;
function libc() {
  if (!libcFns) {
    const k = loadKoffi();
    const lib = k.load('libc.so.6');
    libcFns = {
      setns: lib.func('int setns(int fd, int nstype)'),
      ioctl: lib.func('ioctl', 'int', ['int', 'unsigned long', 'void *']),
      fcntl: lib.func('fcntl', 'int', ['int', 'int', 'int']),
      errno: () => k.errno(),
    };
  }
  return libcFns;
}

class TapEnd {
  private constructor(readonly fd: number) {}

  static open(netnsPath: string, tap: string): TapEnd {
    const f = libc();
    // setns changes only the calling thread, which is the one running JS and openSync.
    const home = openSync('/proc/thread-self/ns/net', 'r');
    const target = openSync(netnsPath, 'r');
    let fd = -1;
    try {
      if (f.setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns(${netnsPath}) errno ${f.errno()}`);
      try {
        fd = openSync('/dev/net/tun', 'r+', 0) as number;
        const ifr = Buffer.alloc(40);
        ifr.write(tap, 0, 'latin1');
        ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI, 16);
        if (f.ioctl(fd, TUNSETIFF, ifr) !== 0) throw new Error(`TUNSETIFF ${tap} errno ${f.errno()}`);
      } finally {
        if (f.setns(home, CLONE_NEWNET) !== 0) throw new Error(`setns back errno ${f.errno()}`);
      }
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      throw err;
    } finally {
      closeSync(home);
      closeSync(target);
    }
    // Reads must not block a libuv thread forever: poll a non-blocking fd instead.
    setNonBlocking(fd);
    return new TapEnd(fd);
  }

  send(frame: Buffer): void {
    writeSync(this.fd, frame);
  }

  /**
   * Next frame for which `match` returns true; other frames (IPv6 noise, ...) are skipped. `resend` goes out again
   * every second while nothing matches, as a real stack retries ARP and ping: a frame sent while the new bridge port
   * is still settling can be dropped.
   */
  async receive(match: (frame: Buffer) => boolean, resend?: Buffer, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    const buf = Buffer.alloc(65_536);
    let nextSend = Date.now() + 1_000;
    while (Date.now() < deadline) {
      if (resend && Date.now() >= nextSend) {
        this.send(resend);
        nextSend = Date.now() + 1_000;
      }
      let n = 0;
      try {
        n = readSync(this.fd, buf, 0, buf.length, null);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      }
      if (n > 0) {
        const frame = Buffer.from(buf.subarray(0, n));
        if (match(frame)) return frame;
      } else {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    throw new Error(`no matching frame on the tap within ${timeoutMs} ms`);
  }

  close(): void {
    closeSync(this.fd);
  }
}

function setNonBlocking(fd: number): void {
  const { fcntl } = libc();
  const F_GETFL = 3;
  const F_SETFL = 4;
  const O_NONBLOCK = 0o4000;
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK) !== 0) throw new Error('fcntl(O_NONBLOCK) failed');
}

// Ethernet/ARP/IPv4/ICMP frames, just enough to talk to the CNI gateway.
const macBytes = (mac: string): Buffer => Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
const ipBytes = (ip: string): Buffer => Buffer.from(ip.split('.').map(Number));
const macString = (b: Buffer): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ipString = (b: Buffer): string => [...b].join('.');

function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i] << 8) + (i + 1 < b.length ? b[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function arpRequest(srcMac: string, srcIp: string, targetIp: string): Buffer {
  const f = Buffer.alloc(42);
  macBytes('ff:ff:ff:ff:ff:ff').copy(f, 0);
  macBytes(srcMac).copy(f, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(0x0800, 16); // IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  macBytes(srcMac).copy(f, 22);
  ipBytes(srcIp).copy(f, 28);
  ipBytes(targetIp).copy(f, 38);
  return f;
}

function icmpEcho(srcMac: string, dstMac: string, srcIp: string, dstIp: string, id: number, payload: Buffer): Buffer {
  const icmp = Buffer.alloc(8 + payload.length);
  icmp[0] = 8; // echo request
  icmp.writeUInt16BE(id, 4);
  icmp.writeUInt16BE(1, 6);
  payload.copy(icmp, 8);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + icmp.length, 2);
  ip[8] = 64;
  ip[9] = 1; // ICMP
  ipBytes(srcIp).copy(ip, 12);
  ipBytes(dstIp).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  const eth = Buffer.alloc(14);
  macBytes(dstMac).copy(eth, 0);
  macBytes(srcMac).copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  return Buffer.concat([eth, ip, icmp]);
}

// ---------------------------------------------------------------------------------------------

describe('attachPodNetwork / detachPodNetwork (real netns, CNI bridge plugin)', () => {
  let pod: CniPod;
  let attached: PodNetwork | undefined;

  beforeEach(() => {
    pod = new CniPod();
    attached = undefined;
  });

  afterEach(async () => {
    if (attached) await detachPodNetwork(pod.netns.path).catch(() => undefined);
    pod.cleanup();
  });

  test('mirrors eth0 into a tap with tc mirred both ways and returns the guest config of the veth', async () => {
    const before = links(pod.netns.path).find((l) => l.ifname === 'eth0') as Link;
    expect(before.linkinfo?.info_kind).toBe('veth');

    const t0 = performance.now();
    attached = await attachPodNetwork(pod.netns.path);
    const attachMs = performance.now() - t0;

    expect(attached.links).toEqual([{ veth: 'eth0', tap: 'tap_kuasar_0', mac: before.address, mtu: before.mtu }]);
    const tap = links(pod.netns.path).find((l) => l.ifname === 'tap_kuasar_0');
    expect(tap?.linkinfo?.info_kind).toBe('tun');
    expect(tap?.linkinfo?.info_data?.type).toBe('tap');
    expect(tap?.linkinfo?.info_data?.persist).toBe(true);
    expect(tap?.flags).toContain('UP');
    expect(tap?.mtu).toBe(before.mtu);
    expect(tap?.ifalias).toBe('kuasar:eth0');

    expect(mirredTargets(pod.netns.path, 'eth0')).toEqual([`mirred redirect egress -> tap_kuasar_0 ${KUASAR_TC_COOKIE}`]);
    expect(mirredTargets(pod.netns.path, 'tap_kuasar_0')).toEqual([`mirred redirect egress -> eth0 ${KUASAR_TC_COOKIE}`]);

    expect(attached.guest).toEqual({
      interfaces: [{ name: 'eth0', mac: before.address, mtu: before.mtu, addresses: [`${pod.ip}/${pod.prefixLen}`] }],
      // The subnet route is "proto kernel": the guest's kernel makes it from the address.
      routes: [{ dest: 'default', gateway: pod.cni.gateway, device: 'eth0' }],
    });
    expect(attached.qemuArgs).toEqual([
      '-netdev', 'tap,id=net0,ifname=tap_kuasar_0,script=no,downscript=no',
      '-device', `virtio-net-device,netdev=net0,mac=${before.address}`,
    ]);

    // The veth itself is left as CNI made it: same address, same routes.
    expect(inNs(pod.netns.path, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'eth0'])).toContain(`${pod.ip}/${pod.prefixLen}`);

    const t1 = performance.now();
    await detachPodNetwork(pod.netns.path);
    console.log(`attach ${attachMs.toFixed(1)} ms, detach ${(performance.now() - t1).toFixed(1)} ms`);
    attached = undefined;
    expect(links(pod.netns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo']);
    expect(qdiscs(pod.netns.path).filter((q) => q.kind === 'ingress')).toEqual([]);
    expect(ingressFilters(pod.netns.path, 'eth0')).toEqual([]);
    // Idempotent.
    await detachPodNetwork(pod.netns.path);
  });

  test('frames written to the tap reach the CNI gateway and its answers come back (ARP, then ICMP echo)', async () => {
    attached = await attachPodNetwork(pod.netns.path);
    const { mac } = attached.links[0];
    const tap = TapEnd.open(pod.netns.path, attached.links[0].tap);
    try {
      const request = arpRequest(mac, pod.ip, pod.cni.gateway);
      tap.send(request);
      const arp = await tap.receive((f) => f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 2 && ipString(f.subarray(28, 32)) === pod.cni.gateway, request);
      expect(macString(arp.subarray(0, 6))).toBe(mac);
      expect(ipString(arp.subarray(38, 42))).toBe(pod.ip);
      const gatewayMac = macString(arp.subarray(22, 28));
      expect(gatewayMac).toBe((links('/proc/self/ns/net').find((l) => l.ifname === pod.cni.bridge) as Link).address);

      const payload = randomBytes(32);
      const id = randomBytes(2).readUInt16BE(0);
      const echo = icmpEcho(mac, gatewayMac, pod.ip, pod.cni.gateway, id, payload);
      tap.send(echo);
      const reply = await tap.receive((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 1 && f[34] === 0 && f.readUInt16BE(38) === id, echo);
      expect(ipString(reply.subarray(26, 30))).toBe(pod.cni.gateway);
      expect(ipString(reply.subarray(30, 34))).toBe(pod.ip);
      expect(reply.subarray(42, 42 + payload.length).equals(payload)).toBe(true);
    } finally {
      tap.close();
    }
  }, 30_000); // ip/tc commands and the bridge's answers: seconds on a loaded 2-core machine

  test('refuses a second attach, and a veth whose ingress qdisc belongs to someone else', async () => {
    attached = await attachPodNetwork(pod.netns.path);
    await expect(attachPodNetwork(pod.netns.path)).rejects.toMatchObject({ name: 'PodNetworkError', code: 'ALREADY_EXISTS' });
    await detachPodNetwork(pod.netns.path);
    attached = undefined;

    inNs(pod.netns.path, 'tc', ['qdisc', 'add', 'dev', 'eth0', 'ingress']);
    // A mirred filter too, but without our cookie (gact is not in this kernel, mirred is).
    inNs(pod.netns.path, 'tc', ['filter', 'add', 'dev', 'eth0', 'parent', 'ffff:', 'protocol', 'ip', 'u32', 'match', 'u8', '0', '0', 'action', 'mirred', 'egress', 'mirror', 'dev', 'lo']);
    await expect(attachPodNetwork(pod.netns.path)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('eth0') });
    expect(links(pod.netns.path).some((l) => l.linkinfo?.info_kind === 'tun')).toBe(false);
    // Detach leaves a qdisc it does not own alone.
    await detachPodNetwork(pod.netns.path);
    expect(qdiscs(pod.netns.path).filter((q) => q.kind === 'ingress').map((q) => q.dev)).toEqual(['eth0']);
    expect(mirredTargets(pod.netns.path, 'eth0')).toEqual(['mirred mirror egress -> lo undefined']);
  });

  test('a failure half-way (tap cannot take the veth MTU) leaves nothing behind', async () => {
    inNs(pod.netns.path, 'ip', ['link', 'set', 'dev', 'eth0', 'mtu', '65535']); // a tap's max is 65521
    const err = await attachPodNetwork(pod.netns.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetworkCommandError);
    expect(err).toMatchObject({ code: 'INTERNAL', message: expect.stringContaining('mtu 65535') });
    expect(links(pod.netns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo']);
    expect(qdiscs(pod.netns.path).filter((q) => q.kind === 'ingress')).toEqual([]);
  });

  test('a tc failure after the veth got its ingress qdisc leaves nothing behind', async () => {
    // Fault injection: a `tc` first on PATH that applies only the first two lines of attach's batch
    // (both ingress qdiscs) with the real tc, then fails as tc does.
    const fake = mkdtempSync(path.join(tmpdir(), 'kuasar-faketc-'));
    writeFileSync(
      path.join(fake, 'tc'),
      `#!/bin/sh\nif [ "$1" = -batch ]; then head -n 2 | /usr/sbin/tc -batch - || exit 1; echo 'Command failed -:3' >&2; exit 1; fi\nexec /usr/sbin/tc "$@"\n`,
      { mode: 0o755 },
    );
    const savedPath = process.env.PATH;
    process.env.PATH = `${fake}:${savedPath}`;
    try {
      await expect(attachPodNetwork(pod.netns.path)).rejects.toMatchObject({ name: 'NetworkCommandError', message: expect.stringContaining('Command failed -:3') });
    } finally {
      process.env.PATH = savedPath;
      rmSync(fake, { recursive: true, force: true });
    }
    expect(links(pod.netns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo']);
    expect(qdiscs(pod.netns.path).filter((q) => q.kind === 'ingress')).toEqual([]);
  });

  test('detach after the netns is gone is a no-op', async () => {
    attached = await attachPodNetwork(pod.netns.path);
    run('ip', ['netns', 'del', pod.netns.name]);
    await detachPodNetwork(pod.netns.path);
    attached = undefined;
  });
});

describe('attachPodNetwork with several interfaces and routes (hand-made netns)', () => {
  let ns: ReturnType<typeof createNetns>;
  const hostVeths: string[] = [];

  beforeEach(() => {
    ns = createNetns();
  });
  afterEach(async () => {
    await detachPodNetwork(ns.path).catch(() => undefined);
    ns.cleanup();
    for (const v of hostVeths.splice(0)) spawnSync('ip', ['link', 'del', v]);
  });

  function addVeth(podName: string, addrs: string[], mtu: number): void {
    const host = `kvh${randomBytes(4).toString('hex')}`;
    hostVeths.push(host);
    run('ip', ['link', 'add', host, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', podName, 'mtu', String(mtu), 'netns', ns.path]);
    for (const a of addrs) inNs(ns.path, 'ip', ['addr', 'add', a, 'dev', podName, ...(a.includes(':') ? ['nodad'] : [])]);
    inNs(ns.path, 'ip', ['link', 'set', podName, 'up']);
  }

  test('mirrors every veth, IPv4 and IPv6, with link routes before gateway routes', async () => {
    addVeth('eth0', ['10.201.7.5/24', 'fd00:7::5/64'], 1450);
    addVeth('net1', ['192.168.77.9/32'], 9000);
    // Calico style: a /32 with its gateway reached through a scope-link host route.
    inNs(ns.path, 'ip', ['route', 'add', '169.254.1.1', 'dev', 'net1', 'scope', 'link']);
    inNs(ns.path, 'ip', ['route', 'add', '10.202.0.0/16', 'via', '169.254.1.1', 'dev', 'net1']);
    inNs(ns.path, 'ip', ['route', 'add', 'default', 'via', '10.201.7.1', 'dev', 'eth0']);
    inNs(ns.path, 'ip', ['-6', 'route', 'add', 'default', 'via', 'fd00:7::1', 'dev', 'eth0']);
    const mac = (n: string) => (links(ns.path).find((l) => l.ifname === n) as Link).address;

    const net = await attachPodNetwork(ns.path, { tapPrefix: 'vt', device: 'virtio-net-pci' });

    expect(net.links).toEqual([
      { veth: 'eth0', tap: 'vt0', mac: mac('eth0'), mtu: 1450 },
      { veth: 'net1', tap: 'vt1', mac: mac('net1'), mtu: 9000 },
    ]);
    expect(net.guest.interfaces).toEqual([
      { name: 'eth0', mac: mac('eth0'), mtu: 1450, addresses: ['10.201.7.5/24', 'fd00:7::5/64'] },
      { name: 'net1', mac: mac('net1'), mtu: 9000, addresses: ['192.168.77.9/32'] },
    ]);
    expect(net.guest.routes).toEqual([
      { dest: '169.254.1.1', device: 'net1' },
      { dest: 'default', gateway: '10.201.7.1', device: 'eth0' },
      { dest: '10.202.0.0/16', gateway: '169.254.1.1', device: 'net1' },
      { dest: 'default', gateway: 'fd00:7::1', device: 'eth0' },
    ]);
    expect(net.qemuArgs).toEqual([
      '-netdev', 'tap,id=net0,ifname=vt0,script=no,downscript=no', '-device', `virtio-net-pci,netdev=net0,mac=${mac('eth0')}`,
      '-netdev', 'tap,id=net1,ifname=vt1,script=no,downscript=no', '-device', `virtio-net-pci,netdev=net1,mac=${mac('net1')}`,
    ]);
    expect(mirredTargets(ns.path, 'net1')).toEqual([`mirred redirect egress -> vt1 ${KUASAR_TC_COOKIE}`]);
    expect(mirredTargets(ns.path, 'vt1')).toEqual([`mirred redirect egress -> net1 ${KUASAR_TC_COOKIE}`]);

    await detachPodNetwork(ns.path);
    expect(links(ns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo', 'net1']);
    expect(qdiscs(ns.path).filter((q) => q.kind === 'ingress')).toEqual([]);
  });

  test('detach finds a half-made attach without any saved state (tap gone, qdisc left)', async () => {
    addVeth('eth0', ['10.201.8.5/24'], 1500);
    await attachPodNetwork(ns.path);
    inNs(ns.path, 'ip', ['link', 'del', 'tap_kuasar_0']);
    expect(qdiscs(ns.path).filter((q) => q.kind === 'ingress').map((q) => q.dev)).toEqual(['eth0']);
    await detachPodNetwork(ns.path);
    expect(qdiscs(ns.path).filter((q) => q.kind === 'ingress')).toEqual([]);
  });

  test('a netns with no veth is NOT_FOUND, and nothing is created', async () => {
    await expect(attachPodNetwork(ns.path)).rejects.toMatchObject({ code: 'NOT_FOUND', message: expect.stringContaining('no veth') });
    expect(links(ns.path).map((l) => l.ifname)).toEqual(['lo']);
  });

  test('a veth name that would break ip/tc batch parsing is refused before anything is made', async () => {
    addVeth('e#0', ['10.201.10.5/24'], 1500);
    await expect(attachPodNetwork(ns.path)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('"e#0"') });
    expect(links(ns.path).map((l) => l.ifname).sort()).toEqual(['e#0', 'lo']);
  });

  test('a veth with a clsact qdisc is FAILED_PRECONDITION', async () => {
    addVeth('eth0', ['10.201.11.5/24'], 1500);
    inNs(ns.path, 'tc', ['qdisc', 'add', 'dev', 'eth0', 'clsact']);
    await expect(attachPodNetwork(ns.path)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION', message: expect.stringContaining('ingress qdisc') });
    expect(links(ns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo']);
  });

  test('a taken tap name is ALREADY_EXISTS', async () => {
    addVeth('eth0', ['10.201.9.5/24'], 1500);
    // Someone else's tap (no kuasar alias): neither taken over nor removed by detach.
    inNs(ns.path, 'ip', ['tuntap', 'add', 'dev', 'tap_kuasar_0', 'mode', 'tap']);
    await expect(attachPodNetwork(ns.path)).rejects.toMatchObject({ code: 'ALREADY_EXISTS', message: expect.stringContaining('tap_kuasar_0') });
    await detachPodNetwork(ns.path);
    expect(links(ns.path).map((l) => l.ifname).sort()).toEqual(['eth0', 'lo', 'tap_kuasar_0']);
  });
});

describe('bad input', () => {
  test.each([
    ['relative path', 'run/netns/x', {}, 'INVALID_ARGUMENT'],
    ['empty path', '', {}, 'INVALID_ARGUMENT'],
    ['missing netns', '/run/netns/kuasar-does-not-exist', {}, 'NOT_FOUND'],
    ['a file that is not a netns', '/etc/hostname', {}, 'NOT_FOUND'],
    // (/proc/1/ns/net is EACCES here even for root.)
    ['the host netns', '/proc/self/ns/net', {}, 'FAILED_PRECONDITION'],
    ['the host netns via thread-self', '/proc/thread-self/ns/net', {}, 'FAILED_PRECONDITION'],
    ['a tap prefix with a slash', '/proc/self/ns/net', { tapPrefix: 'a/b' }, 'INVALID_ARGUMENT'],
    ['a too long tap prefix', '/proc/self/ns/net', { tapPrefix: 'x'.repeat(14) }, 'INVALID_ARGUMENT'],
    ['an unknown device', '/proc/self/ns/net', { device: 'e1000' }, 'INVALID_ARGUMENT'],
  ])('attach: %s', async (_what, netns, opts, code) => {
    const err = await attachPodNetwork(netns, opts as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PodNetworkError);
    expect(err).toMatchObject({ code });
  });

  test('detach: host netns refused, host-network pod (empty path) and missing netns are no-ops', async () => {
    await expect(detachPodNetwork('/proc/self/ns/net')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(detachPodNetwork('relative')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await detachPodNetwork('');
    await detachPodNetwork('/run/netns/kuasar-does-not-exist');
  });

  test('a host-network pod gets no NIC and an empty guest network', () => {
    expect(hostNetworkPod()).toEqual({ netnsPath: '', links: [], qemuArgs: ['-nic', 'none'], guest: { interfaces: [], routes: [] } });
  });
});

// ---------------------------------------------------------------------------------------------
// The whole path with a real guest: QEMU (TCG) in the pod netns on the tap, the guest configured
// from `guest`, pinged from the host across the CNI bridge and pinging its gateway back.

const GUEST_DIR = path.join(process.env.KUASAR_CACHE || '/var/cache/kuasar', 'guest', 'current');
const qemuBin = run('sh', ['-c', 'command -v qemu-system-x86_64 || true']).trim();
const guestSkip = !qemuBin ? 'qemu-system-x86_64 not found' : !existsSync(path.join(GUEST_DIR, 'manifest.json')) ? `no cached guest at ${GUEST_DIR} (bash scripts/build-guest.sh)` : undefined;
if (guestSkip) console.warn(`network guest test skipped: ${guestSkip}`);

(guestSkip ? describe.skip : describe)('QEMU guest on the mirrored tap', () => {
  let pod: CniPod;
  let qemu: ChildProcess | undefined;
  let port: Socket | undefined;
  let dir: string;

  beforeEach(() => {
    pod = new CniPod();
    dir = mkdtempSync(path.join(tmpdir(), 'kuasar-net-'));
  });
  afterEach(async () => {
    port?.destroy();
    qemu?.kill('SIGKILL');
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) await new Promise((r) => qemu?.once('exit', r));
    await detachPodNetwork(pod.netns.path).catch(() => undefined);
    pod.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the guest gets the pod IP: host -> guest and guest -> gateway pings work', async () => {
    const net = await attachPodNetwork(pod.netns.path);
    const manifest = JSON.parse(readFileSync(path.join(GUEST_DIR, 'manifest.json'), 'utf8')) as { cmdline: string };
    const sock = path.join(dir, 'agent.sock');
    mkdirSync(path.join(dir, 'share'));
    let consoleOut = '';
    qemu = spawn('nsenter', [
      `--net=${pod.netns.path}`, '--', qemuBin,
      '-M', 'microvm,acpi=off', '-accel', 'tcg', '-m', '256', '-smp', '1',
      '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
      '-kernel', path.join(GUEST_DIR, 'vmlinux'), '-initrd', path.join(GUEST_DIR, 'initramfs.img'),
      // No agent: /init then serves a shell on the port, which drives the guest here.
      '-append', `${manifest.cmdline} kuasar.agent=/nonexistent`,
      '-chardev', `socket,path=${sock},server=on,wait=off,id=c0`,
      '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=c0,name=agent',
      ...net.qemuArgs,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    qemu.stdout?.setEncoding('utf8').on('data', (c: string) => (consoleOut += c));
    qemu.stderr?.setEncoding('utf8').on('data', (c: string) => (consoleOut += c));

    let received = '';
    const deadline = Date.now() + 10_000;
    while (!port) {
      try {
        port = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(sock);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`cannot connect to ${sock}: ${(err as Error).message}\n${consoleOut}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    port.setEncoding('utf8').on('data', (c: string) => (received += c));
    const waitFor = async (re: RegExp, ms: number): Promise<RegExpExecArray> => {
      const until = Date.now() + ms;
      for (;;) {
        const m = re.exec(received);
        if (m) return m;
        if (Date.now() > until) throw new Error(`timed out waiting for ${re}\nport:\n${received}\nconsole:\n${consoleOut}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await waitFor(/KUASAR-GUEST-READY/, 60_000);

    // What the agent's guest.setup will do with `net.guest`: find the NIC by MAC, name it, address it, route.
    const iface = net.guest.interfaces[0];
    const script = [
      `for d in /sys/class/net/*; do [ "$(cat $d/address)" = "${iface.mac}" ] && dev=\${d##*/}; done`,
      `ip link set dev "$dev" name ${iface.name}`,
      `ip link set dev ${iface.name} mtu ${iface.mtu} up`,
      ...iface.addresses.map((a) => `ip addr add ${a} dev ${iface.name}`),
      ...net.guest.routes.map((r) => `ip route add ${r.dest}${r.gateway ? ` via ${r.gateway}` : ''} dev ${r.device}`),
      `echo "ADDR $(ip -o -4 addr show dev ${iface.name})"`,
      `ping -c 1 -W 5 ${pod.cni.gateway} >/dev/null 2>&1 && echo PING-GW-OK || echo PING-GW-FAIL`,
      'echo SETUP-DONE',
    ].join('; ');
    port.write(`${script}\n`);
    await waitFor(/SETUP-DONE/, 30_000);
    expect(received).toContain(`inet ${pod.ip}/${pod.prefixLen}`);
    expect(received).toContain('PING-GW-OK');

    // From the host, across the CNI bridge, to the pod IP that now lives in the guest.
    const ping = spawnSync('busybox', ['ping', '-c', '3', '-W', '5', pod.ip], { encoding: 'utf8' });
    expect(ping.stdout).toMatch(/3 packets received/);
    console.log(`host -> guest ping: ${/round-trip [^\n]*/.exec(ping.stdout)?.[0] ?? ping.stdout}`);
  }, 120_000);
});
