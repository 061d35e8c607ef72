// `kuasarctl list` and `kuasarctl inspect`.
import { UsageError, parseKinds } from '../kinds';
import { parseOverrides } from '../locations';
import { displayState, viewSandboxes, type SandboxView, type ViewOptions } from '../sandbox-view';
import { ago, renderTable, truncateId } from '../table';

export interface SandboxFlags {
  kinds?: string;
  dir?: string[];
  socket?: string[];
  offline?: boolean;
  output: string;
  trunc?: boolean;
}

export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
  readonly exitCode = 1;
}

function viewOptions(flags: SandboxFlags): ViewOptions {
  return {
    kinds: flags.kinds ? parseKinds(flags.kinds) : undefined,
    dirs: parseOverrides(flags.dir ?? [], '--dir'),
    sockets: parseOverrides(flags.socket ?? [], '--socket'),
    offline: flags.offline === true,
  };
}

function checkOutput(output: string, allowed: readonly string[]): void {
  if (!allowed.includes(output)) throw new UsageError(`-o must be one of ${allowed.join(', ')}, got ${JSON.stringify(output)}`);
}

const iso = (d: Date | undefined) => d?.toISOString() ?? null;

/** The JSON shape of one sandbox in `list -o json` and `inspect`. */
export function sandboxJson(v: SandboxView, full: boolean): Record<string, unknown> {
  const base: Record<string, unknown> = {
    id: v.id,
    kind: v.kind,
    state: displayState(v),
    recordedState: v.state,
    name: v.name,
    namespace: v.namespace,
    attempt: v.attempt,
    pid: v.pid,
    createdAt: iso(v.createdAt),
    startedAt: iso(v.startedAt),
    exit: v.exit ? { exitStatus: v.exit.exitStatus, exitedAt: iso(v.exit.exitedAt) } : null,
    containers: v.containers.map((c) => ({ ...c, createdAt: iso(c.createdAt) })),
    live: v.live ? { ...v.live, createdAt: iso(v.live.createdAt), exitedAt: iso(v.live.exitedAt) } : null,
    liveError: v.liveError ?? null,
    error: v.error ?? null,
  };
  if (!full) {
    if (base.live) delete (base.live as Record<string, unknown>).info;
    return base;
  }
  return { ...base, stateDir: v.dir, socket: v.socket, netnsPath: v.netnsPath, labels: v.labels, annotations: v.annotations, record: v.record };
}

function writeNotes(notes: readonly string[]): void {
  for (const n of notes) process.stderr.write(`kuasarctl: ${n}\n`);
}

export async function listCommand(flags: SandboxFlags): Promise<number> {
  checkOutput(flags.output, ['table', 'json']);
  const { sandboxes, notes } = await viewSandboxes(viewOptions(flags));
  sandboxes.sort((a, b) => (b.createdAt?.getTime() ?? 0) - (a.createdAt?.getTime() ?? 0));
  if (flags.output === 'json') {
    process.stdout.write(`${JSON.stringify({ items: sandboxes.map((v) => sandboxJson(v, false)) }, null, 2)}\n`);
  } else {
    const noTrunc = flags.trunc === false;
    process.stdout.write(
      renderTable(
        ['SANDBOX ID', 'CREATED', 'STATE', 'NAME', 'NAMESPACE', 'KIND', 'PID', 'CONTAINERS'],
        sandboxes.map((v) => [
          truncateId(v.id, noTrunc),
          ago(v.createdAt),
          displayState(v),
          v.name || '-',
          v.namespace || '-',
          v.kind,
          v.pid > 0 ? String(v.pid) : '-',
          String(v.containers.length),
        ]),
      ),
    );
  }
  writeNotes(notes);
  return 0;
}

export async function inspectCommand(id: string, flags: SandboxFlags): Promise<number> {
  checkOutput(flags.output, ['json', 'table']);
  if (!id) throw new UsageError('inspect needs a sandbox id');
  const { sandboxes, notes } = await viewSandboxes({
    ...viewOptions(flags),
    verbose: true,
    // an exact id wins; otherwise a unique prefix, like crictl
    ids: (all) => {
      const exact = all.filter((s) => s.id === id);
      return exact.length > 0 ? exact : all.filter((s) => s.id.startsWith(id));
    },
  });
  writeNotes(notes);
  const exact = sandboxes.filter((s) => s.id === id);
  const hits = exact.length > 0 ? exact : sandboxes;
  if (hits.length === 0) throw new NotFoundError(`sandbox ${JSON.stringify(id)} not found in any state dir (kuasarctl list shows what exists)`);
  if (hits.length > 1) {
    throw new NotFoundError(`sandbox id ${JSON.stringify(id)} is ambiguous: ${hits.map((s) => `${s.kind}/${s.id}`).join(', ')}`);
  }
  const v = hits[0];
  if (flags.output === 'json') {
    process.stdout.write(`${JSON.stringify(sandboxJson(v, true), null, 2)}\n`);
    return 0;
  }
  const rows: [string, string][] = [
    ['ID', v.id],
    ['KIND', v.kind],
    ['STATE', `${displayState(v)}${v.live ? ` (live ${v.live.state})` : v.liveError ? ` (recorded; live status: ${v.liveError})` : ''}`],
    ['NAME', v.name || '-'],
    ['NAMESPACE', v.namespace || '-'],
    ['PID', v.pid > 0 ? String(v.pid) : '-'],
    ['CREATED', v.createdAt ? `${v.createdAt.toISOString()} (${ago(v.createdAt)})` : '-'],
    ['EXIT', v.exit ? `${v.exit.exitStatus} at ${v.exit.exitedAt?.toISOString() ?? '?'}` : '-'],
    ['NETNS', v.netnsPath || '-'],
    ['TASK ADDRESS', v.live?.address || '-'],
    ['STATE DIR', v.dir],
    ['SOCKET', v.socket],
  ];
  if (v.error) rows.push(['RECORD ERROR', v.error]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  process.stdout.write(rows.map(([k, val]) => `${`${k}:`.padEnd(width)}${val}`).join('\n') + '\n\n');
  process.stdout.write(
    renderTable(
      ['CONTAINER', 'NAME', 'TYPE', 'STATE', 'PID', 'CREATED', 'EXECS'],
      v.containers.map((c) => [c.id, c.name || '-', c.type || '-', c.state, c.pid > 0 ? String(c.pid) : '-', ago(c.createdAt), String(c.execs)]),
    ),
  );
  return 0;
}
