export type Severity = 'ok' | 'warn' | 'fail';

/** One line of `kuasarctl check`: what was looked at, what was found, and what to do about it. */
export interface Finding {
  /** Short name of what was checked, e.g. "kvm", "runc", "socket/runc". */
  check: string;
  severity: Severity;
  message: string;
  /** A concrete command or edit that resolves a warn/fail. */
  fix?: string;
}

export const ok = (check: string, message: string): Finding => ({ check, severity: 'ok', message });
export const warn = (check: string, message: string, fix: string): Finding => ({ check, severity: 'warn', message, fix });
export const fail = (check: string, message: string, fix: string): Finding => ({ check, severity: 'fail', message, fix });

/** 0 all ok, 1 warnings only, 2 at least one failure. */
export function exitCodeOf(findings: readonly Finding[]): 0 | 1 | 2 {
  if (findings.some((f) => f.severity === 'fail')) return 2;
  if (findings.some((f) => f.severity === 'warn')) return 1;
  return 0;
}
