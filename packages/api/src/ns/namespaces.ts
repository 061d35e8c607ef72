// gRPC containerd.services.namespaces.v1.Namespaces/List: messages plus grpc-js NamespacesService / NamespacesClient.
export * from '../gen/containerd/services/namespaces/v1/namespace';
