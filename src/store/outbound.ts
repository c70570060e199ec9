import { Database } from "./database";
import { PortalQueueTable, QueueItem } from "./portal-queue";

export interface OutboundItem extends QueueItem {
  eventId: string;
  sender: string;
  payload: string;
}

interface Raw {
  seq: number;
  portal_id: number;
  event_id: string;
  sender: string;
  payload: string;
  attempts: number;
  created_at: number;
}

const fromRaw = (r: Raw): OutboundItem => ({
  seq: r.seq,
  portalId: r.portal_id,
  eventId: r.event_id,
  sender: r.sender,
  payload: r.payload,
  attempts: r.attempts,
  createdAt: r.created_at,
});

/**
 * The durable Matrix → network queue and the record of handled Matrix events. An event is
 * enqueued and marked processed in one transaction, so a redelivered transaction is a no-op
 * and a crash never loses an accepted event.
 */
export class OutboundStore extends PortalQueueTable<OutboundItem, Raw> {
  constructor(db: Database) {
    super(db, "outbound_queue", fromRaw);
  }

  /** Returns false when the event was already processed (a duplicate delivery). */
  markProcessed(eventId: string): boolean {
    const info = this.db.prepare("INSERT OR IGNORE INTO processed_events (event_id, processed_at) VALUES (?, ?)").run(eventId, Date.now());
    return info.changes === 1;
  }

  wasProcessed(eventId: string): boolean {
    return this.db.prepare("SELECT 1 FROM processed_events WHERE event_id = ?").get(eventId) !== undefined;
  }

  /** Enqueues unless the event was seen before; returns whether it was enqueued. */
  enqueue(portalId: number, eventId: string, sender: string, payload: unknown): boolean {
    return this.db.transaction(() => {
      if (!this.markProcessed(eventId)) return false;
      this.db
        .prepare("INSERT INTO outbound_queue (portal_id, event_id, sender, payload, created_at) VALUES (?, ?, ?, ?, ?)")
        .run(portalId, eventId, sender, JSON.stringify(payload), Date.now());
      return true;
    })();
  }

  /** Everything waiting in a portal, oldest first. */
  pending(portalId: number): OutboundItem[] {
    return (this.db.prepare("SELECT * FROM outbound_queue WHERE portal_id = ? ORDER BY seq").all(portalId) as Raw[]).map(fromRaw);
  }

  /** Messages of one Matrix user waiting for the network. */
  depthForUser(mxid: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM outbound_queue WHERE portal_id IN (SELECT id FROM portals WHERE receiver = ?)").get(mxid) as { n: number }).n;
  }
}
