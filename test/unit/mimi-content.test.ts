import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { changeToMimi, mimiIdOf, mimiToRemoteEvent, remoteContentToMimi } from "../../src/network/mimi-content";
import { decodeMimi, encodeMimi, messageIdOf, newDelete, newEdit, newReaction, newTextMessage, newUnreaction } from "../../src/protocol/mimi";

const env = { sender: "mimi://whatsapp.example/u/+4915100000001", room: "mimi://whatsapp.example/r/dm-1" };
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const original = messageIdOf(newTextMessage({ ...env, markdown: "original" }))!;
const target = hex(original);

/** As received: through the wire encoding. */
const received = (m: ReturnType<typeof newTextMessage>) => mimiToRemoteEvent(decodeMimi(encodeMimi(m)));

describe("MIMI in: messages and changes", () => {
  test("text, and a reply names its target", () => {
    assert.deepEqual(received(newTextMessage({ ...env, markdown: "hi" })), { kind: "message", content: { type: "text", markdown: "hi" } });
    assert.deepEqual(received(newTextMessage({ ...env, markdown: "yes", inReplyTo: original })), {
      kind: "message",
      content: { type: "text", markdown: "yes" },
      replyTo: target,
    });
  });

  test("a reaction, and its withdrawal (the draft's 'unlike')", () => {
    const reaction = newReaction({ ...env, target: original, emoji: "👍" });
    assert.deepEqual(received(reaction), { kind: "change", change: { type: "reaction", target, emoji: "👍" } });
    const reactionId = messageIdOf(reaction)!;
    assert.deepEqual(received(newUnreaction({ ...env, reaction: reactionId, target: original })), {
      kind: "change",
      change: { type: "unreaction", target, reaction: hex(reactionId) },
    });
  });

  test("an edit carries the new text; a delete is a null body replacing the original", () => {
    assert.deepEqual(received(newEdit({ ...env, replaces: original, markdown: "fixed *now*" })), {
      kind: "change",
      change: { type: "edit", target, content: { type: "text", markdown: "fixed *now*" } },
    });
    assert.deepEqual(received(newDelete({ ...env, replaces: original })), { kind: "change", change: { type: "delete", target } });
  });
});

describe("MIMI out: what the Matrix user does", () => {
  const me = "mimi://matrix.localhost/u/@alice:localhost";
  test("a reply refers to the target's MIMI id; a target that is no MIMI message makes it a plain message", () => {
    assert.equal(hex(remoteContentToMimi({ type: "text", markdown: "yes" }, me, env.room, target).inReplyTo!), target);
    assert.equal(remoteContentToMimi({ type: "text", markdown: "yes" }, me, env.room, "disappearing.00ff").inReplyTo, null);
  });

  test("each change becomes the draft's message for it, and reads back as the same change", () => {
    const reactionId = hex(messageIdOf(newReaction({ ...env, target: original, emoji: "👍" }))!);
    const changes = [
      { type: "edit" as const, target, content: { type: "text" as const, markdown: "new words" } },
      { type: "edit" as const, target, content: { type: "text" as const, markdown: "an edited reply stays one" }, replyTo: reactionId },
      { type: "delete" as const, target },
      { type: "delete" as const, target, replyTo: reactionId },
      { type: "reaction" as const, target, emoji: "🎉" },
      { type: "unreaction" as const, target, reaction: reactionId },
    ];
    for (const change of changes) {
      const mimi = changeToMimi(change, me, env.room);
      assert.equal(mimi.extensions.senderUri, me);
      assert.deepEqual(mimiToRemoteEvent(decodeMimi(encodeMimi(mimi))), { kind: "change", change }, change.type);
    }
  });

  test("a change of something that is no MIMI message is refused", () => {
    assert.throws(() => changeToMimi({ type: "delete", target: "disappearing.00ff" }, me, env.room), /not a MIMI message/);
    assert.equal(mimiIdOf("AB".repeat(32)), null, "ids are lowercase hex");
    assert.equal(mimiIdOf(target)?.length, 32);
  });
});
