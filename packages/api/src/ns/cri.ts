// CRI runtime.v1 subset: messages plus grpc-js RuntimeService* / ImageService* stubs.
export * from '../gen/cri/runtime/v1/api';
