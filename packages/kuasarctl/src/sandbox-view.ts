// Sandboxes of every kind on the node: the state dirs say what exists, each answering sandboxer adds its live view.
import { connectController, type LiveStatus } from './controller-status';
import { KINDS, type Kind } from './kinds';
import { resolveLocation, type Overrides } from './locations';
import { StateDirError, readSandboxes, type SandboxSummary } from './sandboxes';

export interface SandboxView extends SandboxSummary {
  /** What the sandboxer answered to Status, if it did. */
  live: LiveStatus | undefined;
  liveError: string | undefined;
  socket: string;
}

export interface ViewOptions {
  kinds?: readonly Kind[];
  dirs: Overrides;
  sockets: Overrides;
  /** Do not call the sandboxers (state dirs only). */
  offline: boolean;
  verbose?: boolean;
  etcDir?: string;
  unitDir?: string;
  /** Only these sandbox ids (inspect). */
  ids?: (all: SandboxSummary[]) => SandboxSummary[];
}

export interface ViewResult {
  sandboxes: SandboxView[];
  /** Per-kind problems worth telling the operator (unreadable dir, sandboxer unreachable). */
  notes: string[];
}

/** CRI's words for the two live states, shown in our record's vocabulary. */
export function displayState(v: Pick<SandboxView, 'state' | 'live'>): string {
  if (!v.live) return v.state;
  if (v.live.state === 'SANDBOX_READY') return 'ready';
  return v.state === 'ready' ? 'notready' : v.state;
}

export async function viewSandboxes(opts: ViewOptions): Promise<ViewResult> {
  const notes: string[] = [];
  const out: SandboxView[] = [];
  for (const kind of opts.kinds ?? KINDS) {
    const loc = resolveLocation(kind, opts.sockets, opts.dirs, opts.etcDir, opts.unitDir);
    if (loc.configError) notes.push(`${kind}: ignoring unreadable config ${loc.configError}`);
    let found: SandboxSummary[];
    try {
      found = readSandboxes(kind, loc.dir);
    } catch (err) {
      if (!(err instanceof StateDirError)) throw err;
      notes.push(err.message);
      continue;
    }
    if (opts.ids) found = opts.ids(found);
    if (found.length === 0) continue;
    const views: SandboxView[] = found.map((s) => ({ ...s, live: undefined, liveError: undefined, socket: loc.socket }));
    out.push(...views);
    if (opts.offline) continue;
    const client = await connectController(kind, loc.socket);
    if (!client) {
      notes.push(`${kind}: sandboxer socket ${loc.socket} does not exist; showing recorded states`);
      for (const v of views) v.liveError = 'sandboxer not running';
      continue;
    }
    try {
      for (const v of views) {
        const r = await client.status(v.id, opts.verbose ?? false);
        if (r.ok) v.live = r.status;
        else v.liveError = r.error;
        // a dead socket fails every call the same way: one try is enough
        if (!r.ok && /UNAVAILABLE/.test(r.error)) {
          notes.push(`${kind}: sandboxer at ${loc.socket} unavailable (${r.error}); showing recorded states`);
          for (const rest of views) rest.liveError ??= r.error;
          break;
        }
      }
    } finally {
      client.close();
    }
  }
  return { sandboxes: out, notes };
}
