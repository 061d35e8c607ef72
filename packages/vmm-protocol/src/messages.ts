import { ProtocolError, RPC_CODES, type RpcCode } from './errors';
import { utf8Decode, utf8Encode } from './utf8';

export const PROTOCOL_VERSION = 1;

/** Host -> guest on every connect. */
export interface HostHello {
  version: number;
  session: string;
}

/** Guest -> host in answer; `session` echoes the host's so a stale answer is recognisable. */
export interface GuestHello {
  version: number;
  session: string;
  agent: string;
  uptimeMs: number;
  kernelRelease: string;
  bootId: string;
}

export interface RequestMessage {
  id: number;
  method: string;
  params: Record<string, unknown>;
}

export interface ResponseMessage {
  id: number;
  result?: Record<string, unknown>;
  error?: { code: RpcCode; message: string };
}

export interface EventMessage {
  seq: number;
  type: string;
  [field: string]: unknown;
}

export interface ExitEvent extends EventMessage {
  type: 'exit';
  containerId: string;
  execId?: string;
  pid: number;
  status: number;
  exitedAtMs: number;
}

export interface OomEvent extends EventMessage {
  type: 'oom';
  containerId: string;
}

export interface AckMessage {
  seq: number;
}

export function encodeJson(value: unknown): Uint8Array {
  return utf8Encode(JSON.stringify(value));
}

/** Parses a JSON payload; throws ProtocolError('BAD_JSON'). */
export function decodeJson(payload: Uint8Array): unknown {
  try {
    return JSON.parse(utf8Decode(payload));
  } catch (err) {
    throw new ProtocolError('BAD_JSON', `payload is not JSON: ${(err as Error).message}`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

function isSafeCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function bad(what: string): never {
  throw new ProtocolError('BAD_MESSAGE', what);
}

// Each parser checks the envelope only; method params are the handler's to validate.

export function parseRequest(v: unknown): RequestMessage {
  if (!isObject(v)) bad('REQUEST is not an object');
  if (!isSafeCount(v.id)) bad('REQUEST.id is not a non-negative integer');
  if (typeof v.method !== 'string' || v.method === '') bad('REQUEST.method is not a non-empty string');
  const params = v.params === undefined ? {} : v.params;
  if (!isObject(params)) bad('REQUEST.params is not an object');
  return { id: v.id, method: v.method, params };
}

export function parseResponse(v: unknown): ResponseMessage {
  if (!isObject(v)) bad('RESPONSE is not an object');
  if (!isSafeCount(v.id)) bad('RESPONSE.id is not a non-negative integer');
  if (v.error !== undefined) {
    const e = v.error;
    if (!isObject(e) || typeof e.message !== 'string') bad('RESPONSE.error is not {code, message}');
    const code = RPC_CODES.includes(e.code as RpcCode) ? (e.code as RpcCode) : 'INTERNAL';
    return { id: v.id, error: { code, message: e.message } };
  }
  const result = v.result === undefined ? {} : v.result;
  if (!isObject(result)) bad('RESPONSE.result is not an object');
  return { id: v.id, result };
}

export function parseEvent(v: unknown): EventMessage {
  if (!isObject(v)) bad('EVENT is not an object');
  if (!isSafeCount(v.seq) || v.seq === 0) bad('EVENT.seq is not a positive integer');
  if (typeof v.type !== 'string' || v.type === '') bad('EVENT.type is not a non-empty string');
  return v as EventMessage;
}

export function parseAck(v: unknown): AckMessage {
  if (!isObject(v) || !isSafeCount(v.seq)) bad('ACK is not {seq}');
  return { seq: v.seq };
}

export function parseHostHello(v: unknown): HostHello {
  if (!isObject(v)) bad('HELLO is not an object');
  if (v.version !== PROTOCOL_VERSION) bad(`HELLO.version ${String(v.version)} is not ${PROTOCOL_VERSION}`);
  if (typeof v.session !== 'string') bad('HELLO.session is not a string');
  return { version: v.version, session: v.session };
}

export function parseGuestHello(v: unknown): GuestHello {
  const h = parseHostHello(v);
  const o = v as Record<string, unknown>;
  if (typeof o.agent !== 'string') bad('HELLO.agent is not a string');
  if (typeof o.bootId !== 'string') bad('HELLO.bootId is not a string');
  return {
    ...h,
    agent: o.agent,
    bootId: o.bootId,
    uptimeMs: typeof o.uptimeMs === 'number' ? o.uptimeMs : 0,
    kernelRelease: typeof o.kernelRelease === 'string' ? o.kernelRelease : '',
  };
}

export { isU32 };
