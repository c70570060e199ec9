/**
 * The store's other tables and its database handling: users and their settings, ghosts, the
 * schema migrations (names, partial upgrades, reopening) and how the database file is opened
 * (compiled statements reused, an in-memory database leaves no file, the log line per migration).
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { configureLogging } from "../../src/logging";
import { BridgeStore, DatabaseError, openDatabase, schemaVersion } from "../../src/store";
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from "../../src/store/migrations";

function tempDb(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-tables-")), "bridge.db");
}

function tableNames(db: BridgeStore["db"]): string[] {
  return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name);
}

test("a user's settings are stored, found by management and space room, and deleted", () => {
  const store = BridgeStore.open(tempDb());
  const on = store.users.getOrCreate("@on:hs", { thirdPartyEnabled: true });
  const off = store.users.getOrCreate("@off:hs", { thirdPartyEnabled: false });
  assert.equal(on.thirdPartyEnabled, true);
  assert.equal(off.thirdPartyEnabled, false);
  assert.equal(on.inboxMode, "unified");
  assert.equal(on.managementRoomId, null);
  assert.equal(on.explainedAt, null);
  assert.equal(store.users.getOrCreate("@on:hs", { thirdPartyEnabled: false }).thirdPartyEnabled, true, "the defaults apply on first sight only");

  store.users.setManagementRoom("@on:hs", "!mgmt:hs");
  assert.equal(store.users.get("@on:hs")?.managementRoomId, "!mgmt:hs");
  assert.equal(store.users.byManagementRoom("!mgmt:hs")?.mxid, "@on:hs");
  assert.equal(store.users.byManagementRoom("!other:hs"), undefined);
  store.users.setManagementRoom("@on:hs", null);
  assert.equal(store.users.byManagementRoom("!mgmt:hs"), undefined);

  store.users.setThirdPartyEnabled("@on:hs", false);
  store.users.setThirdPartyEnabled("@off:hs", true);
  assert.equal(store.users.get("@on:hs")?.thirdPartyEnabled, false);
  assert.equal(store.users.get("@off:hs")?.thirdPartyEnabled, true);
  assert.deepEqual(store.users.countBySetting(), { on: 1, off: 1 });

  store.users.setInbox("@off:hs", "dedicated", "!space:hs");
  assert.deepEqual({ mode: store.users.get("@off:hs")?.inboxMode, space: store.users.get("@off:hs")?.spaceRoomId }, { mode: "dedicated", space: "!space:hs" });
  assert.equal(store.users.bySpaceRoom("!space:hs")?.mxid, "@off:hs");
  assert.equal(store.users.get("@on:hs")?.inboxMode, "unified", "another user's setting is untouched");
  assert.deepEqual(
    store.users.all().map((u) => u.mxid),
    ["@off:hs", "@on:hs"],
  );

  store.users.delete("@on:hs");
  assert.equal(store.users.get("@on:hs"), undefined);
  assert.ok(store.users.get("@off:hs"));
  store.close();
});

test("refused contacts are counted per contact, newest first, and cleared per user", () => {
  const store = BridgeStore.open(tempDb());
  for (const mxid of ["@a:hs", "@b:hs"]) store.users.getOrCreate(mxid, { thirdPartyEnabled: false });
  assert.equal(store.users.recordRefused("@a:hs", "+491", 10), 1);
  assert.equal(store.users.recordRefused("@a:hs", "+492", 20), 1);
  assert.equal(store.users.recordRefused("@a:hs", "+491", 30), 2);
  store.users.recordRefused("@b:hs", "+491", 5);
  assert.deepEqual(store.users.refusedContacts("@a:hs"), [
    { remoteId: "+491", attempts: 2, firstAt: 10, lastAt: 30 },
    { remoteId: "+492", attempts: 1, firstAt: 20, lastAt: 20 },
  ]);
  store.users.clearRefused("@a:hs");
  assert.deepEqual(store.users.refusedContacts("@a:hs"), []);
  assert.equal(store.users.refusedContacts("@b:hs").length, 1, "another user's refused contacts stay");
  store.close();
});

test("a ghost is created once, then registered and given a name and an avatar", () => {
  const store = BridgeStore.open(tempDb());
  assert.equal(store.ghosts.count(), 0);
  const ghost = store.ghosts.ensure("+491", "@wa_491:hs");
  assert.deepEqual(ghost, { remoteId: "+491", mxid: "@wa_491:hs", displayName: null, avatarId: null, avatarMxc: null, registered: false });
  assert.equal(store.ghosts.ensure("+491", "@other:hs").mxid, "@wa_491:hs", "ensure keeps the first row");
  store.ghosts.ensure("+492", "@wa_492:hs");

  store.ghosts.markRegistered("+491");
  store.ghosts.setDisplayName("+491", "Ana");
  store.ghosts.setAvatar("+491", "avatar-1", "mxc://hs/a1");
  assert.deepEqual(store.ghosts.byMxid("@wa_491:hs"), {
    remoteId: "+491",
    mxid: "@wa_491:hs",
    displayName: "Ana",
    avatarId: "avatar-1",
    avatarMxc: "mxc://hs/a1",
    registered: true,
  });
  assert.equal(store.ghosts.get("+492")?.registered, false, "another ghost is untouched");
  assert.equal(store.ghosts.get("+492")?.displayName, null);
  store.ghosts.setAvatar("+491", null, null);
  assert.equal(store.ghosts.get("+491")?.avatarMxc, null);
  assert.equal(store.ghosts.count(), 2);
  store.close();
});

test("every migration has a name, recorded with it in schema_migrations", () => {
  assert.deepEqual(
    MIGRATIONS.map((m) => m.version),
    MIGRATIONS.map((_, i) => i + 1),
    "numbered 1, 2, 3 … without gaps",
  );
  const names = MIGRATIONS.map((m) => m.name);
  for (const name of names) assert.ok(name.length >= 10, `a migration name says what it does: "${name}"`);
  assert.equal(new Set(names).size, names.length, "names are distinct");
  const store = BridgeStore.open(tempDb());
  const recorded = store.db.prepare("SELECT name FROM schema_migrations ORDER BY version").all() as { name: string }[];
  assert.deepEqual(
    recorded.map((r) => r.name),
    names,
  );
  store.close();
});

test("migrating up to a version stops there, and a later open brings the rest", () => {
  const file = tempDb();
  const db = openDatabase(file, { migrateUpTo: 2 });
  assert.equal(schemaVersion(db), 2);
  const tables = tableNames(db as BridgeStore["db"]);
  assert.ok(tables.includes("outbound_queue"));
  assert.ok(!tables.includes("reactions"), "version 3's tables are not there yet");
  db.close();
  const store = BridgeStore.open(file);
  assert.equal(schemaVersion(store.db), LATEST_SCHEMA_VERSION);
  assert.ok(tableNames(store.db).includes("reactions"));
  store.close();
});

test("a database at the latest schema opens again, keeping its rows", () => {
  const file = tempDb();
  const first = BridgeStore.open(file);
  first.users.getOrCreate("@a:hs", { thirdPartyEnabled: true });
  first.close();
  const again = BridgeStore.open(file);
  assert.equal(schemaVersion(again.db), LATEST_SCHEMA_VERSION);
  assert.equal((again.db.prepare("SELECT COUNT(*) AS n FROM schema_migrations").get() as { n: number }).n, MIGRATIONS.length, "no migration ran twice");
  assert.ok(again.users.get("@a:hs"));
  again.close();
});

test("a refusal to open is a DatabaseError by name", () => {
  const file = tempDb();
  const db = openDatabase(file);
  db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)").run(LATEST_SCHEMA_VERSION + 1);
  db.close();
  assert.throws(
    () => openDatabase(file),
    (err: Error) => err instanceof DatabaseError && err.name === "DatabaseError",
  );
});

test("closing the store closes its database", () => {
  const store = BridgeStore.open(tempDb());
  assert.equal(store.db.open, true);
  store.close();
  assert.equal(store.db.open, false);
});

test("the same SQL text is compiled once and its statement reused", () => {
  const store = BridgeStore.open(tempDb());
  const sql = "SELECT COUNT(*) AS n FROM portals";
  assert.equal(store.db.prepare(sql), store.db.prepare(sql));
  assert.notEqual(store.db.prepare(sql), store.db.prepare("SELECT COUNT(*) AS n FROM ghosts"));
  store.close();
});

test("an in-memory database leaves no file behind", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-memory-"));
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    const db = openDatabase(":memory:");
    assert.equal(schemaVersion(db), LATEST_SCHEMA_VERSION);
    db.close();
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    process.chdir(cwd);
  }
});

test("each applied migration is logged by the store with its version and name", () => {
  configureLogging({ level: "info", format: "json" });
  const lines: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    openDatabase(tempDb()).close();
  } finally {
    process.stderr.write = write;
    configureLogging({ level: (process.env.LOG_LEVEL ?? "info") as "info", format: "json" });
  }
  const applied = lines
    .flatMap((l) => l.split("\n"))
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.message === "applied database migration");
  assert.deepEqual(
    applied.map((l) => ({ module: l.module, version: l.version, name: l.name })),
    MIGRATIONS.map((m) => ({ module: "store", version: m.version, name: m.name })),
  );
});
