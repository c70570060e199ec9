/**
 * The bridge core's queues with a fake homeserver and network. Network → Matrix: an event is
 * committed before it is acknowledged, each chat works through its own events in order and
 * apart from the others, Matrix trouble is retried, and a restart resumes the rest. Matrix →
 * network: the "sent" status waits for the delivery receipt so that one status event says both.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { BridgeCore } from "../../src/bridge/core";
import { Permissions } from "../../src/bridge/permissions";
import type { MatrixEvent } from "../../src/bridge/matrix-port";
import type { ChatRef, NetworkConnector, RemoteChange, RemoteMessage } from "../../src/network/connector";
import { BridgeStore } from "../../src/store";
import { FakeHomeserver, fakeNetwork, plainCapabilities } from "../support/fakes";

const USER = "@alice:hs";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-inbound-"));
  dirs.push(dir);
  return path.join(dir, "bridge.db");
}

function fakeNetworkForChats(): NetworkConnector {
  let sent = 0;
  return fakeNetwork({
    getCapabilities: () => plainCapabilities({ deliveryReceipts: true }),
    sendMessage: async () => ({ remoteId: `out${++sent}`, timestamp: Date.now() }),
    ensureUser: async () => undefined,
    getProfile: async (id) => ({ userId: id, displayName: `Contact ${id}`, avatar: null }),
    dmChat: (_mxid, remote) => ({ id: `dm:${remote}`, kind: "dm", participants: [remote] }),
  });
}

function makeCore(file: string, hs: FakeHomeserver, sentStatusDelayMs = 0, messageStatusEvents = true) {
  const store = BridgeStore.open(file);
  store.users.getOrCreate(USER, { thirdPartyEnabled: true });
  const core = new BridgeCore(store, hs.port(), fakeNetworkForChats(), {
    thirdPartyDefault: true,
    permissions: new Permissions({ "*": "user" }),
    retryDelayMs: 5,
    maxRetryDelayMs: 20,
    sentStatusDelayMs,
    messageStatusEvents,
  });
  return { store, core };
}

const chat = (remote: string): ChatRef => ({ id: `dm:${remote}`, kind: "dm", participants: [remote] });
const message = (remote: string, n: number): RemoteMessage => ({
  id: `${remote}-m${n}`,
  chat: chat(remote),
  sender: remote,
  timestamp: 1_700_000_000_000 + n,
  content: { type: "text", markdown: `${remote} says ${n}` },
});

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`never happened: ${what}`);
}

describe("the durable inbound queue", () => {
  it("answers the network once the message is committed, before Matrix has it; Matrix gets it after", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    const release = hs.gate("!room1:hs");
    await core.onMessage(USER, message("+491", 1));
    // Acknowledgeable now: the row is in the database although the homeserver has not answered.
    assert.equal(store.inbound.depth(), 1);
    assert.equal(hs.sent.length, 0, "the homeserver has not answered");
    release();
    await until("the message reaches Matrix", () => hs.sent.length === 1);
    await until("the queue is empty", () => store.inbound.depth() === 0);
    const portal = store.portals.byChat("dm:+491", USER)!;
    assert.equal(store.messages.byRemoteId(portal.id, "+491-m1")?.eventId, "$ev1");
    assert.equal(hs.sent[0].opts.ts, 1_700_000_000_001);
    core.stop();
    store.close();
  });

  it("keeps each chat in order, and one chat's stuck send does not hold up another chat", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    await core.onMessage(USER, message("+491", 0));
    await core.onMessage(USER, message("+492", 0));
    await until("both rooms exist", () => hs.sent.length === 2);
    const [roomA, roomB] = [store.portals.byChat("dm:+491", USER)!.roomId!, store.portals.byChat("dm:+492", USER)!.roomId!];
    const release = hs.gate(roomA);
    for (let n = 1; n <= 20; n++) {
      await core.onMessage(USER, message("+491", n));
      await core.onMessage(USER, message("+492", n));
    }
    await until("chat B is through", () => hs.bodies(roomB).length === 21);
    assert.equal(hs.bodies(roomA).length, 1, "chat A waits for its homeserver answer");
    assert.equal(store.inbound.depth(), 20, "chat A's messages wait in the database");
    release();
    await until("chat A is through", () => hs.bodies(roomA).length === 21);
    for (const [room, remote] of [
      [roomA, "+491"],
      [roomB, "+492"],
    ]) {
      assert.deepEqual(
        hs.bodies(room),
        Array.from({ length: 21 }, (_, n) => `${remote} says ${n}`),
      );
    }
    core.stop();
    store.close();
  });

  it("tries a send the homeserver refused again, and nothing behind it overtakes it", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    await core.onMessage(USER, message("+491", 0));
    await until("the room exists", () => hs.sent.length === 1);
    hs.failNext = 3;
    await core.onMessage(USER, message("+491", 1));
    await core.onMessage(USER, message("+491", 2));
    await until("both are through", () => hs.sent.length === 3);
    assert.deepEqual(hs.bodies(), ["+491 says 0", "+491 says 1", "+491 says 2"]);
    assert.ok(hs.attempts >= 6, `three refusals were retried (${hs.attempts} attempts)`);
    assert.equal(store.inbound.depth(), 0);
    core.stop();
    store.close();
  });

  it("queues a redelivered message once and ignores it once it is on Matrix", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    const release = hs.gate("!room1:hs");
    await core.onMessage(USER, message("+491", 1));
    await core.onMessage(USER, message("+491", 1));
    assert.equal(store.inbound.depth(), 1);
    release();
    await until("it is on Matrix", () => store.inbound.depth() === 0 && hs.sent.length === 1);
    await core.onMessage(USER, message("+491", 1));
    // A later message of the same chat goes through after the repeat (one ordered queue per chat):
    // once it is on Matrix, the repeat was handled, and must not have been sent.
    await core.onMessage(USER, message("+491", 2));
    await until("the next message is on Matrix", () => hs.sent.length >= 2 && store.inbound.depth() === 0);
    assert.deepEqual(
      hs.sent.map((s) => s.content.body),
      ["+491 says 1", "+491 says 2"],
    );
    core.stop();
    store.close();
  });

  it("applies an edit queued behind its message to the event the message became", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    const release = hs.gate("!room1:hs");
    await core.onMessage(USER, message("+491", 1));
    const edit: RemoteChange = {
      id: "+491-e1",
      chat: chat("+491"),
      sender: "+491",
      timestamp: 1_700_000_000_100,
      change: { type: "edit", target: "+491-m1", content: { type: "text", markdown: "corrected" } },
    };
    await core.onChange(USER, edit);
    assert.equal(store.inbound.depth(), 2);
    release();
    await until("both are on Matrix", () => hs.sent.length === 2);
    const relates = hs.sent[1].content["m.relates_to"] as { rel_type: string; event_id: string };
    assert.deepEqual(relates, { rel_type: "m.replace", event_id: "$ev1" });
    core.stop();
    store.close();
  });

  it("sends what waited when the user left the room to a fresh room, as if it had come a moment later", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    await core.onMessage(USER, message("+491", 0));
    await until("the first room exists", () => hs.sent.length === 1);
    const oldRoom = store.portals.byChat("dm:+491", USER)!.roomId!;
    const release = hs.gate(oldRoom);
    for (let n = 1; n <= 3; n++) await core.onMessage(USER, message("+491", n));
    await core.onUserLeft(oldRoom, USER);
    const reopened = store.portals.byChat("dm:+491", USER);
    assert.ok(reopened, "the chat has a portal again");
    await until("the three are in the new room", () => reopened.roomId !== oldRoom && hs.bodies(store.portals.byChat("dm:+491", USER)?.roomId ?? "-").length === 3);
    const newRoom = store.portals.byChat("dm:+491", USER)!.roomId!;
    assert.notEqual(newRoom, oldRoom);
    assert.deepEqual(
      hs.bodies(newRoom),
      [1, 2, 3].map((n) => `+491 says ${n}`),
    );
    // The send that was under way when the user left ends in the old room, which the user left.
    release();
    await until("the queue is empty", () => store.inbound.depth() === 0);
    core.stop();
    store.close();
  });

  it("drops what waited when the user turned Third-Party Chats off, and tells them who tried", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs);
    await core.onMessage(USER, message("+491", 0));
    await until("the room exists", () => hs.sent.length === 1);
    const room = store.portals.byChat("dm:+491", USER)!.roomId!;
    const release = hs.gate(room);
    for (let n = 1; n <= 3; n++) await core.onMessage(USER, message("+491", n));
    store.users.setThirdPartyEnabled(USER, false);
    release();
    await until("the queue is empty", () => store.inbound.depth() === 0);
    // The first was already on its way to the homeserver when the user turned them off.
    assert.ok(hs.bodies(room).length <= 2, `at most the one under way reached the room (${hs.bodies(room).join(", ")})`);
    assert.ok(!hs.bodies(room).includes("+491 says 3"));
    await until("the user was told", () => hs.botNotices.length === 1);
    assert.match(hs.botNotices[0], /\+491/);
    assert.match(hs.botNotices[0], /tried to write to you/);
    core.stop();
    store.close();
  });

  it("resumes after a restart what was acknowledged but not yet on Matrix", async () => {
    const file = tempDb();
    const hs = new FakeHomeserver();
    const first = makeCore(file, hs);
    hs.gate("!room1:hs");
    for (let n = 1; n <= 5; n++) await first.core.onMessage(USER, message("+491", n));
    assert.equal(first.store.inbound.depth(), 5);
    // The process dies: the stuck send never returns, the database stays as it is.
    first.core.stop();
    first.store.close();

    const hs2 = new FakeHomeserver();
    const second = makeCore(file, hs2);
    await second.core.start();
    await until("the five are on Matrix", () => hs2.sent.length === 5);
    assert.deepEqual(
      hs2.bodies("!room1:hs"),
      [1, 2, 3, 4, 5].map((n) => `+491 says ${n}`),
    );
    assert.deepEqual(
      hs2.sent.map((s) => s.opts.txnId),
      [1, 2, 3, 4, 5].map((n) => `in.1.+491-m${n}`),
      "the same transaction ids as the first attempt, so a send the homeserver took is not repeated",
    );
    assert.equal(second.store.inbound.depth(), 0);
    second.core.stop();
    second.store.close();
  });
});

describe("delivery status", () => {
  const STATUS = "com.beeper.message_send_status";
  /** A portal with a room, and a Matrix message of its user sent through the core. */
  async function sendFromMatrix(core: BridgeCore, store: BridgeStore, hs: FakeHomeserver, n: number): Promise<{ eventId: string; roomId: string }> {
    await core.onMessage(USER, message("+491", 0));
    await until("the portal exists", () => store.inbound.depth() === 0 && hs.sent.length >= 1);
    const roomId = store.portals.byChat("dm:+491", USER)!.roomId!;
    const eventId = `$mine${n}`;
    await core.onMatrixMessage(textFromUser(eventId, roomId, `mine ${n}`));
    return { eventId, roomId };
  }
  /** A text message the portal's Matrix user sent. */
  function textFromUser(eventId: string, roomId: string, body: string): MatrixEvent {
    return { event_id: eventId, room_id: roomId, sender: USER, type: "m.room.message", origin_server_ts: Date.now(), content: { msgtype: "m.text", body } };
  }
  /** Another Matrix message in the room, through the same ordered queue: once the network has it, everything before it was handled. */
  async function barrier(core: BridgeCore, store: BridgeStore, roomId: string, tag: string): Promise<void> {
    const eventId = `$barrier-${tag}`;
    await core.onMatrixMessage(textFromUser(eventId, roomId, tag));
    await until("the barrier message reached the network", () => store.messages.byEventId(eventId) !== undefined);
  }
  const statuses = (hs: FakeHomeserver, eventId: string) =>
    hs.sent.filter((s) => s.opts.type === STATUS && (s.content["m.relates_to"] as { event_id: string }).event_id === eventId).map((s) => s.content.delivered_to_users);

  it("posts one status saying delivered when the receipt comes within the wait", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs, 60_000);
    const { eventId, roomId } = await sendFromMatrix(core, store, hs, 1);
    await until("the network took it", () => store.messages.byEventId(eventId) !== undefined);
    await barrier(core, store, roomId, "after-1");
    assert.deepEqual(statuses(hs, eventId), [], "the sent status waits");
    await core.onDelivered(USER, { chat: chat("+491"), txnId: eventId, recipient: "+491", timestamp: Date.now() });
    await until("the delivered status", () => statuses(hs, eventId).length === 1);
    assert.deepEqual(statuses(hs, eventId), [["@wa_491:hs"]]);
    core.stop();
    assert.deepEqual(statuses(hs, eventId), [["@wa_491:hs"]], "nothing held is left to post at stop");
    store.close();
  });

  it("posts sent when the wait ends first, then delivered when the receipt comes", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs, 30);
    const { eventId } = await sendFromMatrix(core, store, hs, 2);
    await until("the sent status", () => statuses(hs, eventId).length === 1);
    assert.deepEqual(statuses(hs, eventId), [[]]);
    await core.onDelivered(USER, { chat: chat("+491"), txnId: eventId, recipient: "+491", timestamp: Date.now() });
    await until("the delivered status", () => statuses(hs, eventId).length === 2);
    assert.deepEqual(statuses(hs, eventId), [[], ["@wa_491:hs"]]);
    core.stop();
    store.close();
  });

  it("answers a delivery receipt at once and shows it when the homeserver answers, after a restart too", async () => {
    const file = tempDb();
    const hs = new FakeHomeserver();
    const first = makeCore(file, hs, 60_000);
    const { eventId, roomId } = await sendFromMatrix(first.core, first.store, hs, 5);
    await until("the network took it", () => first.store.messages.byEventId(eventId) !== undefined);
    hs.gate(roomId);
    // Resolves (so the network is acknowledged) although the homeserver does not answer.
    await first.core.onDelivered(USER, { chat: chat("+491"), txnId: eventId, recipient: "+491", timestamp: Date.now() });
    assert.equal(first.store.inbound.depth(), 1);
    first.core.stop();
    first.store.close();

    const hs2 = new FakeHomeserver();
    const second = makeCore(file, hs2, 60_000);
    await second.core.start();
    await until("the delivered status after the restart", () => statuses(hs2, eventId).length === 1);
    assert.deepEqual(statuses(hs2, eventId), [["@wa_491:hs"]]);
    await until("the queue is empty", () => second.store.inbound.depth() === 0);
    second.core.stop();
    second.store.close();
  });

  it("posts no status event when the admin turned them off", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs, 0, false);
    const { eventId } = await sendFromMatrix(core, store, hs, 6);
    await until("the network took it", () => store.messages.byEventId(eventId) !== undefined);
    await core.onDelivered(USER, { chat: chat("+491"), txnId: eventId, recipient: "+491", timestamp: Date.now() });
    await until("the receipt was handled", () => store.inbound.depth() === 0);
    // A later network message of the chat is handled after the receipt (one ordered queue per chat).
    await core.onMessage(USER, message("+491", 99));
    await until("the later message is on Matrix", () => hs.sent.some((s) => s.content.body === "+491 says 99"));
    assert.deepEqual(statuses(hs, eventId), []);
    assert.equal(hs.sent.filter((s) => s.opts.type === STATUS).length, 0);
    core.stop();
    store.close();
  });

  it("posts sent at once with a wait of 0, and a held one when the bridge stops", async () => {
    const hs = new FakeHomeserver();
    const { store, core } = makeCore(tempDb(), hs, 0);
    const { eventId } = await sendFromMatrix(core, store, hs, 3);
    await until("the sent status", () => statuses(hs, eventId).length === 1);
    core.stop();
    store.close();

    const hs2 = new FakeHomeserver();
    const second = makeCore(tempDb(), hs2, 60_000);
    const held = await sendFromMatrix(second.core, second.store, hs2, 4);
    await until("the network took it", () => second.store.messages.byEventId(held.eventId) !== undefined);
    await barrier(second.core, second.store, held.roomId, "after-4");
    assert.deepEqual(statuses(hs2, held.eventId), []);
    second.core.stop();
    await until("the held status went out at stop", () => statuses(hs2, held.eventId).length === 1);
    second.store.close();
  });
});
