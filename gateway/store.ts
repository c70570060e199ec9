/**
 * Durable state of the gateway (better-sqlite3, WAL): accounts, the key
 * directory, per-user event queues and idempotency records. Every answer the
 * gateway gives about accepted data is given after the transaction that holds
 * it has committed, so a restart (or a crash of the process) loses nothing
 * that was acknowledged to a client.
 */
import Database from "better-sqlite3";
import {
  encodeFrame,
  type Avatar,
  type DeliverFrame,
  type DeliveredFrame,
  type GroupChange,
  type GroupEventFrame,
  type GroupRefusal,
  type GroupState,
  type KeysPublishFrame,
  type PreKeyBundle,
  type ProfileFrame,
  type RefusedFrame,
  type SendFrame,
} from "../src/protocol/frames.js";

export interface Account {
  user: string;
  provider: string;
  home: boolean;
  displayName: string;
  avatar?: Avatar;
  thirdPartyChats: boolean;
}

export interface QueuedEvent {
  seq: number;
  type: string;
  /** The event exactly as it goes on the wire (deterministic CBOR, seq included). */
  frame: Uint8Array;
  /** It belongs to a group room: only connections with the groups feature may receive it. */
  group: boolean;
}

export type AcceptResult = { kind: "accepted"; ts: number; seq: number } | { kind: "duplicate"; ts: number } | { kind: "queue_full" };

