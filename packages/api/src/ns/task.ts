// Shim task API messages (shared by v2 and v3) and both ttrpc service definitions.
// `TaskDefinition` here is the v2 one; prefer the explicit TaskV2Definition / TaskV3Definition.
export * from '../gen/containerd/task/v2/shim';
export { TaskDefinition as TaskV2Definition } from '../gen/containerd/task/v2/shim';
export { TaskDefinition as TaskV3Definition } from '../gen/containerd/task/v3/shim';
