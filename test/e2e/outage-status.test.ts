/**
 * A gateway outage as the Matrix user sees it (real Synapse, gateway, simulator and bridge): a
 * message sent while the gateway is away shows one pending status, not one per retry, and then
 * delivered once the gateway is back; the WhatsApp user gets it once.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { MatrixEvent } from "../support/matrix-client";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

const STATUS = "com.beeper.message_send_status";
const WAIT = { timeoutMs: 120_000 };

let stack: Stack;

before(async () => {
  // Status events are off by default; this test is about them.
  stack = await Stack.start("outstatus", { bridgeConfig: (c) => void (c.bridge = { ...(c.bridge ?? {}), message_status_events: true }) });
});

after(async () => {
  await stack?.stop();
});

const relatesTo = (e: MatrixEvent) => e.content["m.relates_to"] as { event_id?: string } | undefined;

test("a message sent while the gateway is down shows pending once, then delivered when it is back", async () => {
  const phone = "+4915200009001";
  await stack.sim.createUser(phone, "Pia");
  const user = await stack.user("outage-status");
  await stack.botRoom(user, { enable: true });
  const ghost = stack.ghostId(phone);
  await stack.sim.sendText(phone, `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`, "Hi, this is Pia");
  const invite = await user.waitForInvite((i) => i.inviter === ghost, WAIT);
  await user.joinRoom(invite.roomId);
  await user.waitFor((e) => e.room_id === invite.roomId && e.sender === ghost && e.type === "m.room.message", WAIT);

  await stack.gateway.stop();
  const eventId = await user.sendText(invite.roomId, "Sent while the gateway is away");
  const statusesOf = () => user.eventsIn(invite.roomId).filter((e) => e.type === STATUS && relatesTo(e)?.event_id === eventId);
  const pending = await user.waitFor((e) => e.type === STATUS && relatesTo(e)?.event_id === eventId && e.content.status === "PENDING", {
    ...WAIT,
    description: "the pending status",
  });
  assert.equal(pending.sender, ghost);
  assert.equal(pending.content.reason, "m.bridge_unavailable");

  await stack.gateway.start(/gateway listening/);
  const delivered = await user.waitFor(
    (e) => e.type === STATUS && relatesTo(e)?.event_id === eventId && Array.isArray(e.content.delivered_to_users) && e.content.delivered_to_users.length > 0,
    { ...WAIT, description: "the delivered status" },
  );
  assert.equal(delivered.content.status, "SUCCESS");
  const entry = await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "Sent while the gateway is away", 60_000);
  assert.ok(entry);
  const statuses = statusesOf().map((e) => String(e.content.status));
  assert.equal(statuses.filter((s) => s === "PENDING").length, 1, `one pending status (${statuses.join(", ")})`);
  assert.equal(statuses[0], "PENDING", "pending first");
  assert.ok(!statuses.some((s) => s.startsWith("FAIL")), "no failure");
  const inbox = await stack.sim.inbox(phone);
  assert.equal(inbox.filter((e) => e.kind === "text" && e.text === "Sent while the gateway is away").length, 1, "delivered once");
});
