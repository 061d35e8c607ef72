// Host <-> guest agent protocol (see /work/notes/vmm-protocol.md). Pure TypeScript over Uint8Array:
// no Node APIs, so the same code runs in the sandboxer (Node) and the guest agent (QuickJS).
export { ProtocolError, RpcError, RPC_CODES } from './errors';
export type { ProtocolErrorCode, RpcCode } from './errors';
export { utf8Encode, utf8Decode } from './utf8';
export { encodeFrame, encodeU32, decodeU32, FrameDecoder, FrameType, MAGIC, VERSION, HEADER_LENGTH, MAX_PAYLOAD } from './frame';
export type { Frame } from './frame';
export {
  PROTOCOL_VERSION,
  encodeJson,
  decodeJson,
  parseRequest,
  parseResponse,
  parseEvent,
  parseAck,
  parseHostHello,
  parseGuestHello,
} from './messages';
export type { HostHello, GuestHello, RequestMessage, ResponseMessage, EventMessage, ExitEvent, OomEvent, AckMessage } from './messages';
export { Session, Stream, DEFAULT_WINDOW, DEFAULT_EVENT_RING } from './session';
export type { Transport, Timers, Role, RequestHandler, SessionOptions, SessionStats, StreamOptions } from './session';
