/**
 * Group rooms on the real gateway process (docs/protocol.md §3.3): feature negotiation,
 * creation and membership with the interop rules, events to every member, sends only
 * between members, durable state across a restart, and ciphertext only on the wire.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import Database from "better-sqlite3";
import { tmpdir } from "node:os";
import path from "node:path";
import { InteropClient } from "../../src/protocol/client.js";
import { SecureEndpoint, type PayloadEvent } from "../../src/protocol/endpoint.js";
import { FEATURE_GROUPS, ProtocolError, groupRoomUri, isGroupRoom, type DeliverFrame, type DeliveredFrame, type GroupEventFrame } from "../../src/protocol/frames.js";
import { encodeMimi, newTextMessage } from "../../src/protocol/mimi.js";
import { MemoryRecordStore } from "../../src/protocol/signal.js";
import { GatewayStore } from "../../gateway/store.js";
import { GatewayProcess, until } from "../support/gateway-process.js";

const HOME = "whatsapp.example";
const BRIDGE = "matrix.example.org";
const OLD = "old.example.net";
const SECRETS = { [HOME]: "home-secret", [BRIDGE]: "bridge-secret", [OLD]: "old-secret" };
const wa1 = `mimi://${HOME}/u/+4915100000001`;
const wa2 = `mimi://${HOME}/u/+4915100000002`; // Third-Party Chats off
const wa3 = `mimi://${HOME}/u/+4915100000003`;
const wa4 = `mimi://${HOME}/u/+4915100000004`;
const alice = `mimi://${BRIDGE}/u/@alice:example.org`;
const carol = `mimi://${BRIDGE}/u/@carol:example.org`; // Third-Party Chats off
const dave = `mimi://${BRIDGE}/u/@dave:example.org`;
const olga = `mimi://${OLD}/u/@olga:old.example.net`; // provider without the groups feature

function client(gw: GatewayProcess, provider: keyof typeof SECRETS, features: string[] = [FEATURE_GROUPS]): InteropClient {
  return new InteropClient({
    url: gw.url,
    provider,
    secret: SECRETS[provider],
    features,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    answerTimeoutMs: 5000,
  });
}

const fakeCiphertext = (text: string) => ({ type: 2, body: new TextEncoder().encode(text) });
const rejectsWith = (code: string) => (e: ProtocolError) => e.code === code;

/** A provider connection that records the queued events each of its users got. */
class Side {
  readonly groups: GroupEventFrame[] = [];
  readonly delivers: DeliverFrame[] = [];
  readonly receipts: DeliveredFrame[] = [];
  constructor(readonly client: InteropClient) {
    client.onGroup(async (f) => void this.groups.push(f));
    client.onDeliver(async (f) => void this.delivers.push(f));
    client.onDelivered(async (f) => void this.receipts.push(f));
  }
  eventsOf(user: string, room: string): GroupEventFrame[] {
    return this.groups.filter((g) => g.user === user && g.room === room);
  }
}

