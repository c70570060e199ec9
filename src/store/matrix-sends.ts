import { Database } from "./database";

export interface MatrixSendRow {
  roomId: string;
  txnId: string;
  sender: string;
  startedAt: number;
  eventId: string | null;
}

interface Raw {
  room_id: string;
  txn_id: string;
  sender: string;
  started_at: number;
  event_id: string | null;
}

/**
 * Matrix sends by (room, transaction id). A row without an event id is a send that was
 * started but whose answer was never recorded (a crash, an outage): before repeating it the
 * room is searched, because the homeserver forgets appservice transaction ids on restart.
 */
export class MatrixSendStore {
  constructor(private readonly db: Database) {}

  get(roomId: string, txnId: string): MatrixSendRow | undefined {
    const raw = this.db.prepare("SELECT * FROM matrix_sends WHERE room_id = ? AND txn_id = ?").get(roomId, txnId) as Raw | undefined;
    return raw && { roomId: raw.room_id, txnId: raw.txn_id, sender: raw.sender, startedAt: raw.started_at, eventId: raw.event_id };
  }

  /** Records that a send is about to be made (keeps the first start time on a retry). */
  begin(roomId: string, txnId: string, sender: string): void {
    this.db.prepare("INSERT OR IGNORE INTO matrix_sends (room_id, txn_id, sender, started_at) VALUES (?, ?, ?, ?)").run(roomId, txnId, sender, Date.now());
  }

  finish(roomId: string, txnId: string, eventId: string): void {
    this.db.prepare("UPDATE matrix_sends SET event_id = ? WHERE room_id = ? AND txn_id = ?").run(eventId, roomId, txnId);
  }

  /** Whether an event is known as the result of some recorded send in the room. */
  hasEvent(roomId: string, eventId: string): boolean {
    return this.db.prepare("SELECT 1 FROM matrix_sends WHERE room_id = ? AND event_id = ?").get(roomId, eventId) !== undefined;
  }

  /** Drops every send in these rooms, finished or not (their user asked to be forgotten); returns how many. */
  forgetRooms(roomIds: string[]): number {
    return this.db.prepare("DELETE FROM matrix_sends WHERE room_id IN (SELECT value FROM json_each(?))").run(JSON.stringify(roomIds)).changes;
  }

  /** Forgets finished sends started before `before`; unfinished ones stay until they finish. */
  prune(before: number): number {
    return this.db.prepare("DELETE FROM matrix_sends WHERE event_id IS NOT NULL AND started_at < ?").run(before).changes;
  }
}
