import { Database } from "./database";

export type JournalKind = "event" | "ephemeral";

export interface JournalEntry {
  seq: number;
  kind: JournalKind;
  body: string;
  attempts: number;
}

/**
 * The appservice transaction journal: events the homeserver pushed, stored before the
 * transaction is answered, replayed until handled. Repeats are refused by event key.
 */
export class JournalStore {
  constructor(private readonly db: Database) {}

  /** Journals a transaction's events in one SQLite transaction; returns how many were new. */
  append(entries: { key: string; kind: JournalKind; body: string }[]): number {
    const insert = this.db.prepare("INSERT OR IGNORE INTO appservice_journal (event_key, kind, body, received_at) VALUES (?, ?, ?, ?)");
    return this.db.transaction(() => {
      const now = Date.now();
      let added = 0;
      for (const e of entries) added += insert.run(e.key, e.kind, e.body, now).changes;
      return added;
    })();
  }

  /** Entries not yet handled, oldest first, after `afterSeq`. */
  pending(afterSeq = 0, limit = 500): JournalEntry[] {
    return this.db
      .prepare("SELECT seq, kind, body, attempts FROM appservice_journal WHERE done_at IS NULL AND seq > ? ORDER BY seq LIMIT ?")
      .all(afterSeq, limit) as JournalEntry[];
  }

  /**
   * Handled (or given up): the body is cut to its room id. The key stays to refuse a repeat,
   * the room id so that forgetting a user can find the entries of their rooms.
   */
  markDone(seq: number): void {
    this.db
      .prepare(
        "UPDATE appservice_journal SET done_at = ?, body = CASE WHEN json_type(body, '$.room_id') = 'text' THEN json_object('room_id', json_extract(body, '$.room_id')) END WHERE seq = ?",
      )
      .run(Date.now(), seq);
  }

  /** Drops every entry from these rooms, handled or not (their user asked to be forgotten); returns how many. */
  forgetRooms(roomIds: string[]): number {
    return this.db.prepare("DELETE FROM appservice_journal WHERE json_extract(body, '$.room_id') IN (SELECT value FROM json_each(?))").run(JSON.stringify(roomIds)).changes;
  }

  recordAttempt(seq: number): number {
    this.db.prepare("UPDATE appservice_journal SET attempts = attempts + 1 WHERE seq = ?").run(seq);
    return (this.db.prepare("SELECT attempts FROM appservice_journal WHERE seq = ?").get(seq) as { attempts: number } | undefined)?.attempts ?? 0;
  }

  /** Which of these keys have been journaled (handled or not, until pruned). */
  known(keys: string[]): Set<string> {
    if (keys.length === 0) return new Set();
    const rows = this.db.prepare("SELECT event_key FROM appservice_journal WHERE event_key IN (SELECT value FROM json_each(?))").all(JSON.stringify(keys)) as {
      event_key: string;
    }[];
    return new Set(rows.map((r) => r.event_key));
  }

  /** Rooms of timeline events journaled since `since` (ms since epoch), the most recent first. */
  roomsSince(since: number): string[] {
    const rows = this.db
      .prepare(
        "SELECT json_extract(body, '$.room_id') AS room, MAX(received_at) AS last FROM appservice_journal WHERE kind = 'event' AND received_at >= ? AND json_type(body, '$.room_id') = 'text' GROUP BY room ORDER BY last DESC",
      )
      .all(since) as { room: string }[];
    return rows.map((r) => r.room);
  }

  pendingCount(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM appservice_journal WHERE done_at IS NULL").get() as { n: number }).n;
  }

  /** Forgets handled entries older than `before` (ms since epoch); returns how many. */
  prune(before: number): number {
    return this.db.prepare("DELETE FROM appservice_journal WHERE done_at IS NOT NULL AND done_at < ?").run(before).changes;
  }
}
