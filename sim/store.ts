/**
 * The simulator's own SQLite file: its WhatsApp users, their Signal state, what they received
 * and whom they talked to. Everything the simulator needs to carry on after a restart lives
 * here; media bytes live in the media directory, named by their SHA-256.
 */
import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import type { SignalRecordStore } from "../src/protocol/signal.js";

const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE users (
  phone TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  avatar_sha256 TEXT,
  third_party_chats INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE media (
  sha256 TEXT PRIMARY KEY,
  mimetype TEXT NOT NULL,
  size INTEGER NOT NULL
);
-- SignalRecordStore rows of each user (Signal identity, prekeys, sessions; SecureEndpoint's records).
CREATE TABLE signal_records (
  owner TEXT NOT NULL,
  ns TEXT NOT NULL,
  key TEXT NOT NULL,
  value BLOB NOT NULL,
  PRIMARY KEY (owner, ns, key)
);
-- Everything a user received, numbered per user. source makes redelivered events idempotent.
CREATE TABLE inbox (
  phone TEXT NOT NULL,
  n INTEGER NOT NULL,
  source TEXT,
  entry TEXT NOT NULL,
  PRIMARY KEY (phone, n),
  UNIQUE (phone, source)
);
-- Peers a user exchanged messages with (the audience of status updates).
CREATE TABLE contacts (
  phone TEXT NOT NULL,
  peer TEXT NOT NULL,
  PRIMARY KEY (phone, peer)
);
-- Transport id → MIMI id of what a user sent, to name messages in delivery receipts.
CREATE TABLE sent (
  phone TEXT NOT NULL,
  peer TEXT NOT NULL,
  wire_id TEXT NOT NULL,
  mimi_id TEXT,
  kind TEXT NOT NULL,
  PRIMARY KEY (phone, peer, wire_id)
);
-- Matrix user id → user URI, learnt from traffic or looked up with profile.get.
CREATE TABLE peers (
  matrix_id TEXT PRIMARY KEY,
  uri TEXT NOT NULL
);
`;

/** Version 2: the encrypted blobs the simulator hosts for the media its users send. */
const BLOBS = `
CREATE TABLE blobs (
  token TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
`;

export interface SimUser {
  phone: string;
  name: string;
  avatarSha256: string | null;
  thirdPartyChats: boolean;
  createdAt: number;
}

export interface MediaInfo {
  sha256: string;
  mimetype: string;
  size: number;
}

export type InboxEntry = { n: number; kind: string; from: string } & Record<string, unknown>;

export class SimStore {
  readonly db: Database.Database;
  readonly mediaDir: string;

  constructor(dbPath: string, mediaDir: string) {
    fs.mkdirSync(path.dirname(path.resolve(dbPath)), { recursive: true });
    fs.mkdirSync(mediaDir, { recursive: true });
    this.mediaDir = mediaDir;
    this.db = new Database(dbPath);
    this.db.pragma("journal_mode = WAL");
    // Durable across process crashes in WAL mode, which is what a restart test needs.
    this.db.pragma("synchronous = NORMAL");
    const version = this.db.pragma("user_version", { simple: true }) as number;
    if (version === 0) {
      this.db.transaction(() => {
        this.db.exec(SCHEMA + BLOBS);
        this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      })();
    } else if (version === 1) {
      this.db.transaction(() => {
        this.db.exec(BLOBS);
        this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
      })();
    } else if (version !== SCHEMA_VERSION) {
      this.db.close();
      throw new Error(`${dbPath} has simulator schema version ${version}; this simulator knows ${SCHEMA_VERSION}`);
    }
  }

  close(): void {
    this.db.close();
  }

  // ---------------------------------------------------------------- users

  getUser(phone: string): SimUser | undefined {
    const row = this.db.prepare("SELECT * FROM users WHERE phone = ?").get(phone) as UserRow | undefined;
    return row && userFromRow(row);
  }

  allUsers(): SimUser[] {
    return (this.db.prepare("SELECT * FROM users ORDER BY created_at, phone").all() as UserRow[]).map(userFromRow);
  }

  /** Creates or updates; returns whether the user is new here. */
  saveUser(phone: string, name: string, avatarSha256: string | null): boolean {
    const existing = this.getUser(phone);
    if (existing) {
      this.db.prepare("UPDATE users SET name = ?, avatar_sha256 = ? WHERE phone = ?").run(name, avatarSha256, phone);
      return false;
    }
    this.db.prepare("INSERT INTO users (phone, name, avatar_sha256, third_party_chats, created_at) VALUES (?, ?, ?, 0, ?)").run(phone, name, avatarSha256, Date.now());
    return true;
  }

  setThirdPartyChats(phone: string, on: boolean): void {
    this.db.prepare("UPDATE users SET third_party_chats = ? WHERE phone = ?").run(on ? 1 : 0, phone);
  }

  // ---------------------------------------------------------------- media

  /** Stores bytes under their SHA-256 (idempotent). */
  putMedia(bytes: Buffer, mimetype: string, sha256: string): MediaInfo {
    const file = path.join(this.mediaDir, sha256);
    if (!fs.existsSync(file)) {
      // Written aside and renamed, so a crash never leaves a truncated file under the hash.
      const partial = `${file}.${process.pid}.partial`;
      fs.writeFileSync(partial, bytes);
      fs.renameSync(partial, file);
    }
    this.db.prepare("INSERT OR REPLACE INTO media (sha256, mimetype, size) VALUES (?, ?, ?)").run(sha256, mimetype, bytes.length);
    return { sha256, mimetype, size: bytes.length };
  }

  /** Moves a verified file into the media directory under its SHA-256 (idempotent). */
  adoptMediaFile(file: string, mimetype: string, sha256: string, size: number): MediaInfo {
    const dest = path.join(this.mediaDir, sha256);
    if (fs.existsSync(dest)) fs.rmSync(file, { force: true });
    else fs.renameSync(file, dest);
    this.db.prepare("INSERT OR REPLACE INTO media (sha256, mimetype, size) VALUES (?, ?, ?)").run(sha256, mimetype, size);
    return { sha256, mimetype, size };
  }

  getMedia(sha256: string): (MediaInfo & { file: string }) | undefined {
    const row = this.db.prepare("SELECT sha256, mimetype, size FROM media WHERE sha256 = ?").get(sha256) as MediaInfo | undefined;
    if (!row) return undefined;
    const file = path.join(this.mediaDir, row.sha256);
    return fs.existsSync(file) ? { ...row, file } : undefined;
  }

  // ---------------------------------------------------------------- hosted blobs (HostedBlobIndex)

  readonly blobs = {
    save: (row: { token: string; size: number; expiresAt: number; createdAt: number }): void => {
      this.db.prepare("INSERT OR REPLACE INTO blobs (token, size, expires_at, created_at) VALUES (?, ?, ?, ?)").run(row.token, row.size, row.expiresAt, row.createdAt);
    },
    get: (token: string): { token: string; size: number; expiresAt: number } | undefined => {
      const row = this.db.prepare("SELECT token, size, expires_at FROM blobs WHERE token = ?").get(token) as { token: string; size: number; expires_at: number } | undefined;
      return row && { token: row.token, size: row.size, expiresAt: row.expires_at };
    },
    expired: (now: number): { token: string }[] => this.db.prepare("SELECT token FROM blobs WHERE expires_at <= ? LIMIT 1000").all(now) as { token: string }[],
    remove: (token: string): void => {
      this.db.prepare("DELETE FROM blobs WHERE token = ?").run(token);
    },
  };

  // ---------------------------------------------------------------- Signal records

  recordStore(owner: string): SignalRecordStore {
    const get = this.db.prepare("SELECT value FROM signal_records WHERE owner = ? AND ns = ? AND key = ?");
    const put = this.db.prepare("INSERT OR REPLACE INTO signal_records (owner, ns, key, value) VALUES (?, ?, ?, ?)");
    const del = this.db.prepare("DELETE FROM signal_records WHERE owner = ? AND ns = ? AND key = ?");
    return {
      get: (ns, key) => {
        const row = get.get(owner, ns, key) as { value: Buffer } | undefined;
        return row ? new Uint8Array(row.value) : undefined;
      },
      put: (ns, key, value) => {
        put.run(owner, ns, key, Buffer.from(value));
      },
      delete: (ns, key) => {
        del.run(owner, ns, key);
      },
      transaction: <T>(fn: () => T): T => this.db.transaction(fn)(),
    };
  }

  // ---------------------------------------------------------------- inbox

  /**
   * Appends an entry (n assigned here) unless one with the same source is there already;
   * returns the entry's n, or undefined for a repeat.
   */
  appendInbox(phone: string, source: string | null, entry: Omit<InboxEntry, "n">): number | undefined {
    return this.db.transaction(() => {
      if (source !== null && this.db.prepare("SELECT 1 FROM inbox WHERE phone = ? AND source = ?").get(phone, source)) return undefined;
      const last = this.db.prepare("SELECT MAX(n) AS n FROM inbox WHERE phone = ?").get(phone) as { n: number | null };
      const n = (last.n ?? 0) + 1;
      this.db.prepare("INSERT INTO inbox (phone, n, source, entry) VALUES (?, ?, ?, ?)").run(phone, n, source, JSON.stringify({ n, ...entry }));
      return n;
    })();
  }

  hasInboxSource(phone: string, source: string): boolean {
    return this.db.prepare("SELECT 1 FROM inbox WHERE phone = ? AND source = ?").get(phone, source) !== undefined;
  }

  inbox(phone: string, after: number, limit = 1000): InboxEntry[] {
    const rows = this.db.prepare("SELECT entry FROM inbox WHERE phone = ? AND n > ? ORDER BY n LIMIT ?").all(phone, after, limit) as { entry: string }[];
    return rows.map((r) => JSON.parse(r.entry) as InboxEntry);
  }

  // ---------------------------------------------------------------- peers

  addContact(phone: string, peer: string): void {
    this.db.prepare("INSERT OR IGNORE INTO contacts (phone, peer) VALUES (?, ?)").run(phone, peer);
  }

  contacts(phone: string): string[] {
    return (this.db.prepare("SELECT peer FROM contacts WHERE phone = ? ORDER BY peer").all(phone) as { peer: string }[]).map((r) => r.peer);
  }

  recordSent(phone: string, peer: string, wireId: string, mimiId: string | null, kind: string): void {
    this.db.prepare("INSERT OR REPLACE INTO sent (phone, peer, wire_id, mimi_id, kind) VALUES (?, ?, ?, ?, ?)").run(phone, peer, wireId, mimiId, kind);
  }

  sentMessage(phone: string, peer: string, wireId: string): { mimiId: string | null; kind: string } | undefined {
    const row = this.db.prepare("SELECT mimi_id, kind FROM sent WHERE phone = ? AND peer = ? AND wire_id = ?").get(phone, peer, wireId) as
      { mimi_id: string | null; kind: string } | undefined;
    return row && { mimiId: row.mimi_id, kind: row.kind };
  }

  peerUri(matrixId: string): string | undefined {
    return (this.db.prepare("SELECT uri FROM peers WHERE matrix_id = ?").get(matrixId) as { uri: string } | undefined)?.uri;
  }

  rememberPeer(matrixId: string, uri: string): void {
    this.db.prepare("INSERT OR REPLACE INTO peers (matrix_id, uri) VALUES (?, ?)").run(matrixId, uri);
  }
}

interface UserRow {
  phone: string;
  name: string;
  avatar_sha256: string | null;
  third_party_chats: number;
  created_at: number;
}

function userFromRow(row: UserRow): SimUser {
  return {
    phone: row.phone,
    name: row.name,
    avatarSha256: row.avatar_sha256,
    thirdPartyChats: row.third_party_chats === 1,
    createdAt: row.created_at,
  };
}
