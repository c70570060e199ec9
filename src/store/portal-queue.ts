import { Database } from "./database";

/** What every row of a durable per-portal queue has: its order, its portal and how often it failed. */
export interface QueueItem {
  seq: number;
  portalId: number;
  /** Failed attempts so far (a try that succeeds costs no write); survives restarts. */
  attempts: number;
  /** When it was queued (ms since epoch). */
  createdAt: number;
}

/** The store side of the queue primitive that bridge/portal-queue-runner.ts drains. */
export interface PortalQueueStore<Item extends QueueItem> {
  /** The oldest item waiting in a portal. */
  next(portalId: number): Item | undefined;
  /** Counts one failed attempt; returns the count now. */
  recordFailure(seq: number): number;
  remove(seq: number): void;
  /** Portals with items waiting (to resume after a restart). */
  portalsWithPending(): number[];
  depth(): number;
}

/**
 * What the two durable per-portal queues (inbound_queue, outbound_queue) share: rows ordered by
 * seq within a portal. Each table's own columns are added by its enqueue, which runs inside the
 * transaction that records the event it queues.
 */
export abstract class PortalQueueTable<Item extends QueueItem, Raw> implements PortalQueueStore<Item> {
  protected constructor(
    protected readonly db: Database,
    private readonly table: "inbound_queue" | "outbound_queue",
    protected readonly fromRaw: (row: Raw) => Item,
  ) {}

  next(portalId: number): Item | undefined {
    const row = this.db.prepare(`SELECT * FROM ${this.table} WHERE portal_id = ? ORDER BY seq LIMIT 1`).get(portalId) as Raw | undefined;
    return row && this.fromRaw(row);
  }

  /** Every item waiting, oldest first per portal. */
  all(): Item[] {
    return (this.db.prepare(`SELECT * FROM ${this.table} ORDER BY portal_id, seq`).all() as Raw[]).map(this.fromRaw);
  }

  portalsWithPending(): number[] {
    return (this.db.prepare(`SELECT DISTINCT portal_id FROM ${this.table} ORDER BY portal_id`).all() as { portal_id: number }[]).map((r) => r.portal_id);
  }

  recordFailure(seq: number): number {
    const row = this.db.prepare(`UPDATE ${this.table} SET attempts = attempts + 1 WHERE seq = ? RETURNING attempts`).get(seq) as { attempts: number } | undefined;
    return row?.attempts ?? 0;
  }

  remove(seq: number): void {
    this.db.prepare(`DELETE FROM ${this.table} WHERE seq = ?`).run(seq);
  }

  depth(): number {
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM ${this.table}`).get() as { n: number }).n;
  }
}
