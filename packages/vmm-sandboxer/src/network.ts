/**
 * Pod networking for microVM pods: mirrors the pod's CNI interfaces into the VM, as Kuasar does.
 *
 * For every veth in the pod netns (CNI's eth0, usually the only one) attachPodNetwork:
 *   - creates a persistent tap next to it, in the pod netns, with the veth's MTU;
 *   - adds an ingress qdisc on both and a catch-all u32 filter with `mirred egress redirect` each way,
 *     so every frame arriving on the veth leaves through the tap (to QEMU) and every frame QEMU writes
 *     leaves through the veth. No bridge, no netns routing: the pair is a pure L2 pipe;
 *   - returns the QEMU args for the tap and the guest config (the veth's MAC, MTU, addresses and routes)
 *     for the agent's "guest.setup" {network}.
 * The guest NIC takes the veth's MAC, so the CNI bridge, ARP caches and CNI's result stay right.
 * The agent finds the NIC by that MAC, renames it to `name`, sets the MTU, adds the addresses, brings
 * it up and adds the routes in the given order (link routes first, so every gateway is reachable).
 *
 * This kernel (no modules) has the ingress qdisc, the u32 classifier and the mirred action built in,
 * but no matchall and no gact; macvtap is built in too and not needed.
 *
 * The veth keeps its addresses and routes, as in Kuasar and Kata's tcfilter model: its ingress is
 * redirected, so the netns stack never receives a frame and the address is inert; leaving it means
 * detach has nothing to restore and a sandboxer that dies mid-way leaves a netns CNI DEL still
 * understands. The tap gets no IPv6 link-local address (addrgenmode none) so the netns stack sends
 * nothing to the guest.
 *
 * QEMU must run inside the pod netns (the sandboxer launches it with `nsenter --net=<netns>` or setns)
 * because `-netdev tap,ifname=` looks the tap up in QEMU's own netns.
 *
 * Host-network pods (CRI NamespaceMode NODE: no netns path) get no mirroring: hostNetworkPod() gives
 * `-nic none` and an empty guest config, so the guest has only loopback and its containers have no
 * network. Giving a VM the host's interfaces would take them away from the host, and user-mode
 * networking would only fake "host network" (outbound NAT, no listening ports), so we refuse to
 * pretend. attachPodNetwork also refuses the host's own netns, which would hijack the host's veths.
 *
 * Everything we create is marked, so detachPodNetwork(netns) finds it without saved state: taps carry
 * the ifalias "kuasar:<veth>", our filters carry the tc action cookie KUASAR_TC_COOKIE.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '@kuasar/sandbox';

/** Linux's IFNAMSIZ - 1. */
const MAX_IFNAME = 15;
const IFNAME_SAFE = /^[A-Za-z0-9_.-]+$/;
/** tc action cookie ("kuasar" in hex) marking the filters we own. */
export const KUASAR_TC_COOKIE = '6b7561736172';
const TAP_ALIAS_PREFIX = 'kuasar:';
const NSFS_MAGIC = 0x6e736673;
/** One ip/tc call never legitimately takes long; a stuck one must not hang a sandbox start. */
const COMMAND_TIMEOUT_MS = 10_000;

export type PodNetworkErrorCode = 'INVALID_ARGUMENT' | 'NOT_FOUND' | 'ALREADY_EXISTS' | 'FAILED_PRECONDITION' | 'INTERNAL';

