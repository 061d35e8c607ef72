import { Any, type MessageFns } from './gen/google/protobuf/any';
import {
  TaskCheckpointed,
  TaskCreate,
  TaskDelete,
  TaskExecAdded,
  TaskExecStarted,
  TaskExit,
  TaskOOM,
  TaskPaused,
  TaskResumed,
  TaskStart,
} from './gen/containerd/events/task';

export type { MessageFns };

/** JSON Any type URLs containerd uses for OCI runtime-spec objects (value = JSON text, not protobuf). */
export const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
export const OCI_LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';

export type AnyErrorCode = 'type_mismatch' | 'decode_failed' | 'invalid_json' | 'unknown_type';

export class AnyError extends Error {
  override readonly name = 'AnyError';
  constructor(
    readonly code: AnyErrorCode,
    message: string,
    readonly typeUrl: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The message name of an Any: the part after the last '/', so both `containerd.events.TaskExit`
 *  and `type.googleapis.com/containerd.events.TaskExit` give `containerd.events.TaskExit`. */
export function anyTypeName(any: Pick<Any, 'typeUrl'>): string {
  const slash = any.typeUrl.lastIndexOf('/');
  return slash < 0 ? any.typeUrl : any.typeUrl.slice(slash + 1);
}

/** Packs a protobuf message the way containerd does: type_url is the BARE full name. */
export function packAny<T>(typeName: string, fns: MessageFns<T>, msg: T): Any {
  if (typeName === '' || typeName.includes('/')) {
    throw new AnyError('unknown_type', `packAny: expected a bare full message name, got "${typeName}"`, typeName);
  }
  const bytes = fns.encode(msg).finish();
  return { typeUrl: typeName, value: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

/** Decodes an Any's value. With `expectedTypeName`, a different type name (either URL form) is an AnyError. */
export function unpackAny<T>(any: Any, fns: MessageFns<T>, expectedTypeName?: string): T {
  if (expectedTypeName !== undefined && anyTypeName(any) !== expectedTypeName) {
    throw new AnyError('type_mismatch', `expected Any of ${expectedTypeName}, got "${any.typeUrl}"`, any.typeUrl);
  }
  try {
    return fns.decode(any.value);
  } catch (err) {
    throw new AnyError('decode_failed', `cannot decode Any "${any.typeUrl}": ${(err as Error).message}`, any.typeUrl, { cause: err });
  }
}

/** containerd's JSON Anys (OCI Process, LinuxResources): value is UTF-8 JSON. */
export function packJsonAny(typeUrl: string, obj: unknown): Any {
  const text = JSON.stringify(obj);
  if (text === undefined) throw new AnyError('invalid_json', 'packJsonAny: value is not JSON-serialisable', typeUrl);
  return { typeUrl, value: Buffer.from(text, 'utf8') };
}

/** Parses a JSON Any. With `expectedTypeUrl`, the full type URLs must match. The result is untyped JSON:
 *  callers validate its shape. */
export function unpackJsonAny<T = unknown>(any: Any, expectedTypeUrl?: string): T {
  if (expectedTypeUrl !== undefined && any.typeUrl !== expectedTypeUrl) {
    throw new AnyError('type_mismatch', `expected Any of ${expectedTypeUrl}, got "${any.typeUrl}"`, any.typeUrl);
  }
  const text = Buffer.from(any.value.buffer, any.value.byteOffset, any.value.byteLength).toString('utf8');
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new AnyError('invalid_json', `Any "${any.typeUrl}" does not hold JSON: ${(err as Error).message}`, any.typeUrl, { cause: err });
  }
}

// ---- task event registry: topic <-> event type name <-> codec ----

export const TASK_EVENTS = {
  '/tasks/create': { typeName: 'containerd.events.TaskCreate', fns: TaskCreate },
  '/tasks/start': { typeName: 'containerd.events.TaskStart', fns: TaskStart },
  '/tasks/exit': { typeName: 'containerd.events.TaskExit', fns: TaskExit },
  '/tasks/delete': { typeName: 'containerd.events.TaskDelete', fns: TaskDelete },
  '/tasks/exec-added': { typeName: 'containerd.events.TaskExecAdded', fns: TaskExecAdded },
  '/tasks/exec-started': { typeName: 'containerd.events.TaskExecStarted', fns: TaskExecStarted },
  '/tasks/oom': { typeName: 'containerd.events.TaskOOM', fns: TaskOOM },
  '/tasks/paused': { typeName: 'containerd.events.TaskPaused', fns: TaskPaused },
  '/tasks/resumed': { typeName: 'containerd.events.TaskResumed', fns: TaskResumed },
  '/tasks/checkpointed': { typeName: 'containerd.events.TaskCheckpointed', fns: TaskCheckpointed },
} as const;

export type TaskEventTopic = keyof typeof TASK_EVENTS;
export type TaskEventMessage<K extends TaskEventTopic> = (typeof TASK_EVENTS)[K]['fns'] extends MessageFns<infer T> ? T : never;
/** A decoded task event, discriminated by topic. */
export type DecodedTaskEvent = { [K in TaskEventTopic]: { topic: K; typeName: string; event: TaskEventMessage<K> } }[TaskEventTopic];

export function isTaskEventTopic(topic: string): topic is TaskEventTopic {
  return Object.prototype.hasOwnProperty.call(TASK_EVENTS, topic);
}

/** The topic for a task event type name (either type_url form), or undefined. */
export function taskEventTopicOf(typeUrl: string): TaskEventTopic | undefined {
  const name = anyTypeName({ typeUrl });
  for (const topic of Object.keys(TASK_EVENTS) as TaskEventTopic[]) {
    if (TASK_EVENTS[topic].typeName === name) return topic;
  }
  return undefined;
}

export function packTaskEvent<K extends TaskEventTopic>(topic: K, event: TaskEventMessage<K>): Any {
  const entry = TASK_EVENTS[topic] as { typeName: string; fns: MessageFns<TaskEventMessage<K>> } | undefined;
  if (entry === undefined) throw new AnyError('unknown_type', `unknown task event topic "${topic}"`, '');
  return packAny(entry.typeName, entry.fns, event);
}

/** Decodes a task event Any by its type name; an unknown type is an AnyError('unknown_type'). */
export function unpackTaskEvent(any: Any): DecodedTaskEvent {
  const topic = taskEventTopicOf(any.typeUrl);
  if (topic === undefined) throw new AnyError('unknown_type', `"${any.typeUrl}" is not a task event`, any.typeUrl);
  const entry = TASK_EVENTS[topic] as { typeName: string; fns: MessageFns<unknown> };
  return { topic, typeName: entry.typeName, event: unpackAny(any, entry.fns) } as DecodedTaskEvent;
}
