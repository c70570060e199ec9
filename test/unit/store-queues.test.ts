/**
 * The store's durable queues and records, table by table: what goes in comes out in order, a
 * repeat is refused, and each removal or pruning takes exactly what it says and nothing else.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BridgeStore } from "../../src/store";

function openStore(): BridgeStore {
  return BridgeStore.open(path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-queues-")), "bridge.db"));
}

test("the inbound queue keeps one row per event, oldest first, per portal, and refuses a redelivery", () => {
  const store = openStore();
  const p1 = store.portals.getOrCreate("chat1", "@a:hs", "dm", ["+491"]).id;
  const p2 = store.portals.getOrCreate("chat2", "@a:hs", "dm", ["+492"]).id;
  const before = Date.now();
  assert.equal(store.inbound.enqueue(p1, "@a:hs", "m1", "message", { text: "one" }), true);
  assert.equal(store.inbound.enqueue(p1, "@a:hs", "m1", "message", { text: "again" }), false, "a redelivery is not queued");
  assert.equal(store.inbound.enqueue(p1, "@a:hs", "c1", "change", { edit: 1 }), true);
  assert.equal(store.inbound.enqueue(p1, "@a:hs", "m2", "message", { text: "two" }), true);
  assert.equal(store.inbound.enqueue(p2, "@a:hs", "m3", "read", {}), true);
  assert.equal(store.inbound.depth(), 4);
  assert.deepEqual(store.inbound.portalsWithPending(), [p1, p2]);

  const next = store.inbound.next(p1)!;
  assert.deepEqual(
    { portalId: next.portalId, receiver: next.receiver, remoteId: next.remoteId, kind: next.kind, payload: next.payload, attempts: next.attempts },
    { portalId: p1, receiver: "@a:hs", remoteId: "m1", kind: "message", payload: JSON.stringify({ text: "one" }), attempts: 0 },
  );
  assert.ok(next.createdAt >= before && next.createdAt <= Date.now());
  assert.deepEqual(
    store.inbound.messagesOf(p1).map((i) => i.remoteId),
    ["m1", "m2"],
    "messages only, changes left out",
  );

  store.inbound.recordFailure(next.seq);
  store.inbound.recordFailure(next.seq);
  assert.equal(store.inbound.next(p1)!.attempts, 2);
  assert.equal(store.inbound.next(p2)!.attempts, 0, "other rows keep their count");
  store.inbound.remove(next.seq);
  assert.equal(store.inbound.next(p1)!.remoteId, "c1");
  assert.equal(store.inbound.depth(), 3);
  assert.equal(store.inbound.next(999), undefined);
  store.close();
});

test("the inbound queue moves waiting items to another portal in their order, with their attempts", () => {
  const store = openStore();
  const from = store.portals.getOrCreate("old", "@a:hs", "dm", []).id;
  const to = store.portals.getOrCreate("new", "@a:hs", "dm", []).id;
  store.inbound.enqueue(from, "@a:hs", "m1", "message", 1);
  store.inbound.enqueue(from, "@a:hs", "m2", "message", 2);
  const items = store.inbound.messagesOf(from);
  store.inbound.recordFailure(items[1].seq);
  const moved = store.inbound.messagesOf(from);
  for (const i of moved) store.inbound.remove(i.seq);
  store.inbound.requeue(moved, to);
  const now = store.inbound.messagesOf(to);
  assert.deepEqual(
    now.map((i) => [i.portalId, i.receiver, i.remoteId, i.kind, i.payload, i.attempts, i.createdAt]),
    moved.map((i) => [to, i.receiver, i.remoteId, i.kind, i.payload, i.attempts, i.createdAt]),
  );
  assert.deepEqual(store.inbound.portalsWithPending(), [to]);
  store.close();
});

test("inbound de-duplication is per receiver and message id", () => {
  const store = openStore();
  assert.equal(store.inbound.inboundSeen("@a:hs", "m1"), false);
  assert.equal(store.inbound.markInboundSeen("@a:hs", "m1"), true);
  assert.equal(store.inbound.markInboundSeen("@a:hs", "m1"), false);
  assert.equal(store.inbound.inboundSeen("@a:hs", "m1"), true);
  assert.equal(store.inbound.inboundSeen("@b:hs", "m1"), false, "another receiver has not seen it");
  assert.equal(store.inbound.markInboundSeen("@b:hs", "m1"), true);
  store.close();
});

test("the outbound queue refuses an event it has processed, keeps order per portal and counts per user", () => {
  const store = openStore();
  const a1 = store.portals.getOrCreate("chat1", "@a:hs", "dm", []).id;
  const a2 = store.portals.getOrCreate("chat2", "@a:hs", "dm", []).id;
  const b1 = store.portals.getOrCreate("chat1", "@b:hs", "dm", []).id;
  assert.equal(store.outbound.wasProcessed("$1"), false);
  assert.equal(store.outbound.enqueue(a1, "$1", "@a:hs", { body: "x" }), true);
  assert.equal(store.outbound.wasProcessed("$1"), true);
  assert.equal(store.outbound.enqueue(a1, "$1", "@a:hs", { body: "x" }), false);
  assert.equal(store.outbound.markProcessed("$2"), true);
  assert.equal(store.outbound.enqueue(a2, "$2", "@a:hs", {}), false, "processed before: not queued");
  assert.equal(store.outbound.enqueue(a1, "$3", "@a:hs", { n: 3 }), true);
  assert.equal(store.outbound.enqueue(b1, "$4", "@b:hs", {}), true);
  const pending = store.outbound.pending(a1);
  assert.deepEqual(
    pending.map((i) => [i.portalId, i.eventId, i.sender, i.payload, i.attempts]),
    [
      [a1, "$1", "@a:hs", JSON.stringify({ body: "x" }), 0],
      [a1, "$3", "@a:hs", JSON.stringify({ n: 3 }), 0],
    ],
  );
  assert.ok(pending[0].seq < pending[1].seq);
  assert.ok(pending[0].createdAt > 0);
  assert.equal(store.outbound.depthForUser("@a:hs"), 2);
  assert.equal(store.outbound.depthForUser("@b:hs"), 1);
  assert.equal(store.outbound.depthForUser("@c:hs"), 0);
  assert.equal(store.outbound.depth(), 3);
  store.outbound.recordFailure(pending[1].seq);
  assert.deepEqual(
    store.outbound.pending(a1).map((i) => i.attempts),
    [0, 1],
  );
  store.outbound.remove(pending[0].seq);
  assert.deepEqual(
    store.outbound.pending(a1).map((i) => i.eventId),
    ["$3"],
  );
  assert.deepEqual(store.outbound.portalsWithPending(), [a1, b1]);
  store.close();
});

test("the appservice journal takes each event key once, hands entries out in order and keeps only the room of handled ones", () => {
  const store = openStore();
  const body = (room: string, text: string): string => JSON.stringify({ room_id: room, content: { body: text } });
  assert.equal(
    store.journal.append([
      { key: "$1", kind: "event", body: body("!r1", "one") },
      { key: "$2", kind: "ephemeral", body: JSON.stringify({ type: "m.typing" }) },
      { key: "$1", kind: "event", body: body("!r1", "repeat") },
    ]),
    2,
  );
  assert.equal(store.journal.append([{ key: "$2", kind: "event", body: "{}" }]), 0);
  assert.equal(store.journal.append([{ key: "$3", kind: "event", body: body("!r2", "three") }]), 1);
  const pending = store.journal.pending();
  assert.deepEqual(
    pending.map((e) => [e.kind, e.body, e.attempts]),
    [
      ["event", body("!r1", "one"), 0],
      ["ephemeral", JSON.stringify({ type: "m.typing" }), 0],
      ["event", body("!r2", "three"), 0],
    ],
  );
  assert.deepEqual(
    store.journal.pending(pending[0].seq).map((e) => e.seq),
    [pending[1].seq, pending[2].seq],
  );
  assert.deepEqual(
    store.journal.pending(0, 1).map((e) => e.seq),
    [pending[0].seq],
  );
  assert.equal(store.journal.pendingCount(), 3);

  assert.equal(store.journal.recordAttempt(pending[0].seq), 1);
  assert.equal(store.journal.recordAttempt(pending[0].seq), 2);
  assert.equal(store.journal.recordAttempt(12345), 0, "an unknown entry has no attempts");

  store.journal.markDone(pending[0].seq);
  store.journal.markDone(pending[1].seq);
  assert.equal(store.journal.pendingCount(), 1);
  const kept = store.db.prepare("SELECT seq, body FROM appservice_journal ORDER BY seq").all() as { seq: number; body: string | null }[];
  assert.deepEqual(
    kept.map((r) => r.body),
    [JSON.stringify({ room_id: "!r1" }), null, body("!r2", "three")],
    "handled: cut to the room id, or nothing",
  );
  assert.equal(store.journal.append([{ key: "$1", kind: "event", body: "{}" }]), 0, "a handled key is still refused");

  assert.equal(store.journal.prune(0), 0, "nothing handled before the epoch");
  assert.equal(store.journal.prune(Date.now() + 1), 2, "handled entries go, the pending one stays");
  assert.equal(store.journal.pendingCount(), 1);
  store.close();
});

test("forgetting rooms drops their journal entries and Matrix sends, handled or not, and keeps the rest", () => {
  const store = openStore();
  store.journal.append([
    { key: "$1", kind: "event", body: JSON.stringify({ room_id: "!gone" }) },
    { key: "$2", kind: "event", body: JSON.stringify({ room_id: "!stay" }) },
    { key: "$3", kind: "event", body: JSON.stringify({ room_id: "!gone2" }) },
  ]);
  store.journal.markDone(store.journal.pending()[0].seq);
  assert.equal(store.journal.forgetRooms(["!gone", "!gone2"]), 2);
  assert.deepEqual(
    store.journal.pending().map((e) => JSON.parse(e.body).room_id),
    ["!stay"],
  );

  store.matrixSends.begin("!gone", "t1", "@g:hs");
  store.matrixSends.begin("!gone", "t2", "@g:hs");
  store.matrixSends.finish("!gone", "t2", "$e");
  store.matrixSends.begin("!stay", "t1", "@g:hs");
  assert.equal(store.matrixSends.forgetRooms(["!gone"]), 2);
  assert.equal(store.matrixSends.get("!gone", "t1"), undefined);
  assert.ok(store.matrixSends.get("!stay", "t1"));
  store.close();
});

test("a Matrix send is recorded once with its first start time, finished with its event, and pruned only when finished", () => {
  const store = openStore();
  const before = Date.now();
  store.matrixSends.begin("!r", "t1", "@g:hs");
  const first = store.matrixSends.get("!r", "t1")!;
  assert.deepEqual({ ...first, startedAt: 0 }, { roomId: "!r", txnId: "t1", sender: "@g:hs", startedAt: 0, eventId: null });
  assert.ok(first.startedAt >= before && first.startedAt <= Date.now());
  store.db.prepare("UPDATE matrix_sends SET started_at = 5 WHERE txn_id = 't1'").run();
  store.matrixSends.begin("!r", "t1", "@other:hs");
  assert.deepEqual(store.matrixSends.get("!r", "t1"), { roomId: "!r", txnId: "t1", sender: "@g:hs", startedAt: 5, eventId: null }, "a retry keeps the first row");
  assert.equal(store.matrixSends.hasEvent("!r", "$e1"), false);
  store.matrixSends.finish("!r", "t1", "$e1");
  assert.equal(store.matrixSends.get("!r", "t1")?.eventId, "$e1");
  assert.equal(store.matrixSends.hasEvent("!r", "$e1"), true);
  assert.equal(store.matrixSends.hasEvent("!other", "$e1"), false, "per room");
  assert.equal(store.matrixSends.get("!r", "t2"), undefined);

  store.matrixSends.begin("!r", "t2", "@g:hs");
  store.db.prepare("UPDATE matrix_sends SET started_at = 5 WHERE txn_id = 't2'").run();
  assert.equal(store.matrixSends.prune(5), 0, "started at 5 is not before 5");
  assert.equal(store.matrixSends.prune(6), 1, "the finished one goes, the unfinished one stays");
  assert.equal(store.matrixSends.get("!r", "t1"), undefined);
  assert.ok(store.matrixSends.get("!r", "t2"));
  store.close();
});

test("hosted media rows are replaced on a retry and expire at their time, oldest first", () => {
  const store = openStore();
  store.hostedMedia.save({ token: "a", size: 10, expiresAt: 300, createdAt: 1 });
  store.hostedMedia.save({ token: "b", size: 20, expiresAt: 100, createdAt: 2 });
  store.hostedMedia.save({ token: "c", size: 30, expiresAt: 200, createdAt: 3 });
  store.hostedMedia.save({ token: "a", size: 11, expiresAt: 250, createdAt: 4 });
  assert.deepEqual(store.hostedMedia.get("a"), { token: "a", size: 11, expiresAt: 250, createdAt: 4 });
  assert.equal(store.hostedMedia.get("zz"), undefined);
  assert.equal(store.hostedMedia.count(), 3);
  assert.deepEqual(store.hostedMedia.expired(99), []);
  assert.deepEqual(
    store.hostedMedia.expired(200).map((r) => r.token),
    ["b", "c"],
    "at or before now",
  );
  assert.deepEqual(
    store.hostedMedia.expired(1000, 2).map((r) => r.token),
    ["b", "c"],
  );
  assert.deepEqual(store.hostedMedia.expired(1000)[2], { token: "a", size: 11, expiresAt: 250, createdAt: 4 });
  store.hostedMedia.remove("b");
  assert.equal(store.hostedMedia.count(), 2);
  assert.equal(store.hostedMedia.get("b"), undefined);
  store.close();
});

test("Signal records belong to their owner: read, replaced, deleted one by one or all, never another owner's", () => {
  const store = openStore();
  const alice = store.signalRecords("alice");
  const bob = store.signalRecords("bob");
  alice.put("session", "k", new Uint8Array([1, 2]));
  bob.put("session", "k", new Uint8Array([9]));
  alice.put("identity", "k", new Uint8Array([3]));
  assert.deepEqual(alice.get("session", "k"), new Uint8Array([1, 2]));
  assert.ok(alice.get("session", "k") instanceof Uint8Array);
  assert.equal(alice.get("session", "other"), undefined);
  alice.put("session", "k", new Uint8Array([4]));
  assert.deepEqual(alice.get("session", "k"), new Uint8Array([4]));
  alice.delete("session", "k");
  assert.equal(alice.get("session", "k"), undefined);
  assert.deepEqual(alice.get("identity", "k"), new Uint8Array([3]), "another namespace stays");
  assert.deepEqual(bob.get("session", "k"), new Uint8Array([9]), "another owner stays");
  assert.throws(() =>
    alice.transaction(() => {
      alice.put("x", "y", new Uint8Array([1]));
      throw new Error("abort");
    }),
  );
  assert.equal(alice.get("x", "y"), undefined, "a failed transaction leaves nothing");
  assert.equal(
    alice.transaction(() => 7),
    7,
  );
  alice.deleteAll();
  assert.equal(alice.get("identity", "k"), undefined);
  assert.deepEqual(bob.get("session", "k"), new Uint8Array([9]));
  store.close();
});

test("sent frames keep the first record of a frame id and prune by age only what is older", () => {
  const store = openStore();
  store.sentFrames.put("f1", "@a:hs", "t1");
  store.sentFrames.put("f1", "@b:hs", "t9");
  assert.deepEqual(store.sentFrames.get("f1"), { sender: "@a:hs", txnId: "t1" });
  store.sentFrames.put("f2", "@a:hs", "t2");
  store.sentFrames.put("f3", "@b:hs", "t3");
  store.db.prepare("UPDATE sent_frames SET created_at = ? WHERE frame_id = 'f2'").run(Date.now() - 10_000);
  assert.equal(store.sentFrames.prune(60_000), 0, "nothing is a minute old");
  assert.equal(store.sentFrames.prune(5_000), 1);
  assert.equal(store.sentFrames.get("f2"), undefined);
  assert.equal(store.sentFrames.deleteSender("@a:hs"), 1);
  assert.equal(store.sentFrames.get("f1"), undefined);
  store.sentFrames.delete("f3");
  assert.equal(store.sentFrames.get("f3"), undefined);
  store.close();
});

test("a group has one portal whoever hears of it, and each of its events is queued once however many members' copies come, across a reopen", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-groups-"));
  const file = path.join(dir, "bridge.db");
  let store = BridgeStore.open(file);
  const group = store.portals.getOrCreateGroup("mimi://wa/r/g-1");
  assert.equal(store.portals.getOrCreateGroup("mimi://wa/r/g-1").id, group.id, "one portal per group");
  assert.equal(group.kind, "group");
  assert.equal(group.receiver, null, "a group portal belongs to no single Matrix user");
  assert.equal(store.portals.byChat("mimi://wa/r/g-1", ""), undefined, "the DM lookup never finds a group");
  assert.equal(store.portals.addMember(group.id, "@a:hs"), true);
  assert.equal(store.portals.addMember(group.id, "@a:hs"), false);
  store.portals.addMember(group.id, "@b:hs");
  assert.deepEqual(store.portals.members(group.id), ["@a:hs", "@b:hs"]);
  assert.deepEqual(store.portals.forReceiver("@a:hs"), [], "forReceiver lists DMs only");
  assert.deepEqual(
    store.portals.groupsOf("@b:hs").map((p) => p.id),
    [group.id],
  );

  assert.equal(store.inbound.enqueueGroup(group.id, "@a:hs", "m1", "message", { n: 1 }), true, "the first copy is queued");
  assert.equal(store.inbound.enqueueGroup(group.id, "@b:hs", "m1", "message", { n: 1 }), false, "another member's copy is not");
  assert.equal(store.inbound.enqueueGroup(group.id, "@b:hs", "group.2", "group", { rev: 2 }), true, "a group change is queued like a message");
  assert.equal(store.inbound.depth(), 2);
  store.close();

  // After a crash (the database reopened), a late copy is still recognized, also once the first was bridged.
  store = BridgeStore.open(file);
  store.inbound.remove(store.inbound.next(group.id)!.seq);
  assert.equal(store.inbound.enqueueGroup(group.id, "@b:hs", "m1", "message", { n: 1 }), false);
  assert.equal(store.inbound.enqueueGroup(group.id, "@a:hs", "group.2", "group", { rev: 2 }), false);
  assert.equal(store.inbound.depth(), 1);

  store.portals.setGroupState(group.id, 3, "Trip", ["+491", "+492"]);
  const after = store.portals.get(group.id)!;
  assert.deepEqual({ rev: after.groupRev, name: after.name, participants: store.portals.participants(group.id) }, { rev: 3, name: "Trip", participants: ["+491", "+492"] });
  assert.equal(store.portals.removeMember(group.id, "@a:hs"), true);
  assert.deepEqual(store.portals.members(group.id), ["@b:hs"]);
  store.close();
});
