// Which containers belong to a pod, kept on disk under the sandbox dir so a restarted sandboxer can still stop and
// clean up a pod's containers. One empty-or-JSON file per member: `<sandbox dir>/containers/<namespace>~<id>`
// ('~' never appears in containerd identifiers, so the name is unambiguous).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Sandbox } from './sandbox';

const MEMBERS_DIR = 'containers';

export interface PodMember {
  namespace: string;
  id: string;
  /** the container's bundle, when the kind recorded it ('' otherwise) */
  bundle: string;
}

function memberFile(sandbox: Pick<Sandbox, 'dir'>, m: Pick<PodMember, 'namespace' | 'id'>): string {
  return path.join(sandbox.dir, MEMBERS_DIR, `${m.namespace}~${m.id}`);
}

export function addPodMember(sandbox: Pick<Sandbox, 'dir'>, m: Pick<PodMember, 'namespace' | 'id'> & { bundle?: string }): void {
  fs.mkdirSync(path.join(sandbox.dir, MEMBERS_DIR), { recursive: true, mode: 0o700 });
  fs.writeFileSync(memberFile(sandbox, m), JSON.stringify({ bundle: m.bundle ?? '' }));
}

export function removePodMember(sandbox: Pick<Sandbox, 'dir'>, m: Pick<PodMember, 'namespace' | 'id'>): void {
  fs.rmSync(memberFile(sandbox, m), { force: true });
}

export function removeAllPodMembers(sandbox: Pick<Sandbox, 'dir'>): void {
  fs.rmSync(path.join(sandbox.dir, MEMBERS_DIR), { recursive: true, force: true });
}

export function podMembers(sandbox: Pick<Sandbox, 'dir'>): PodMember[] {
  const dir = path.join(sandbox.dir, MEMBERS_DIR);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const [namespace, id, extra] = name.split('~');
    if (!namespace || !id || extra !== undefined) return [];
    let bundle = '';
    try {
      bundle = (JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8')) as { bundle?: string }).bundle ?? '';
    } catch {
      // unreadable or empty: the task core still finds the container by id
    }
    return [{ namespace, id, bundle }];
  });
}

/** CRI's annotation naming a container's pod on every version. */
export const CRI_SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';

/** The pod a container belongs to: containerd 2.x's `<bundle>/sandbox` file, else CRI's annotation. */
export function sandboxIdOfContainer(bundle: string, spec: { annotations?: Record<string, string> }): string | undefined {
  try {
    const id = fs.readFileSync(path.join(bundle, 'sandbox'), 'utf8').trim();
    if (id !== '') return id;
  } catch {
    // no sandbox file: containerd 1.x, or a task outside any sandbox (ctr run)
  }
  const a = spec.annotations?.[CRI_SANDBOX_ID_ANNOTATION];
  return a ? a : undefined;
}
