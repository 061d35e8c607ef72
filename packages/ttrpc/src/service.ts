/**
 * Typed layer over the raw byte API, shaped for ts-proto `outputServices=generic-definitions` output, so generated
 * service definitions plug in directly.
 */
import type { CallOptions, ClientStream, TtrpcClient } from './client';
import type { CallContext, TtrpcServer } from './server';

export interface MessageCodec<T> {
  encode(message: T, writer?: any): { finish(): Uint8Array };
  decode(input: Uint8Array, length?: number): T;
  fromPartial?(object: any): T;
}

export interface MethodDefinition<Req = any, Res = any, ReqStream extends boolean = boolean, ResStream extends boolean = boolean> {
  name: string;
  requestType: MessageCodec<Req>;
  requestStream: ReqStream;
  responseType: MessageCodec<Res>;
  responseStream: ResStream;
  options?: unknown;
}

export interface ServiceDefinition {
  name: string;
  fullName: string;
  methods: Record<string, MethodDefinition>;
}

type ReqOf<M> = M extends MethodDefinition<infer Req, any, any, any> ? Req : never;
type ResOf<M> = M extends MethodDefinition<any, infer Res, any, any> ? Res : never;

type Builtin = Date | Function | Uint8Array | string | number | boolean | bigint | undefined | null;
/** Same shape as ts-proto's DeepPartial: what `fromPartial` accepts. */
export type DeepPartial<T> = T extends Builtin
  ? T
  : T extends Array<infer U>
    ? Array<DeepPartial<U>>
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> }
      : Partial<T>;
/** Messages whose codec has `fromPartial` may be given partially; missing fields take proto3 defaults. */
type Input<C, T> = C extends { fromPartial(o: any): any } ? DeepPartial<T> : T;
type ReqIn<M> = M extends { requestType: infer C } ? Input<C, ReqOf<M>> : never;
type ResIn<M> = M extends { responseType: infer C } ? Input<C, ResOf<M>> : never;

/** Typed stream handed to streaming method implementations. */
export interface TypedServerStream<Req, ResInput> extends AsyncIterable<Req> {
  send(msg: ResInput): Promise<void>;
}

export type MethodImpl<M> = M extends { requestStream: false; responseStream: false }
  ? (request: ReqOf<M>, ctx: CallContext) => Promise<ResIn<M>>
  : (stream: TypedServerStream<ReqOf<M>, ResIn<M>>, ctx: CallContext) => Promise<ResIn<M> | void>;

export type ServiceImplementation<D extends ServiceDefinition> = { [K in keyof D['methods']]: MethodImpl<D['methods'][K]> };

/** Typed view of a client stream. */
export interface TypedClientStream<ReqInput, Res> extends AsyncIterable<Res> {
  send(msg: ReqInput): Promise<void>;
  closeSend(): Promise<void>;
  cancel(): void;
  readonly response: Promise<Res>;
}

export type ClientMethod<M> = M extends { requestStream: false; responseStream: false }
  ? (request: ReqIn<M>, opts?: CallOptions) => Promise<ResOf<M>>
  : (request?: ReqIn<M>, opts?: CallOptions) => TypedClientStream<ReqIn<M>, ResOf<M>>;

export type ServiceClient<D extends ServiceDefinition> = { [K in keyof D['methods']]: ClientMethod<D['methods'][K]> };

export interface ServiceNameOptions {
  /** Wire service name to use instead of `def.fullName` (e.g. serve one impl as both task v2 and v3). */
  fullName?: string;
}

function encodeWith<T>(codec: MessageCodec<T>, msg: T): Uint8Array {
  const value = codec.fromPartial ? codec.fromPartial(msg) : msg;
  return codec.encode(value).finish();
}

export function addService<D extends ServiceDefinition>(server: TtrpcServer, def: D, impl: ServiceImplementation<D>, opts: ServiceNameOptions = {}): void {
  const service = opts.fullName ?? def.fullName;
  for (const key of Object.keys(def.methods)) {
    const m = def.methods[key]!;
    const fn = (impl as Record<string, unknown>)[key];
    if (typeof fn !== 'function') throw new TypeError(`ttrpc: implementation of ${service} lacks method ${key}`);
    if (!m.requestStream && !m.responseStream) {
      const unary = fn as (req: unknown, ctx: CallContext) => Promise<unknown>;
      server.register(service, m.name, async (payload, ctx) => encodeWith(m.responseType, await unary.call(impl, m.requestType.decode(payload), ctx)));
      continue;
    }
    const streaming = fn as (s: TypedServerStream<unknown, unknown>, ctx: CallContext) => Promise<unknown>;
    server.registerStream(service, m.name, { clientStreaming: m.requestStream, serverStreaming: m.responseStream }, async (raw, ctx) => {
      const typed: TypedServerStream<unknown, unknown> = {
        async *[Symbol.asyncIterator]() {
          for await (const bytes of raw) yield m.requestType.decode(bytes);
        },
        send: (msg) => raw.send(encodeWith(m.responseType, msg)),
      };
      const result = await streaming.call(impl, typed, ctx);
      return result === undefined || result === null ? undefined : encodeWith(m.responseType, result);
    });
  }
}

export function createClient<D extends ServiceDefinition>(def: D, client: TtrpcClient, opts: ServiceNameOptions = {}): ServiceClient<D> {
  const service = opts.fullName ?? def.fullName;
  const stubs: Record<string, unknown> = {};
  for (const key of Object.keys(def.methods)) {
    const m = def.methods[key]!;
    if (!m.requestStream && !m.responseStream) {
      stubs[key] = async (req: unknown, callOpts?: CallOptions) =>
        m.responseType.decode(await client.call(service, m.name, encodeWith(m.requestType, req), callOpts));
      continue;
    }
    stubs[key] = (req?: unknown, callOpts: CallOptions = {}) => {
      const raw: ClientStream = client.stream(service, m.name, {
        ...callOpts,
        clientStreaming: m.requestStream,
        serverStreaming: m.responseStream,
        request: req === undefined ? undefined : encodeWith(m.requestType, req),
      });
      const typed: TypedClientStream<unknown, unknown> = {
        send: (msg) => raw.send(encodeWith(m.requestType, msg)),
        closeSend: () => raw.closeSend(),
        cancel: () => raw.cancel(),
        response: raw.response.then((b) => m.responseType.decode(b)),
        async *[Symbol.asyncIterator]() {
          for await (const bytes of raw) yield m.responseType.decode(bytes);
        },
      };
      typed.response.catch(() => {});
      return typed;
    };
  }
  return stubs as ServiceClient<D>;
}
