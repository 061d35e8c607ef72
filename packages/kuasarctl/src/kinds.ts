// The names a sandboxer kind goes by on a node. They must agree with @kuasar/sandbox (socket and state dir
// defaults), @kuasar/shim (shim binary, runtime type) and the systemd units under packaging/.
export const KINDS = ['runc', 'wasm', 'quark', 'vmm'] as const;
export type Kind = (typeof KINDS)[number];

export function isKind(s: string): s is Kind {
  return (KINDS as readonly string[]).includes(s);
}

/** Parses `runc,wasm` (or `all`) into kinds; throws UsageError naming the bad one. */
export function parseKinds(list: string): Kind[] {
  if (list.trim() === 'all') return [...KINDS];
  const out: Kind[] = [];
  for (const raw of list.split(',')) {
    const k = raw.trim();
    if (!isKind(k)) throw new UsageError(`unknown sandboxer kind ${JSON.stringify(k)} (known: ${KINDS.join(', ')})`);
    if (!out.includes(k)) out.push(k);
  }
  if (out.length === 0) throw new UsageError('no sandboxer kind given');
  return out;
}

export const defaultSocket = (kind: string): string => `/run/${kind}-sandboxer.sock`;
export const defaultStateDir = (kind: string): string => `/run/kuasar-${kind}`;
export const sandboxerBinary = (kind: string): string => `${kind}-sandboxer`;
export const shimBinary = (kind: string): string => `containerd-shim-kuasar-${kind}-v2`;
/** The CRI handler name, the containerd proxy plugin name, and `sandboxer = ...` all use this. */
export const handlerName = (kind: string): string => `kuasar-${kind}`;
export const runtimeType = (kind: string): string => `io.containerd.kuasar-${kind}.v2`;
export const unitName = (kind: string): string => `kuasar-${kind}-sandboxer.service`;
export const configFile = (kind: string, etc = '/etc/kuasar'): string => `${etc}/${kind}-sandboxer.toml`;

/** A command-line mistake: printed without a stack, exit code 1 like commander's own usage errors. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = 1;
}
