import fs from "node:fs";
import path from "node:path";
import BetterSqlite3 from "better-sqlite3";
import { getLogger } from "../logging";
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from "./migrations";

export type Database = BetterSqlite3.Database;

/** Refusal to open a database, worded for the admin. */
export class DatabaseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatabaseError";
  }
}

const log = getLogger("store");

export function schemaVersion(db: Database): number {
  db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
  const row = db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as { v: number | null };
  return row.v ?? 0;
}

/** Runs every migration newer than the database, each in its own transaction; `upTo` is for tests. */
export function migrate(db: Database, upTo = LATEST_SCHEMA_VERSION): number {
  const current = schemaVersion(db);
  if (current > LATEST_SCHEMA_VERSION) {
    throw new DatabaseError(`the database schema is version ${current}, newer than this bridge knows (${LATEST_SCHEMA_VERSION}); run the newer bridge version or restore a backup`);
  }
  for (const migration of MIGRATIONS) {
    if (migration.version <= current || migration.version > upTo) continue;
    db.transaction(() => {
      db.exec(migration.sql);
      db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(migration.version, migration.name, Date.now());
    })();
    log.info("applied database migration", { version: migration.version, name: migration.name });
  }
  return schemaVersion(db);
}

/** More distinct SQL texts than the store has; past it, statements are compiled per call again. */
const MAX_CACHED_STATEMENTS = 500;

/**
 * Makes db.prepare compile each SQL text once: the store classes prepare on every call, and
 * compiling a statement costs more than running one of our small queries (the benchmark's CPU
 * profile showed prepare as the bridge's heaviest SQLite cost). A cached statement is shared by
 * every caller of the same SQL, so nobody may switch it to pluck/raw/expand mode.
 */
function cacheStatements(db: Database): void {
  const compile = db.prepare.bind(db);
  const statements = new Map<string, BetterSqlite3.Statement>();
  db.prepare = ((sql: string) => {
    let statement = statements.get(sql);
    if (!statement) {
      statement = compile(sql);
      if (statements.size < MAX_CACHED_STATEMENTS) statements.set(sql, statement);
    }
    return statement;
  }) as Database["prepare"];
}

/** Opens (creating 0600 if needed) the SQLite database in WAL mode and migrates it. */
export function openDatabase(file: string, opts: { migrateUpTo?: number } = {}): Database {
  if (file !== ":memory:") {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    if (!fs.existsSync(file)) fs.closeSync(fs.openSync(file, "a", 0o600));
  }
  const db = new BetterSqlite3(file);
  cacheStatements(db);
  db.pragma("journal_mode = WAL");
  db.pragma("foreign_keys = ON");
  // NORMAL is durable in WAL mode across process crashes (only an OS crash can lose the last commits).
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  // Deleted rows (handled journal entries, sent queue items: message text) are zeroed, not left in free pages.
  db.pragma("secure_delete = ON");
  try {
    migrate(db, opts.migrateUpTo);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
