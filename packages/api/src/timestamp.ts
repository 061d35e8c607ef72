import type { Timestamp } from './gen/google/protobuf/timestamp';

const MS_PER_S = 1000;
const NS_PER_MS = 1_000_000;

export function timestampFromDate(d: Date): Timestamp {
  const ms = d.getTime();
  if (!Number.isFinite(ms)) throw new RangeError('timestampFromDate: invalid Date');
  // floor keeps nanos in [0, 1e9) for dates before the epoch, as protobuf requires.
  const seconds = Math.floor(ms / MS_PER_S);
  return { seconds: BigInt(seconds), nanos: (ms - seconds * MS_PER_S) * NS_PER_MS };
}

export function timestampNow(): Timestamp {
  return timestampFromDate(new Date());
}

export function dateFromTimestamp(ts: Timestamp): Date {
  return new Date(Number(ts.seconds) * MS_PER_S + Math.floor(ts.nanos / NS_PER_MS));
}

// containerd rejects forwarded envelopes whose timestamp is unset or zero.
export function isZeroTimestamp(ts: Timestamp | undefined): boolean {
  return ts === undefined || (ts.seconds === 0n && ts.nanos === 0);
}
