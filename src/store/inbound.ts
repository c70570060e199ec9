import { Database } from "./database";
import { PortalQueueTable, QueueItem } from "./portal-queue";

/** Messages and changes are remembered as seen once bridged (inbound_seen); receipts are not. A group change is a new state of a group. */
export type InboundKind = "message" | "change" | "read" | "delivered" | "group";

export interface InboundItem extends QueueItem {
  receiver: string;
  remoteId: string;
  kind: InboundKind;
  payload: string;
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
 * acknowledged, and removed in the transaction that records what it became on Matrix; and the
 * record of network messages already bridged (inbound_seen).
 */
export class InboundStore extends PortalQueueTable<InboundItem, Raw> {
  constructor(db: Database) {
    super(db, "inbound_queue", fromRaw);
  }

  /** Queues the event unless it is queued already (a redelivery); returns whether it was queued. */
  enqueue(portalId: number, receiver: string, remoteId: string, kind: InboundKind, payload: unknown): boolean {
    const info = this.db
      .prepare("INSERT OR IGNORE INTO inbound_queue (portal_id, receiver, remote_id, kind, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .run(portalId, receiver, remoteId, kind, JSON.stringify(payload), Date.now());
    return info.changes === 1;
  }

  /**
   * Queues a group's message or change for the group's one portal unless a copy of it was queued
   * before (each Matrix member's account receives its own copy): the copy is recorded as seen in
   * the transaction that queues it, so a crash never shows one twice. Returns whether it was queued.
   */
  enqueueGroup(portalId: number, receiver: string, remoteId: string, kind: InboundKind, payload: unknown): boolean {
    return this.db.transaction(() => {
      const first = this.db.prepare("INSERT OR IGNORE INTO group_seen (portal_id, remote_id, seen_at) VALUES (?, ?, ?)").run(portalId, remoteId, Date.now());
      if (first.changes !== 1) return false;
      return this.enqueue(portalId, receiver, remoteId, kind, payload);
    })();
  }

  /** The messages (not changes or receipts) waiting in a portal, oldest first. */
  messagesOf(portalId: number): InboundItem[] {
    return (this.db.prepare("SELECT * FROM inbound_queue WHERE portal_id = ? AND kind = 'message' ORDER BY seq").all(portalId) as Raw[]).map(fromRaw);
  }

  /** Queues items again, in their order, in another portal (their rows must be gone). */
  requeue(items: readonly InboundItem[], portalId: number): void {
    const insert = this.db.prepare("INSERT INTO inbound_queue (portal_id, receiver, remote_id, kind, payload, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)");
    for (const i of items) insert.run(portalId, i.receiver, i.remoteId, i.kind, i.payload, i.attempts, i.createdAt);
  }

  /** Inbound de-duplication: true the first time a remote message is seen for a receiver. */
  markInboundSeen(receiver: string, remoteMsgId: string): boolean {
    const info = this.db.prepare("INSERT OR IGNORE INTO inbound_seen (receiver, remote_msg_id, seen_at) VALUES (?, ?, ?)").run(receiver, remoteMsgId, Date.now());
    return info.changes === 1;
  }

  inboundSeen(receiver: string, remoteMsgId: string): boolean {
    return this.db.prepare("SELECT 1 FROM inbound_seen WHERE receiver = ? AND remote_msg_id = ?").get(receiver, remoteMsgId) !== undefined;
  }
}
