/**
 * The drain side of the one durable-queue primitive, used by both directions: items of a portal
 * are handled one at a time in the order they were queued, portals side by side; a failure is
 * counted on the row (so the count survives a restart) and the same item is tried again after
 * the Backoff delay, holding the items behind it; `resume()` after a restart picks up every
 * portal with rows left. The store side is src/store/portal-queue.ts.
 */
import { Backoff, BackoffPolicy, sleep } from "../util/backoff";
import { KeyedQueue } from "../util/keyed-queue";
import type { PortalQueueStore, QueueItem } from "../store/portal-queue";

export interface QueueHandler<Item extends QueueItem> {
  /**
   * Handles one item and takes it off the queue (on success, or when it is given up and
   * reported). Throwing means "try again later": the item stays first in its portal.
   */
  handle(item: Item): Promise<void>;
  /** After a failure was counted, before the delay: log it, tell the user once, etc. */
  onRetry(item: Item, err: unknown, attempts: number, delayMs: number): void;
  /** Whether the portal's queue must stop after a failure (its portal closed meanwhile). */
  abandoned?(portalId: number): boolean;
}

export class PortalQueueRunner<Item extends QueueItem> {
  private readonly queue = new KeyedQueue();
  /** Portals with a run queued that has not started yet (it will see anything queued meanwhile). */
  private readonly scheduled = new Set<number>();

  constructor(
    private readonly store: PortalQueueStore<Item>,
    private readonly handler: QueueHandler<Item>,
    private readonly retry: BackoffPolicy,
    private readonly stopping: () => boolean,
  ) {}

  /** Drains the portal's queue unless a run is already waiting to start. */
  kick(portalId: number): Promise<void> {
    if (this.scheduled.has(portalId)) return Promise.resolve();
    this.scheduled.add(portalId);
    return this.queue.run(`portal:${portalId}`, async () => {
      this.scheduled.delete(portalId);
      const backoff = new Backoff(this.retry);
      while (!this.stopping()) {
        const item = this.store.next(portalId);
        if (!item) return;
        try {
          await this.handler.handle(item);
          backoff.reset();
        } catch (err) {
          if (this.stopping() || this.handler.abandoned?.(portalId)) return;
          // Failures only are written: a message that goes through first time costs no extra write.
          const attempts = this.store.recordFailure(item.seq);
          const delay = backoff.next();
          this.handler.onRetry(item, err, attempts, delay);
          await sleep(delay);
        }
      }
    });
  }

  /** Every portal left with items by the previous run. */
  resume(): void {
    for (const portalId of this.store.portalsWithPending()) void this.kick(portalId);
  }

  /** Portals with work in progress (for metrics). */
  get busy(): number {
    return this.queue.size;
  }
}
