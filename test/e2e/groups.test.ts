/**
 * Group chats, bridge side (issue 15): a WhatsApp group with three simulated WhatsApp users and
 * two Matrix users of the bridge is one shared Matrix room; each message shows once although
 * both Matrix users' accounts receive a copy; a Matrix message reaches every WhatsApp member and
 * is not echoed; adds, removes, renames from WhatsApp and a Matrix user's leave change the room.
 * Real Synapse, gateway, simulator and bridge.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { recordedFrames } from "../support/gateway-frames";
import { SyncedEvent, TestClient } from "../support/matrix-client";
import { makePhoto } from "../support/media-files";
import { InboxEntry } from "../support/sim-api";
import { PROVISIONING_SECRET, Stack } from "../support/stack";

let stack: Stack;
const WAIT = { timeoutMs: 30_000 };
const ANA = "+4915700000001";
const BEN = "+4915700000002";
const CEM = "+4915700000003";
const DIA = "+4915700000004";

interface Group {
  room: string;
  name: string;
  members: { id: string; admin: boolean }[];
}

before(async () => {
  // Status events on: a test waits for the one that says the network took every copy.
  stack = await Stack.start("groups", { bridgeConfig: (c) => void (c.bridge = { ...(c.bridge ?? {}), message_status_events: true }) });
});

after(async () => {
  await stack?.stop();
});

/** The bodies of the room's messages (m.room.message), as one Matrix user's sync saw them. */
const bodies = (client: TestClient, roomId: string) =>
  client
    .eventsIn(roomId)
    .filter((e) => e.type === "m.room.message")
    .map((e) => String(e.content.body));

/** Membership of a user in a room as the client's sync saw it last (state or timeline). */
const membershipEvent = (roomId: string, userId: string, membership: string) => (e: SyncedEvent) =>
  e.room_id === roomId && e.type === "m.room.member" && e.state_key === userId && e.content.membership === membership;