export interface StoreOptions {
  /** "FULL" fsyncs every commit (survives power loss); "NORMAL" survives process crashes only. */
  synchronous?: "FULL" | "NORMAL";
  maxQueuePerUser?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS accounts (
  user TEXT PRIMARY KEY,
  provider TEXT NOT NULL,
  home INTEGER NOT NULL,
  display_name TEXT NOT NULL,
  avatar_url TEXT,
  avatar_mimetype TEXT,
  avatar_size INTEGER,
  avatar_sha256 BLOB,
  third_party_chats INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS key_bundles (
  user TEXT PRIMARY KEY,
  registration_id INTEGER NOT NULL,
  device_id INTEGER NOT NULL,
  identity_key BLOB NOT NULL,
  spk_id INTEGER NOT NULL, spk_public BLOB NOT NULL, spk_signature BLOB NOT NULL,
  kpk_id INTEGER NOT NULL, kpk_public BLOB NOT NULL, kpk_signature BLOB NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS one_time_keys (
  user TEXT NOT NULL,
  key_id INTEGER NOT NULL,
  public_key BLOB NOT NULL,
  PRIMARY KEY (user, key_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_state (
  user TEXT PRIMARY KEY,
  last_seq INTEGER NOT NULL,
  acked_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
  user TEXT NOT NULL,
  seq INTEGER NOT NULL,
  type TEXT NOT NULL,
  frame BLOB NOT NULL,
  -- for deliver events: what the delivered receipt to the sender needs once acked
  sender TEXT,
  room TEXT,
  msg_id BLOB,
  created_at INTEGER NOT NULL,
  grp INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_created ON queue (created_at);
CREATE TABLE IF NOT EXISTS sends (
  sender TEXT NOT NULL,
  recipient TEXT NOT NULL,
  msg_id BLOB NOT NULL,
  ts INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (sender, recipient, msg_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sends_created ON sends (created_at);
CREATE TABLE IF NOT EXISTS room_members (
  room TEXT NOT NULL,
  user TEXT NOT NULL,
  PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS room_members_user ON room_members (user);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Group rooms (feature "groups"): the room is derived from (creator, create_id).
CREATE TABLE IF NOT EXISTS groups (
  room TEXT PRIMARY KEY,
  creator TEXT NOT NULL,
  rev INTEGER NOT NULL,
  name TEXT NOT NULL,
  topic TEXT,
  picture_url TEXT,
  picture_mimetype TEXT,
  picture_size INTEGER,
  picture_sha256 BLOB,
  created_at INTEGER NOT NULL,
  -- JSON [{user, code}]: what group.create could not add, repeated to a retried create
  create_refused TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS group_members (
  room TEXT NOT NULL,
  user TEXT NOT NULL,
  admin INTEGER NOT NULL,
  position INTEGER NOT NULL,
  PRIMARY KEY (room, user)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS group_members_user ON group_members (user);
-- The optional features each provider announced in its latest hello.
CREATE TABLE IF NOT EXISTS provider_features (
  provider TEXT PRIMARY KEY,
  features TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
`;

interface GroupRow {
  room: string;
  creator: string;
  rev: number;
  name: string;
  topic: string | null;
  picture_url: string | null;
  picture_mimetype: string | null;
  picture_size: number | null;
  picture_sha256: Buffer | null;
  created_at: number;
}

interface AccountRow {
  user: string;
  provider: string;
  home: number;
  display_name: string;
  avatar_url: string | null;
  avatar_mimetype: string | null;
  avatar_size: number | null;
  avatar_sha256: Buffer | null;
  third_party_chats: number;
}

function bytes(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

export class GatewayStore {
  private readonly db: Database.Database;
  private readonly maxQueuePerUser: number;
  private lastTs = 0;

  constructor(path: string, opts: StoreOptions = {}) {
    this.db = new Database(path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma(`synchronous = ${opts.synchronous ?? "FULL"}`);
    this.db.pragma("foreign_keys = ON");
    // Databases made before groups have a queue without the grp column; CREATE IF NOT EXISTS keeps theirs.
    const queueExists = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'queue'").get();
    if (queueExists && !(this.db.pragma("table_info(queue)") as { name: string }[]).some((c) => c.name === "grp"))
      this.db.exec("ALTER TABLE queue ADD COLUMN grp INTEGER NOT NULL DEFAULT 0");
    this.db.exec(SCHEMA);
    this.upgrade();
    this.maxQueuePerUser = opts.maxQueuePerUser ?? 10_000;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** One-time data changes for databases made by older versions, recorded in `meta`. */
  private upgrade(): void {
    this.db.transaction(() => {
      const done = this.db.prepare("SELECT value FROM meta WHERE key = 'third_party_setting'").get();
      if (done) return;
      // Before third-party accounts had the setting, every one of them was reachable.
      this.db.prepare("UPDATE accounts SET third_party_chats = 1 WHERE home = 0").run();
      this.db.prepare("INSERT INTO meta (key, value) VALUES ('third_party_setting', '1')").run();
    })();
  }

  /**
   * Server timestamps never go backwards, even if the clock does, so that ts
   * order agrees with acceptance order for every observer.
   */
  now(): number {
    this.lastTs = Math.max(Date.now(), this.lastTs);
    return this.lastTs;
  }

  // ------------------------------------------------------------------ accounts

  getAccount(user: string): Account | undefined {
    const row = this.db.prepare("SELECT * FROM accounts WHERE user = ?").get(user) as AccountRow | undefined;
    if (!row) return undefined;
    const account: Account = {
      user: row.user,
      provider: row.provider,
      home: row.home === 1,
      displayName: row.display_name,
      thirdPartyChats: row.third_party_chats === 1,
    };
    if (row.avatar_url !== null && row.avatar_sha256 !== null)
      account.avatar = {
        url: row.avatar_url,
        mimetype: row.avatar_mimetype ?? "application/octet-stream",
        size: row.avatar_size ?? 0,
        sha256: bytes(row.avatar_sha256),
      };
    return account;
  }

  /**
   * Creates or updates an account; returns whether it was new and whether its profile changed.
   * A new home account starts with Third-Party Chats off, a new third-party account with
   * `thirdPartyChats` (default on); given for an existing account, it replaces the setting.
   */
  upsertAccount(user: string, provider: string, home: boolean, displayName: string, avatar: Avatar | undefined, thirdPartyChats?: boolean): { created: boolean; changed: boolean } {
    return this.db.transaction(() => {
      const before = this.getAccount(user);
      const now = Date.now();
      const av = avatar ? [avatar.url, avatar.mimetype, avatar.size, Buffer.from(avatar.sha256)] : [null, null, null, null];
      if (!before) {
        this.db
          .prepare(
            `INSERT INTO accounts (user, provider, home, display_name, avatar_url, avatar_mimetype, avatar_size,
               avatar_sha256, third_party_chats, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(user, provider, home ? 1 : 0, displayName, ...av, !home && thirdPartyChats !== false ? 1 : 0, now, now);
        return { created: true, changed: true };
      }
      if (thirdPartyChats !== undefined) this.setThirdPartyChats(user, thirdPartyChats);
      const changed =
        before.displayName !== displayName ||
        before.avatar?.url !== avatar?.url ||
        before.avatar?.mimetype !== avatar?.mimetype ||
        before.avatar?.size !== avatar?.size ||
        !sameBytes(before.avatar?.sha256, avatar?.sha256);
      if (changed)
        this.db
          .prepare(
            `UPDATE accounts SET display_name = ?, avatar_url = ?, avatar_mimetype = ?, avatar_size = ?,
               avatar_sha256 = ?, updated_at = ? WHERE user = ?`,
          )
          .run(displayName, ...av, now, user);
      return { created: false, changed };
    })();
  }

  /** Returns whether the setting changed; undefined when the account does not exist. */
  setThirdPartyChats(user: string, on: boolean): boolean | undefined {
    const info = this.db
      .prepare("UPDATE accounts SET third_party_chats = ?, updated_at = ? WHERE user = ? AND third_party_chats != ?")
      .run(on ? 1 : 0, Date.now(), user, on ? 1 : 0);
    if (info.changes > 0) return true;
    return this.getAccount(user) ? false : undefined;
  }

  /**
   * Removes a third-party account with its keys, queued events and room
   * memberships. The queue's seq counter survives, so seqs are never reused
   * for a user URI even if it enlists again. Returns whether it existed.
   */
  deleteAccount(user: string): boolean {
    return this.db.transaction(() => {
      const existed = this.db.prepare("DELETE FROM accounts WHERE user = ?").run(user).changes > 0;
      this.db.prepare("DELETE FROM key_bundles WHERE user = ?").run(user);
      this.db.prepare("DELETE FROM one_time_keys WHERE user = ?").run(user);
      this.db.prepare("DELETE FROM queue WHERE user = ?").run(user);
      this.db.prepare("UPDATE queue_state SET acked_seq = last_seq WHERE user = ?").run(user);
      this.db.prepare("DELETE FROM room_members WHERE user = ?").run(user);
      // The gateway has already taken the user out of its groups (with events); this is the backstop.
      this.db.prepare("DELETE FROM group_members WHERE user = ?").run(user);
      return existed;
    })();
  }

  /** Users who share at least one room (1:1 or group) with `user`: the audience of its profile changes. */
  roomPeers(user: string): string[] {
    const rows = this.db
      .prepare(
        `SELECT b.user AS user FROM room_members a JOIN room_members b ON a.room = b.room WHERE a.user = ? AND b.user != ?
         UNION
         SELECT b.user AS user FROM group_members a JOIN group_members b ON a.room = b.room WHERE a.user = ? AND b.user != ?
         ORDER BY user`,
      )
      .all(user, user, user, user) as { user: string }[];
    return rows.map((r) => r.user);
  }

  /** Runs `fn` in one transaction (nested calls join the outer one). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ------------------------------------------------------------------ features

  /** Records the features a provider announced in its latest hello. */
  setProviderFeatures(provider: string, features: readonly string[]): void {
    this.db
      .prepare(
        `INSERT INTO provider_features (provider, features, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (provider) DO UPDATE SET features = excluded.features, updated_at = excluded.updated_at`,
      )
      .run(provider, JSON.stringify([...features].sort()), Date.now());
  }

  providerFeatures(provider: string): Set<string> {
    const row = this.db.prepare("SELECT features FROM provider_features WHERE provider = ?").get(provider) as { features: string } | undefined;
    return new Set(row ? (JSON.parse(row.features) as string[]) : []);
  }

  // -------------------------------------------------------------------- groups

  getGroup(room: string): GroupState | undefined {
    const row = this.db.prepare("SELECT * FROM groups WHERE room = ?").get(room) as GroupRow | undefined;
    if (!row) return undefined;
    const members = this.db.prepare("SELECT user, admin FROM group_members WHERE room = ? ORDER BY position").all(room) as { user: string; admin: number }[];
    const group: GroupState = {
      room,
      rev: row.rev,
      name: row.name,
      creator: row.creator,
      created: row.created_at,
      members: members.map((m) => ({ user: m.user, admin: m.admin === 1 })),
    };
    if (row.topic !== null) group.topic = row.topic;
    if (row.picture_url !== null && row.picture_sha256 !== null)
      group.picture = {
        url: row.picture_url,
        mimetype: row.picture_mimetype ?? "application/octet-stream",
        size: row.picture_size ?? 0,
        sha256: bytes(row.picture_sha256),
      };
    return group;
  }

  /** What group.create could not add when the group was made. */
  createRefusals(room: string): GroupRefusal[] {
    const row = this.db.prepare("SELECT create_refused FROM groups WHERE room = ?").get(room) as { create_refused: string } | undefined;
    return row ? (JSON.parse(row.create_refused) as GroupRefusal[]) : [];
  }

  /** The groups `user` is a member of, oldest first. */
  groupsOf(user: string): GroupState[] {
    const rows = this.db.prepare("SELECT g.room AS room FROM group_members m JOIN groups g ON g.room = m.room WHERE m.user = ? ORDER BY g.created_at, g.room").all(user) as {
      room: string;
    }[];
    return rows.map((r) => this.getGroup(r.room)!);
  }

  /**
   * Stores `next` (whose rev must be one more than the stored one, or 1 for a new group) and
   * queues a group event about it to every member of `next` and to `alsoNotify` (a member who
   * just left or was removed), in one transaction. A member whose queue is full misses the
   * event (group.get has the state). Returns the users whose queues received it.
   */
  commitGroup(next: GroupState, event: { change: GroupChange; by: string; subject?: string }, alsoNotify: string[] = [], createRefused?: GroupRefusal[]): string[] {
    return this.db.transaction(() => {
      const before = this.db.prepare("SELECT rev FROM groups WHERE room = ?").get(next.room) as { rev: number } | undefined;
      if ((before?.rev ?? 0) + 1 !== next.rev) throw new Error(`group ${next.room}: rev ${next.rev} does not follow ${before?.rev ?? 0}`);
      const pic = next.picture ? [next.picture.url, next.picture.mimetype, next.picture.size, Buffer.from(next.picture.sha256)] : [null, null, null, null];
      if (!before)
        this.db
          .prepare(
            `INSERT INTO groups (room, creator, rev, name, topic, picture_url, picture_mimetype, picture_size, picture_sha256,
               created_at, create_refused) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          )
          .run(next.room, next.creator, next.rev, next.name, next.topic ?? null, ...pic, next.created, JSON.stringify(createRefused ?? []));
      else
        this.db
          .prepare(
            `UPDATE groups SET rev = ?, name = ?, topic = ?, picture_url = ?, picture_mimetype = ?, picture_size = ?,
               picture_sha256 = ? WHERE room = ?`,
          )
          .run(next.rev, next.name, next.topic ?? null, ...pic, next.room);
      this.db.prepare("DELETE FROM group_members WHERE room = ?").run(next.room);
      const insert = this.db.prepare("INSERT INTO group_members (room, user, admin, position) VALUES (?, ?, ?, ?)");
      next.members.forEach((m, i) => insert.run(next.room, m.user, m.admin ? 1 : 0, i));
      const now = this.now();
      const audience = [...new Set([...next.members.map((m) => m.user), ...alsoNotify])];
      const notified: string[] = [];
      for (const user of audience) {
        if (this.queuedCount(user) >= this.maxQueuePerUser) continue;
        this.enqueue(
          user,
          "group",
          (seq) => {
            const frame: GroupEventFrame = { t: "group", seq, user, room: next.room, change: event.change, by: event.by, group: next, ts: now };
            if (event.subject !== undefined) frame.subject = event.subject;
            return encodeFrame(frame);
          },
          now,
          undefined,
          true,
        );
        notified.push(user);
      }
      return notified;
    })();
  }

  // ------------------------------------------------------------- key directory

  /**
   * Replaces the signed and Kyber prekeys and adds the one-time keys. A changed
   * identity key means the user's device was reset: its old one-time keys
   * belong to the old identity and are dropped.
   * Returns the number of one-time keys now stored, or undefined if that would exceed maxStored.
   */
  publishKeys(frame: KeysPublishFrame, maxStored: number): number | undefined {
    return this.db.transaction(() => {
      const existing = this.db.prepare("SELECT identity_key FROM key_bundles WHERE user = ?").get(frame.user) as { identity_key: Buffer } | undefined;
      if (existing && !sameBytes(existing.identity_key, frame.identityKey)) this.db.prepare("DELETE FROM one_time_keys WHERE user = ?").run(frame.user);
      const ids = new Set(frame.oneTimePreKeys.map((k) => k.id));
      const kept = (this.db.prepare("SELECT key_id FROM one_time_keys WHERE user = ?").all(frame.user) as { key_id: number }[]).filter((r) => !ids.has(r.key_id)).length;
      if (kept + ids.size > maxStored) return undefined;
      this.db
        .prepare(
          `INSERT INTO key_bundles (user, registration_id, device_id, identity_key, spk_id, spk_public, spk_signature,
             kpk_id, kpk_public, kpk_signature, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (user) DO UPDATE SET registration_id = excluded.registration_id, device_id = excluded.device_id,
             identity_key = excluded.identity_key, spk_id = excluded.spk_id, spk_public = excluded.spk_public,
             spk_signature = excluded.spk_signature, kpk_id = excluded.kpk_id, kpk_public = excluded.kpk_public,
             kpk_signature = excluded.kpk_signature, updated_at = excluded.updated_at`,
        )
        .run(
          frame.user,
          frame.registrationId,
          frame.deviceId,
          Buffer.from(frame.identityKey),
          frame.signedPreKey.id,
          Buffer.from(frame.signedPreKey.publicKey),
          Buffer.from(frame.signedPreKey.signature),
          frame.kyberPreKey.id,
          Buffer.from(frame.kyberPreKey.publicKey),
          Buffer.from(frame.kyberPreKey.signature),
          Date.now(),
        );
      const insert = this.db.prepare("INSERT OR REPLACE INTO one_time_keys (user, key_id, public_key) VALUES (?, ?, ?)");
      for (const k of frame.oneTimePreKeys) insert.run(frame.user, k.id, Buffer.from(k.publicKey));
      return this.countOneTimeKeys(frame.user);
    })();
  }

  countOneTimeKeys(user: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM one_time_keys WHERE user = ?").get(user) as { n: number }).n;
  }

  hasKeys(user: string): boolean {
    return this.db.prepare("SELECT 1 FROM key_bundles WHERE user = ?").get(user) !== undefined;
  }

  /** One bundle for `user`, consuming (deleting) the one-time key it hands out. */
  takeBundle(user: string): { bundle: PreKeyBundle; remaining: number } | undefined {
    return this.db.transaction(() => {
      const row = this.db.prepare("SELECT * FROM key_bundles WHERE user = ?").get(user) as
        | {
            registration_id: number;
            device_id: number;
            identity_key: Buffer;
            spk_id: number;
            spk_public: Buffer;
            spk_signature: Buffer;
            kpk_id: number;
            kpk_public: Buffer;
            kpk_signature: Buffer;
          }
        | undefined;
      if (!row) return undefined;
      const bundle: PreKeyBundle = {
        user,
        registrationId: row.registration_id,
        deviceId: 1,
        identityKey: bytes(row.identity_key),
        signedPreKey: { id: row.spk_id, publicKey: bytes(row.spk_public), signature: bytes(row.spk_signature) },
        kyberPreKey: { id: row.kpk_id, publicKey: bytes(row.kpk_public), signature: bytes(row.kpk_signature) },
      };
      const otk = this.db.prepare("SELECT key_id, public_key FROM one_time_keys WHERE user = ? ORDER BY key_id LIMIT 1").get(user) as
        { key_id: number; public_key: Buffer } | undefined;
      if (otk) {
        this.db.prepare("DELETE FROM one_time_keys WHERE user = ? AND key_id = ?").run(user, otk.key_id);
        bundle.oneTimePreKey = { id: otk.key_id, publicKey: bytes(otk.public_key) };
      }
      return { bundle, remaining: this.countOneTimeKeys(user) };
    })();
  }

  // -------------------------------------------------------------------- queues

  lastSeq(user: string): number {
    const row = this.db.prepare("SELECT last_seq FROM queue_state WHERE user = ?").get(user) as { last_seq: number } | undefined;
    return row?.last_seq ?? 0;
  }

  ackedSeq(user: string): number {
    const row = this.db.prepare("SELECT acked_seq FROM queue_state WHERE user = ?").get(user) as { acked_seq: number } | undefined;
    return row?.acked_seq ?? 0;
  }

  queuedCount(user: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM queue WHERE user = ?").get(user) as { n: number }).n;
  }

  /** Appends an event to a user's queue; `build` receives the seq allotted to it. Call inside a transaction. */
  private enqueue(
    user: string,
    type: string,
    build: (seq: number) => Uint8Array,
    now: number,
    deliverMeta?: { sender: string; room: string; id?: Uint8Array },
    group = false,
  ): number {
    this.db.prepare("INSERT INTO queue_state (user, last_seq, acked_seq) VALUES (?, 0, 0) ON CONFLICT DO NOTHING").run(user);
    const seq = this.lastSeq(user) + 1;
    this.db.prepare("UPDATE queue_state SET last_seq = ? WHERE user = ?").run(seq, user);
    this.db
      .prepare("INSERT INTO queue (user, seq, type, frame, sender, room, msg_id, created_at, grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .run(
        user,
        seq,
        type,
        Buffer.from(build(seq)),
        deliverMeta?.sender ?? null,
        deliverMeta?.room ?? null,
        deliverMeta?.id ? Buffer.from(deliverMeta.id) : null,
        now,
        group ? 1 : 0,
      );
    return seq;
  }

  /**
   * The outcome of an earlier send with the same (from, to, id), if any. The
   * payload is not compared: a sender that crashed and re-encrypted the same
   * message produces different ciphertext under the same id, and must still
   * get "already accepted" rather than a second delivery.
   */
  priorSend(frame: SendFrame): AcceptResult | undefined {
    const prior = this.db.prepare("SELECT ts FROM sends WHERE sender = ? AND recipient = ? AND msg_id = ?").get(frame.from, frame.to, Buffer.from(frame.id)) as
      { ts: number } | undefined;
    return prior ? { kind: "duplicate", ts: prior.ts } : undefined;
  }

  /**
   * Accepts a send: an idempotency record plus a deliver event in the
   * recipient's queue, in one transaction. A repeat of (from, to, id) gets the
   * first answer back and enqueues nothing.
   */
  acceptSend(frame: SendFrame, inGroup = false): AcceptResult {
    return this.db.transaction((): AcceptResult => {
      const prior = this.priorSend(frame);
      if (prior) return prior;
      if (this.queuedCount(frame.to) >= this.maxQueuePerUser) return { kind: "queue_full" };
      const ts = this.now();
      const seq = this.enqueue(
        frame.to,
        "deliver",
        (seq) =>
          encodeFrame({
            t: "deliver",
            seq,
            from: frame.from,
            to: frame.to,
            room: frame.room,
            id: frame.id,
            ts,
            payload: frame.payload,
          } satisfies DeliverFrame),
        ts,
        { sender: frame.from, room: frame.room, id: frame.id },
        inGroup,
      );
      this.db.prepare("INSERT INTO sends (sender, recipient, msg_id, ts, created_at) VALUES (?, ?, ?, ?, ?)").run(frame.from, frame.to, Buffer.from(frame.id), ts, ts);
      // A group's members are in group_members; room_members records who shares a 1:1 chat.
      if (!inGroup) {
        const member = this.db.prepare("INSERT OR IGNORE INTO room_members (room, user) VALUES (?, ?)");
        member.run(frame.room, frame.from);
        member.run(frame.room, frame.to);
      }
      return { kind: "accepted", ts, seq };
    })();
  }

  /** Events of `user` with seq > afterSeq, oldest first. */
  eventsAfter(user: string, afterSeq: number, limit: number): QueuedEvent[] {
    const rows = this.db.prepare("SELECT seq, type, frame, grp FROM queue WHERE user = ? AND seq > ? ORDER BY seq LIMIT ?").all(user, afterSeq, limit) as {
      seq: number;
      type: string;
      frame: Buffer;
      grp: number;
    }[];
    return rows.map((r) => ({ seq: r.seq, type: r.type, frame: bytes(r.frame), group: r.grp === 1 }));
  }

  /**
   * Cumulative acknowledgement: drops every event of `user` up to `seq` and
   * queues a delivered receipt to the sender of each acknowledged deliver.
   * Returns the users whose queues received receipts.
   */
  ack(user: string, seq: number): string[] {
    return this.db.transaction(() => {
      const acked = this.ackedSeq(user);
      if (seq <= acked) return [];
      const now = this.now();
      const delivers = this.db
        .prepare("SELECT sender, room, msg_id, grp FROM queue WHERE user = ? AND seq > ? AND seq <= ? AND type = 'deliver' ORDER BY seq")
        .all(user, acked, seq) as { sender: string; room: string; msg_id: Buffer; grp: number }[];
      const notified = new Set<string>();
      for (const d of delivers) {
        if (this.queuedCount(d.sender) >= this.maxQueuePerUser) continue; // a receipt is not worth refusing a message for
        this.enqueue(
          d.sender,
          "delivered",
          (s) =>
            encodeFrame({
              t: "delivered",
              seq: s,
              user: d.sender,
              to: user,
              room: d.room,
              id: bytes(d.msg_id),
              ts: now,
            } satisfies DeliveredFrame),
          now,
          undefined,
          d.grp === 1,
        );
        notified.add(d.sender);
      }
      this.db.prepare("DELETE FROM queue WHERE user = ? AND seq <= ?").run(user, seq);
      this.db.prepare("UPDATE queue_state SET acked_seq = ? WHERE user = ?").run(seq, user);
      return [...notified];
    })();
  }

  /**
   * Queues a refused event for `user` (a third-party account with the setting off) about
   * `from`, unless one about the same sender is still unacknowledged. Returns whether it did.
   */
  queueRefused(user: string, from: string, room: string): boolean {
    return this.db.transaction(() => {
      const pending = this.db.prepare("SELECT 1 FROM queue WHERE user = ? AND type = 'refused' AND sender = ?").get(user, from);
      if (pending || this.queuedCount(user) >= this.maxQueuePerUser) return false;
      const now = this.now();
      this.enqueue(user, "refused", (seq) => encodeFrame({ t: "refused", seq, user, from, room, ts: now } satisfies RefusedFrame), now, { sender: from, room });
      return true;
    })();
  }

  /** Queues a profile event for every room peer of `account`; returns the peers. */
  fanOutProfile(account: Account): string[] {
    return this.db.transaction(() => {
      const peers = this.roomPeers(account.user);
      const now = this.now();
      for (const peer of peers) {
        if (this.queuedCount(peer) >= this.maxQueuePerUser) continue;
        this.enqueue(
          peer,
          "profile",
          (seq) => {
            const frame: ProfileFrame = {
              t: "profile",
              seq,
              user: peer,
              subject: account.user,
              displayName: account.displayName,
              ts: now,
            };
            if (account.avatar) frame.avatar = account.avatar;
            if (account.home) frame.thirdPartyChats = account.thirdPartyChats;
            return encodeFrame(frame);
          },
          now,
        );
      }
      return peers;
    })();
  }

  /** Drops queued events and idempotency records older than `olderThan` (ms since epoch). */
  expire(olderThan: number): { events: number; sends: number } {
    return this.db.transaction(() => {
      const events = this.db.prepare("DELETE FROM queue WHERE created_at < ?").run(olderThan).changes;
      const sends = this.db.prepare("DELETE FROM sends WHERE created_at < ?").run(olderThan).changes;
      return { events, sends };
    })();
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
