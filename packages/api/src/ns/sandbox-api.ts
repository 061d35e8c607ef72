// gRPC containerd.services.sandbox.v1.Controller: messages plus grpc-js ControllerService / ControllerClient / ControllerServer.
export * from '../gen/containerd/services/sandbox/v1/sandbox';
