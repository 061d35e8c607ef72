import { ok, warn, type Finding } from './finding';

const CAP_SYS_RESOURCE = 24;

/** Whether the CapEff mask of /proc/<pid>/status holds CAP_SYS_RESOURCE. */
export function hasSysResource(status: string): boolean | undefined {
  const m = /^CapEff:\s*([0-9a-fA-F]+)$/m.exec(status);
  if (!m) return undefined;
  return ((BigInt(`0x${m[1]}`) >> BigInt(CAP_SYS_RESOURCE)) & 1n) === 1n;
}

/**
 * Without CAP_SYS_RESOURCE a negative oom_score_adj fails with EACCES, and runc then fails every pause container with
 * "can't get final child's PID from pipe: EOF". containerd's CRI copes when told to with restrict_oom_score_adj.
 * `restrictOomScoreAdj` is that setting in the containerd config (undefined: no config was readable).
 */
export function checkOomScoreAdj(status: string, restrictOomScoreAdj: boolean | undefined): Finding {
  const has = hasSysResource(status);
  if (has === undefined) return warn('oom-score-adj', 'cannot read CapEff from /proc/self/status', 'run kuasarctl check on Linux as root');
  if (has) return ok('oom-score-adj', 'CAP_SYS_RESOURCE present: negative oom_score_adj works');
  if (restrictOomScoreAdj) {
    return ok('oom-score-adj', 'CAP_SYS_RESOURCE missing, and containerd has restrict_oom_score_adj = true');
  }
  return warn(
    'oom-score-adj',
    'CAP_SYS_RESOURCE missing: a negative oom_score_adj fails (EACCES) and runc pause containers fail ("can\'t get final child\'s PID from pipe: EOF")',
    'set restrict_oom_score_adj = true in containerd\'s CRI plugin table ([plugins."io.containerd.grpc.v1.cri"] for 1.x, [plugins."io.containerd.cri.v1.runtime"] for 2.x) and restart containerd',
  );
}
