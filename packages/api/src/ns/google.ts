// google.protobuf well-known types and google.rpc.Status.
export * from '../gen/google/protobuf/any';
export * from '../gen/google/protobuf/timestamp';
export * from '../gen/google/protobuf/empty';
export * from '../gen/google/rpc/status';
// Every generated file declares these helpers; name one copy so the star exports are unambiguous.
export type { DeepPartial, Exact, MessageFns } from '../gen/google/protobuf/any';
export { protobufPackage, protobufFileName } from '../gen/google/protobuf/any';
