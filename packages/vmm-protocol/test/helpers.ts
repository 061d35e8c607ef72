import { Session, type SessionOptions, type Transport } from '../src';

/**
 * Two sessions joined by an in-memory byte pipe. Delivery is asynchronous (microtask-free queue
 * drained by pump()) so tests control interleaving; chunks can be split to exercise the decoder.
 */
export class Link {
  readonly host: Session;
  readonly guest: Session;
  toGuest: Uint8Array[] = [];
  toHost: Uint8Array[] = [];
  connected = false;

  constructor(hostOpts: Partial<SessionOptions> = {}, guestOpts: Partial<SessionOptions> = {}) {
    this.host = new Session({ role: 'host', helloRetryMs: 50, ...hostOpts });
    this.guest = new Session({
      role: 'guest',
      guestInfo: () => ({ agent: 'test', uptimeMs: 1, kernelRelease: 'k', bootId: 'boot-1' }),
      ...guestOpts,
    });
  }

  connect(): void {
    this.connected = true;
    const epoch = {};
    this.epoch = epoch;
    const hostT: Transport = { write: (b) => this.epoch === epoch && this.toGuest.push(b) };
    const guestT: Transport = { write: (b) => this.epoch === epoch && this.toHost.push(b) };
    this.guest.attach(guestT);
    this.host.attach(hostT);
  }

  private epoch: object | undefined;

  disconnect(): void {
    this.connected = false;
    this.epoch = undefined;
    this.toGuest = [];
    this.toHost = [];
    this.host.detach();
    this.guest.detach();
  }

  /** Delivers queued bytes both ways until quiet. */
  pump(maxRounds = 1000): void {
    for (let i = 0; i < maxRounds; i++) {
      if (this.toGuest.length === 0 && this.toHost.length === 0) return;
      const g = this.toGuest;
      const h = this.toHost;
      this.toGuest = [];
      this.toHost = [];
      for (const b of g) this.guest.receive(b);
      for (const b of h) this.host.receive(b);
    }
    throw new Error('link did not go quiet');
  }

  dispose(): void {
    this.host.dispose();
    this.guest.dispose();
  }
}

/** Lets promise callbacks (handlers, request resolutions) run, pumping between. */
export async function settle(link: Link, rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    link.pump();
    await new Promise((r) => setImmediate(r));
  }
  link.pump();
}

/** Deterministic PRNG (mulberry32) so fuzz failures reproduce from the printed seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
