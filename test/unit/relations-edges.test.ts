/** Malformed relations, receipts and edits (src/convert/relations.ts, ephemeral.ts, message-status.ts): none is read as something it is not. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { readReceiptsOf } from "../../src/convert/ephemeral";
import { MESSAGE_STATUS_EVENT_TYPE } from "../../src/convert/message-status";
import { editContent, relationOf } from "../../src/convert/relations";

test("a relation that is not an object, or lacks a string id or key, is none", () => {
  for (const rel of [null, "x", ["m.in_reply_to"], 5]) assert.equal(relationOf({ "m.relates_to": rel }), null, JSON.stringify(rel));
  assert.equal(relationOf({ "m.relates_to": { rel_type: "m.annotation", event_id: "$e" } }), null, "a reaction without key");
  assert.equal(relationOf({ "m.relates_to": { rel_type: "m.annotation", event_id: "$e", key: 1 } }), null);
  assert.equal(relationOf({ "m.relates_to": { rel_type: "m.annotation", key: "👍" } }), null);
  assert.equal(relationOf({ "m.relates_to": { "m.in_reply_to": { event_id: 5 } } }), null, "a reply to no string id");
  assert.equal(relationOf({ "m.relates_to": { "m.in_reply_to": [{ event_id: "$e" }] } }), null);
  assert.deepEqual(relationOf({ "m.relates_to": { rel_type: "m.thread", event_id: "$root", "m.in_reply_to": { event_id: "$e" } } }), { type: "reply", eventId: "$e" });
});

test("a key makes a reaction only with rel_type m.annotation; is_falling_back hides a reply only in a thread", () => {
  assert.equal(relationOf({ "m.relates_to": { rel_type: "m.reference", event_id: "$e", key: "👍" } }), null, "a reference with a key is no reaction");
  assert.deepEqual(relationOf({ "m.relates_to": { rel_type: "m.reference", event_id: "$r", key: "👍", "m.in_reply_to": { event_id: "$e" } } }), { type: "reply", eventId: "$e" });
  assert.deepEqual(relationOf({ "m.relates_to": { is_falling_back: true, "m.in_reply_to": { event_id: "$e" } } }), { type: "reply", eventId: "$e" }, "not a thread: still a reply");
  assert.equal(
    relationOf({ "m.relates_to": { rel_type: "m.thread", event_id: "$root", is_falling_back: true, "m.in_reply_to": { event_id: "$e" } } }),
    null,
    "a thread's fallback is no reply",
  );
});

test("an edit's fallback prefixes only the text fields the new content has", () => {
  assert.deepEqual(editContent("$e", { msgtype: "m.image", url: "mxc://hs/a" }), {
    msgtype: "m.image",
    url: "mxc://hs/a",
    "m.new_content": { msgtype: "m.image", url: "mxc://hs/a" },
    "m.relates_to": { rel_type: "m.replace", event_id: "$e" },
  });
  assert.deepEqual(editContent("$e", { msgtype: "m.text", body: 5 }), {
    msgtype: "m.text",
    body: 5,
    "m.new_content": { msgtype: "m.text", body: 5 },
    "m.relates_to": { rel_type: "m.replace", event_id: "$e" },
  });
});

test("receipts whose per-event or per-type value is not an object are skipped", () => {
  assert.deepEqual(readReceiptsOf({ $a: null, $b: ["m.read"], $c: { "m.read": null }, $d: { "m.read": ["@u:hs"] }, $e: { "m.read": { "@u:hs": null } } }), [
    { eventId: "$e", userId: "@u:hs", ts: null },
  ]);
});

test("the status event type is mautrix's", () => {
  assert.equal(MESSAGE_STATUS_EVENT_TYPE, "com.beeper.message_send_status");
});
