import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BridgeStore, DatabaseError, openDatabase, schemaVersion } from "../../src/store";
import { LATEST_SCHEMA_VERSION, MIGRATIONS } from "../../src/store/migrations";

function tempDb(): string {
  return path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-store-")), "bridge.db");
}

/** Rows that exist from schema version 1 on: what an upgrade must keep. */
function seedVersion1(file: string): void {
  const db = openDatabase(file, { migrateUpTo: 1 });
  db.prepare("INSERT INTO matrix_users (mxid, third_party_enabled, inbox_mode, created_at) VALUES ('@a:hs', 0, 'dedicated', 1)").run();
  db.prepare("INSERT INTO ghosts (remote_id, mxid, display_name, registered, updated_at) VALUES ('+491', '@whatsapp_491:hs', 'Ana', 1, 1)").run();
  db.prepare("INSERT INTO portals (remote_chat_id, receiver, kind, room_id, created_at) VALUES ('chat1', '@a:hs', 'dm', '!r:hs', 1)").run();
  db.prepare("INSERT INTO portal_participants (portal_id, remote_user_id) VALUES (1, '+491')").run();
  db.prepare("INSERT INTO messages (portal_id, remote_id, part, event_id, sender, timestamp) VALUES (1, 'm1', 0, '$e1', '+491', 5)").run();
  db.close();
}

test("migrations bring an empty database to the latest schema", () => {
  const store = BridgeStore.open(tempDb());
  assert.equal(schemaVersion(store.db), LATEST_SCHEMA_VERSION);
  const recorded = store.db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as { version: number }[];
  assert.deepEqual(
    recorded.map((r) => r.version),
    MIGRATIONS.map((m) => m.version),
  );
  store.close();
});

for (const older of MIGRATIONS.slice(0, -1)) {
  test(`a database at schema ${older.version} upgrades to ${LATEST_SCHEMA_VERSION} and keeps its data`, () => {
    const file = tempDb();
    seedVersion1(file);
    if (older.version > 1) openDatabase(file, { migrateUpTo: older.version }).close();
    const store = BridgeStore.open(file);
    assert.equal(schemaVersion(store.db), LATEST_SCHEMA_VERSION);
    assert.equal(store.users.get("@a:hs")?.inboxMode, "dedicated");
    assert.equal(store.users.get("@a:hs")?.thirdPartyEnabled, false);
    assert.equal(store.ghosts.get("+491")?.displayName, "Ana");
    const portal = store.portals.byRoom("!r:hs");
    assert.equal(portal?.remoteChatId, "chat1");
    assert.deepEqual(store.portals.participants(portal!.id), ["+491"]);
    assert.equal(store.messages.byEventId("$e1")?.remoteId, "m1");
    store.close();
  });
}

test("the upgrade to schema 8 keeps what waits in the inbound queue, and the queue then also takes group changes", () => {
  const file = tempDb();
  seedVersion1(file);
  const db = openDatabase(file, { migrateUpTo: 7 });
  const portalId = (db.prepare("SELECT id FROM portals WHERE room_id = '!r:hs'").get() as { id: number }).id;
  db.prepare("INSERT INTO inbound_queue (portal_id, receiver, remote_id, kind, payload, attempts, created_at) VALUES (?, '@a:hs', 'm9', 'message', '{}', 2, 5)").run(portalId);
  db.close();
  const store = BridgeStore.open(file);
  const waiting = store.inbound.next(portalId)!;
  assert.deepEqual(
    { remoteId: waiting.remoteId, kind: waiting.kind, attempts: waiting.attempts, createdAt: waiting.createdAt },
    { remoteId: "m9", kind: "message", attempts: 2, createdAt: 5 },
  );
  const group = store.portals.getOrCreateGroup("g1");
  assert.equal(store.inbound.enqueueGroup(group.id, "@a:hs", "group.1", "group", {}), true);
  assert.equal(store.portals.get(portalId)?.receiver, "@a:hs", "a DM keeps its user");
  store.close();
});

test("a database with a newer schema is refused with a clear message", () => {
  const file = tempDb();
  const db = openDatabase(file);
  db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from the future', 0)").run(LATEST_SCHEMA_VERSION + 1);
  db.close();
  assert.throws(
    () => openDatabase(file),
    (err: Error) => err instanceof DatabaseError && /newer than this bridge knows/.test(err.message),
  );
});

