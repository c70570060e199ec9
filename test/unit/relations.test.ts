import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { readReceiptsOf, typingUsersOf } from "../../src/convert/ephemeral";
import { messageStatusContent } from "../../src/convert/message-status";
import { matrixToRemote } from "../../src/convert/message-content";
import { asReply, editContent, reactionContent, redactedEventId, relationOf } from "../../src/convert/relations";

describe("Matrix relations in", () => {
  test("a reply names the event it replies to", () => {
    assert.deepEqual(relationOf({ msgtype: "m.text", body: "yes", "m.relates_to": { "m.in_reply_to": { event_id: "$q" } } }), { type: "reply", eventId: "$q" });
  });

  test("a thread message's in_reply_to fallback is no reply, a real reply in a thread is", () => {
    const fallback = { "m.relates_to": { rel_type: "m.thread", event_id: "$root", is_falling_back: true, "m.in_reply_to": { event_id: "$last" } } };
    assert.equal(relationOf(fallback), null);
    const reply = { "m.relates_to": { rel_type: "m.thread", event_id: "$root", is_falling_back: false, "m.in_reply_to": { event_id: "$x" } } };
    assert.deepEqual(relationOf(reply), { type: "reply", eventId: "$x" });
  });

  test("an edit carries its new content; one without m.new_content is flagged to be ignored", () => {
    const newContent = { msgtype: "m.text", body: "fixed" };
    assert.deepEqual(relationOf({ body: "* fixed", "m.new_content": newContent, "m.relates_to": { rel_type: "m.replace", event_id: "$o" } }), {
      type: "edit",
      eventId: "$o",
      newContent,
    });
    assert.deepEqual(relationOf({ body: "* fixed", "m.relates_to": { rel_type: "m.replace", event_id: "$o" } }), { type: "edit", eventId: "$o", newContent: null });
  });

  test("a reaction is an annotation with a key", () => {
    assert.deepEqual(relationOf(reactionContent("$t", "👍")), { type: "annotation", eventId: "$t", key: "👍" });
    assert.equal(relationOf({ "m.relates_to": { rel_type: "m.annotation", event_id: "$t" } }), null, "no key, no reaction");
  });

  test("no or malformed relations are none", () => {
    assert.equal(relationOf({ body: "plain" }), null);
    assert.equal(relationOf({ "m.relates_to": "nonsense" }), null);
    assert.equal(relationOf({ "m.relates_to": { "m.in_reply_to": { event_id: 5 } } }), null);
  });

  test("redactions: redacts inside content (room version 11) or at the top level (earlier versions)", () => {
    assert.equal(redactedEventId({ content: { redacts: "$v11" } }), "$v11");
    assert.equal(redactedEventId({ content: {}, redacts: "$v10" }), "$v10");
    assert.equal(redactedEventId({ content: { redacts: "$both" }, redacts: "$both" }), "$both");
    assert.equal(redactedEventId({ content: { reason: "x" } }), null);
  });

  test("a reply's fallback from an older client is stripped before it is sent on", () => {
    const content = {
      msgtype: "m.text",
      body: "> <@ana:hs> Lunch?\n\nYes",
      format: "org.matrix.custom.html",
      formatted_body: "<mx-reply><blockquote>In reply to Lunch?</blockquote></mx-reply>Yes",
      "m.relates_to": { "m.in_reply_to": { event_id: "$q" } },
    };
    assert.deepEqual(matrixToRemote(content), { type: "text", markdown: "Yes" });
  });
});

describe("Matrix relations out", () => {
  test("a reply has m.in_reply_to and no fallback text (spec v1.13)", () => {
    assert.deepEqual(asReply({ msgtype: "m.text", body: "Great" }, "$q"), { msgtype: "m.text", body: "Great", "m.relates_to": { "m.in_reply_to": { event_id: "$q" } } });
  });

  test("an edit is m.replace with m.new_content and a '* ' fallback, formatted too", () => {
    const edit = editContent("$o", { msgtype: "m.text", body: "new", format: "org.matrix.custom.html", formatted_body: "<b>new</b>" });
    assert.deepEqual(edit, {
      msgtype: "m.text",
      body: "* new",
      format: "org.matrix.custom.html",
      formatted_body: "* <b>new</b>",
      "m.new_content": { msgtype: "m.text", body: "new", format: "org.matrix.custom.html", formatted_body: "<b>new</b>" },
      "m.relates_to": { rel_type: "m.replace", event_id: "$o" },
    });
  });

  test("an edit's new content never carries a relation of its own", () => {
    const edit = editContent("$o", { msgtype: "m.text", body: "x", "m.relates_to": { "m.in_reply_to": { event_id: "$q" } } });
    assert.equal((edit["m.new_content"] as Record<string, unknown>)["m.relates_to"], undefined);
    assert.deepEqual(edit["m.relates_to"], { rel_type: "m.replace", event_id: "$o" });
  });

  test("a reaction is an m.annotation with the emoji as key", () => {
    assert.deepEqual(reactionContent("$t", "❤️"), { "m.relates_to": { rel_type: "m.annotation", event_id: "$t", key: "❤️" } });
  });
});

describe("ephemeral events", () => {
  test("public read receipts are read, private ones and junk are not", () => {
    const content = {
      $a: { "m.read": { "@u:hs": { ts: 10 }, "@v:hs": {} }, "m.read.private": { "@w:hs": { ts: 11 } } },
      $b: { "m.read": "junk" },
      $c: "junk",
    };
    assert.deepEqual(readReceiptsOf(content), [
      { eventId: "$a", userId: "@u:hs", ts: 10 },
      { eventId: "$a", userId: "@v:hs", ts: null },
    ]);
  });

  test("typing users", () => {
    assert.deepEqual(typingUsersOf({ user_ids: ["@a:hs", 3, "@b:hs"] }), ["@a:hs", "@b:hs"]);
    assert.deepEqual(typingUsersOf({}), []);
  });
});

describe("message send status (com.beeper.message_send_status)", () => {
  test("sent: a reference to the event, SUCCESS, an empty delivered list promising receipts", () => {
    assert.deepEqual(messageStatusContent({ eventId: "$e", status: "SUCCESS", deliveredTo: [] }), {
      "m.relates_to": { rel_type: "m.reference", event_id: "$e" },
      status: "SUCCESS",
      delivered_to_users: [],
    });
  });

  test("delivered names who got it; failed has reason and message, and no delivered list", () => {
    assert.deepEqual(messageStatusContent({ eventId: "$e", status: "SUCCESS", deliveredTo: ["@ghost:hs"] }).delivered_to_users, ["@ghost:hs"]);
    assert.deepEqual(messageStatusContent({ eventId: "$e", status: "FAIL_PERMANENT", reason: "m.event_too_old", message: "too late" }), {
      "m.relates_to": { rel_type: "m.reference", event_id: "$e" },
      status: "FAIL_PERMANENT",
      reason: "m.event_too_old",
      message: "too late",
    });
  });
});
