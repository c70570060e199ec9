import { Database } from "./database";

export interface MessageRow {
  portalId: number;
  remoteId: string;
  part: number;
  eventId: string;
  sender: string;
  timestamp: number;
  /** The network id of the message this one replies to. */
  replyTo?: string | null;
}

interface Raw {
  portal_id: number;
  remote_id: string;
  part: number;
  event_id: string;
  sender: string;
  timestamp: number;
  reply_to: string | null;
}

const fromRaw = (r: Raw): MessageRow => ({
  portalId: r.portal_id,
  remoteId: r.remote_id,
  part: r.part,
  eventId: r.event_id,
  sender: r.sender,
  timestamp: r.timestamp,
  replyTo: r.reply_to,
});

/** The message map: remote message id ↔ Matrix event id, per portal. */
export class MessageStore {
  constructor(private readonly db: Database) {}

  insert(row: MessageRow): void {
    this.db
      .prepare("INSERT OR IGNORE INTO messages (portal_id, remote_id, part, event_id, sender, timestamp, reply_to) VALUES (?, ?, ?, ?, ?, ?, ?)")
      .run(row.portalId, row.remoteId, row.part, row.eventId, row.sender, row.timestamp, row.replyTo ?? null);
  }

  byRemoteId(portalId: number, remoteId: string, part = 0): MessageRow | undefined {
    const raw = this.db.prepare("SELECT * FROM messages WHERE portal_id = ? AND remote_id = ? AND part = ?").get(portalId, remoteId, part) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  byEventId(eventId: string): MessageRow | undefined {
    const raw = this.db.prepare("SELECT * FROM messages WHERE event_id = ?").get(eventId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Forgets a message (deleted for everyone) and the reactions on it. */
  delete(portalId: number, remoteId: string): void {
    this.db.prepare("DELETE FROM messages WHERE portal_id = ? AND remote_id = ?").run(portalId, remoteId);
    this.db.prepare("DELETE FROM reactions WHERE portal_id = ? AND target_remote_id = ?").run(portalId, remoteId);
  }

  /** Messages not sent by `exceptSender` with afterTs < timestamp <= upToTs, oldest first. */
  receivedBetween(portalId: number, exceptSender: string, afterTs: number, upToTs: number, limit: number): MessageRow[] {
    const rows = this.db
      .prepare("SELECT * FROM messages WHERE portal_id = ? AND sender != ? AND part = 0 AND timestamp > ? AND timestamp <= ? ORDER BY timestamp, remote_id LIMIT ?")
      .all(portalId, exceptSender, afterTs, upToTs, limit) as Raw[];
    return rows.map(fromRaw);
  }

  countInPortal(portalId: number): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM messages WHERE portal_id = ?").get(portalId) as { n: number }).n;
  }
}
