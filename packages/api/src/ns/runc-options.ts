export * from '../gen/containerd/runc/options/oci';