test("the database file is created readable by its owner only", () => {
  const file = tempDb();
  BridgeStore.open(file).close();
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test("one portal per chat and receiver, whoever asks first", () => {
  const store = BridgeStore.open(tempDb());
  const a = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  const b = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  assert.equal(a.id, b.id);
  const other = store.portals.getOrCreate("chat", "@v:hs", "dm", ["+49"]);
  assert.notEqual(other.id, a.id);
  store.portals.setRoom(a.id, "!room:hs");
  assert.equal(store.portals.byRoom("!room:hs")?.id, a.id);
  assert.throws(() => store.portals.setRoom(other.id, "!room:hs"), /UNIQUE/);
  store.close();
});

test("the outbound queue takes an event once and keeps order", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  assert.equal(store.outbound.enqueue(p.id, "$1", "@u:hs", { n: 1 }), true);
  assert.equal(store.outbound.enqueue(p.id, "$2", "@u:hs", { n: 2 }), true);
  assert.equal(store.outbound.enqueue(p.id, "$1", "@u:hs", { n: 1 }), false, "a redelivered event is not queued twice");
  assert.deepEqual(
    store.outbound.pending(p.id).map((i) => i.eventId),
    ["$1", "$2"],
  );
  store.outbound.remove(store.outbound.pending(p.id)[0].seq);
  assert.deepEqual(
    store.outbound.pending(p.id).map((i) => JSON.parse(i.payload).n),
    [2],
  );
  assert.equal(store.outbound.enqueue(p.id, "$1", "@u:hs", { n: 1 }), false, "a sent event stays processed");
  assert.deepEqual(store.outbound.portalsWithPending(), [p.id]);
  store.close();
});

test("a queued event remembers when it was queued (for bridge_matrix_to_network_duration_seconds)", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  const before = Date.now();
  store.outbound.enqueue(p.id, "$1", "@u:hs", { n: 1 });
  const [item] = store.outbound.pending(p.id);
  assert.ok(item.createdAt >= before && item.createdAt <= Date.now(), `createdAt ${item.createdAt} is the time of enqueue`);
  store.close();
});

test("the message map answers both ways and inbound ids are seen once", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  store.messages.insert({ portalId: p.id, remoteId: "r1", part: 0, eventId: "$x", sender: "+49", timestamp: 1 });
  assert.equal(store.messages.byRemoteId(p.id, "r1")?.eventId, "$x");
  assert.equal(store.messages.byEventId("$x")?.remoteId, "r1");
  assert.equal(store.inbound.markInboundSeen("@u:hs", "r1"), true);
  assert.equal(store.inbound.markInboundSeen("@u:hs", "r1"), false);
  assert.equal(store.inbound.inboundSeen("@u:hs", "r1"), true);
  store.close();
});

test("deleting a portal removes its participants and messages", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  store.messages.insert({ portalId: p.id, remoteId: "r1", part: 0, eventId: "$x", sender: "+49", timestamp: 1 });
  store.portals.delete(p.id);
  assert.equal(store.messages.byEventId("$x"), undefined);
  assert.deepEqual(store.portals.participants(p.id), []);
  store.close();
});

test("one reaction per sender and message: a new one replaces the old; deleting a message drops its reactions", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  store.messages.insert({ portalId: p.id, remoteId: "m1", part: 0, eventId: "$m1", sender: "+49", timestamp: 1 });
  store.reactions.put({ portalId: p.id, targetRemoteId: "m1", sender: "@u:hs", emoji: "👍", eventId: "$r1", remoteId: "x1", timestamp: 2 });
  store.reactions.put({ portalId: p.id, targetRemoteId: "m1", sender: "+49", emoji: "😂", eventId: "$r2", remoteId: "x2", timestamp: 2 });
  store.reactions.put({ portalId: p.id, targetRemoteId: "m1", sender: "@u:hs", emoji: "❤️", eventId: "$r3", remoteId: "x3", timestamp: 3 });
  assert.equal(store.reactions.get(p.id, "m1", "@u:hs")?.emoji, "❤️");
  assert.equal(store.reactions.byEventId("$r1"), undefined, "the replaced reaction is gone");
  assert.equal(store.reactions.byEventId("$r3")?.remoteId, "x3");
  store.reactions.delete(p.id, "m1", "@u:hs");
  assert.equal(store.reactions.get(p.id, "m1", "@u:hs"), undefined);
  store.messages.delete(p.id, "m1");
  assert.equal(store.messages.byEventId("$m1"), undefined);
  assert.equal(store.reactions.byEventId("$r2"), undefined);
  store.close();
});

