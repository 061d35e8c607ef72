// @kuasar/kuasarctl as a library: what the CLI knows about a node, for tests and docs checks in other packages.
export * from './kinds';
export * from './containerd-config';
export * from './locations';
export * from './sandboxes';
export { viewSandboxes, displayState, type SandboxView, type ViewOptions, type ViewResult } from './sandbox-view';
export { connectController, type LiveStatus, type StatusClient, type StatusResult } from './controller-status';
export { checkHost, installedKinds, readDebCache, type HostCheckOptions } from './check/host';
export { exitCodeOf, type Finding, type Severity } from './check/finding';
export { checkKvm, kvmMode, cpuFlags, type KvmFacts, type KvmMode } from './check/kvm';
export { checkCgroups, cgroupMode, cgroupMounts, type CgroupMode, type CgroupMount, type CgroupFacts } from './check/cgroups';
export { checkOomScoreAdj, hasSysResource } from './check/oom';
export { checkTool, parseToolVersion, TOOLS, type ToolProbe, type ToolSpec } from './check/tools';
export { checkContainerdBinaries, checkContainerdConfig, parseContainerdVersion, majorOf, restrictOomScoreAdj } from './check/containerd';
export { checkSocket, checkStateDir, type SandboxerFacts, type PathFacts } from './check/sandboxer';
export { FileSource, IdFilter, JournalSource, LogsError, formatText, parseLogLine, parseSince, showLogs, type LogLine, type LogSource, type LogsOptions } from './logs';
