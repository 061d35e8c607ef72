// @kuasar/task: the Task API core (process table, IO, exits, events, stats, recovery) and its Engine seam.
export type {
  ContainerCreate, ContainerRef, Engine, EngineAny, EngineExit, EngineStatus, ProcessStdio, RuntimeOptions,
} from './engine';
export { ExitListeners } from './engine';
export { TaskService } from './task-service';
export type { TaskCallContext, TaskHooks, TaskServiceOptions } from './task-service';
export { registerTaskService, taskImplementation } from './task-server';
export { EventPublisher, ttrpcAddress, DEFAULT_TTRPC_ADDRESS } from './events';
export type { EventPublisherOptions, Publisher } from './events';
export { OciCliEngine, readPidFile } from './engines/oci-cli';
export type { OciCliEngineOptions, OciRunOptions } from './engines/oci-cli';
export { ProcessIO, parseIOTarget } from './process-io';
export type { IOTarget, StdioPaths } from './process-io';
export {
  cgroupDirsOfPid, readMetrics, readOomKillCount, readV1Metrics, readV2Metrics, resolveCgroupDirs,
} from './cgroup-stats';
export type { CgroupDirs, CgroupMetrics, V1Metrics, V2Metrics } from './cgroup-stats';
export { packCgroupMetrics, packTaskUsage, runtimeStatsToV1, V1_METRICS_TYPE, V2_METRICS_TYPE, type TaskUsage } from './metrics';
export { sharesPidNamespace } from './oci';
export type { OciLinuxResources, OciProcess, OciSpec } from './oci';
export { TaskStore } from './task-store';
export type { ProcessRecord, TaskRecord } from './task-store';
export { Code, TtrpcError } from './errors';
