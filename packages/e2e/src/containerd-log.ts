/**
 * containerd's errors caused by us: `level=error` lines that mention one of our ids (pods, containers, the
 * sandboxer's sockets). Errors containerd logs as part of normal operation with any runtime are allowed only
 * when listed in BENIGN_ERRORS with the reason.
 */
export interface BenignError {
  pattern: RegExp;
  why: string;
}

export const BENIGN_ERRORS: BenignError[] = [
  // Errors CRI logs about requests the tests make on purpose: an exec of a missing binary, the status of a pod just
  // removed, a container from an image that does not exist.
  { pattern: /ExecSync for .* failed.*(no such file or directory|executable file not found)/, why: 'the test execs a missing binary on purpose' },
  { pattern: /PodSandboxStatus for .* failed.*NotFound/, why: 'status of a removed pod (asked on purpose)' },
  { pattern: /CreateContainer within sandbox .* failed.*failed to resolve image .*absent/, why: 'image that does not exist (on purpose)' },
  // After a sandboxer restart containerd's gRPC channel to the Controller sits in reconnect backoff for a moment and
  // fails calls fast with the last dial error (Go grpc without WaitForReady); the restart test polls through it.
  { pattern: /failed to query controller status: connection error: .*connect: connection refused/, why: 'Controller channel backoff right after the restart test killed the sandboxer' },
];

/** `level=error` lines (logfmt) at or after `offset` bytes that mention any of `needles` and are not benign. */
export function containerdErrors(log: string, needles: string[], offset = 0): string[] {
  const lines = log.slice(offset).split('\n');
  return lines.filter((l) => /\blevel=(error|fatal|panic)\b/.test(l))
    .filter((l) => needles.some((n) => n !== '' && l.includes(n)))
    .filter((l) => process.env.E2E_STRICT_LOG === '1' || !BENIGN_ERRORS.some((b) => b.pattern.test(l)));
}
