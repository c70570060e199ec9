/**
 * Runs tasks one at a time per key, keys in parallel: order within a chat, chats side by side.
 * A key's entry is dropped once its queue drains, so memory does not grow with every key seen.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Resolves once every task queued so far (on any key) has settled. */
  async idle(): Promise<void> {
    await Promise.all([...this.tails.values()]);
  }

  /** Number of keys with queued or running work. */
  get size(): number {
    return this.tails.size;
  }
}
