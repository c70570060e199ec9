/**
 * The crypto state's own SQLite file (the only SQL outside src/store/, see docs/encryption.md):
 * the IndexedDB journal of every OlmMachine and the device id of every bridged user.
 *
 * Nothing in it is readable without the store key: database names, object-store names and record
 * keys are HMACs, and every value (with its key) is sealed with AES-256-GCM, bound to its row.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import BetterSqlite3 from "better-sqlite3";
import { IdbJournal, IdbKey, IdbSchema, IdbWrite, StoredIdb } from "./durable-idb";

/** The store key is wrong, or a row was altered: worded for the admin. */
export class CryptoStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CryptoStoreError";
  }
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS crypto_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS idb_databases (db_id BLOB PRIMARY KEY, meta BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS idb_records (
  db_id BLOB NOT NULL, record_id BLOB NOT NULL, store_id BLOB NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (db_id, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idb_records_by_store ON idb_records (db_id, store_id);
CREATE TABLE IF NOT EXISTS crypto_devices (user_hash BLOB PRIMARY KEY, data BLOB NOT NULL);
`;

const KEY_CHECK = "matrix-interop-bridge crypto store v1";

/** IndexedDB keys in one canonical byte form (v8.serialize may encode one string two ways). */
function keyBytes(key: IdbKey): Buffer {
  if (typeof key === "number") return Buffer.concat([Buffer.from("n"), Buffer.from(String(key))]);
  if (typeof key === "string") return Buffer.concat([Buffer.from("s"), Buffer.from(key, "utf8")]);
  if (key instanceof Date) return Buffer.from(`d${key.getTime()}`);
  if (Array.isArray(key)) {
    const parts = key.map((k) => {
      const b = keyBytes(k);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    });
    return Buffer.concat([Buffer.from("a"), ...parts]);
  }
  if (ArrayBuffer.isView(key)) return Buffer.concat([Buffer.from("b"), Buffer.from(key.buffer, key.byteOffset, key.byteLength)]);
  if (key instanceof ArrayBuffer) return Buffer.concat([Buffer.from("b"), Buffer.from(key)]);
  throw new CryptoStoreError(`unsupported IndexedDB key type ${typeof key}`);
}

export class CryptoStoreFile implements IdbJournal {
  private readonly db: BetterSqlite3.Database;
  private readonly sealKey: Buffer;
  private readonly macKey: Buffer;

  /** Opens (creating 0600) the file; `secret` is the store key from config or environment. */
  constructor(file: string, secret: string) {
    if (!secret) throw new CryptoStoreError("encryption needs a store key (encryption.store_key, network.store_key or BRIDGE_STORE_KEY)");
    if (file !== ":memory:") {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      if (!fs.existsSync(file)) fs.closeSync(fs.openSync(file, "a", 0o600));
    }
    const root = Buffer.from(hkdfSync("sha256", Buffer.from(secret, "utf8"), Buffer.from("matrix-interop-bridge/crypto-store"), Buffer.alloc(0), 64));
    this.sealKey = root.subarray(0, 32);
    this.macKey = root.subarray(32);
    this.db = new BetterSqlite3(file);
    this.db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode survives a process crash (SIGKILL); only an OS crash may lose the last commits.
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("secure_delete = ON");
    this.db.exec(SCHEMA);
    this.checkKey();
  }

  private checkKey(): void {
    const row = this.db.prepare("SELECT value FROM crypto_meta WHERE name = 'key_check'").get() as { value: Buffer } | undefined;
    if (!row) {
      this.db.prepare("INSERT INTO crypto_meta (name, value) VALUES ('key_check', ?)").run(this.seal(Buffer.from(KEY_CHECK), Buffer.from("key_check")));
      return;
    }
    try {
      if (this.open(row.value, Buffer.from("key_check")).toString() === KEY_CHECK) return;
    } catch {
      // falls through to the error below
    }
    throw new CryptoStoreError("the crypto store was written with a different store key; restore the key (the devices' keys cannot be read without it)");
  }

  private mac(...parts: (string | Buffer)[]): Buffer {
    const h = createHmac("sha256", this.macKey);
    for (const p of parts) {
      const b = typeof p === "string" ? Buffer.from(p, "utf8") : p;
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      h.update(len).update(b);
    }
    return h.digest();
  }

  private seal(plain: Buffer, aad: Buffer): Buffer {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.sealKey, iv);
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(plain), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]);
  }

  private open(sealed: Buffer, aad: Buffer): Buffer {
    const decipher = createDecipheriv("aes-256-gcm", this.sealKey, sealed.subarray(0, 12));
    decipher.setAAD(aad);
    decipher.setAuthTag(sealed.subarray(sealed.length - 16));
    return Buffer.concat([decipher.update(sealed.subarray(12, sealed.length - 16)), decipher.final()]);
  }

  private dbId(name: string): Buffer {
    return this.mac("db", name);
  }

  commit(dbName: string, schema: IdbSchema | undefined, writes: IdbWrite[]): void {
    const dbId = this.dbId(dbName);
    const put = this.db.prepare("INSERT OR REPLACE INTO idb_records (db_id, record_id, store_id, data) VALUES (?, ?, ?, ?)");
    const del = this.db.prepare("DELETE FROM idb_records WHERE db_id = ? AND record_id = ?");
    const clear = this.db.prepare("DELETE FROM idb_records WHERE db_id = ? AND store_id = ?");
    this.db.transaction(() => {
      if (schema) {
        const meta = Buffer.from(JSON.stringify({ name: dbName, schema }));
        this.db.prepare("INSERT OR REPLACE INTO idb_databases (db_id, meta) VALUES (?, ?)").run(dbId, this.seal(meta, dbId));
      }
      for (const w of writes) {
        const storeId = this.mac("store", w.store);
        if (w.kind === "clear") {
          clear.run(dbId, storeId);
          continue;
        }
        const recordId = this.mac("record", w.store, keyBytes(w.key));
        if (w.kind === "delete") {
          del.run(dbId, recordId);
          continue;
        }
        const plain = v8.serialize({ store: w.store, key: w.key, value: w.value });
        put.run(dbId, recordId, storeId, this.seal(plain, Buffer.concat([dbId, recordId])));
      }
    })();
  }

  dropDatabase(dbName: string): void {
    const dbId = this.dbId(dbName);
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM idb_records WHERE db_id = ?").run(dbId);
      this.db.prepare("DELETE FROM idb_databases WHERE db_id = ?").run(dbId);
    })();
  }

  /** Every stored database whose name passes `wanted`, with its records, for restoreDatabases. */
  load(wanted: (name: string) => boolean): StoredIdb[] {
    const out: StoredIdb[] = [];
    const rows = this.db.prepare("SELECT db_id, meta FROM idb_databases").all() as { db_id: Buffer; meta: Buffer }[];
    for (const row of rows) {
      const meta = JSON.parse(this.open(row.meta, row.db_id).toString("utf8")) as { name: string; schema: IdbSchema };
      if (!wanted(meta.name)) continue;
      const records = new Map<string, { key: IdbKey; value: unknown }[]>();
      const recordRows = this.db.prepare("SELECT record_id, data FROM idb_records WHERE db_id = ?").all(row.db_id) as { record_id: Buffer; data: Buffer }[];
      for (const r of recordRows) {
        const record = v8.deserialize(this.open(r.data, Buffer.concat([row.db_id, r.record_id]))) as { store: string; key: IdbKey; value: unknown };
        let list = records.get(record.store);
        if (!list) records.set(record.store, (list = []));
        list.push({ key: record.key, value: record.value });
      }
      out.push({ name: meta.name, schema: meta.schema, records });
    }
    return out;
  }

  /** Names of stored databases (forgetUser, tests). */
  databaseNames(): string[] {
    return this.load(() => true).map((d) => d.name);
  }

  deviceOf(userId: string): string | undefined {
    const hash = this.mac("user", userId);
    const row = this.db.prepare("SELECT data FROM crypto_devices WHERE user_hash = ?").get(hash) as { data: Buffer } | undefined;
    if (!row) return undefined;
    const data = JSON.parse(this.open(row.data, hash).toString("utf8")) as { userId: string; deviceId: string };
    return data.deviceId;
  }

  setDevice(userId: string, deviceId: string): void {
    const hash = this.mac("user", userId);
    this.db.prepare("INSERT OR REPLACE INTO crypto_devices (user_hash, data) VALUES (?, ?)").run(hash, this.seal(Buffer.from(JSON.stringify({ userId, deviceId })), hash));
  }

  forgetDevice(userId: string): void {
    this.db.prepare("DELETE FROM crypto_devices WHERE user_hash = ?").run(this.mac("user", userId));
  }

  close(): void {
    this.db.close();
  }
}
