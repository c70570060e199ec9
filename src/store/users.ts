import { Database } from "./database";

export type InboxMode = "unified" | "dedicated";

export interface MatrixUserRow {
  mxid: string;
  managementRoomId: string | null;
  thirdPartyEnabled: boolean;
  inboxMode: InboxMode;
  spaceRoomId: string | null;
  createdAt: number;
}

interface Raw {
  mxid: string;
  management_room_id: string | null;
  third_party_enabled: number;
  inbox_mode: InboxMode;
  space_room_id: string | null;
  created_at: number;
}

const fromRaw = (r: Raw): MatrixUserRow => ({
  mxid: r.mxid,
  managementRoomId: r.management_room_id,
  thirdPartyEnabled: r.third_party_enabled === 1,
  inboxMode: r.inbox_mode,
  spaceRoomId: r.space_room_id,
  createdAt: r.created_at,
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
    this.db
      .prepare("INSERT OR IGNORE INTO matrix_users (mxid, third_party_enabled, created_at) VALUES (?, ?, ?)")
      .run(mxid, defaults.thirdPartyEnabled ? 1 : 0, Date.now());
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
}