/** A pod network operation that failed; `code` is the gRPC code name the Sandbox API should answer with. */
export class PodNetworkError extends Error {
  override readonly name: string = 'PodNetworkError';
  constructor(
    readonly code: PodNetworkErrorCode,
    message: string,
    readonly netnsPath?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An ip/tc command that exited non-zero or timed out inside the pod netns. */
export class NetworkCommandError extends PodNetworkError {
  override readonly name: string = 'NetworkCommandError';
  constructor(
    netnsPath: string,
    readonly argv: string[],
    readonly stderr: string,
    readonly exitCode: number | null,
  ) {
    super('INTERNAL', `${argv.join(' ')} in netns ${netnsPath} failed (exit ${exitCode ?? 'timeout/signal'}): ${stderr.trim() || 'no output'}`, netnsPath);
  }
}

/** One guest NIC, as "guest.setup" {network.interfaces[]} expects. */
export interface GuestInterface {
  /** Name the guest should give the NIC (the pod's veth name, e.g. "eth0"); find it by `mac`. */
  name: string;
  mac: string;
  mtu: number;
  /** CIDR form, IPv4 and global IPv6, e.g. "10.88.0.5/16". */
  addresses: string[];
}

/** One guest route; routes without a gateway come first, so each gateway is reachable when its route is added. */
export interface GuestRoute {
  dest: string; // "default" or a CIDR
  gateway?: string;
  device: string;
}

export interface GuestNetwork {
  interfaces: GuestInterface[];
  routes: GuestRoute[];
}

export interface MirroredLink {
  veth: string;
  tap: string;
  mac: string;
  mtu: number;
}

export interface PodNetwork {
  /** '' for a host-network pod. */
  netnsPath: string;
  links: MirroredLink[];
  /** Append to QEMU's argv; QEMU must run in `netnsPath`. */
  qemuArgs: string[];
  /** The `network` param of "guest.setup". */
  guest: GuestNetwork;
}

export interface AttachOptions {
  /** Tap i (in ifindex order of the veths) is `${tapPrefix}${i}`; default "tap_kuasar_". */
  tapPrefix?: string;
  /** virtio-net-device for `-M microvm` (virtio-mmio, the default); virtio-net-pci for q35/pc. */
  device?: 'virtio-net-device' | 'virtio-net-pci';
  logger?: Logger;
}

/** What a host-network pod's VM gets: no NIC, an empty guest network (loopback only). */
export function hostNetworkPod(): PodNetwork {
  return { netnsPath: '', links: [], qemuArgs: ['-nic', 'none'], guest: { interfaces: [], routes: [] } };
}

/**
 * Mirrors every veth of the pod netns into the VM. On failure everything created so far is removed.
 * Errors: INVALID_ARGUMENT (bad path/options), NOT_FOUND (no such netns, or no veth in it),
 * FAILED_PRECONDITION (the host netns, or a veth already has an ingress qdisc), ALREADY_EXISTS
 * (already attached: detach first), INTERNAL (ip/tc failed).
 */
export async function attachPodNetwork(netnsPath: string, opts: AttachOptions = {}): Promise<PodNetwork> {
  const started = Date.now();
  const tapPrefix = opts.tapPrefix ?? 'tap_kuasar_';
  const device = opts.device ?? 'virtio-net-device';
  if (!IFNAME_SAFE.test(tapPrefix) || tapPrefix.length > MAX_IFNAME - 2) {
    throw new PodNetworkError('INVALID_ARGUMENT', `tapPrefix '${tapPrefix}' must be 1-${MAX_IFNAME - 2} characters of [A-Za-z0-9_.-]`);
  }
  if (device !== 'virtio-net-device' && device !== 'virtio-net-pci') {
    throw new PodNetworkError('INVALID_ARGUMENT', `device '${String(device)}' must be virtio-net-device or virtio-net-pci`);
  }
  const state = await checkNetns(netnsPath, 'attach');
  if (state !== 'netns') throw new PodNetworkError('NOT_FOUND', `netns ${netnsPath} does not exist or is not a network namespace`, netnsPath);

  const ns = new Netns(netnsPath);
  // `-details addr show` gives each link with its linkinfo, alias and addresses in one call.
  const [links, routes4, routes6, qdiscs] = await Promise.all([
    ns.json<IpLink[]>('ip', ['-json', '-details', 'addr', 'show']),
    ns.json<IpRoute[]>('ip', ['-json', '-4', 'route', 'show', 'table', 'main']),
    ns.json<IpRoute[]>('ip', ['-json', '-6', 'route', 'show', 'table', 'main']),
    ns.json<TcQdisc[]>('tc', ['-json', 'qdisc', 'show']),
  ]);

  const ours = links.filter(isOurTap);
  if (ours.length > 0) {
    throw new PodNetworkError('ALREADY_EXISTS', `netns ${netnsPath} is already attached (tap ${ours.map((l) => l.ifname).join(', ')}); detach first`, netnsPath);
  }
  const veths = links.filter((l) => l.linkinfo?.info_kind === 'veth').sort((a, b) => a.ifindex - b.ifindex);
  if (veths.length === 0) {
    const found = links.map((l) => `${l.ifname}(${l.linkinfo?.info_kind ?? l.link_type})`).join(', ');
    throw new PodNetworkError('NOT_FOUND', `netns ${netnsPath} has no veth to mirror (links: ${found || 'none'})`, netnsPath);
  }
  for (const l of links) {
    if (l.ifname !== 'lo' && l.linkinfo?.info_kind !== 'veth') {
      opts.logger?.warn({ netns: netnsPath, link: l.ifname, kind: l.linkinfo?.info_kind ?? l.link_type }, 'pod link is not a veth; not mirrored into the VM');
    }
  }
  // ip/tc batch lines split on blanks and treat # and quotes specially; CNI names never need those.
  const odd = veths.find((v) => !IFNAME_SAFE.test(v.ifname));
  if (odd) throw new PodNetworkError('FAILED_PRECONDITION', `veth name ${JSON.stringify(odd.ifname)} in netns ${netnsPath} has characters outside [A-Za-z0-9_.-]; not supported`, netnsPath);
  // clsact holds the same ingress hook (ffff:), so it blocks ours just the same.
  const busy = veths.filter((v) => qdiscs.some((q) => q.dev === v.ifname && (q.kind === 'ingress' || q.kind === 'clsact')));
  if (busy.length > 0) {
    throw new PodNetworkError(
      'FAILED_PRECONDITION',
      `${busy.map((v) => v.ifname).join(', ')} in netns ${netnsPath} already has an ingress qdisc (another tool's filters?); not taking it over`,
      netnsPath,
    );
  }

  const mirrored: MirroredLink[] = veths.map((v, i) => ({ veth: v.ifname, tap: `${tapPrefix}${i}`, mac: v.address, mtu: v.mtu }));
  const taken = mirrored.find((m) => links.some((l) => l.ifname === m.tap));
  if (taken) throw new PodNetworkError('ALREADY_EXISTS', `a link named ${taken.tap} already exists in netns ${netnsPath}`, netnsPath);

  try {
    // Two processes in all: ip and tc each read their batch from stdin and stop at the first failure.
    // The alias goes on first, alone, so even a failing `link set` leaves a tap detach recognises.
    await ns.run('ip', ['-batch', '-'], mirrored.flatMap((m) => [
      `tuntap add dev ${m.tap} mode tap`,
      `link set dev ${m.tap} alias ${TAP_ALIAS_PREFIX}${m.veth}`,
      `link set dev ${m.tap} mtu ${m.mtu} addrgenmode none`,
      `link set dev ${m.tap} up`,
    ]));
    await ns.run('tc', ['-batch', '-'], mirrored.flatMap((m) => [
      `qdisc add dev ${m.veth} ingress`,
      `qdisc add dev ${m.tap} ingress`,
      redirectFilter(m.veth, m.tap),
      redirectFilter(m.tap, m.veth),
    ]));
  } catch (err) {
    await rollback(ns, mirrored).catch((cleanupErr: unknown) => {
      opts.logger?.error({ netns: netnsPath, err: cleanupErr }, 'cleanup after a failed pod network attach failed');
    });
    throw err;
  }

  const result: PodNetwork = {
    netnsPath,
    links: mirrored,
    qemuArgs: mirrored.flatMap((m, i) => [
      '-netdev', `tap,id=net${i},ifname=${m.tap},script=no,downscript=no`,
      '-device', `${device},netdev=net${i},mac=${m.mac}`,
    ]),
    guest: guestNetwork(veths, [...routes4, ...routes6]),
  };
  opts.logger?.info({ netns: netnsPath, links: mirrored, ms: Date.now() - started }, 'pod network mirrored');
  return result;
}

/**
 * Removes every tap and ingress qdisc attachPodNetwork made in this netns; what it finds, not what a
 * caller remembers, so it works after a sandboxer restart or a half-done attach. Idempotent: a
 * missing netns (already deleted: its devices went with it) or '' (host-network pod) is a no-op.
 * Refuses the host netns.
 */
export async function detachPodNetwork(netnsPath: string, opts: { logger?: Logger } = {}): Promise<void> {
  if (netnsPath === '') return;
  if ((await checkNetns(netnsPath, 'detach')) === 'gone') return;
  const ns = new Netns(netnsPath);
  const [links, qdiscs] = await Promise.all([
    ns.json<IpLink[]>('ip', ['-json', '-details', 'link', 'show']),
    ns.json<TcQdisc[]>('tc', ['-json', 'qdisc', 'show']),
  ]);
  const ingress = [...new Set(qdiscs.filter((q) => q.kind === 'ingress' && q.dev).map((q) => q.dev as string))];
  const owned: string[] = [];
  for (const dev of ingress) {
    const filters = await ns.json<TcFilter[]>('tc', ['-json', 'filter', 'show', 'dev', dev, 'ingress']);
    if (filters.some((f) => f.options?.actions?.some((a) => a.kind === 'mirred' && a.cookie === KUASAR_TC_COOKIE))) owned.push(dev);
  }
  const taps = links.filter(isOurTap).map((l) => l.ifname);
  // `-force` keeps going past a device that vanished meanwhile (a concurrent detach), so one call
  // removes all it can; what is still there afterwards is a real failure.
  if (owned.length > 0) await ns.run('tc', ['-force', '-batch', '-'], owned.map((dev) => `qdisc del dev ${dev} ingress`)).catch(() => undefined);
  if (taps.length > 0) await ns.run('ip', ['-force', '-batch', '-'], taps.map((t) => `link del dev ${t}`)).catch(() => undefined);
  if (owned.length > 0 || taps.length > 0) {
    const [left, leftQdiscs] = await Promise.all([
      ns.json<IpLink[]>('ip', ['-json', '-details', 'link', 'show']),
      ns.json<TcQdisc[]>('tc', ['-json', 'qdisc', 'show']),
    ]);
    const leftTaps = left.filter(isOurTap).map((l) => l.ifname);
    const leftIngress = leftQdiscs.filter((q) => q.kind === 'ingress' && q.dev && owned.includes(q.dev)).map((q) => q.dev);
    if (leftTaps.length > 0 || leftIngress.length > 0) {
      throw new PodNetworkError('INTERNAL', `detach left taps [${leftTaps.join(', ')}] and ingress qdiscs [${leftIngress.join(', ')}] in netns ${netnsPath}`, netnsPath);
    }
  }
  opts.logger?.info({ netns: netnsPath, taps, qdiscs: owned }, 'pod network detached');
}

/**
 * Undoes a failed attach. The tap names and the veths' ingress qdiscs were free before it, so they
 * are ours even where the alias or a cookie-marked filter did not make it yet (which is all
 * detachPodNetwork would go by); an ingress qdisc holding someone else's filter is left alone.
 */
async function rollback(ns: Netns, mirrored: MirroredLink[]): Promise<void> {
  await ns.run('ip', ['-force', '-batch', '-'], mirrored.map((m) => `link del dev ${m.tap}`)).catch(() => undefined);
  const qdiscs = await ns.json<TcQdisc[]>('tc', ['-json', 'qdisc', 'show']);
  const dels: string[] = [];
  for (const m of mirrored) {
    if (!qdiscs.some((q) => q.dev === m.veth && q.kind === 'ingress')) continue;
    const filters = await ns.json<TcFilter[]>('tc', ['-json', 'filter', 'show', 'dev', m.veth, 'ingress']);
    const foreign = filters.some((f) => f.options?.actions?.some((a) => a.cookie !== KUASAR_TC_COOKIE));
    if (!foreign) dels.push(`qdisc del dev ${m.veth} ingress`);
  }
  if (dels.length > 0) await ns.run('tc', ['-force', '-batch', '-'], dels);
}

// ---------------------------------------------------------------------------------------------

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address: string;
  link_type: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { type?: string } };
  addr_info?: { family: 'inet' | 'inet6'; local: string; prefixlen: number; scope: string }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  type?: string;
}
interface TcQdisc {
  kind: string;
  dev?: string;
}
interface TcFilter {
  options?: { actions?: { kind: string; cookie?: string }[] };
}

