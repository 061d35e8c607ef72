/**
 * One async mutex per key: operations on the same sandbox id run one after another, different ids run concurrently.
 * A key's entry is dropped when its queue drains, so ids that come and go do not accumulate.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  /** Number of keys with a running or queued operation (for tests and leak checks). */
  get size(): number {
    return this.tails.size;
  }
}