describe("group rooms on the gateway", () => {
  let dir: string;
  let gw: GatewayProcess;
  const clients: InteropClient[] = [];
  const track = (c: InteropClient) => (clients.push(c), c);
  let home: Side;
  let bridge: Side;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "gateway-groups-"));
    gw = new GatewayProcess({ dbPath: path.join(dir, "gateway.db"), recordPath: path.join(dir, "frames.log"), homeProvider: HOME, providers: SECRETS });
    await gw.start();
    home = new Side(track(client(gw, HOME)));
    bridge = new Side(track(client(gw, BRIDGE)));
    const old = track(client(gw, OLD, []));
    await Promise.all([home.client.connect(), bridge.client.connect(), old.connect()]);
    for (const [user, name, on] of [
      [wa1, "One", true],
      [wa2, "Two", false],
      [wa3, "Three", true],
      [wa4, "Four", true],
    ] as const) {
      await home.client.upsertAccount({ user, displayName: name });
      await home.client.setSettings(user, { thirdPartyChats: on });
      await home.client.login(user);
    }
    await bridge.client.enlist(alice, "Alice");
    await bridge.client.enlist(carol, "Carol", { thirdPartyChats: false });
    await bridge.client.enlist(dave, "Dave");
    await bridge.client.login(alice);
    await bridge.client.login(carol);
    await bridge.client.login(dave);
    await old.enlist(olga, "Olga");
  });

  after(async () => {
    for (const c of clients) await c.close();
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("negotiates the groups feature in hello/welcome and keeps it from clients that did not ask", async () => {
    assert.deepEqual(home.client.welcome?.features, [FEATURE_GROUPS]);
    assert.equal(home.client.hasFeature(FEATURE_GROUPS), true);
    const plain = track(client(gw, BRIDGE, ["no-such-feature"]));
    await plain.connect();
    assert.deepEqual(plain.welcome?.features, [], "unknown features are not echoed");
    // Refused before anything else is looked at (alice is not even logged in on it).
    await assert.rejects(plain.createGroup({ by: alice, name: "x", members: [wa1] }), rejectsWith("not_supported"));
    await plain.close();
    // Its hello said no groups: bring the bridge's record back with a hello that does.
    const again = track(client(gw, BRIDGE));
    await again.connect();
    await again.close();
  });

  it("creates a group, adding who may join and telling the creator who may not, and why", async () => {
    const created = await home.client.createGroup({ by: wa1, name: "Hiking", topic: "Sundays", members: [alice, wa2, carol, wa3, olga, wa1] });
    const room = created.group.room;
    assert.ok(isGroupRoom(room));
    assert.equal(created.duplicate, false);
    assert.deepEqual(created.group.members, [
      { user: wa1, admin: true },
      { user: alice, admin: false },
      { user: wa3, admin: false },
    ]);
    assert.deepEqual(created.refused, [
      { user: wa2, code: "third_party_disabled" },
      { user: carol, code: "not_opted_in" },
      { user: olga, code: "not_supported" },
    ]);
    assert.equal(created.group.topic, "Sundays");
    // Every member hears of it, nobody else does.
    await until("created events", () => [wa1, wa3].every((u) => home.eventsOf(u, room).length === 1) && bridge.eventsOf(alice, room).length === 1);
    for (const e of [...home.eventsOf(wa1, room), ...home.eventsOf(wa3, room), ...bridge.eventsOf(alice, room)]) {
      assert.equal(e.change, "created");
      assert.equal(e.by, wa1);
      assert.deepEqual(e.group, created.group);
    }
    assert.equal(
      home.groups.some((g) => g.user === wa2),
      false,
    );
    assert.equal(
      bridge.groups.some((g) => g.user === carol),
      false,
    );
  });

  it("answers a retried create with the same group and makes nothing new", async () => {
    const id = new Uint8Array(16).fill(7);
    const first = await bridge.client.createGroup({ by: alice, id, name: "From Matrix", members: [wa1, wa2] });
    assert.equal(first.group.room, groupRoomUri(alice, id, HOME));
    assert.equal(first.group.room, await bridge.client.groupRoom(alice, id));
    assert.deepEqual(first.refused, [{ user: wa2, code: "third_party_disabled" }]);
    const again = await bridge.client.createGroup({ by: alice, id, name: "From Matrix", members: [wa1, wa2] });
    assert.equal(again.duplicate, true);
    assert.deepEqual(again.group, first.group);
    assert.deepEqual(again.refused, first.refused);
    await until("created event", () => home.eventsOf(wa1, first.group.room).length === 1);
  });

  it("refuses opted-out members on add with their code, and lets only admins add", async () => {
    const { group } = await home.client.createGroup({ by: wa1, name: "Adds", members: [alice] });
    await assert.rejects(home.client.addGroupMember(wa1, group.room, wa2), rejectsWith("third_party_disabled"));
    await assert.rejects(home.client.addGroupMember(wa1, group.room, carol), rejectsWith("not_opted_in"));
    await assert.rejects(home.client.addGroupMember(wa1, group.room, olga), rejectsWith("not_supported"));
    await assert.rejects(bridge.client.addGroupMember(alice, group.room, wa3), rejectsWith("forbidden"), "alice is no admin");
    await assert.rejects(home.client.addGroupMember(wa3, group.room, wa4), rejectsWith("not_member"));
    await assert.rejects(home.client.addGroupMember(wa1, `mimi://${HOME}/r/g-00000000000000000000000000000000`, wa3), rejectsWith("unknown_room"));
    // A group without third-party members takes a WhatsApp user whose setting is off.
    const local = await home.client.createGroup({ by: wa1, name: "Only WhatsApp", members: [wa2] });
    assert.deepEqual(local.refused, []);
    assert.equal(local.group.members.length, 2);
  });

  it("delivers every membership and metadata change to every member, and to whoever left", async () => {
    const { group } = await home.client.createGroup({ by: wa1, name: "Changes", members: [alice] });
    const room = group.room;
    const added = await home.client.addGroupMember(wa1, room, wa3);
    assert.equal(added.rev, 2);
    await until("added events", () => [home.eventsOf(wa1, room), home.eventsOf(wa3, room), bridge.eventsOf(alice, room)].every((l) => l.some((e) => e.change === "added")));
    assert.equal(home.eventsOf(wa3, room).length, 1, "a new member starts with its own addition");
    assert.deepEqual(home.eventsOf(wa3, room)[0]!.subject, wa3);

    await home.client.setGroupAdmin(wa1, room, alice, true);
    await bridge.client.updateGroup(alice, room, { name: "Renamed", topic: "new topic" });
    await bridge.client.removeGroupMember(alice, room, wa3);
    await home.client.leaveGroup(wa1, room);
    const final = await bridge.client.getGroup(alice, room);
    assert.deepEqual(final.members, [{ user: alice, admin: true }]);
    assert.equal(final.name, "Renamed");
    assert.equal(final.rev, 7);

    const changes = (events: GroupEventFrame[]) => events.map((e) => `${e.group.rev}:${e.change}`);
    await until("alice's events", () => bridge.eventsOf(alice, room).length === 7);
    assert.deepEqual(changes(bridge.eventsOf(alice, room)), ["1:created", "2:added", "3:admin", "4:name", "5:topic", "6:removed", "7:left"]);
    await until("wa1's events", () => home.eventsOf(wa1, room).length === 7);
    assert.deepEqual(changes(home.eventsOf(wa1, room)), ["1:created", "2:added", "3:admin", "4:name", "5:topic", "6:removed", "7:left"]);
    await until("wa3's events", () => home.eventsOf(wa3, room).length === 5);
    assert.deepEqual(changes(home.eventsOf(wa3, room)), ["2:added", "3:admin", "4:name", "5:topic", "6:removed"], "the removed member hears of its removal, then nothing");
    const removed = home.eventsOf(wa3, room).at(-1)!;
    assert.equal(removed.by, alice);
    assert.equal(removed.subject, wa3);
    assert.equal(
      removed.group.members.some((m) => m.user === wa3),
      false,
    );
    // Gone is gone: no more state for a former member.
    await assert.rejects(home.client.getGroup(wa3, room), rejectsWith("not_member"));
    assert.deepEqual((await home.client.listGroups(wa3)).map((g) => g.room).includes(room), false);
  });

  it("relays a message as one ciphertext per member under one id, and refuses non-members", async () => {
    const { group } = await home.client.createGroup({ by: wa1, name: "Messages", members: [alice, wa3] });
    const room = group.room;
    const id = new Uint8Array(16).fill(0x42);
    const toAlice = await home.client.send({ from: wa1, to: alice, room, id, payload: fakeCiphertext("c-alice") });
    const toWa3 = await home.client.send({ from: wa1, to: wa3, room, id, payload: fakeCiphertext("c-wa3") });
    assert.equal(toAlice.duplicate || toWa3.duplicate, false, "(from, to, id) differs per member");
    await until("both copies", () => bridge.delivers.some((d) => d.room === room) && home.delivers.some((d) => d.room === room && d.to === wa3));
    const got = bridge.delivers.find((d) => d.room === room)!;
    assert.equal(got.from, wa1);
    assert.deepEqual(got.id, id);
    assert.equal(new TextDecoder().decode(got.payload.body), "c-alice");
    await until("receipts", () => home.receipts.filter((r) => r.room === room).length === 2);

    // wa4 is no member: it may neither send into the room nor be sent to there.
    await assert.rejects(home.client.send({ from: wa4, to: wa1, room, payload: fakeCiphertext("x") }), rejectsWith("not_member"));
    await assert.rejects(home.client.send({ from: wa1, to: wa4, room, payload: fakeCiphertext("x") }), rejectsWith("not_member"));
    // Members whose setting goes off later stay members, but nothing passes between them and third parties.
    await home.client.addGroupMember(wa1, room, dave);
    await bridge.client.send({ from: alice, to: dave, room, payload: fakeCiphertext("between bridges, with a WhatsApp host") });
    await bridge.client.setSettings(dave, { thirdPartyChats: false });
    await assert.rejects(bridge.client.send({ from: alice, to: dave, room, payload: fakeCiphertext("x") }), rejectsWith("not_opted_in"));
    await assert.rejects(home.client.send({ from: wa1, to: dave, room, payload: fakeCiphertext("x") }), rejectsWith("not_opted_in"));
    await home.client.setSettings(wa3, { thirdPartyChats: false });
    await assert.rejects(bridge.client.send({ from: alice, to: wa3, room, payload: fakeCiphertext("x") }), rejectsWith("third_party_disabled"));
    await home.client.send({ from: wa1, to: wa3, room, payload: fakeCiphertext("WhatsApp to WhatsApp is unaffected") });
    await home.client.setSettings(wa3, { thirdPartyChats: true });
    // Nor may a member who was removed.
    await home.client.removeGroupMember(wa1, room, wa3);
    await assert.rejects(home.client.send({ from: wa3, to: alice, room, payload: fakeCiphertext("x") }), rejectsWith("not_member"));
    await assert.rejects(home.client.send({ from: wa1, to: wa3, room, payload: fakeCiphertext("x") }), rejectsWith("not_member"));
  });

  it("never sends group traffic to a connection that did not negotiate groups: it waits in the queue", async () => {
    const { group } = await home.client.createGroup({ by: wa1, name: "Waiting", members: [alice] });
    await until("alice's created event", () => bridge.eventsOf(alice, group.room).length === 1);
    // The bridge comes back without the feature (an older build): alice's group events wait.
    const old = track(client(gw, BRIDGE, []));
    const oldGroups: unknown[] = [];
    const oldDelivers: DeliverFrame[] = [];
    old.on("group", (f) => oldGroups.push(f));
    old.onDeliver(async (f) => void oldDelivers.push(f));
    await old.connect();
    await old.login(alice); // takes alice's session over
    await home.client.updateGroup(wa1, group.room, { name: "Still waiting" });
    await home.client.send({ from: wa1, to: alice, payload: fakeCiphertext("a 1:1 message") });
    // The 1:1 message is behind the group event in alice's queue, so it waits too. A round
    // trip on the old connection: anything pushed to it before this answer has arrived.
    await old.getProfile(wa1);
    assert.equal(oldGroups.length, 0);
    assert.equal(oldDelivers.length, 0);
    await old.close();
    // With the feature again, everything arrives in order.
    const fresh = new Side(track(client(gw, BRIDGE)));
    await fresh.client.connect();
    await fresh.client.login(alice);
    await until(
      "the waiting events",
      () => fresh.groups.some((g) => g.group.name === "Still waiting") && fresh.delivers.some((d) => new TextDecoder().decode(d.payload.body) === "a 1:1 message"),
    );
    await fresh.client.close();
    await bridge.client.login(alice);
  });

  it("keeps groups, members and queued group events across a gateway restart", async () => {
    const { group } = await home.client.createGroup({ by: wa1, name: "Durable", topic: "kept", members: [wa3, alice] });
    await home.client.setGroupAdmin(wa1, group.room, wa3, true);
    await bridge.client.logout(alice); // alice's events stay queued
    const before = await home.client.getGroup(wa1, group.room);
    await gw.stop();
    await gw.start();
    await home.client.whenConnected();
    const afterRestart = await home.client.getGroup(wa1, group.room);
    assert.deepEqual(afterRestart, before);
    assert.ok((await home.client.listGroups(wa3)).some((g) => g.room === group.room && g.name === "Durable"));
    await bridge.client.whenConnected();
    await bridge.client.login(alice);
    await until(
      "alice's queued group events",
      () =>
        bridge
          .eventsOf(alice, group.room)
          .map((e) => e.change)
          .join() === "created,admin",
    );
    await home.client.send({ from: wa1, to: alice, room: group.room, payload: fakeCiphertext("after restart") });
    await until("deliver after restart", () => bridge.delivers.some((d) => d.room === group.room));
  });
});

