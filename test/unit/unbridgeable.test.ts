import assert from "node:assert/strict";
import { test } from "node:test";
import { unappliedExpiry, unbridgeableEvent } from "../../src/convert/unbridgeable";

const event = (type: string, content: Record<string, unknown> = {}, state_key?: string) => ({ type, content, ...(state_key !== undefined ? { state_key } : {}) });

test("events the network cannot carry get a notice saying what and why", () => {
  const cases: [ReturnType<typeof event>, string, RegExp][] = [
    [event("m.sticker", { body: "cat", url: "mxc://x/y" }), "sticker", /sticker was not sent: third-party chats don't support stickers/],
    [event("m.poll.start"), "poll", /poll was not sent/],
    [event("org.matrix.msc3381.poll.start"), "poll", /poll was not sent/],
    [event("org.matrix.msc3381.poll.response"), "poll", /poll vote was not sent/],
    [event("m.call.invite"), "call", /call did not go through/],
    [event("org.matrix.msc3401.call.member", { memberships: [{}] }, "_@a:hs_DEV"), "call", /call was not shared/],
    [event("org.matrix.msc3672.beacon_info", { live: true }, "@a:hs"), "live_location", /live location was not shared/],
    [event("m.room.encrypted", { algorithm: "m.megolm.v1.aes-sha2" }), "encrypted", /end-to-end encrypted on Matrix/],
    [event("m.room.encryption", { algorithm: "m.megolm.v1.aes-sha2" }, ""), "encryption", /nothing written here reaches WhatsApp/],
    [event("m.room.name", { name: "x" }, ""), "room_name", /room name stays on Matrix/],
    [event("m.room.topic", { topic: "x" }, ""), "room_topic", /room topic stays on Matrix/],
    [event("m.room.avatar", { url: "mxc://x/y" }, ""), "room_avatar", /room picture stays on Matrix/],
    [event("com.beeper.disappearing_timer", { type: "after_read", timer: 3600000 }, ""), "disappearing_timer", /timer is not applied/],
    [event("m.room.retention", { max_lifetime: 86400000 }, ""), "retention", /retention policy is not applied/],
  ];
  for (const [e, kind, notice] of cases) {
    const refusal = unbridgeableEvent(e);
    assert.ok(refusal, `${e.type} is refused`);
    assert.equal(refusal.kind, kind, e.type);
    assert.match(refusal.notice, notice, e.type);
  }
});

test("events that need no notice get none", () => {
  for (const e of [
    event("m.room.member", { membership: "join" }, "@a:hs"),
    event("m.room.power_levels", {}, ""),
    event("m.room.name", { name: "x" }, "not-empty"),
    event("com.beeper.disappearing_timer", {}, ""),
    event("com.beeper.disappearing_timer", { type: "after_read", timer: 0 }, ""),
    event("org.matrix.msc3401.call.member", {}, "_@a:hs_DEV"),
    event("org.matrix.msc3672.beacon_info", { live: false }, "@a:hs"),
    event("m.room.retention", {}, ""),
    event("m.space.parent", { via: ["hs"] }, "!space:hs"),
    event("m.typing"),
  ]) {
    assert.equal(unbridgeableEvent(e), null, `${e.type} ${JSON.stringify(e.content)}`);
  }
});

test("a message's Matrix-side expiry is recognised in each form clients send", () => {
  assert.match(unappliedExpiry({ body: "x", "com.beeper.disappearing_timer": { type: "after_send", timer: 60000 } }) ?? "", /will not disappear/);
  assert.match(unappliedExpiry({ body: "x", "m.self_destruct": 60000 }) ?? "", /will not disappear/);
  assert.match(unappliedExpiry({ body: "x", "org.matrix.self_destruct": 60000 }) ?? "", /will not disappear/);
  assert.match(unappliedExpiry({ body: "x", "org.matrix.self_destruct_after": 1764000000000 }) ?? "", /will not disappear/);
  assert.equal(unappliedExpiry({ body: "x" }), null);
  assert.equal(unappliedExpiry({ body: "x", "com.beeper.disappearing_timer": { timer: 0 } }), null);
  assert.equal(unappliedExpiry({ body: "x", "m.self_destruct": null }), null);
});
