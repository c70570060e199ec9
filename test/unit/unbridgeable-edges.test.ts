/**
 * src/convert/unbridgeable.ts word for word: every event type it knows, stable and unstable
 * names, gets its exact notice; the conditions (state key, live, non-empty content, a positive
 * timer) are checked on both sides.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { unappliedExpiry, unbridgeableEvent } from "../../src/convert/unbridgeable";

const event = (type: string, content: Record<string, unknown> = {}, state_key?: string) => ({ type, content, ...(state_key !== undefined ? { state_key } : {}) });

const STICKER = "Your sticker was not sent: third-party chats don't support stickers.";
const POLL = "Your poll was not sent: third-party chats don't support polls.";
const VOTE = "Your poll vote was not sent: third-party chats don't support polls.";
const CALL = "Your call did not go through: third-party chats don't support calls, only messages.";
const CALL_MEMBER = "The call was not shared with WhatsApp: third-party chats don't support calls, only messages.";
const LIVE = "Your live location was not shared: third-party chats don't support locations.";
const ENCRYPTED =
  "Your message was not sent: this room is end-to-end encrypted on Matrix, and the bridge cannot read it to pass it on. Start a new chat with this contact without encryption (the bridge encrypts messages on the way to WhatsApp).";
const ENCRYPTION =
  "Encryption was turned on in this room, but the bridge cannot read encrypted messages: nothing written here reaches WhatsApp any more. Start a new chat with this contact without encryption (the bridge encrypts messages on the way to WhatsApp).";
const NAME = "The room name stays on Matrix: third-party chats have no chat names, so the WhatsApp user doesn't see it.";
const TOPIC = "The room topic stays on Matrix: third-party chats have no chat topics, so the WhatsApp user doesn't see it.";
const AVATAR = "The room picture stays on Matrix: third-party chats have no chat pictures, so the WhatsApp user doesn't see it.";
const TIMER = "The disappearing-messages timer is not applied: third-party chats don't support disappearing messages, so messages in this chat will not disappear on WhatsApp.";
const RETENTION = "The message retention policy is not applied on WhatsApp: third-party chats don't support it, so the WhatsApp user keeps the messages of this chat.";

test("each refused event type, stable and unstable, gets its kind and exact notice", () => {
  const cases: [ReturnType<typeof event>, string, string][] = [
    [event("m.sticker", { body: "cat" }), "sticker", STICKER],
    [event("m.poll.start"), "poll", POLL],
    [event("org.matrix.msc3381.poll.start"), "poll", POLL],
    [event("m.poll.response"), "poll", VOTE],
    [event("org.matrix.msc3381.poll.response"), "poll", VOTE],
    [event("m.poll.end"), "poll", VOTE],
    [event("org.matrix.msc3381.poll.end"), "poll", VOTE],
    [event("m.call.invite"), "call", CALL],
    [event("m.call.member", { memberships: [{}] }, "@a:hs"), "call", CALL_MEMBER],
    [event("org.matrix.msc3401.call.member", { application: "m.call" }, "_@a:hs_DEV"), "call", CALL_MEMBER],
    [event("m.beacon_info", { live: true }, "@a:hs"), "live_location", LIVE],
    [event("org.matrix.msc3672.beacon_info", { live: true }, "@a:hs"), "live_location", LIVE],
    [event("m.room.encrypted", { algorithm: "m.megolm.v1.aes-sha2" }), "encrypted", ENCRYPTED],
    [event("m.room.encrypted", {}, ""), "encrypted", ENCRYPTED],
    [event("m.room.encryption", { algorithm: "m.megolm.v1.aes-sha2" }, ""), "encryption", ENCRYPTION],
    [event("m.room.name", { name: "x" }, ""), "room_name", NAME],
    [event("m.room.topic", { topic: "x" }, ""), "room_topic", TOPIC],
    [event("m.room.avatar", { url: "mxc://x/y" }, ""), "room_avatar", AVATAR],
    [event("com.beeper.disappearing_timer", { type: "after_read", timer: 1 }, ""), "disappearing_timer", TIMER],
    [event("m.room.retention", { max_lifetime: 0 }, ""), "retention", RETENTION],
  ];
  for (const [e, kind, notice] of cases) {
    assert.deepEqual(unbridgeableEvent(e), { kind, notice }, `${e.type} ${JSON.stringify(e)}`);
  }
});

test("the conditions: calls and live locations only as state with content, room changes only with an empty state key", () => {
  for (const e of [
    event("m.call.member", { memberships: [{}] }), // not a state event
    event("m.call.member", {}, "@a:hs"), // left the call: empty content
    event("m.beacon_info", { live: true }), // not a state event
    event("m.beacon_info", { live: "yes" }, "@a:hs"),
    event("m.room.name", { name: "x" }), // a message-like event, not state
    event("m.room.topic", { topic: "x" }, "x"),
    event("m.room.encryption", { algorithm: "m.megolm.v1.aes-sha2" }, "@a:hs"),
    event("com.beeper.disappearing_timer", { timer: -5 }, ""),
    event("com.beeper.disappearing_timer", { timer: "3600" }, ""),
    event("m.room.retention", { max_lifetime: "1d" }, ""),
    event("m.room.power_levels", { users: {} }, ""),
  ]) {
    assert.equal(unbridgeableEvent(e), null, JSON.stringify(e));
  }
});

test("a message's expiry: a positive timer or self-destruct time in any form, nothing else", () => {
  const NOTICE = "Sent, but it will not disappear: third-party chats don't support disappearing messages, so the WhatsApp user keeps this message.";
  assert.equal(unappliedExpiry({ "com.beeper.disappearing_timer": { timer: 1 } }), NOTICE);
  assert.equal(unappliedExpiry({ "m.self_destruct": 1 }), NOTICE);
  assert.equal(unappliedExpiry({ "org.matrix.self_destruct": 1 }), NOTICE);
  assert.equal(unappliedExpiry({ "org.matrix.self_destruct_after": 1 }), NOTICE);
  for (const content of [
    {},
    { "com.beeper.disappearing_timer": null },
    { "com.beeper.disappearing_timer": "60000" },
    { "com.beeper.disappearing_timer": { timer: "60000" } },
    { "com.beeper.disappearing_timer": { timer: -1 } },
    { "m.self_destruct": 0 },
    { "m.self_destruct": "60000" },
    { "org.matrix.self_destruct_after": -1 },
    { "other.self_destruct": 60000 },
  ]) {
    assert.equal(unappliedExpiry(content), null, JSON.stringify(content));
  }
});