describe("group messages end to end", () => {
  let dir: string;
  let gw: GatewayProcess;
  const clients: InteropClient[] = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "gateway-groups-e2e-"));
    gw = new GatewayProcess({ dbPath: path.join(dir, "gateway.db"), recordPath: path.join(dir, "frames.log"), homeProvider: HOME, providers: SECRETS });
    await gw.start();
  });

  after(async () => {
    for (const c of clients) await c.close();
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("carries only ciphertext: every member decrypts its own copy, the gateway never sees the text", async () => {
    const received: PayloadEvent[] = [];
    const endpointFor = (provider: keyof typeof SECRETS) => {
      const c = client(gw, provider);
      clients.push(c);
      const store = new MemoryRecordStore();
      return new SecureEndpoint({ client: c, openRecords: () => store, onPayload: async (ev) => void received.push(ev) });
    };
    const homeEp = endpointFor(HOME);
    const bridgeEp = endpointFor(BRIDGE);
    const homeClient = clients[0]!;
    await Promise.all(clients.map((c) => c.connect()));
    for (const user of [wa1, wa3]) {
      await homeClient.upsertAccount({ user, displayName: user.slice(-4) });
      await homeClient.setSettings(user, { thirdPartyChats: true });
      await homeEp.addUser(user, { home: true });
    }
    await bridgeEp.addUser(alice, { displayName: "Alice" });
    const { group } = await homeClient.createGroup({ by: wa1, name: "Secret", members: [alice, wa3] });
    const secret = "group secret: the meeting point is the old mill";
    const plaintext = new TextEncoder().encode(secret);
    const id = new Uint8Array(16).fill(9);
    const members = group.members.map((m) => m.user);
    const sent = await homeEp.sendToGroup(wa1, group.room, members, { kind: "disappearing", seconds: 0 }, id);
    assert.deepEqual(sent.failed, []);
    assert.deepEqual(sent.sent.map((s) => s.to).sort(), [alice, wa3].sort());
    // A real text payload too, so the recording is searched for real message bytes.
    const mimi = encodeMimi(newTextMessage({ sender: alice, room: group.room, markdown: secret }));
    const fromAlice = await bridgeEp.sendToGroup(alice, group.room, members, { kind: "content", mimi }, new Uint8Array(16).fill(10));
    assert.deepEqual(fromAlice.failed, []);
    // The recorder writes in order: once the four copies went out, everything before them is on file.
    const copiesOut = () => gw.recordedFrames().filter(({ direction, frame }) => direction === "out" && frame.t === "deliver" && frame.room === group.room).length;
    await until("the copies on record", () => copiesOut() === 4);
    assert.equal(gw.recordingContains(plaintext), false, "the text never crossed the gateway in the clear");
    assert.equal(gw.recordingContains(mimi), false, "nor did the MIMI message");
    await until("every copy decrypted", () => received.length === 4);
    const texts = received.filter((r) => r.payload.kind === "content");
    assert.deepEqual(texts.map((r) => r.to).sort(), [wa1, wa3].sort());
    for (const r of texts) {
      assert.equal(r.room, group.room);
      assert.equal(r.from, alice);
      assert.ok(Buffer.from((r.payload as { mimi: Uint8Array }).mimi).includes(Buffer.from(plaintext)));
    }
  });
});

describe("the gateway's database", () => {
  it("takes a database made before groups: the queue gains its group column, its events stay", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "gateway-groups-db-"));
    const file = path.join(dir, "gateway.db");
    try {
      const store = new GatewayStore(file);
      store.upsertAccount(wa1, HOME, true, "One", undefined);
      store.upsertAccount(alice, BRIDGE, false, "Alice", undefined);
      const accepted = store.acceptSend({
        t: "send",
        rid: 1,
        from: alice,
        to: wa1,
        room: "mimi://whatsapp.example/r/dm-x",
        id: new Uint8Array(16),
        payload: fakeCiphertext("old"),
      });
      assert.equal(accepted.kind, "accepted");
      store.close();
      // What an older gateway left behind: no grp column, no group tables.
      const db = new Database(file);
      db.exec("ALTER TABLE queue DROP COLUMN grp; DROP TABLE groups; DROP TABLE group_members; DROP TABLE provider_features");
      db.close();
      const reopened = new GatewayStore(file);
      const events = reopened.eventsAfter(wa1, 0, 10);
      assert.deepEqual(
        events.map((e) => [e.type, e.group]),
        [["deliver", false]],
      );
      assert.deepEqual(reopened.groupsOf(wa1), []);
      reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
