/**
 * Group rooms and encryption (issue 15): with `encryption.default` on, the room the bridge makes
 * for a WhatsApp group is encrypted from its creation, as a DM's is, and a WhatsApp member's
 * message arrives in it encrypted (the decryption by a real client is shown for DMs by
 * encrypted-bridge.test.ts; this checks what the homeserver stores for a group's room).
 * Real Synapse, gateway, simulator and bridge.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Stack } from "../support/stack";

let stack: Stack;
const ANA = "+4915700000101";
const BEN = "+4915700000102";

before(async () => {
  stack = await Stack.start("groups-e2ee", {
    bridgeConfig: (c) => {
      c.encryption = { allow: true, default: true };
    },
  });
});

after(async () => {
  await stack?.stop();
});

test("with encryption.default on, a group's room is created encrypted and a member's message arrives encrypted", async () => {
  await stack.sim.createUser(ANA, "Ana");
  await stack.sim.createUser(BEN, "Ben");
  const alice = await stack.user("alice");
  await stack.botRoom(alice, { enable: true });
  const group = await stack.sim.request<{ room: string }>("POST", `/users/${encodeURIComponent(ANA)}/groups`, { name: "Sealed", members: [BEN, alice.userId] });
  const invite = await alice.waitForInvite((i) => i.inviter === stack.botId && i.state.some((e) => e.type === "m.room.name" && e.content.name === "Sealed"), { timeoutMs: 30_000 });
  await alice.joinRoom(invite.roomId);
  const encryption = await alice.getState(invite.roomId, "m.room.encryption");
  assert.equal(encryption.algorithm, "m.megolm.v1.aes-sha2");
  const history = await alice.history(invite.roomId);
  const createdAt = history.findIndex((e) => e.type === "m.room.encryption");
  const firstGhost = history.findIndex((e) => e.type === "m.room.member" && e.state_key === stack.ghostId(ANA));
  assert.ok(createdAt >= 0 && createdAt < firstGhost, "encrypted from its creation, before any member came in");

  await stack.sim.sendText(BEN, group.room, "sealed hello");
  const shown = await alice.waitFor((e) => e.room_id === invite.roomId && e.sender === stack.ghostId(BEN) && (e.type === "m.room.encrypted" || e.type === "m.room.message"), {
    timeoutMs: 30_000,
    description: "Ben's message in the group's room",
  });
  assert.equal(shown.type, "m.room.encrypted", "the homeserver has it as ciphertext");
  assert.equal(shown.content.algorithm, "m.megolm.v1.aes-sha2");
  assert.ok(!JSON.stringify(shown.content).includes("sealed hello"));
});
