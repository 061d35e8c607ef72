// gRPC containerd.services.sandbox.v1.Controller (messages plus grpc-js ControllerService / ControllerClient / ControllerServer)
// and containerd's own Store.Get (StoreService / StoreClient).
export * from '../gen/containerd/services/sandbox/v1/sandbox';
