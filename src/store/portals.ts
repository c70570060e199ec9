import { Database } from "./database";

export type PortalKind = "dm" | "group";

export interface PortalRow {
  id: number;
  remoteChatId: string;
  receiver: string;
  kind: PortalKind;
  roomId: string | null;
  createdAt: number;
}

interface Raw {
  id: number;
  remote_chat_id: string;
  receiver: string;
  kind: PortalKind;
  room_id: string | null;
  created_at: number;
}

const fromRaw = (r: Raw): PortalRow => ({
  id: r.id,
  remoteChatId: r.remote_chat_id,
  receiver: r.receiver,
  kind: r.kind,
  roomId: r.room_id,
  createdAt: r.created_at,
});

/** Portals: remote chat (as seen by one Matrix user) ↔ Matrix room, with the remote participants. */
export class PortalStore {
  constructor(private readonly db: Database) {}

  get(id: number): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE id = ?").get(id) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  byChat(remoteChatId: string, receiver: string): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE remote_chat_id = ? AND receiver = ?").get(remoteChatId, receiver) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  byRoom(roomId: string): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE room_id = ?").get(roomId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Rooms of portals with a bridged message (either direction) since `since` (ms since epoch), the most recent first. */
  roomsActiveSince(since: number): string[] {
    const rows = this.db
      .prepare(
        "SELECT p.room_id AS room FROM portals p JOIN messages m ON m.portal_id = p.id WHERE p.room_id IS NOT NULL AND m.timestamp >= ? GROUP BY p.id ORDER BY MAX(m.timestamp) DESC",
      )
      .all(since) as { room: string }[];
    return rows.map((r) => r.room);
  }

  /**
   * Creates the portal row (without a room yet) unless one exists for this chat and receiver;
   * the UNIQUE constraint makes this the one place a race between two creators is decided.
   */
  getOrCreate(remoteChatId: string, receiver: string, kind: PortalKind, participants: string[]): PortalRow {
    return this.db.transaction(() => {
      const existing = this.byChat(remoteChatId, receiver);
      if (existing) return existing;
      const info = this.db.prepare("INSERT INTO portals (remote_chat_id, receiver, kind, created_at) VALUES (?, ?, ?, ?)").run(remoteChatId, receiver, kind, Date.now());
      const insert = this.db.prepare("INSERT OR IGNORE INTO portal_participants (portal_id, remote_user_id) VALUES (?, ?)");
      for (const p of participants) insert.run(info.lastInsertRowid, p);
      return this.get(Number(info.lastInsertRowid))!;
    })();
  }

  setRoom(id: number, roomId: string | null): void {
    this.db.prepare("UPDATE portals SET room_id = ? WHERE id = ?").run(roomId, id);
  }

  participants(id: number): string[] {
    return (this.db.prepare("SELECT remote_user_id FROM portal_participants WHERE portal_id = ? ORDER BY remote_user_id").all(id) as { remote_user_id: string }[]).map(
      (r) => r.remote_user_id,
    );
  }

  forReceiver(receiver: string): PortalRow[] {
    return (this.db.prepare("SELECT * FROM portals WHERE receiver = ? ORDER BY id").all(receiver) as Raw[]).map(fromRaw);
  }

  delete(id: number): void {
    this.db.prepare("DELETE FROM portals WHERE id = ?").run(id);
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM portals WHERE room_id IS NOT NULL").get() as { n: number }).n;
  }
}