function isOurTap(l: IpLink): boolean {
  return l.linkinfo?.info_kind === 'tun' && (l.ifalias ?? '').startsWith(TAP_ALIAS_PREFIX);
}

function redirectFilter(from: string, to: string): string {
  // `u32 match u8 0 0` matches every frame; there is no matchall classifier in this kernel.
  return `filter add dev ${from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev ${to} cookie ${KUASAR_TC_COOKIE}`;
}

function guestNetwork(veths: IpLink[], routes: IpRoute[]): GuestNetwork {
  const names = new Set(veths.map((v) => v.ifname));
  const interfaces = veths.map((v) => ({
    name: v.ifname,
    mac: v.address,
    mtu: v.mtu,
    // Link-local v6 is derived from the MAC by the guest's own kernel, identically.
    addresses: (v.addr_info ?? [])
      .filter((a) => a.scope === 'global')
      .map((a) => `${a.local}/${a.prefixlen}`),
  }));
  const guestRoutes = routes
    // "proto kernel" routes come with the addresses; the guest's kernel adds the same ones.
    .filter((r) => r.dev && names.has(r.dev) && r.protocol !== 'kernel' && (r.type ?? 'unicast') === 'unicast')
    .map((r): GuestRoute => ({ dest: r.dst, ...(r.gateway ? { gateway: r.gateway } : {}), device: r.dev as string }));
  guestRoutes.sort((a, b) => Number(a.gateway !== undefined) - Number(b.gateway !== undefined));
  return { interfaces, routes: guestRoutes };
}

