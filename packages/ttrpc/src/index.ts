export { Code, TtrpcError } from './status';
export type { Any } from './status';
export { encodeFrame, FrameDecoder, Flag, MessageType, HEADER_LENGTH, MAX_MESSAGE_SIZE } from './frame';
export type { Frame } from './frame';
export { encodeRequest, decodeRequest, encodeResponse, decodeResponse, toMetadata } from './messages';
export type { Request, Response, Status, Metadata, MetadataInit } from './messages';
export { NAMESPACE_KEY, withNamespace } from './metadata';
export { TtrpcServer } from './server';
export type { CallContext, PeerCredentials, ServerOptions, ServerStream, StreamHandler, StreamKind, UnaryHandler } from './server';
export { TtrpcClient, ClientStream } from './client';
export type { CallOptions, ClientOptions, StreamOptions } from './client';
export { addService, createClient } from './service';
export type {
  ClientMethod,
  DeepPartial,
  MessageCodec,
  MethodDefinition,
  MethodImpl,
  ServiceClient,
  ServiceDefinition,
  ServiceImplementation,
  ServiceNameOptions,
  TypedClientStream,
  TypedServerStream,
} from './service';
export type { Logger } from './transport';
