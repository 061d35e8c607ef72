import { unitName, type Kind } from '../kinds';
import { fail, ok, warn, type Finding } from './finding';

export interface PathFacts {
  path: string;
  /** undefined: the path does not exist. */
  type?: 'socket' | 'directory' | 'other';
  mode?: number;
  uid?: number;
}

export interface SandboxerFacts {
  kind: Kind;
  socket: PathFacts;
  /** Result of connecting to the socket: 'ok', or why it failed. Only probed for an existing socket. */
  connect?: 'ok' | string;
  stateDir: PathFacts;
}

const octal = (mode: number | undefined) => (mode === undefined ? '?' : (mode & 0o7777).toString(8).padStart(4, '0'));

/** The Controller socket: there, private (0600, root), and answering. */
export function checkSocket(f: SandboxerFacts): Finding {
  const check = `socket/${f.kind}`;
  const s = f.socket;
  const unit = unitName(f.kind);
  if (!s.type) return fail(check, `${s.path} does not exist: the ${f.kind} sandboxer is not running`, `systemctl start ${unit}; journalctl -u ${unit} says why it stopped`);
  if (s.type !== 'socket') return fail(check, `${s.path} is not a socket`, `remove ${s.path}, then systemctl restart ${unit}`);
  if (f.connect !== 'ok') {
    return fail(check, `${s.path} does not answer (${f.connect ?? 'not probed'}): a stale socket from a stopped sandboxer`, `systemctl restart ${unit}`);
  }
  const problems: string[] = [];
  if (((s.mode ?? 0) & 0o777) !== 0o600) problems.push(`mode ${octal(s.mode)}, want 0600`);
  if (s.uid !== 0) problems.push(`owner uid ${s.uid}, want 0 (root)`);
  if (problems.length > 0) {
    // Anyone who can connect can create and kill pods: a loose socket is as bad as a dead one.
    return fail(check, `${s.path} answers but is not private: ${problems.join(', ')}`, `chown root:root ${s.path} && chmod 600 ${s.path}, and check the unit's UMask`);
  }
  return ok(check, `${s.path} answers (0600, root)`);
}

/** The state dir holds pod configs and bundle paths: root only. */
export function checkStateDir(f: SandboxerFacts): Finding {
  const check = `state-dir/${f.kind}`;
  const d = f.stateDir;
  if (!d.type) return warn(check, `${d.path} does not exist (the sandboxer creates it on start)`, `systemctl start ${unitName(f.kind)}`);
  if (d.type !== 'directory') return fail(check, `${d.path} is not a directory`, `move ${d.path} away, then systemctl restart ${unitName(f.kind)}`);
  if (((d.mode ?? 0) & 0o777) !== 0o700 || d.uid !== 0) {
    return warn(check, `${d.path} is mode ${octal(d.mode)} uid ${d.uid}, want 0700 root`, `chown root:root ${d.path} && chmod 700 ${d.path}`);
  }
  return ok(check, `${d.path} (0700, root)`);
}
