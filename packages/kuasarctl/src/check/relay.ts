// The task relay: the `relay` mode of the thin shim binary (containerd-shim-kuasar-<kind>-v2) that a sandboxer puts in
// front of its task socket so containerd's task connections outlive a sandboxer restart. The sandboxer looks for it
// next to its own executable, then in PATH (@kuasar/sandbox task-relay.ts); this check looks the same way.
import { shimBinary, unitName, type Kind } from '../kinds';
import { fail, ok, warn, type Finding } from './finding';

export interface RelayFacts {
  kind: Kind;
  /** the binary the sandboxer would run, or undefined when there is none */
  path?: string;
  /** result of `<path> relay --help`: 'ok', or why it does not run its relay mode */
  runs?: 'ok' | string;
  /** `<state dir>/relay.sock`, when it exists, and whether it answers */
  socket?: { path: string; connect: 'ok' | string };
}

/** What `relay --help` must print: a shim without the relay mode prints its own usage and exits 2. */
export const RELAY_USAGE = /^usage: \S+ relay --listen /m;

export function checkRelay(f: RelayFacts): Finding {
  const check = `relay/${f.kind}`;
  const name = shimBinary(f.kind);
  if (!f.path) {
    return warn(
      check,
      `${name} (the task relay) is neither next to ${f.kind}-sandboxer nor in PATH: a sandboxer restart then ends containerd's task connections (containerd 2.x reports running containers exited)`,
      `scripts/install.sh --kinds ${f.kind} installs it next to the sandboxer (or build it: pnpm --filter @kuasar/shim build)`,
    );
  }
  if (f.runs !== 'ok') {
    return fail(
      check,
      `${f.path} does not run its relay mode (${f.runs ?? 'not probed'}): the sandboxer cannot start the task relay`,
      `reinstall it from this release: scripts/install.sh --kinds ${f.kind}`,
    );
  }
  if (f.socket && f.socket.connect !== 'ok') {
    return warn(
      check,
      `${f.path} runs, but ${f.socket.path} does not answer (${f.socket.connect}): the relay of the running sandboxer is gone`,
      `systemctl restart ${unitName(f.kind)} (it starts a new relay)`,
    );
  }
  return ok(check, `${f.path} runs its relay mode${f.socket ? `; ${f.socket.path} answers` : ''}`);
}
