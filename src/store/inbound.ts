import { Database } from "./database";

/** Messages and changes are remembered as seen once bridged (inbound_seen); receipts are not. */
export type InboundKind = "message" | "change" | "read" | "delivered";

export interface InboundItem {
  seq: number;
  portalId: number;
  receiver: string;
  remoteId: string;
  kind: InboundKind;
  payload: string;
  attempts: number;
  createdAt: number;
}

interface Raw {
  seq: number;
  portal_id: number;
  receiver: string;
  remote_id: string;
  kind: InboundKind;
  payload: string;
  attempts: number;
  created_at: number;
}

const fromRaw = (r: Raw): InboundItem => ({
  seq: r.seq,
  portalId: r.portal_id,
  receiver: r.receiver,
  remoteId: r.remote_id,
  kind: r.kind,
  payload: r.payload,
  attempts: r.attempts,
  createdAt: r.created_at,
});

/**
 * The durable network → Matrix queue: an event is committed here before the network is
 * acknowledged, and removed in the transaction that records what it became on Matrix.
 */
export class InboundStore {
  constructor(private readonly db: Database) {}

  /** Queues the event unless it is queued already (a redelivery); returns whether it was queued. */
  enqueue(portalId: number, receiver: string, remoteId: string, kind: InboundKind, payload: unknown): boolean {
    const info = this.db
      .prepare("INSERT OR IGNORE INTO inbound_queue (portal_id, receiver, remote_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .run(portalId, receiver, remoteId, kind, JSON.stringify(payload), Date.now());
    return info.changes === 1;
  }

  /** The oldest event waiting in a portal. */
  next(portalId: number): InboundItem | undefined {
    const row = this.db.prepare("SELECT * FROM inbound_queue WHERE portal_id = ? ORDER BY seq LIMIT 1").get(portalId) as Raw | undefined;
    return row && fromRaw(row);
  }

  portalsWithPending(): number[] {
    return (this.db.prepare("SELECT DISTINCT portal_id FROM inbound_queue ORDER BY portal_id").all() as { portal_id: number }[]).map((r) => r.portal_id);
  }

  recordAttempt(seq: number): void {
    this.db.prepare("UPDATE inbound_queue SET attempts = attempts + 1 WHERE seq = ?").run(seq);
  }

  remove(seq: number): void {
    this.db.prepare("DELETE FROM inbound_queue WHERE seq = ?").run(seq);
  }

  depth(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM inbound_queue").get() as { n: number }).n;
  }
}
