import { Database } from "./database";

export interface ReactionRow {
  portalId: number;
  targetRemoteId: string;
  /** A remote user id, or the portal's Matrix user id for reactions sent from Matrix. */
  sender: string;
  emoji: string;
  eventId: string;
  remoteId: string;
  timestamp: number;
}

interface Raw {
  portal_id: number;
  target_remote_id: string;
  sender: string;
  emoji: string;
  event_id: string;
  remote_id: string;
  timestamp: number;
}

const fromRaw = (r: Raw): ReactionRow => ({
  portalId: r.portal_id,
  targetRemoteId: r.target_remote_id,
  sender: r.sender,
  emoji: r.emoji,
  eventId: r.event_id,
  remoteId: r.remote_id,
  timestamp: r.timestamp,
});

/** The reaction map: one current reaction per (portal, message, sender), with its Matrix and network ids. */
export class ReactionStore {
  constructor(private readonly db: Database) {}

  get(portalId: number, targetRemoteId: string, sender: string): ReactionRow | undefined {
    const raw = this.db.prepare("SELECT * FROM reactions WHERE portal_id = ? AND target_remote_id = ? AND sender = ?").get(portalId, targetRemoteId, sender) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  byEventId(eventId: string): ReactionRow | undefined {
    const raw = this.db.prepare("SELECT * FROM reactions WHERE event_id = ?").get(eventId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Records the sender's reaction on the target, replacing the one they had. */
  put(row: ReactionRow): void {
    this.db
      .prepare("INSERT OR REPLACE INTO reactions (portal_id, target_remote_id, sender, emoji, event_id, remote_id, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)")
      .run(row.portalId, row.targetRemoteId, row.sender, row.emoji, row.eventId, row.remoteId, row.timestamp);
  }

  delete(portalId: number, targetRemoteId: string, sender: string): void {
    this.db.prepare("DELETE FROM reactions WHERE portal_id = ? AND target_remote_id = ? AND sender = ?").run(portalId, targetRemoteId, sender);
  }
}