test("read markers only move forward and pick the unread messages of the other side", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  for (const [id, sender, ts] of [
    ["a", "+49", 10],
    ["b", "@u:hs", 20],
    ["c", "+49", 30],
    ["d", "+49", 40],
  ] as const) {
    store.messages.insert({ portalId: p.id, remoteId: id, part: 0, eventId: `$${id}`, sender, timestamp: ts });
  }
  assert.equal(store.readMarkers.get(p.id), 0);
  assert.deepEqual(
    store.messages.receivedBetween(p.id, "@u:hs", 0, 30, 10).map((m) => m.remoteId),
    ["a", "c"],
  );
  store.readMarkers.advance(p.id, 30);
  store.readMarkers.advance(p.id, 10);
  assert.equal(store.readMarkers.get(p.id), 30);
  assert.deepEqual(
    store.messages.receivedBetween(p.id, "@u:hs", store.readMarkers.get(p.id), 100, 10).map((m) => m.remoteId),
    ["d"],
  );
  store.close();
});

test("sent frames are found by transport id, pruned by age and forgotten by sender", () => {
  const store = BridgeStore.open(tempDb());
  store.sentFrames.put("f0", "mimi://p/u/@gone:hs", "$e0");
  assert.equal(store.sentFrames.deleteSender("mimi://p/u/@gone:hs"), 1);
  assert.equal(store.sentFrames.get("f0"), undefined);
  store.sentFrames.put("f1", "mimi://p/u/@u:hs", "$e1");
  assert.deepEqual(store.sentFrames.get("f1"), { sender: "mimi://p/u/@u:hs", txnId: "$e1" });
  assert.equal(store.sentFrames.prune(60_000), 0);
  store.db.prepare("UPDATE sent_frames SET created_at = 0").run();
  assert.equal(store.sentFrames.prune(60_000), 1);
  assert.equal(store.sentFrames.get("f1"), undefined);
  store.close();
});

test("a message remembers what it replied to", () => {
  const store = BridgeStore.open(tempDb());
  const p = store.portals.getOrCreate("chat", "@u:hs", "dm", ["+49"]);
  store.messages.insert({ portalId: p.id, remoteId: "q", part: 0, eventId: "$q", sender: "+49", timestamp: 1 });
  store.messages.insert({ portalId: p.id, remoteId: "a", part: 0, eventId: "$a", sender: "@u:hs", timestamp: 2, replyTo: "q" });
  assert.equal(store.messages.byEventId("$a")?.replyTo, "q");
  assert.equal(store.messages.byEventId("$q")?.replyTo, null);
  store.close();
});

