/**
 * The interop network, end to end: what the gateway can see, what survives restarts of the
 * bridge and of the gateway, and what the user is told when a contact's identity changes.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { recordedFrames as framesOf } from "../support/gateway-frames";
import { TestClient } from "../support/matrix-client";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

let stack: Stack;
const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

/** Every frame the gateway relayed or received, as its recorder wrote them. */
const recordedFrames = () => framesOf(stack.dir);

/** Opens a chat (the WhatsApp user writes first) and returns the joined room. */
async function openChat(client: TestClient, phone: string, name: string): Promise<string> {
  await stack.sim.createUser(phone, name);
  await stack.botRoom(client, { enable: true });
  await stack.sim.sendText(phone, uriOf(client.userId), `hello from ${name}`);
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone));
  await client.joinRoom(invite.roomId);
  await client.waitFor((e) => e.room_id === invite.roomId && e.content.body === `hello from ${name}`);
  return invite.roomId;
}

before(async () => {
  stack = await Stack.start("interop");
});

after(async () => {
  await stack?.stop();
});

describe("interop network", () => {
  test("the gateway relays only ciphertext: no message text in any frame it saw", async (t) => {
    const alice = await stack.user("alice");
    const phone = "+4915200000001";
    const roomId = await openChat(alice, phone, "Ana");
    const secretFromMatrix = "matrix-side secret: purple elephant 7391";
    const secretFromWhatsApp = "whatsapp-side secret: green giraffe 4417";
    await alice.sendText(roomId, secretFromMatrix);
    await stack.sim.waitForInbox(phone, (e) => e.text === secretFromMatrix);
    await stack.sim.sendText(phone, uriOf(alice.userId), secretFromWhatsApp);
    await alice.waitFor((e) => e.room_id === roomId && e.content.body === secretFromWhatsApp);

    const frames = recordedFrames();
    const sends = frames.filter((f) => f.frame?.t === "send");
    assert.ok(sends.length >= 3, `the recorder saw the sends (${sends.length})`);
    // The search works on this encoding: identifiers the gateway must route by are visible to it.
    assert.ok(
      frames.some((f) => f.bytes.includes(Buffer.from(alice.userId))),
      "routing metadata is visible in the recording",
    );
    for (const text of [secretFromMatrix, secretFromWhatsApp, "hello from Ana", "purple elephant", "green giraffe"]) {
      const hits = frames.filter((f) => f.bytes.includes(Buffer.from(text, "utf8")));
      assert.equal(hits.length, 0, `"${text}" must not appear in any relayed frame`);
    }
    t.diagnostic(`searched ${frames.length} recorded frames (${sends.length} send frames) for the plaintexts: none found`);
  });

  test("a bridge restart keeps the Signal sessions: no new key fetch, no new prekey message", async () => {
    const bob = await stack.user("bob");
    const phone = "+4915200000002";
    const roomId = await openChat(bob, phone, "Ben");
    await bob.sendText(roomId, "before the restart");
    await stack.sim.waitForInbox(phone, (e) => e.text === "before the restart");
    // Everything recorded from here on counts, the bridge's start-up included (its logins and any key fetch).
    const framesBefore = recordedFrames().length;
    await stack.restartBridge();
    await bob.sendText(roomId, "after the restart");
    await stack.sim.waitForInbox(phone, (e) => e.text === "after the restart");
    await stack.sim.sendText(phone, uriOf(bob.userId), "and back");
    await bob.waitFor((e) => e.room_id === roomId && e.content.body === "and back");

    const bobUri = uriOf(bob.userId);
    const afterRestart = recordedFrames()
      .slice(framesBefore)
      .filter((f) => f.direction === "in");
    assert.ok(
      afterRestart.some((f) => f.frame?.t === "login" && (f.frame as { user?: string }).user === bobUri),
      "the restarted bridge's login is among the frames counted",
    );
    const fetches = afterRestart.filter((f) => f.frame?.t === "keys.fetch" && (f.frame as { from?: string }).from === bobUri);
    assert.equal(fetches.length, 0, "the bridge did not need the contact's keys again");
    const sendsFromBob = afterRestart.filter((f) => f.frame?.t === "send" && (f.frame as { from: string }).from === bobUri);
    assert.ok(sendsFromBob.length >= 1, "the bridge sent after the restart");
    for (const f of sendsFromBob) {
      assert.equal((f.frame as { payload: { type: number } }).payload.type, 2, "a Whisper message on the existing session, not a new PreKey session");
    }
  });

  test("the gateway restarts in the middle of a burst: every message arrives exactly once, in order, both ways", async (t) => {
    const carol = await stack.user("carol");
    const phone = "+4915200000003";
    const roomId = await openChat(carol, phone, "Cleo");
    const count = 30;
    const fromWa = (i: number) => `wa burst ${String(i).padStart(2, "0")}`;
    const fromMx = (i: number) => `mx burst ${String(i).padStart(2, "0")}`;
    let waSent = 0;
    const waSender = (async () => {
      for (let i = 0; i < count; i++) {
        await stack.sim.sendText(phone, uriOf(carol.userId), fromWa(i));
        waSent++;
      }
    })();
    const mxSender = (async () => {
      for (let i = 0; i < count; i++) await carol.sendText(roomId, fromMx(i));
    })();
    // Kill the gateway (no clean shutdown) while both sides are mid-burst.
    while (waSent < 5) await new Promise((r) => setTimeout(r, 10));
    await stack.gateway.stop("SIGKILL");
    t.diagnostic(`gateway killed after ${waSent} of ${count} WhatsApp-side sends were accepted`);
    await new Promise((r) => setTimeout(r, 1500));
    await stack.gateway.start(/gateway listening/);
    await Promise.all([waSender, mxSender]);

    await carol.waitFor((e) => e.room_id === roomId && e.content.body === fromWa(count - 1), { timeoutMs: 60_000 });
    await stack.sim.waitForInbox(phone, (e) => e.text === fromMx(count - 1), 60_000);
    const inMatrix = carol
      .eventsIn(roomId)
      .filter((e) => /^wa burst/.test(String(e.content.body)))
      .map((e) => e.content.body);
    assert.deepEqual(
      inMatrix,
      Array.from({ length: count }, (_, i) => fromWa(i)),
      "WhatsApp → Matrix: all, once, in order",
    );
    const atWa = (await stack.sim.inbox(phone)).filter((e) => /^mx burst/.test(String(e.text))).map((e) => e.text);
    assert.deepEqual(
      atWa,
      Array.from({ length: count }, (_, i) => fromMx(i)),
      "Matrix → WhatsApp: all, once, in order",
    );
  });

  test("a contact's new identity (reinstalled WhatsApp) is announced in the chat", async () => {
    const dave = await stack.user("dave");
    const phone = "+4915200000004";
    const roomId = await openChat(dave, phone, "Dora");
    await dave.sendText(roomId, "hi Dora");
    await stack.sim.waitForInbox(phone, (e) => e.text === "hi Dora");
    await stack.sim.reinstall(phone);
    await stack.sim.sendText(phone, uriOf(dave.userId), "new phone, same Dora");
    await dave.waitFor((e) => e.room_id === roomId && e.content.body === "new phone, same Dora");
    const notice = await dave.waitFor((e) => e.room_id === roomId && e.content.msgtype === "m.notice" && /security code/.test(String(e.content.body)));
    assert.match(String(notice.content.body), /\+4915200000004/);
    await dave.sendText(roomId, "welcome back");
    await stack.sim.waitForInbox(phone, (e) => e.text === "welcome back");
  });
});