describe("group chats", () => {
  let alice: TestClient;
  let bob: TestClient;
  let group: Group;
  let roomId: string;
  let aliceBotRoom: string;
  let bobBotRoom: string;
  let carol: TestClient;
  let carolBotRoom: string;
  /** The simulator's route of the group as `phone` acts on it. */
  const groupPath = (phone: string) => `/users/${encodeURIComponent(phone)}/groups/${encodeURIComponent(group.room)}`;

  /**
   * Sends a marker from Ana and waits until both Matrix users' accounts acknowledged it (each
   * account's events come in order: every copy of what was sent before it was handled) and
   * the room shows it (the room's queue is in order: everything queued before it is shown).
   */
  async function settle(marker: string): Promise<void> {
    const sent = await stack.sim.sendText(ANA, group.room, marker);
    for (const who of [alice, bob]) await stack.sim.waitForInbox(ANA, (e: InboxEntry) => e.kind === "delivered" && e.id === sent.id && e.fromId === who.userId, 30_000);
    await alice.waitFor((e) => e.room_id === roomId && e.content.body === marker, WAIT);
  }

  test("a group created on WhatsApp with two Matrix users is one shared room, not a DM, with ghosts and admins", async () => {
    for (const [phone, name] of [
      [ANA, "Ana"],
      [BEN, "Ben"],
      [CEM, "Cem"],
      [DIA, "Dia"],
    ])
      await stack.sim.createUser(phone, name);
    alice = await stack.user("alice");
    bob = await stack.user("bob");
    aliceBotRoom = await stack.botRoom(alice, { enable: true });
    bobBotRoom = await stack.botRoom(bob, { enable: true });
    group = await stack.sim.request<Group>("POST", `/users/${encodeURIComponent(ANA)}/groups`, { name: "Trip", members: [BEN, CEM, alice.userId, bob.userId] });

    const aliceInvite = await alice.waitForInvite((i) => i.inviter === stack.botId, WAIT);
    const bobInvite = await bob.waitForInvite((i) => i.inviter === stack.botId, WAIT);
    assert.equal(bobInvite.roomId, aliceInvite.roomId, "both Matrix users are invited to the same room");
    roomId = aliceInvite.roomId;
    await alice.joinRoom(roomId);
    await bob.joinRoom(roomId);

    const create = await alice.getState(roomId, "m.room.create");
    assert.equal(create.type, undefined, "a plain room, not a space");
    assert.equal((await alice.getState(roomId, "m.room.name")).name, "Trip");
    const joined = (await alice.getRoomMembers(roomId, "join")).map((e) => e.state_key).sort();
    assert.deepEqual(joined, [alice.userId, bob.userId, stack.botId, stack.ghostId(ANA), stack.ghostId(BEN), stack.ghostId(CEM)].sort());
    const power = await alice.getState(roomId, "m.room.power_levels");
    assert.equal(power.users[stack.ghostId(ANA)], 50, "the group's admin is a moderator");
    assert.equal(power.users[stack.ghostId(BEN)] ?? 0, 0);
    const direct = (await alice.getAccountData("m.direct")) ?? {};
    assert.ok(!Object.values(direct).some((rooms) => (rooms as string[]).includes(roomId)), "not listed as a DM");
  });

  test("a WhatsApp message appears exactly once, though both Matrix users' accounts receive it", async () => {
    await stack.sim.sendText(BEN, group.room, "hello group");
    const shown = await bob.waitFor((e) => e.room_id === roomId && e.content.body === "hello group", WAIT);
    assert.equal(shown.sender, stack.ghostId(BEN));
    await settle("marker one");
    assert.equal(bodies(alice, roomId).filter((b) => b === "hello group").length, 1, `the room shows: ${JSON.stringify(bodies(alice, roomId))}`);
    assert.equal(bodies(bob, roomId).filter((b) => b === "hello group").length, 1);
  });

  test("a Matrix message reaches every WhatsApp member from its sender's account, and is not echoed back", async () => {
    const eventId = await alice.sendText(roomId, "hi from alice");
    for (const phone of [ANA, BEN, CEM]) {
      const got = await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "hi from alice", 30_000);
      assert.equal(got.fromId, alice.userId);
      assert.equal(got.room, group.room);
    }
    // Sent once the network took every copy (Bob's account's included).
    await alice.waitFor((e) => e.room_id === roomId && e.type === "com.beeper.message_send_status" && e.content["m.relates_to"]?.event_id === eventId, WAIT);
    await settle("marker two");
    for (const client of [alice, bob]) {
      const copies = client.eventsIn(roomId).filter((e) => e.content.body === "hi from alice");
      assert.deepEqual(
        copies.map((e) => e.sender),
        [alice.userId],
        "the room shows Alice's own event and no copy from the network",
      );
    }
    const bobSends = await bob.sendText(roomId, "and from bob");
    assert.ok(bobSends);
    const got = await stack.sim.waitForInbox(CEM, (e) => e.kind === "text" && e.text === "and from bob", 30_000);
    assert.equal(got.fromId, bob.userId, "Bob's message goes out from Bob's own account");
  });

  test("an add, a remove and a rename on WhatsApp show in the room", async () => {
    await stack.sim.request("POST", `/users/${encodeURIComponent(ANA)}/groups/${encodeURIComponent(group.room)}/members`, { member: DIA });
    await alice.waitFor(membershipEvent(roomId, stack.ghostId(DIA), "join"), WAIT);
    await stack.sim.sendText(DIA, group.room, "thanks for adding me");
    const fromDia = await alice.waitFor((e) => e.room_id === roomId && e.content.body === "thanks for adding me", WAIT);
    assert.equal(fromDia.sender, stack.ghostId(DIA));

    await stack.sim.request("DELETE", `/users/${encodeURIComponent(ANA)}/groups/${encodeURIComponent(group.room)}/members/${encodeURIComponent(CEM)}`);
    await alice.waitFor(membershipEvent(roomId, stack.ghostId(CEM), "leave"), WAIT);

    await stack.sim.request("PATCH", `/users/${encodeURIComponent(ANA)}/groups/${encodeURIComponent(group.room)}`, { name: "Trip 2027" });
    await bob.waitFor((e) => e.room_id === roomId && e.type === "m.room.name" && e.content.name === "Trip 2027", WAIT);

    // What Alice writes now reaches the new member and not the removed one.
    await alice.sendText(roomId, "welcome Dia");
    await stack.sim.waitForInbox(DIA, (e) => e.kind === "text" && e.text === "welcome Dia", 30_000);
    await settle("marker three");
    assert.ok(!(await stack.sim.inbox(CEM)).some((e) => e.text === "welcome Dia"), "the removed member got nothing");
  });

  test("replies, edits, reactions and deletions work in the group both ways", async () => {
    const original = await stack.sim.sendText(BEN, group.room, "meet at 9");
    const shown = await alice.waitFor((e) => e.room_id === roomId && e.content.body === "meet at 9", WAIT);

    // WhatsApp → Matrix: an edit and a reaction by a member, a reply by another.
    await stack.sim.sendEdit(BEN, group.room, original.id, "meet at 10");
    const edit = await alice.waitFor((e) => e.room_id === roomId && e.content["m.relates_to"]?.rel_type === "m.replace", WAIT);
    assert.equal(edit.content["m.relates_to"].event_id, shown.event_id);
    assert.equal(edit.content["m.new_content"]?.body, "meet at 10");
    await stack.sim.sendReaction(DIA, group.room, original.id, "👍");
    const reaction = await bob.waitFor((e) => e.room_id === roomId && e.type === "m.reaction", WAIT);
    assert.equal(reaction.sender, stack.ghostId(DIA));
    assert.deepEqual(reaction.content["m.relates_to"], { rel_type: "m.annotation", event_id: shown.event_id, key: "👍" });
    await stack.sim.sendText(ANA, group.room, "fine by me", { inReplyTo: original.id });
    const reply = await alice.waitFor((e) => e.room_id === roomId && e.content.body === "fine by me", WAIT);
    assert.equal(reply.content["m.relates_to"]?.["m.in_reply_to"]?.event_id, shown.event_id);

    // Matrix → WhatsApp: a reply, a reaction and a deletion by a Matrix member reach every WhatsApp member.
    const answer = await bob.sendText(roomId, "10 is good", { "m.relates_to": { "m.in_reply_to": { event_id: shown.event_id } } });
    const answered = await stack.sim.waitForInbox(DIA, (e) => e.kind === "text" && e.text === "10 is good", 30_000);
    assert.equal(answered.inReplyTo, original.id);
    assert.equal(answered.fromId, bob.userId);
    await alice.sendEvent(roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: shown.event_id, key: "❤️" } });
    const liked = await stack.sim.waitForInbox(BEN, (e) => e.kind === "reaction" && e.emoji === "❤️", 30_000);
    assert.equal(liked.target, original.id);
    assert.equal(liked.fromId, alice.userId);
    await bob.redact(roomId, answer);
    const deleted = await stack.sim.waitForInbox(ANA, (e) => e.kind === "delete" && e.target === answered.id, 30_000);
    assert.equal(deleted.fromId, bob.userId);
  });

  test("a photo goes both ways in the group, byte for byte", async () => {
    const photo = makePhoto(fs.mkdtempSync(path.join(os.tmpdir(), "mib-group-media-")));
    const bytes = fs.readFileSync(photo);
    const sha = createHash("sha256").update(bytes).digest("hex");
    await stack.sim.sendMedia(ANA, group.room, { file: photo, mimetype: "image/png" });
    const image = await bob.waitFor((e) => e.room_id === roomId && e.content.msgtype === "m.image", WAIT);
    assert.equal(image.sender, stack.ghostId(ANA));
    const downloaded = await bob.downloadMedia(String(image.content.url));
    assert.equal(createHash("sha256").update(downloaded.data).digest("hex"), sha, "the same bytes in the room");
    await settle("marker four");
    assert.equal(alice.eventsIn(roomId).filter((e) => e.content.msgtype === "m.image").length, 1, "one copy of the photo");

    const mxc = await alice.uploadMedia(bytes, "image/png", "photo.png");
    await alice.sendEvent(roomId, "m.room.message", { msgtype: "m.image", body: "photo.png", url: mxc, info: { mimetype: "image/png", size: bytes.length } });
    for (const phone of [BEN, DIA]) {
      const got = await stack.sim.waitForInbox(phone, (e) => e.kind === "media" && e.fromId === alice.userId, 60_000);
      assert.equal(got.sha256, sha, `${phone} has the same bytes`);
    }
  });

  test("read receipts and typing in the group, both ways", async () => {
    const theirs = await stack.sim.sendText(BEN, group.room, "did everyone see this");
    const shown = await alice.waitFor((e) => e.room_id === roomId && e.content.body === "did everyone see this", WAIT);
    await alice.sendReceipt(roomId, shown.event_id!);
    for (const phone of [ANA, BEN, DIA]) {
      const read = await stack.sim.waitForInbox(phone, (e) => e.kind === "read" && e.fromId === alice.userId && (e.ids as string[]).includes(theirs.id), 30_000);
      assert.equal(read.room, group.room, `${phone} is told in the group`);
    }

    const mine = await bob.sendText(roomId, "who has read mine");
    const got = await stack.sim.waitForInbox(DIA, (e) => e.kind === "text" && e.text === "who has read mine", 30_000);
    await stack.sim.sendRead(DIA, group.room, [got.id!]);
    await alice.waitFor((e) => e.room_id === roomId && e.type === "m.receipt" && e.content[mine]?.["m.read"]?.[stack.ghostId(DIA)] !== undefined, {
      ...WAIT,
      description: "Dia's ghost's read receipt on Bob's message",
    });

    await stack.sim.sendTyping(BEN, group.room, "on");
    const typing = await bob.waitFor((e) => e.room_id === roomId && e.type === "m.typing" && e.content.user_ids.includes(stack.ghostId(BEN)), {
      ...WAIT,
      description: "Ben's ghost typing",
    });
    await stack.sim.sendTyping(BEN, group.room, "off");
    await bob.waitFor((e) => e.room_id === roomId && e.type === "m.typing" && e !== typing && !e.content.user_ids.includes(stack.ghostId(BEN)), {
      ...WAIT,
      description: "Ben's ghost stopped",
    });

    await alice.sendTyping(roomId, true);
    const on = await stack.sim.waitForInbox(ANA, (e) => e.kind === "typing" && e.state === "on" && e.fromId === alice.userId, 30_000);
    assert.equal(on.room, group.room);
    await stack.sim.waitForInbox(DIA, (e) => e.kind === "typing" && e.state === "on" && e.fromId === alice.userId, 30_000);
    await alice.sendTyping(roomId, false);
    await stack.sim.waitForInbox(ANA, (e) => e.kind === "typing" && e.state === "off" && e.fromId === alice.userId && e.n > on.n, 30_000);
  });

  test("a topic and a picture set on WhatsApp show in the room", async () => {
    await stack.sim.request("PATCH", groupPath(ANA), { topic: "June, by train" });
    const topic = await alice.waitFor((e) => e.room_id === roomId && e.type === "m.room.topic" && e.content.topic === "June, by train", WAIT);
    assert.equal(topic.sender, stack.botId);
    const bytes = fs.readFileSync(makePhoto(fs.mkdtempSync(path.join(os.tmpdir(), "mib-group-picture-"))));
    await stack.sim.request("PATCH", groupPath(ANA), { picture: { mimetype: "image/png", base64: bytes.toString("base64") } });
    const avatar = await bob.waitFor((e) => e.room_id === roomId && e.type === "m.room.avatar" && typeof e.content.url === "string", WAIT);
    assert.equal(avatar.sender, stack.botId);
    const picture = await bob.downloadMedia(String(avatar.content.url));
    assert.equal(createHash("sha256").update(picture.data).digest("hex"), createHash("sha256").update(bytes).digest("hex"), "the room shows the group's picture, byte for byte");
  });

  test("made an admin on WhatsApp, a Matrix user renames the group and sets its topic from the room; the room shows each once", async () => {
    await stack.sim.request("POST", `${groupPath(ANA)}/admins`, { member: alice.userId, admin: true });
    await alice.waitFor((e) => e.room_id === roomId && e.type === "m.room.power_levels" && e.content.users?.[alice.userId] === 50, { ...WAIT, description: "Alice a moderator" });

    await alice.sendState(roomId, "m.room.name", { name: "Trip (final)" });
    const renamed = await stack.sim.waitForInbox(BEN, (e) => e.kind === "group" && e.change === "name" && e.group === "Trip (final)", 30_000);
    assert.equal(renamed.fromId, alice.userId, "renamed by Alice's account");
    await bob.sendState(roomId, "m.room.topic", { topic: "bring boots" }).then(
      () => assert.fail("Bob, no admin, has no power to change the topic"),
      (err: { errcode?: string }) => assert.equal(err.errcode, "M_FORBIDDEN"),
    );
    await alice.sendState(roomId, "m.room.topic", { topic: "bring boots" });
    const topic = await stack.sim.waitForInbox(DIA, (e) => e.kind === "group" && e.change === "topic" && e.topic === "bring boots", 30_000);
    assert.equal(topic.fromId, alice.userId);
    await settle("marker five");
    const shown = (type: string) => alice.eventsIn(roomId).filter((e) => e.type === type && (e.content.name === "Trip (final)" || e.content.topic === "bring boots"));
    assert.deepEqual(
      shown("m.room.name").map((e) => e.sender),
      [alice.userId],
      "Alice's rename, not repeated by the bridge",
    );
    assert.deepEqual(
      shown("m.room.topic").map((e) => e.sender),
      [alice.userId],
      "Alice's topic, not repeated by the bridge",
    );
  });

  test("a Matrix user invited by a member joins the group only when both sides allow it; otherwise the inviter is told why", async () => {
    carol = await stack.user("carol");
    carolBotRoom = await stack.botRoom(carol);
    const refusedInvite = async (why: RegExp, count: number) => {
      await alice.invite(roomId, carol.userId);
      const notice = await alice.waitFor((e) => e.room_id === roomId && e.sender === stack.botId && why.test(String(e.content.body)), WAIT);
      assert.match(String(notice.content.body), /^Your invitation was not delivered: /);
      // The invite is withdrawn: the room shows the group's members only.
      await alice.waitFor(
        () => alice.eventsIn(roomId).filter((e) => e.type === "m.room.member" && e.state_key === carol.userId && e.content.membership === "leave").length === count,
        { ...WAIT, description: `Carol's invite withdrawn (${count})` },
      );
    };
    // Carol has Third-Party Chats off: not_opted_in.
    await refusedInvite(/does not accept Third-Party Chats/, 1);
    // Carol on, but a WhatsApp member has them off: third_party_disabled.
    await stack.enable(carol, carolBotRoom);
    await stack.sim.setThirdPartyChats(DIA, false);
    await refusedInvite(/a WhatsApp member of the group has Third-Party Chats turned off/, 2);
    await stack.sim.setThirdPartyChats(DIA, true);

    await alice.invite(roomId, carol.userId);
    const added = await stack.sim.waitForInbox(ANA, (e) => e.kind === "group" && e.change === "added" && e.subjectId === carol.userId, 30_000);
    assert.equal(added.fromId, alice.userId, "added by Alice's account");
    await carol.joinRoom(roomId);
    await stack.sim.sendText(BEN, group.room, "welcome carol");
    await carol.waitFor((e) => e.room_id === roomId && e.content.body === "welcome carol", WAIT);
    await carol.sendText(roomId, "hi all, carol here");
    const fromCarol = await stack.sim.waitForInbox(DIA, (e) => e.kind === "text" && e.text === "hi all, carol here", 30_000);
    assert.equal(fromCarol.fromId, carol.userId);
    // Bob (no admin) may invite in the room, but not add to the group.
    const dave = await stack.user("dave");
    await stack.botRoom(dave, { enable: true });
    await bob.invite(roomId, dave.userId);
    await bob.waitFor((e) => e.room_id === roomId && e.sender === stack.botId && /only the group's admins may add members/.test(String(e.content.body)), WAIT);
  });

  test("a Matrix admin removes a WhatsApp member by removing their ghost, and adds them back by inviting it", async () => {
    await alice.kick(roomId, stack.ghostId(DIA));
    const removed = await stack.sim.waitForInbox(ANA, (e) => e.kind === "group" && e.change === "removed" && e.subjectId === DIA, 30_000);
    assert.equal(removed.fromId, alice.userId);
    await alice.invite(roomId, stack.ghostId(DIA));
    const added = await stack.sim.waitForInbox(ANA, (e) => e.kind === "group" && e.change === "added" && e.subjectId === DIA && e.n > removed.n, 30_000);
    assert.equal(added.fromId, alice.userId);
    await alice.waitFor(
      () => alice.eventsIn(roomId).filter((e) => e.type === "m.room.member" && e.state_key === stack.ghostId(DIA) && e.content.membership === "join").length >= 2,
      { ...WAIT, description: "Dia's ghost back in the room" },
    );
    await stack.sim.sendText(DIA, group.room, "back again");
    await alice.waitFor((e) => e.room_id === roomId && e.content.body === "back again", WAIT);
  });

  test("what third-party chats do not carry gets a notice in the group", async () => {
    await stack.sim.sendSticker(BEN, group.room);
    const sticker = await alice.waitFor((e) => e.room_id === roomId && e.content.msgtype === "m.notice" && /sticker/i.test(String(e.content.body)), WAIT);
    assert.equal(sticker.sender, stack.ghostId(BEN));
    await stack.sim.setDisappearing(ANA, group.room, 86400);
    const timer = await alice.waitFor((e) => e.room_id === roomId && e.content.msgtype === "m.notice" && /disappearing/i.test(String(e.content.body)), WAIT);
    assert.equal(timer.sender, stack.ghostId(ANA));
    const mxc = await bob.uploadMedia(fs.readFileSync(makePhoto(fs.mkdtempSync(path.join(os.tmpdir(), "mib-group-sticker-")))), "image/png", "sticker.png");
    await bob.sendEvent(roomId, "m.sticker", { body: "a sticker", url: mxc, info: { mimetype: "image/png" } });
    const refused = await bob.waitFor((e) => e.room_id === roomId && e.content.msgtype === "m.notice" && /sticker was not sent/.test(String(e.content.body)), WAIT);
    assert.equal(refused.sender, stack.botId, "the bridge's notice in a group comes from the bot");
  });

  test("`list`, `GET /chats` and the dedicated inbox show the group; the metrics count group messages", async () => {
    const asked = await alice.sendText(aliceBotRoom, "list");
    const list = await alice.waitFor((e) => e.room_id === aliceBotRoom && e.sender === stack.botId && stack.after(alice, aliceBotRoom, asked, e.event_id), WAIT);
    assert.match(String(list.content.body), new RegExp(`Trip \\(final\\) \\(group, 3 WhatsApp members\\): .*${roomId.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

    const url = new URL(`${stack.appserviceUrl}/_matrix/provision/v1/chats`);
    url.searchParams.set("user_id", bob.userId);
    const res = await fetch(url, { headers: { authorization: `Bearer ${PROVISIONING_SECRET}` } });
    const { chats } = (await res.json()) as { chats: Record<string, unknown>[] };
    assert.deepEqual(
      chats.filter((c) => c.kind === "group"),
      [{ room_id: roomId, kind: "group", group: group.room, name: "Trip (final)", members: 3 }],
    );

    await bob.sendText(bobBotRoom, "inbox dedicated");
    const space = await bob.waitForInvite((i) => i.inviter === stack.botId && i.roomId !== roomId, WAIT);
    await bob.joinRoom(space.roomId);
    const child = await bob.getState(space.roomId, "m.space.child", roomId);
    assert.deepEqual(child.via, [stack.domain], "the group's room is a child of Bob's Space");

    assert.ok((await stack.metric("bridge_group_messages_bridged_total", { direction: "to_matrix", type: "text" })) >= 5);
    assert.ok((await stack.metric("bridge_group_messages_bridged_total", { direction: "to_network", type: "text" })) >= 4);
  });

  test("the gateway never sees a group message's plaintext", async (t) => {
    const fromMatrix = "group secret from matrix: amber walrus 5512";
    const fromWhatsApp = "group secret from whatsapp: violet heron 8830";
    await alice.sendText(roomId, fromMatrix);
    for (const phone of [ANA, BEN, DIA]) await stack.sim.waitForInbox(phone, (e) => e.text === fromMatrix, 30_000);
    await stack.sim.sendText(BEN, group.room, fromWhatsApp);
    await bob.waitFor((e) => e.room_id === roomId && e.content.body === fromWhatsApp, WAIT);
    const frames = recordedFrames(stack.dir);
    const sends = frames.filter((f) => f.frame?.t === "send" && (f.frame as { room?: string }).room === group.room);
    assert.ok(sends.length >= 5, `the recorder saw the group's sends (${sends.length})`);
    for (const text of [fromMatrix, fromWhatsApp, "amber walrus", "violet heron", "hello group", "hi from alice"]) {
      assert.equal(frames.filter((f) => f.bytes.includes(Buffer.from(text, "utf8"))).length, 0, `"${text}" must not appear in any frame the gateway saw`);
    }
    t.diagnostic(`searched ${frames.length} frames (${sends.length} sends to the group) for the plaintexts: none found`);
  });

  test("a Matrix user who leaves the room leaves the group; the room stays for the other", async () => {
    await bob.leaveRoom(roomId);
    const left = await stack.sim.waitForInbox(ANA, (e) => e.kind === "group" && e.change === "left" && e.subjectId === bob.userId, 30_000);
    assert.ok(!(left.members as string[]).includes(bob.userId));
    await stack.sim.sendText(ANA, group.room, "bye bob");
    await alice.waitFor((e) => e.room_id === roomId && e.content.body === "bye bob", WAIT);
  });

  test("`group <name> <phone> <phone>` creates a WhatsApp group from Matrix, with its room", async () => {
    await alice.sendText(aliceBotRoom, `group Picnic plans ${ANA} ${CEM}`);
    const answer = await alice.waitFor((e) => e.room_id === aliceBotRoom && e.sender === stack.botId && /Created the group "Picnic plans"/.test(String(e.content.body)), WAIT);
    assert.doesNotMatch(String(answer.content.body), /Not added/);
    const created = await stack.sim.waitForInbox(CEM, (e) => e.kind === "group" && e.change === "created" && e.group === "Picnic plans", 30_000);
    assert.equal(created.fromId, alice.userId, "Alice's account created it");
    const invite = await alice.waitForInvite((i) => i.inviter === stack.botId && i.roomId !== roomId, WAIT);
    await alice.joinRoom(invite.roomId);
    assert.equal((await alice.getState(invite.roomId, "m.room.name")).name, "Picnic plans");
    const power = await alice.getState(invite.roomId, "m.room.power_levels");
    assert.equal(power.users[alice.userId], 50, "the creator is the group's admin");
    await stack.sim.sendText(ANA, String(created.room), "count me in");
    const msg = await alice.waitFor((e) => e.room_id === invite.roomId && e.content.body === "count me in", WAIT);
    assert.equal(msg.sender, stack.ghostId(ANA));
    await alice.sendText(invite.roomId, "bring snacks");
    await stack.sim.waitForInbox(CEM, (e) => e.kind === "text" && e.text === "bring snacks" && e.room === created.room, 30_000);
  });

  test("a room in which a Matrix user invites two WhatsApp contacts becomes a WhatsApp group", async () => {
    const room = await alice.createRoom({ name: "Book club", preset: "private_chat", invite: [stack.ghostId(ANA), stack.ghostId(BEN)] });
    const created = await stack.sim.waitForInbox(BEN, (e) => e.kind === "group" && e.change === "created" && e.group === "Book club", 30_000);
    assert.equal(created.fromId, alice.userId, "Alice's account created it");
    assert.deepEqual([...(created.members as string[])].sort(), [ANA, BEN, alice.userId].sort());
    for (const who of [stack.botId, stack.ghostId(ANA), stack.ghostId(BEN)]) await alice.waitFor(membershipEvent(room, who, "join"), WAIT);
    await alice.sendText(room, "first book?");
    await stack.sim.waitForInbox(ANA, (e) => e.kind === "text" && e.text === "first book?" && e.room === created.room, 30_000);
    await stack.sim.sendText(BEN, String(created.room), "Dune");
    const answer = await alice.waitFor((e) => e.room_id === room && e.content.body === "Dune", WAIT);
    assert.equal(answer.sender, stack.ghostId(BEN));
    assert.equal(alice.seenInvites().filter((i) => i.inviter === stack.botId && i.roomId !== roomId).length, 1, "no second room was made for it (only the `group` command's)");
  });
  test("`forget` takes a Matrix user out of their groups, on the network and in the room", async () => {
    await carol.sendText(carolBotRoom, "forget");
    await carol.waitFor((e) => e.room_id === carolBotRoom && e.sender === stack.botId && /forget confirm/.test(String(e.content.body)), WAIT);
    await carol.sendText(carolBotRoom, "forget confirm");
    const left = await stack.sim.waitForInbox(ANA, (e) => e.kind === "group" && e.change === "left" && e.subjectId === carol.userId, 30_000);
    assert.ok(!(left.members as string[]).includes(carol.userId));
    await alice.waitFor(membershipEvent(roomId, carol.userId, "leave"), WAIT);
    await stack.sim.sendText(ANA, group.room, "carol is gone");
    await alice.waitFor((e) => e.room_id === roomId && e.content.body === "carol is gone", WAIT);
    assert.ok(!carol.seenInvites().some((i) => i.roomId === roomId && i.inviter === stack.botId), "Carol is not invited back");
  });

  test("the shared room as Alice's client shows it: membership changes and messages, one copy each", (t) => {
    const name = (mxid: string | undefined = "") =>
      mxid === stack.botId ? "bot" : mxid === alice.userId ? "alice" : mxid === bob.userId ? "bob" : mxid === carol.userId ? "carol" : mxid.replace(/^@whatsapp_(\d+):.*/, "+$1");
    const lines: string[] = [];
    const bodiesSeen = new Map<string, number>();
    for (const e of alice.eventsIn(roomId)) {
      if (e.type === "m.room.member") lines.push(`${name(e.sender)} → ${name(e.state_key!)}: ${e.content.membership}`);
      else if (e.type === "m.room.message") {
        const body = String(e.content.body);
        lines.push(`${name(e.sender)}: ${body.split("\n")[0]}`);
        const key = `${name(e.sender)}: ${body}`;
        if (e.content.msgtype !== "m.notice" && !e.content["m.new_content"]) bodiesSeen.set(key, (bodiesSeen.get(key) ?? 0) + 1);
      } else if (["m.room.name", "m.room.topic", "m.room.avatar"].includes(e.type))
        lines.push(`${name(e.sender)} sets ${e.type}: ${JSON.stringify(e.content.name ?? e.content.topic ?? e.content.url ?? null)}`);
    }
    t.diagnostic(`the room (${lines.length} events):\n${lines.join("\n")}`);
    const repeated = [...bodiesSeen].filter(([, n]) => n > 1);
    assert.deepEqual(repeated, [], "every message shows once");
  });
});