test("erasing a user deletes their settings, portals, message map, queue and refused contacts, and nobody else's", () => {
  const store = BridgeStore.open(tempDb());
  for (const mxid of ["@gone:hs", "@stays:hs"]) {
    store.users.getOrCreate(mxid, { thirdPartyEnabled: true });
    const portal = store.portals.getOrCreate(`chat-${mxid}`, mxid, "dm", ["+491"]);
    store.portals.setRoom(portal.id, `!room-${mxid}`);
    store.messages.insert({ portalId: portal.id, remoteId: `m-${mxid}`, part: 0, eventId: `$e-${mxid}`, sender: "+491", timestamp: 1 });
    store.outbound.enqueue(portal.id, `$out-${mxid}`, mxid, { text: "x" });
    store.inbound.markInboundSeen(mxid, "r1");
    store.users.recordRefused(mxid, "+492", 5);
    store.reactions.put({ portalId: portal.id, targetRemoteId: `m-${mxid}`, sender: mxid, emoji: "👍", eventId: `$r-${mxid}`, remoteId: `x-${mxid}`, timestamp: 2 });
    store.readMarkers.advance(portal.id, 1);
  }
  assert.equal(store.users.recordRefused("@gone:hs", "+492", 9), 2, "attempts are counted per contact");
  assert.equal(store.users.markExplained("@gone:hs"), true);
  assert.equal(store.users.markExplained("@gone:hs"), false, "the explanation is given once");
  assert.deepEqual(store.users.erase("@gone:hs"), { portals: 1, messages: 1, queued: 1, refusedContacts: 1 });
  assert.equal(store.users.get("@gone:hs"), undefined);
  assert.deepEqual(store.portals.forReceiver("@gone:hs"), []);
  assert.equal(store.messages.byEventId("$e-@gone:hs"), undefined);
  assert.equal(store.outbound.depthForUser("@gone:hs"), 0);
  assert.equal(store.inbound.inboundSeen("@gone:hs", "r1"), false);
  assert.deepEqual(store.users.refusedContacts("@gone:hs"), []);
  assert.equal(store.reactions.byEventId("$r-@gone:hs"), undefined, "their reactions are gone");
  assert.equal((store.db.prepare("SELECT COUNT(*) AS n FROM read_markers").get() as { n: number }).n, 1, "only the other user's read marker is left");
  assert.ok(store.reactions.byEventId("$r-@stays:hs"));
  assert.ok(store.users.get("@stays:hs"));
  assert.equal(store.outbound.depthForUser("@stays:hs"), 1);
  assert.equal(store.users.refusedContacts("@stays:hs")[0]?.attempts, 1);
  assert.deepEqual(store.users.countBySetting(), { on: 1, off: 0 });
  store.close();
});

test("forgetting rooms drops their Matrix sends and journaled events, handled or not, and no other room's", () => {
  const store = BridgeStore.open(tempDb());
  const journaled = (room: string, key: string, kind: "event" | "ephemeral" = "event") => ({
    key,
    kind,
    body: JSON.stringify({ event_id: key, room_id: room, type: "m.room.message" }),
  });
  store.journal.append([
    journaled("!gone:hs", "$handled"),
    journaled("!gone:hs", "$pending"),
    journaled("!gone-bot-dm:hs", "$command"),
    journaled("!gone:hs", "ephemeral:typing", "ephemeral"),
    journaled("!stays:hs", "$other"),
    journaled("!stays:hs", "$other-pending"),
  ]);
  for (const entry of store.journal.pending()) if (!entry.body.includes("pending")) store.journal.markDone(entry.seq);
  const kept = () =>
    (store.db.prepare("SELECT event_key, body FROM appservice_journal ORDER BY seq").all() as { event_key: string; body: string | null }[]).map((r) => `${r.event_key} ${r.body}`);
  assert.deepEqual(
    kept(),
    [
      '$handled {"room_id":"!gone:hs"}',
      `$pending ${journaled("!gone:hs", "$pending").body}`,
      '$command {"room_id":"!gone-bot-dm:hs"}',
      'ephemeral:typing {"room_id":"!gone:hs"}',
      '$other {"room_id":"!stays:hs"}',
      `$other-pending ${journaled("!stays:hs", "$other-pending").body}`,
    ],
    "a handled entry keeps only its key and room",
  );
  store.matrixSends.begin("!gone:hs", "finished", "@whatsapp_491:hs");
  store.matrixSends.finish("!gone:hs", "finished", "$sent");
  store.matrixSends.begin("!gone:hs", "interrupted", "@whatsapp_491:hs");
  store.matrixSends.begin("!gone-bot-dm:hs", "bot.$command", "@bot:hs");
  store.matrixSends.begin("!stays:hs", "other", "@whatsapp_491:hs");

  assert.equal(store.journal.forgetRooms(["!gone:hs", "!gone-bot-dm:hs"]), 4);
  assert.equal(store.matrixSends.forgetRooms(["!gone:hs", "!gone-bot-dm:hs"]), 3);
  assert.deepEqual(kept(), ['$other {"room_id":"!stays:hs"}', `$other-pending ${journaled("!stays:hs", "$other-pending").body}`]);
  assert.equal(store.matrixSends.get("!gone:hs", "interrupted"), undefined, "an unfinished send, which pruning never removes, is gone");
  assert.equal(store.matrixSends.hasEvent("!gone:hs", "$sent"), false);
  assert.ok(store.matrixSends.get("!stays:hs", "other"));
  assert.equal(store.journal.forgetRooms([]), 0);
  store.close();
});
