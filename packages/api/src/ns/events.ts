// containerd.events task and sandbox events.
export * from '../gen/containerd/events/task';
export * from '../gen/containerd/events/sandbox';
export type { DeepPartial, Exact, MessageFns } from '../gen/containerd/events/task';
export { protobufPackage, protobufFileName } from '../gen/containerd/events/task';
