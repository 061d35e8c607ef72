// Validation of request params. Every handler goes through these, so bad input from the host gets
// INVALID_ARGUMENT with the field name, never a crash of the agent.
import { RpcError } from '@kuasar/vmm-protocol';

export type Params = Record<string, unknown>;

function invalid(message: string): never {
  throw new RpcError('INVALID_ARGUMENT', message);
}

// The same rule crun and runc apply to container ids, so an id never escapes its directory.
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function id(p: Params, field: string): string {
  const v = p[field];
  if (typeof v !== 'string' || !ID_RE.test(v)) invalid(`${field} must match ${ID_RE.source}, got ${JSON.stringify(v)}`);
  return v;
}

export function optionalId(p: Params, field: string): string | undefined {
  return p[field] === undefined || p[field] === null || p[field] === '' ? undefined : id(p, field);
}

export function str(p: Params, field: string): string {
  const v = p[field];
  if (typeof v !== 'string') invalid(`${field} must be a string`);
  return v;
}

export function optionalStr(p: Params, field: string): string | undefined {
  return p[field] === undefined || p[field] === null ? undefined : str(p, field);
}

export function absPath(p: Params, field: string): string {
  const v = str(p, field);
  if (!v.startsWith('/') || v.split('/').includes('..') || v.includes('\0')) invalid(`${field} must be an absolute path without '..', got ${JSON.stringify(v)}`);
  return v;
}

export function int(p: Params, field: string, min: number, max: number): number {
  const v = p[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) invalid(`${field} must be an integer in [${min}, ${max}]`);
  return v;
}

export function optionalInt(p: Params, field: string, min: number, max: number): number | undefined {
  return p[field] === undefined || p[field] === null ? undefined : int(p, field, min, max);
}

export function bool(p: Params, field: string): boolean {
  const v = p[field];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') invalid(`${field} must be a boolean`);
  return v;
}

export function obj(p: Params, field: string): Params {
  const v = p[field];
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid(`${field} must be an object`);
  return v as Params;
}

export function strArray(p: Params, field: string): string[] {
  const v = p[field];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) invalid(`${field} must be an array of strings`);
  return v as string[];
}

export interface Stdio {
  stdin?: number;
  stdout?: number;
  stderr?: number;
  terminal: boolean;
}

export function stdio(p: Params): Stdio {
  const s = p.stdio === undefined ? {} : obj(p, 'stdio');
  const sid = (f: string): number | undefined => (s[f] === undefined || s[f] === null || s[f] === 0 ? undefined : int(s, f, 1, 0xffffffff));
  const out: Stdio = { stdin: sid('stdin'), stdout: sid('stdout'), stderr: sid('stderr'), terminal: bool(s, 'terminal') };
  const ids = [out.stdin, out.stdout, out.stderr].filter((x) => x !== undefined);
  if (new Set(ids).size !== ids.length) invalid('stdio stream ids must differ');
  return out;
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9,
  SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15, SIGCHLD: 17, SIGCONT: 18,
  SIGSTOP: 19, SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22, SIGWINCH: 28,
};

/** A signal as a number (1..64) or a name ("SIGTERM", "TERM"). */
export function signal(p: Params, field: string): number {
  const v = p[field];
  if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 64) return v;
  if (typeof v === 'string') {
    const n = SIGNALS[v.toUpperCase().startsWith('SIG') ? v.toUpperCase() : `SIG${v.toUpperCase()}`];
    if (n) return n;
  }
  return invalid(`${field} must be a signal number 1..64 or name, got ${JSON.stringify(v)}`);
}
