// @kuasar/e2e: pods through a real containerd with the kuasar sandboxers (CRI end to end, restarts, leftovers).
export { SandboxerProcess, SandboxerStartError, socketAnswers } from './sandboxer-process';
export type { SandboxerLogLine, SandboxerProcessOptions } from './sandboxer-process';
export { BuildError, KUASARCTL, REPO_ROOT, SANDBOXERS, buildShim, handlerName, kuasarContainerdConfig, shimEnv, usesShim } from './matrix';
export type { MatrixEntry, SandboxerKind } from './matrix';
export { fdCount, leftoverCgroups, leftoverMounts, leftoverProcesses, leftoverSockets, leftoverStateDirs, processTable, socketFdCount } from './leftovers';
export { BENIGN_ERRORS, containerdErrors } from './containerd-log';
export type { BenignError } from './containerd-log';
export { p50, pssKiB } from './measure';
export { vmmConfigFile, vmmGuestDir, vmmSkipReason } from './vmm';
