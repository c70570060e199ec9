import { Database } from "./database";

export type PortalKind = "dm" | "group";

export interface PortalRow {
  id: number;
  remoteChatId: string;
  /** The Matrix user a DM is seen by; null for a group, whose Matrix users are its members (PortalStore.members). */
  receiver: string | null;
  kind: PortalKind;
  roomId: string | null;
  createdAt: number;
  /** A group's name as last shown in its room (null for DMs). */
  name: string | null;
  /** The rev of the group state last shown in the room (0: none yet; always 0 for DMs). */
  groupRev: number;
}

/** A group portal's receiver column: one row per group, whoever of the bridge's users is in it. */
const GROUP_RECEIVER = "";

interface Raw {
  id: number;
  remote_chat_id: string;
  receiver: string;
  kind: PortalKind;
  room_id: string | null;
  created_at: number;
  name: string | null;
  group_rev: number;
}

const fromRaw = (r: Raw): PortalRow => ({
  id: r.id,
  remoteChatId: r.remote_chat_id,
  receiver: r.kind === "group" ? null : r.receiver,
  kind: r.kind,
  roomId: r.room_id,
  createdAt: r.created_at,
  name: r.name,
  groupRev: r.group_rev,
});

/**
 * Portals: remote chat ↔ Matrix room, with the remote participants. A DM's portal is the chat as
 * seen by one Matrix user; a group's is one for the whole group, with its Matrix members.
 */
export class PortalStore {
  constructor(private readonly db: Database) {}

  get(id: number): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE id = ?").get(id) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** A DM's portal as seen by `receiver`. */
  byChat(remoteChatId: string, receiver: string): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE remote_chat_id = ? AND receiver = ? AND kind = 'dm'").get(remoteChatId, receiver) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** A group's one portal. */
  byGroup(remoteChatId: string): PortalRow | undefined {
    const raw = this.db.prepare("SELECT * FROM portals WHERE remote_chat_id = ? AND receiver = ? AND kind = 'group'").get(remoteChatId, GROUP_RECEIVER) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Creates a group's portal row (without a room yet) unless it exists. */
  getOrCreateGroup(remoteChatId: string): PortalRow {
    this.db.prepare("INSERT OR IGNORE INTO portals (remote_chat_id, receiver, kind, created_at) VALUES (?, ?, 'group', ?)").run(remoteChatId, GROUP_RECEIVER, Date.now());
    return this.byGroup(remoteChatId)!;
  }

  /** The Matrix users of this bridge in a group portal's group. */
  members(id: number): string[] {
    return (this.db.prepare("SELECT mxid FROM portal_members WHERE portal_id = ? ORDER BY mxid").all(id) as { mxid: string }[]).map((r) => r.mxid);
  }

  isMember(id: number, mxid: string): boolean {
    return this.db.prepare("SELECT 1 FROM portal_members WHERE portal_id = ? AND mxid = ?").get(id, mxid) !== undefined;
  }

  /** Returns whether the user was not a member before. */
  addMember(id: number, mxid: string): boolean {
    return this.db.prepare("INSERT OR IGNORE INTO portal_members (portal_id, mxid) VALUES (?, ?)").run(id, mxid).changes === 1;
  }

  /** Returns whether the user was a member. */
  removeMember(id: number, mxid: string): boolean {
    return this.db.prepare("DELETE FROM portal_members WHERE portal_id = ? AND mxid = ?").run(id, mxid).changes === 1;
  }

  /** The group portals a Matrix user is a member of. */
  groupsOf(mxid: string): PortalRow[] {
    return (this.db.prepare("SELECT p.* FROM portals p JOIN portal_members m ON m.portal_id = p.id WHERE m.mxid = ? ORDER BY p.id").all(mxid) as Raw[]).map(fromRaw);
  }

  /**
   * Erases a Matrix user from every group they are a member of here (`forget`): their membership,
   * read marker, messages in the message map and sends still queued. Group events queued through
   * their account move to another Matrix member's, so the room still shows them. Returns what
   * was erased and the group portals no Matrix member is left in.
   */
  forgetMember(mxid: string): { groups: number; messages: number; queued: number; orphaned: PortalRow[] } {
    return this.db.transaction(() => {
      const groups = this.groupsOf(mxid);
      let messages = 0;
      let queued = 0;
      const orphaned: PortalRow[] = [];
      for (const group of groups) {
        messages += this.db.prepare("DELETE FROM messages WHERE portal_id = ? AND sender = ?").run(group.id, mxid).changes;
        queued += this.db.prepare("DELETE FROM outbound_queue WHERE portal_id = ? AND sender = ?").run(group.id, mxid).changes;
        this.removeMember(group.id, mxid);
        const heir = this.members(group.id)[0];
        if (heir) this.db.prepare("UPDATE OR IGNORE inbound_queue SET receiver = ? WHERE portal_id = ? AND receiver = ?").run(heir, group.id, mxid);
        else orphaned.push(group);
        this.db.prepare("DELETE FROM inbound_queue WHERE portal_id = ? AND receiver = ?").run(group.id, mxid);
      }
      return { groups: groups.length, messages, queued, orphaned };
    })();
  }

  /** Records the group state shown in the room: its rev, name and remote members. */
  setGroupState(id: number, rev: number, name: string, participants: readonly string[]): void {
    this.db.transaction(() => {
      this.db.prepare("UPDATE portals SET group_rev = ?, name = ? WHERE id = ?").run(rev, name, id);
      this.db.prepare("DELETE FROM portal_participants WHERE portal_id = ?").run(id);
      const insert = this.db.prepare("INSERT OR IGNORE INTO portal_participants (portal_id, remote_user_id) VALUES (?, ?)");
      for (const p of participants) insert.run(id, p);
    })();
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
   * Creates a DM's portal row (without a room yet) unless one exists for this chat and receiver;
   * the UNIQUE constraint makes this the one place a race between two creators is decided.
   */
  getOrCreate(remoteChatId: string, receiver: string, kind: "dm", participants: string[]): PortalRow {
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

  /** The DM portals of one Matrix user. */
  forReceiver(receiver: string): PortalRow[] {
    return (this.db.prepare("SELECT * FROM portals WHERE receiver = ? AND kind = 'dm' ORDER BY id").all(receiver) as Raw[]).map(fromRaw);
  }

  delete(id: number): void {
    this.db.prepare("DELETE FROM portals WHERE id = ?").run(id);
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM portals WHERE room_id IS NOT NULL").get() as { n: number }).n;
  }
}
