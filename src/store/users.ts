import { Database } from "./database";

export type InboxMode = "unified" | "dedicated";

export interface MatrixUserRow {
  mxid: string;
  managementRoomId: string | null;
  thirdPartyEnabled: boolean;
  inboxMode: InboxMode;
  spaceRoomId: string | null;
  createdAt: number;
  /** When the user got the one-time explanation of Third-Party Chats, or null. */
  explainedAt: number | null;
}

/** A WhatsApp user turned away while this user had Third-Party Chats off. */
export interface RefusedContact {
  remoteId: string;
  attempts: number;
  firstAt: number;
  lastAt: number;
}

/** What erasing a user deleted, for the user's receipt. */
export interface ErasedUserData {
  portals: number;
  messages: number;
  queued: number;
  refusedContacts: number;
}

interface Raw {
  mxid: string;
  management_room_id: string | null;
  third_party_enabled: number;
  inbox_mode: InboxMode;
  space_room_id: string | null;
  created_at: number;
  explained_at: number | null;
}

const fromRaw = (r: Raw): MatrixUserRow => ({
  mxid: r.mxid,
  managementRoomId: r.management_room_id,
  thirdPartyEnabled: r.third_party_enabled === 1,
  inboxMode: r.inbox_mode,
  spaceRoomId: r.space_room_id,
  createdAt: r.created_at,
  explainedAt: r.explained_at,
});

/** Matrix users of the bridge and their settings. */
export class UserStore {
  constructor(private readonly db: Database) {}

  get(mxid: string): MatrixUserRow | undefined {
    const raw = this.db.prepare("SELECT * FROM matrix_users WHERE mxid = ?").get(mxid) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Returns the user, creating it with the given defaults on first sight. */
  getOrCreate(mxid: string, defaults: { thirdPartyEnabled: boolean }): MatrixUserRow {
    this.db.prepare("INSERT OR IGNORE INTO matrix_users (mxid, third_party_enabled, created_at) VALUES (?, ?, ?)").run(mxid, defaults.thirdPartyEnabled ? 1 : 0, Date.now());
    return this.get(mxid)!;
  }

  all(): MatrixUserRow[] {
    return (this.db.prepare("SELECT * FROM matrix_users ORDER BY mxid").all() as Raw[]).map(fromRaw);
  }

  setManagementRoom(mxid: string, roomId: string | null): void {
    this.db.prepare("UPDATE matrix_users SET management_room_id = ? WHERE mxid = ?").run(roomId, mxid);
  }

  byManagementRoom(roomId: string): MatrixUserRow | undefined {
    const raw = this.db.prepare("SELECT * FROM matrix_users WHERE management_room_id = ?").get(roomId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  setThirdPartyEnabled(mxid: string, enabled: boolean): void {
    this.db.prepare("UPDATE matrix_users SET third_party_enabled = ? WHERE mxid = ?").run(enabled ? 1 : 0, mxid);
  }

  setInbox(mxid: string, mode: InboxMode, spaceRoomId: string | null): void {
    this.db.prepare("UPDATE matrix_users SET inbox_mode = ?, space_room_id = ? WHERE mxid = ?").run(mode, spaceRoomId, mxid);
  }

  delete(mxid: string): void {
    this.db.prepare("DELETE FROM matrix_users WHERE mxid = ?").run(mxid);
  }

  bySpaceRoom(roomId: string): MatrixUserRow | undefined {
    const raw = this.db.prepare("SELECT * FROM matrix_users WHERE space_room_id = ?").get(roomId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Records that the user got the explanation; true only the first time. */
  markExplained(mxid: string): boolean {
    return this.db.prepare("UPDATE matrix_users SET explained_at = ? WHERE mxid = ? AND explained_at IS NULL").run(Date.now(), mxid).changes === 1;
  }

  /** Counts an attempt of a WhatsApp user refused while off; returns the attempts so far. */
  recordRefused(mxid: string, remoteId: string, at: number): number {
    this.db
      .prepare(
        `INSERT INTO refused_contacts (mxid, remote_id, attempts, first_at, last_at) VALUES (?, ?, 1, ?, ?)
         ON CONFLICT (mxid, remote_id) DO UPDATE SET attempts = attempts + 1, last_at = excluded.last_at`,
      )
      .run(mxid, remoteId, at, at);
    return (this.db.prepare("SELECT attempts FROM refused_contacts WHERE mxid = ? AND remote_id = ?").get(mxid, remoteId) as { attempts: number }).attempts;
  }

  refusedContacts(mxid: string): RefusedContact[] {
    const rows = this.db.prepare("SELECT * FROM refused_contacts WHERE mxid = ? ORDER BY last_at DESC").all(mxid) as {
      remote_id: string;
      attempts: number;
      first_at: number;
      last_at: number;
    }[];
    return rows.map((r) => ({ remoteId: r.remote_id, attempts: r.attempts, firstAt: r.first_at, lastAt: r.last_at }));
  }

  clearRefused(mxid: string): void {
    this.db.prepare("DELETE FROM refused_contacts WHERE mxid = ?").run(mxid);
  }

  /** Users by their Third-Party Chats setting (for metrics). */
  countBySetting(): { on: number; off: number } {
    const row = this.db.prepare("SELECT SUM(third_party_enabled) AS on_, COUNT(*) AS n FROM matrix_users").get() as { on_: number | null; n: number };
    return { on: row.on_ ?? 0, off: row.n - (row.on_ ?? 0) };
  }

  /**
   * Deletes everything the bridge keeps about a Matrix user: the user row with its settings and
   * refused contacts, its portals with their participants, message map and queued messages, and
   * the record of network messages it received. One transaction: all or nothing.
   */
  erase(mxid: string): ErasedUserData {
    return this.db.transaction(() => {
      const count = (sql: string) => (this.db.prepare(sql).get(mxid) as { n: number }).n;
      const erased: ErasedUserData = {
        portals: count("SELECT COUNT(*) AS n FROM portals WHERE receiver = ?"),
        messages: count("SELECT COUNT(*) AS n FROM messages WHERE portal_id IN (SELECT id FROM portals WHERE receiver = ?)"),
        queued: count("SELECT COUNT(*) AS n FROM outbound_queue WHERE portal_id IN (SELECT id FROM portals WHERE receiver = ?)"),
        refusedContacts: count("SELECT COUNT(*) AS n FROM refused_contacts WHERE mxid = ?"),
      };
      // Foreign keys cascade to participants, messages, the outbound queue, reactions and read markers.
      this.db.prepare("DELETE FROM portals WHERE receiver = ?").run(mxid);
      this.db.prepare("DELETE FROM inbound_seen WHERE receiver = ?").run(mxid);
      this.db.prepare("DELETE FROM matrix_users WHERE mxid = ?").run(mxid);
      return erased;
    })();
  }
}
