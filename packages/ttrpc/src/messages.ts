/** Hand-written codec for ttrpc's envelope messages (ttrpc/request.proto) and google.rpc.Status. */
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import type { Any } from './status';

/** Metadata as a multimap: keys may repeat on the wire (repeated KeyValue). */
export type Metadata = Map<string, string[]>;
export type MetadataInit = Metadata | Record<string, string | string[]>;

export interface Request {
  service: string;
  method: string;
  /** undefined when the field was absent on the wire (Go: nil payload), which matters for client-streaming calls. */
  payload: Uint8Array | undefined;
  /** Nanoseconds until the caller's deadline; 0n = none. */
  timeoutNano: bigint;
  metadata: Metadata;
}

export interface Status {
  code: number;
  message: string;
  details: Any[];
}

export interface Response {
  status: Status | undefined;
  payload: Uint8Array;
}

export function toMetadata(init: MetadataInit | undefined): Metadata {
  const md: Metadata = new Map();
  if (init === undefined) return md;
  const entries: Iterable<[string, string | string[]]> = init instanceof Map ? init.entries() : Object.entries(init);
  for (const [k, v] of entries) md.set(k, Array.isArray(v) ? [...v] : [v]);
  return md;
}

export function encodeRequest(req: Request): Uint8Array {
  const w = new BinaryWriter();
  if (req.service !== '') w.tag(1, WireType.LengthDelimited).string(req.service);
  if (req.method !== '') w.tag(2, WireType.LengthDelimited).string(req.method);
  if (req.payload !== undefined && req.payload.length > 0) w.tag(3, WireType.LengthDelimited).bytes(req.payload);
  if (req.timeoutNano !== 0n) w.tag(4, WireType.Varint).int64(req.timeoutNano);
  for (const [key, values] of req.metadata) {
    for (const value of values) {
      w.tag(5, WireType.LengthDelimited).fork();
      if (key !== '') w.tag(1, WireType.LengthDelimited).string(key);
      if (value !== '') w.tag(2, WireType.LengthDelimited).string(value);
      w.join();
    }
  }
  return w.finish();
}

/** Throws on malformed input; callers turn that into a status reply. */
export function decodeRequest(bytes: Uint8Array): Request {
  const r = new BinaryReader(bytes);
  const req: Request = { service: '', method: '', payload: undefined, timeoutNano: 0n, metadata: new Map() };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) req.service = r.string();
    else if (field === 2 && wt === WireType.LengthDelimited) req.method = r.string();
    else if (field === 3 && wt === WireType.LengthDelimited) req.payload = r.bytes();
    else if (field === 4 && wt === WireType.Varint) req.timeoutNano = BigInt(r.int64());
    else if (field === 5 && wt === WireType.LengthDelimited) {
      const [key, value] = decodeKeyValue(r.bytes());
      const list = req.metadata.get(key);
      if (list) list.push(value);
      else req.metadata.set(key, [value]);
    } else r.skip(wt, field);
  }
  return req;
}

function decodeKeyValue(bytes: Uint8Array): [string, string] {
  const r = new BinaryReader(bytes);
  let key = '';
  let value = '';
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) key = r.string();
    else if (field === 2 && wt === WireType.LengthDelimited) value = r.string();
    else r.skip(wt, field);
  }
  return [key, value];
}

export function encodeResponse(res: Response): Uint8Array {
  const w = new BinaryWriter();
  const st = res.status;
  if (st !== undefined) {
    w.tag(1, WireType.LengthDelimited).fork();
    if (st.code !== 0) w.tag(1, WireType.Varint).int32(st.code);
    if (st.message !== '') w.tag(2, WireType.LengthDelimited).string(st.message);
    for (const d of st.details) {
      w.tag(3, WireType.LengthDelimited).fork();
      if (d.typeUrl !== '') w.tag(1, WireType.LengthDelimited).string(d.typeUrl);
      if (d.value.length > 0) w.tag(2, WireType.LengthDelimited).bytes(d.value);
      w.join();
    }
    w.join();
  }
  if (res.payload.length > 0) w.tag(2, WireType.LengthDelimited).bytes(res.payload);
  return w.finish();
}

export function decodeResponse(bytes: Uint8Array): Response {
  const r = new BinaryReader(bytes);
  const res: Response = { status: undefined, payload: new Uint8Array(0) };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) res.status = decodeStatus(r.bytes());
    else if (field === 2 && wt === WireType.LengthDelimited) res.payload = r.bytes();
    else r.skip(wt, field);
  }
  return res;
}

function decodeStatus(bytes: Uint8Array): Status {
  const r = new BinaryReader(bytes);
  const st: Status = { code: 0, message: '', details: [] };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.Varint) st.code = r.int32();
    else if (field === 2 && wt === WireType.LengthDelimited) st.message = r.string();
    else if (field === 3 && wt === WireType.LengthDelimited) st.details.push(decodeAny(r.bytes()));
    else r.skip(wt, field);
  }
  return st;
}

function decodeAny(bytes: Uint8Array): Any {
  const r = new BinaryReader(bytes);
  const any: Any = { typeUrl: '', value: new Uint8Array(0) };
  while (r.pos < r.len) {
    const [field, wt] = r.tag();
    if (field === 1 && wt === WireType.LengthDelimited) any.typeUrl = r.string();
    else if (field === 2 && wt === WireType.LengthDelimited) any.value = r.bytes();
    else r.skip(wt, field);
  }
  return any;
}