/** 'netns' when the path is a netns other than ours; 'gone' when nothing is there to clean. */
async function checkNetns(netnsPath: string, op: 'attach' | 'detach'): Promise<'netns' | 'gone'> {
  if (typeof netnsPath !== 'string' || !path.isAbsolute(netnsPath)) {
    throw new PodNetworkError('INVALID_ARGUMENT', `netns path must be an absolute path, got ${JSON.stringify(netnsPath)}`);
  }
  let st: { dev: number; ino: number };
  try {
    st = await fs.stat(netnsPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw new PodNetworkError('INVALID_ARGUMENT', `cannot stat netns ${netnsPath}: ${(err as Error).message}`, netnsPath, { cause: err });
  }
  // After `ip netns del`/containerd's unmount a plain file can stay behind: nothing of ours lives there.
  if ((await fs.statfs(netnsPath)).type !== NSFS_MAGIC) return 'gone';
  const self = await fs.stat('/proc/self/ns/net');
  if (st.dev === self.dev && st.ino === self.ino) {
    throw new PodNetworkError('FAILED_PRECONDITION', `${netnsPath} is the host's network namespace; a host-network pod gets hostNetworkPod(), not a mirrored NIC (${op} refused)`, netnsPath);
  }
  return 'netns';
}

/** Runs iproute2 inside a netns by path (containerd's /var/run/netns/cni-… or /proc/<pid>/ns/net). */
class Netns {
  constructor(readonly netnsPath: string) {}

  run(cmd: 'ip' | 'tc', args: string[], stdinLines?: string[]): Promise<string> {
    const argv = ['nsenter', `--net=${this.netnsPath}`, '--', cmd, ...args];
    return new Promise((resolve, reject) => {
      const child = execFile(argv[0], argv.slice(1), { env: process.env, timeout: COMMAND_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const code = typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          return reject(new PodNetworkError('FAILED_PRECONDITION', `nsenter not found (util-linux): ${err.message}`, this.netnsPath, { cause: err }));
        }
        const input = stdinLines ? ` <<< ${JSON.stringify(stdinLines.join('; '))}` : '';
        reject(new NetworkCommandError(this.netnsPath, [...argv.slice(3), input].filter(Boolean), stderr || stdout, code));
      });
      child.stdin?.end(stdinLines ? `${stdinLines.join('\n')}\n` : undefined);
    });
  }

  async json<T>(cmd: 'ip' | 'tc', args: string[]): Promise<T> {
    const out = await this.run(cmd, args);
    try {
      // tc prints nothing at all (not "[]") when there is nothing to show.
      return (out.trim() === '' ? [] : JSON.parse(out)) as T;
    } catch (err) {
      throw new PodNetworkError('INTERNAL', `${cmd} ${args.join(' ')} printed invalid JSON: ${out.slice(0, 200)}`, this.netnsPath, { cause: err });
    }
  }
}
