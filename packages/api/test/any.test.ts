import {
  AnyError, OCI_PROCESS_TYPE_URL, TASK_EVENTS, anyTypeName, dateFromTimestamp, events, google, isTaskEventTopic, isZeroTimestamp,
  packAny, packJsonAny, packTaskEvent, runcOptions, taskEventTopicOf, timestampFromDate, timestampNow, unpackAny, unpackJsonAny,
  unpackTaskEvent,
} from '@kuasar/api';

const opts = runcOptions.Options.fromPartial({ binaryName: 'crun', systemdCgroup: true });

describe('protobuf Anys', () => {
  test('packAny writes the bare full name, as containerd does', () => {
    const any = packAny('containerd.runc.v1.Options', runcOptions.Options, opts);
    expect(any.typeUrl).toBe('containerd.runc.v1.Options');
    expect(Buffer.from(any.value)).toEqual(Buffer.from(runcOptions.Options.encode(opts).finish()));
  });

  test('packAny refuses a URL-form name', () => {
    expect(() => packAny('type.googleapis.com/containerd.runc.v1.Options', runcOptions.Options, opts)).toThrow(AnyError);
  });

  test.each(['containerd.runc.v1.Options', 'type.googleapis.com/containerd.runc.v1.Options'])('unpackAny accepts %s', (typeUrl) => {
    const value = Buffer.from(runcOptions.Options.encode(opts).finish());
    const any = { typeUrl, value };
    expect(anyTypeName(any)).toBe('containerd.runc.v1.Options');
    expect(unpackAny(any, runcOptions.Options, 'containerd.runc.v1.Options')).toEqual(opts);
  });

  test('unpackAny with a different expected type is a type_mismatch', () => {
    const any = packAny('containerd.runc.v1.Options', runcOptions.Options, opts);
    expect(() => unpackAny(any, runcOptions.Options, 'runtimeoptions.v1.Options')).toThrow(expect.objectContaining({ code: 'type_mismatch' }));
  });

  test('unpackAny on garbage bytes is a decode_failed AnyError, not a crash', () => {
    const any = { typeUrl: 'containerd.runc.v1.Options', value: Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]) };
    expect(() => unpackAny(any, runcOptions.Options)).toThrow(expect.objectContaining({ name: 'AnyError', code: 'decode_failed' }));
  });

  test('an Any survives its own codec', () => {
    const any = packAny('containerd.runc.v1.Options', runcOptions.Options, opts);
    const back = google.Any.decode(google.Any.encode(any).finish());
    expect(unpackAny(back, runcOptions.Options)).toEqual(opts);
  });
});

describe('JSON Anys', () => {
  const process = { args: ['sh', '-c', 'true'], cwd: '/', env: ['PATH=/bin'], user: { uid: 0, gid: 0 }, terminal: false };

  test('round trip of an OCI Process', () => {
    const any = packJsonAny(OCI_PROCESS_TYPE_URL, process);
    expect(Buffer.from(any.value).toString('utf8')).toBe(JSON.stringify(process));
    expect(unpackJsonAny(any, OCI_PROCESS_TYPE_URL)).toEqual(process);
  });

  test('reads a JSON Any produced by Go (byte-for-byte JSON text)', () => {
    const any = { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from('{"terminal":true,"user":{"uid":1,"gid":2},"args":["ls"],"cwd":"/"}') };
    expect(unpackJsonAny<{ user: { uid: number } }>(any).user.uid).toBe(1);
  });

  test('wrong URL and non-JSON are typed errors', () => {
    expect(() => unpackJsonAny(packJsonAny('x/y', {}), OCI_PROCESS_TYPE_URL)).toThrow(expect.objectContaining({ code: 'type_mismatch' }));
    expect(() => unpackJsonAny({ typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from([0x0a, 0x01]) })).toThrow(expect.objectContaining({ code: 'invalid_json' }));
    expect(() => packJsonAny('x', undefined)).toThrow(AnyError);
  });
});

describe('task event registry', () => {
  test('every topic maps to containerd.events.<Name> and back', () => {
    for (const [topic, entry] of Object.entries(TASK_EVENTS)) {
      expect(entry.typeName).toMatch(/^containerd\.events\.Task[A-Za-z]+$/);
      expect(taskEventTopicOf(entry.typeName)).toBe(topic);
      expect(taskEventTopicOf(`type.googleapis.com/${entry.typeName}`)).toBe(topic);
    }
    expect(Object.keys(TASK_EVENTS).sort()).toEqual(
      ['/tasks/checkpointed', '/tasks/create', '/tasks/delete', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/oom', '/tasks/paused', '/tasks/resumed', '/tasks/start'],
    );
  });

  test('pack and unpack a TaskExit', () => {
    const exit = events.TaskExit.fromPartial({ containerId: 'c1', id: 'e1', pid: 42, exitStatus: 137, exitedAt: timestampNow() });
    const any = packTaskEvent('/tasks/exit', exit);
    expect(any.typeUrl).toBe('containerd.events.TaskExit');
    const decoded = unpackTaskEvent(any);
    expect(decoded.topic).toBe('/tasks/exit');
    if (decoded.topic !== '/tasks/exit') throw new Error('unreachable');
    expect(decoded.event).toEqual(exit);
  });

  test('unknown topics and types are rejected', () => {
    expect(isTaskEventTopic('/tasks/exit')).toBe(true);
    expect(isTaskEventTopic('/tasks/nope')).toBe(false);
    expect(isTaskEventTopic('toString')).toBe(false);
    expect(taskEventTopicOf('containerd.events.SandboxExit')).toBeUndefined();
    expect(() => unpackTaskEvent({ typeUrl: 'containerd.events.SandboxExit', value: Buffer.alloc(0) })).toThrow(expect.objectContaining({ code: 'unknown_type' }));
    expect(() => packTaskEvent('/tasks/nope' as '/tasks/oom', { containerId: 'x' })).toThrow(AnyError);
  });
});

describe('timestamps', () => {
  test('Date <-> Timestamp keeps milliseconds', () => {
    const d = new Date('2026-11-28T10:20:30.123Z');
    const ts = timestampFromDate(d);
    expect(ts).toEqual({ seconds: BigInt(Math.floor(d.getTime() / 1000)), nanos: 123_000_000 });
    expect(dateFromTimestamp(ts).getTime()).toBe(d.getTime());
  });

  test('dates before the epoch keep nanos non-negative', () => {
    const ts = timestampFromDate(new Date(-1));
    expect(ts).toEqual({ seconds: -1n, nanos: 999_000_000 });
    expect(dateFromTimestamp(ts).getTime()).toBe(-1);
  });

  test('timestampNow is close to the clock and never zero', () => {
    const before = Date.now();
    const ts = timestampNow();
    expect(dateFromTimestamp(ts).getTime()).toBeGreaterThanOrEqual(before);
    expect(dateFromTimestamp(ts).getTime()).toBeLessThanOrEqual(Date.now());
    expect(isZeroTimestamp(ts)).toBe(false);
    expect(isZeroTimestamp(undefined)).toBe(true);
    expect(isZeroTimestamp({ seconds: 0n, nanos: 0 })).toBe(true);
  });

  test('an invalid Date is rejected', () => {
    expect(() => timestampFromDate(new Date('nope'))).toThrow(RangeError);
  });
});
