export * from '../gen/containerd/runtimeoptions/v1/api';
