// guest.setup's network part as busybox `ip` command lines; pure, so it is unit-tested on Node.
import { RpcError } from '@kuasar/vmm-protocol';

export interface InterfaceConfig {
  name: string;
  mac?: string;
  mtu?: number;
  addresses: string[];
}

export interface RouteConfig {
  dest: string;
  gateway?: string;
  device?: string;
}

export interface NetworkConfig {
  interfaces: InterfaceConfig[];
  routes: RouteConfig[];
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9a-fA-F:]+(%[A-Za-z0-9_.-]+)?$/;

function invalid(message: string): never {
  throw new RpcError('INVALID_ARGUMENT', message);
}

function ip(v: unknown, what: string): string {
  if (typeof v !== 'string' || !(IPV4.test(v) || (v.includes(':') && IPV6.test(v)))) invalid(`${what} is not an IP address: ${JSON.stringify(v)}`);
  return v;
}

function cidr(v: unknown, what: string): string {
  if (typeof v !== 'string') invalid(`${what} is not a CIDR`);
  const [addr, len, extra] = v.split('/');
  ip(addr, what);
  const max = addr.includes(':') ? 128 : 32;
  if (extra !== undefined || len === undefined || !/^\d+$/.test(len) || Number(len) > max) invalid(`${what} is not a CIDR: ${JSON.stringify(v)}`);
  return v;
}

/** Validates the network part of guest.setup and returns it typed. */
export function parseNetwork(v: unknown): NetworkConfig {
  if (typeof v !== 'object' || v === null) invalid('network must be an object');
  const n = v as { interfaces?: unknown; routes?: unknown };
  const interfaces = (Array.isArray(n.interfaces) ? n.interfaces : n.interfaces === undefined ? [] : invalid('network.interfaces must be an array')) as unknown[];
  const routes = (Array.isArray(n.routes) ? n.routes : n.routes === undefined ? [] : invalid('network.routes must be an array')) as unknown[];
  return {
    interfaces: interfaces.map((raw, i) => {
      const o = (raw ?? {}) as Record<string, unknown>;
      const where = `network.interfaces[${i}]`;
      if (typeof o.name !== 'string' || !IFNAME.test(o.name)) invalid(`${where}.name is not an interface name`);
      if (o.mac !== undefined && (typeof o.mac !== 'string' || !MAC.test(o.mac))) invalid(`${where}.mac is not a MAC address`);
      if (o.mtu !== undefined && (typeof o.mtu !== 'number' || !Number.isInteger(o.mtu) || o.mtu < 68 || o.mtu > 65535)) invalid(`${where}.mtu must be 68..65535`);
      const addrs = o.addresses === undefined ? [] : Array.isArray(o.addresses) ? o.addresses : invalid(`${where}.addresses must be an array`);
      return { name: o.name, mac: o.mac as string | undefined, mtu: o.mtu as number | undefined, addresses: addrs.map((a, k) => cidr(a, `${where}.addresses[${k}]`)) };
    }),
    routes: routes.map((raw, i) => {
      const o = (raw ?? {}) as Record<string, unknown>;
      const where = `network.routes[${i}]`;
      const dest = o.dest === 'default' ? 'default' : cidr(o.dest, `${where}.dest`);
      const gateway = o.gateway === undefined ? undefined : ip(o.gateway, `${where}.gateway`);
      if (o.device !== undefined && (typeof o.device !== 'string' || !IFNAME.test(o.device))) invalid(`${where}.device is not an interface name`);
      if (gateway === undefined && o.device === undefined) invalid(`${where} needs a gateway or a device`);
      return { dest, gateway, device: o.device as string | undefined };
    }),
  };
}

/** The `ip` invocations, in order: links (down for MAC change, then up), addresses, routes. */
export function networkCommands(net: NetworkConfig): string[][] {
  const cmds: string[][] = [];
  for (const i of net.interfaces) {
    if (i.mac) {
      // The MAC can only change while the link is down.
      cmds.push(['ip', 'link', 'set', 'dev', i.name, 'down']);
      cmds.push(['ip', 'link', 'set', 'dev', i.name, 'address', i.mac]);
    }
    if (i.mtu) cmds.push(['ip', 'link', 'set', 'dev', i.name, 'mtu', String(i.mtu)]);
    for (const a of i.addresses) cmds.push(['ip', 'addr', 'add', a, 'dev', i.name]);
    cmds.push(['ip', 'link', 'set', 'dev', i.name, 'up']);
  }
  for (const r of net.routes) {
    cmds.push(['ip', 'route', 'add', r.dest, ...(r.gateway ? ['via', r.gateway] : []), ...(r.device ? ['dev', r.device] : [])]);
  }
  return cmds;
}
