// containerd.types (Mount, Platform, Metric, Sandbox, Envelope) and containerd.v1.types (Status, ProcessInfo).
export * from '../gen/containerd/types/mount';
export * from '../gen/containerd/types/platform';
export * from '../gen/containerd/types/metrics';
export * from '../gen/containerd/types/sandbox';
export * from '../gen/containerd/types/event';
export * from '../gen/containerd/types/task/task';
// The task process status enum is plain `Status` in containerd.v1.types; TaskStatus avoids a clash with google.Status.
export { Status as TaskStatus, statusFromJSON as taskStatusFromJSON, statusToJSON as taskStatusToJSON } from '../gen/containerd/types/task/task';
export type { DeepPartial, Exact, MessageFns } from '../gen/containerd/types/mount';
export { protobufPackage, protobufFileName } from '../gen/containerd/types/mount';
