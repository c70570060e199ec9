/**
 * Bridge core, end to end: a real Synapse, our gateway, the WhatsApp simulator and the bridge,
 * each its own process. The Matrix user is a real client over the client-server API.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TestClient } from "../support/matrix-client";
import { memberships, roomsOf } from "../support/room-census";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

let stack: Stack;

function uriOf(mxid: string): string {
  return `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;
}

/**
 * Every room the user and the ghost are in, joined or invited, as the homeserver sees it (the
 * admin API: an invite the user never accepted counts as much as a joined room).
 */
async function census(client: TestClient, ghost: string): Promise<{ user: string[]; ghost: string[] }> {
  const admin = await stack.admin();
  return { user: await roomsOf(admin, client.userId), ghost: await roomsOf(admin, ghost) };
}

/** The chat lives in `roomId` alone: the ghost is in no other room, the user in no other room but the bot's. */
async function assertOneRoom(client: TestClient, ghost: string, botRoom: string, roomId: string): Promise<void> {
  const rooms = await census(client, ghost);
  assert.deepEqual(rooms.ghost, [roomId], "the ghost is in exactly one room (joined or invited)");
  assert.deepEqual(rooms.user, [botRoom, roomId].sort(), "the user is in the bot room and the chat's room, nothing else (invites included)");
}

before(async () => {
  stack = await Stack.start("core");
});

after(async () => {
  await stack?.stop();
});

describe("bridge core", () => {
  test("the appservice refuses a wrong homeserver token and answers the ping", async () => {
    const registration = await import("node:fs").then((fs) => fs.readFileSync(stack.registrationPath, "utf8"));
    const url = /url: (.*)/.exec(registration)![1].trim();
    const hsToken = /hs_token: (.*)/.exec(registration)![1].trim();
    const wrong = await fetch(`${url}/_matrix/app/v1/transactions/1`, {
      method: "PUT",
      headers: { authorization: "Bearer wrong-token", "content-type": "application/json" },
      body: JSON.stringify({ events: [] }),
    });
    assert.equal(wrong.status, 403);
    assert.equal(((await wrong.json()) as { errcode: string }).errcode, "M_FORBIDDEN");
    const ping = await fetch(`${url}/_matrix/app/v1/ping`, {
      method: "POST",
      headers: { authorization: `Bearer ${hsToken}`, "content-type": "application/json" },
      body: JSON.stringify({ transaction_id: "t1" }),
    });
    assert.equal(ping.status, 200);
    const pingWrong = await fetch(`${url}/_matrix/app/v1/ping`, { method: "POST", headers: { authorization: "Bearer nope" }, body: "{}" });
    assert.equal(pingWrong.status, 403);
  });

  test("the bot answers help, list and unknown commands in its DM", async () => {
    const alice = await stack.user("botuser");
    const room = await stack.botRoom(alice);
    const welcome = await alice.waitFor((e) => e.room_id === room && e.sender === stack.botId && e.type === "m.room.message");
    assert.match(String(welcome.content.body), /start <phone>/);
    await alice.sendText(room, "list");
    const list = await alice.waitFor((e) => e.room_id === room && e.sender === stack.botId && /no Third-Party Chats yet/.test(String(e.content.body)));
    assert.equal(list.content.msgtype, "m.notice");
    await alice.sendText(room, "frobnicate");
    const unknown = await alice.waitFor((e) => e.room_id === room && e.sender === stack.botId && /Unknown command "frobnicate"/.test(String(e.content.body)));
    assert.match(String(unknown.content.body), /help/);
    await alice.sendText(room, "start 12");
    await alice.waitFor((e) => e.room_id === room && e.sender === stack.botId && /is not a phone number/.test(String(e.content.body)));
  });

  test("a WhatsApp user writes first: the ghost opens a DM, the user joins and reads formatted text", async () => {
    const phone = "+4915100000001";
    await stack.sim.createUser(phone, "Ana");
    const alice = await stack.user("alice");
    await stack.botRoom(alice, { enable: true });
    const sent = await stack.sim.sendText(phone, uriOf(alice.userId), "Hello **Alice**, see `code` and ~~old~~ [docs](https://example.org)");
    const invite = await alice.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    assert.equal(invite.isDirect, true, "the invite is marked as a direct chat, so Element lists it under People");
    await alice.joinRoom(invite.roomId);
    const message = await alice.waitFor((e) => e.room_id === invite.roomId && e.type === "m.room.message" && e.sender === stack.ghostId(phone));
    assert.equal(message.content.msgtype, "m.text");
    assert.equal(message.content.format, "org.matrix.custom.html");
    assert.equal(message.content.formatted_body, 'Hello <strong>Alice</strong>, see <code>code</code> and <del>old</del> <a href="https://example.org">docs</a>');
    assert.ok(Math.abs((message.origin_server_ts ?? 0) - sent.ts) < 1000, "the Matrix event keeps the network's timestamp");
    const profile = await alice.getProfile(stack.ghostId(phone));
    assert.equal(profile.displayname, "Ana (WhatsApp)");
    const direct = await alice.getState(invite.roomId, "m.room.create");
    assert.ok(direct, "the room exists and is readable");
  });

  test("the Matrix user answers: text and formatting arrive at the WhatsApp user, in order", async () => {
    const phone = "+4915100000002";
    await stack.sim.createUser(phone, "Ben");
    const bob = await stack.user("bob");
    await stack.botRoom(bob, { enable: true });
    await stack.sim.sendText(phone, uriOf(bob.userId), "hi");
    const invite = await bob.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await bob.joinRoom(invite.roomId);
    await bob.sendEvent(invite.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "**bold** and *italic*",
      format: "org.matrix.custom.html",
      formatted_body: "<strong>bold</strong> and <em>italic</em> and <code>x</code>",
    });
    for (let i = 1; i <= 5; i++) await bob.sendText(invite.roomId, `number ${i}`);
    await bob.sendEvent(invite.roomId, "m.room.message", { msgtype: "m.emote", body: "waves" });
    const formatted = await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && /bold/.test(String(e.text)));
    assert.equal(formatted.text, "**bold** and _italic_ and `x`");
    assert.equal(formatted.from, uriOf(bob.userId));
    const emote = await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && /waves/.test(String(e.text)));
    assert.equal(emote.text, "/me waves");
    const texts = (await stack.sim.inbox(phone)).filter((e) => e.kind === "text").map((e) => e.text);
    assert.deepEqual(
      texts.filter((t) => /^number/.test(String(t))),
      ["number 1", "number 2", "number 3", "number 4", "number 5"],
    );
  });

  test("a Matrix user starts the chat by inviting the ghost; the ghost joins and the room is the portal", async () => {
    const phone = "+4915100000003";
    await stack.sim.createUser(phone, "Cleo");
    const carol = await stack.user("carol");
    const botRoom = await stack.botRoom(carol, { enable: true });
    const ghost = stack.ghostId(phone);
    const roomId = await carol.createRoom({ is_direct: true, invite: [ghost], preset: "trusted_private_chat" });
    await carol.sendText(roomId, "sent before the ghost joined");
    await carol.waitFor((e) => e.room_id === roomId && e.type === "m.room.member" && e.state_key === ghost && e.content.membership === "join");
    await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "sent before the ghost joined");
    await stack.sim.sendText(phone, uriOf(carol.userId), "got it");
    await carol.waitFor((e) => e.room_id === roomId && e.sender === ghost && e.content.body === "got it");
    await assertOneRoom(carol, ghost, botRoom, roomId);
  });

  test("`start <phone>` opens the chat from the bot and `list` shows it", async () => {
    const phone = "+4915100000004";
    await stack.sim.createUser(phone, "Dora");
    const dave = await stack.user("dave");
    const botRoom = await stack.botRoom(dave, { enable: true });
    await dave.sendText(botRoom, `start ${phone}`);
    const invite = await dave.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await dave.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && String(e.content.body).includes(invite.roomId));
    await dave.joinRoom(invite.roomId);
    await dave.sendText(invite.roomId, "hello Dora");
    await stack.sim.waitForInbox(phone, (e) => e.text === "hello Dora");
    await dave.sendText(botRoom, "list");
    const list = await dave.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && /Your Third-Party Chats \(1\)/.test(String(e.content.body)));
    assert.match(String(list.content.body), /Dora \(WhatsApp\) \(\+4915100000004\)/);
    await dave.sendText(botRoom, `start ${phone}`);
    await dave.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && /already have a chat/.test(String(e.content.body)));
  });

  // The first-message race, each order forced several times. Whoever wins, the chat ends in one
  // room: if WhatsApp's message opened the ghost's room first, the ghost leaves the room the
  // user created (pointing to the portal) and forwards what was said there.
  const orders = {
    "Matrix first: the bridge has the invite 5 ms before WhatsApp's message": { matrixLeadMs: 5 },
    "WhatsApp first: the gateway has the message 5 ms before the room is created": { matrixLeadMs: -5 },
    "at the same instant": { matrixLeadMs: 0 },
  } as const;
  let racePhone = 10;
  for (const [order, { matrixLeadMs }] of Object.entries(orders)) {
    for (let run = 1; run <= 3; run++) {
      test(`the first-message race, ${order} (run ${run}): one room holds the chat, both messages arrive`, async (t) => {
        const phone = `+49151000000${racePhone++}`;
        await stack.sim.createUser(phone, "Emil");
        const erin = await stack.user(`erin${racePhone}`);
        const botRoom = await stack.botRoom(erin, { enable: true });
        const ghost = stack.ghostId(phone);
        const fromMatrix = `from Matrix (${order}, run ${run})`;
        const fromWhatsApp = `from WhatsApp (${order}, run ${run})`;
        const createRoom = () => erin.createRoom({ is_direct: true, invite: [ghost], preset: "trusted_private_chat" });
        const whatsAppSide = () => stack.sim.sendText(phone, uriOf(erin.userId), fromWhatsApp);
        const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
        let created: string;
        if (matrixLeadMs > 0) {
          // The homeserver's push of the invite is slower than the gateway's delivery, so "Matrix
          // first" waits until the bridge logged the invite (it logs every event it receives).
          const bridgeOutput = stack.bridge.watch();
          created = await createRoom();
          await bridgeOutput.until((l) => l.includes('"matrix event"') && l.includes(`"room":"${created}"`) && l.includes('"type":"m.room.member"'));
          bridgeOutput.stop();
          await delay(matrixLeadMs);
          await Promise.all([whatsAppSide(), erin.sendText(created, fromMatrix)]);
        } else if (matrixLeadMs < 0) {
          await whatsAppSide();
          await delay(-matrixLeadMs);
          created = await createRoom();
          await erin.sendText(created, fromMatrix);
        } else {
          [created] = await Promise.all([createRoom(), whatsAppSide()]);
          await erin.sendText(created, fromMatrix);
        }

        // Settled: the Matrix message reached WhatsApp, and in the user's room either WhatsApp's
        // message arrived (that room is the portal) or the ghost left it (the ghost's room is).
        await stack.sim.waitForInbox(phone, (e) => e.text === fromMatrix, 30_000);
        const outcome = await erin.waitFor(
          (e) =>
            e.room_id === created &&
            ((e.sender === ghost && e.content.body === fromWhatsApp) || (e.type === "m.room.member" && e.state_key === ghost && e.content.membership === "leave")),
          { timeoutMs: 30_000, description: "WhatsApp's message or the ghost leaving, in the room the user created" },
        );
        const wonBy = outcome.type === "m.room.member" ? "the ghost's room" : "the room the user created";
        if (wonBy === "the ghost's room") {
          const invite = await erin.waitForInvite((i) => i.inviter === ghost, { timeoutMs: 30_000 });
          await erin.joinRoom(invite.roomId);
        }
        const message = await erin.waitFor((e) => e.sender === ghost && e.content.body === fromWhatsApp, { timeoutMs: 30_000 });
        const portal = message.room_id!;
        t.diagnostic(`${order}, run ${run}: the chat lives in ${wonBy}`);

        const rooms = await census(erin, ghost);
        assert.deepEqual(rooms.ghost, [portal], "the ghost is in exactly one room (joined or invited)");
        if (portal === created) {
          assert.deepEqual(rooms.user, [botRoom, portal].sort(), "the user is in the bot room and the portal, nothing else (invites included)");
        } else {
          // The user's own room stays theirs; the ghost left it after pointing to the portal.
          assert.deepEqual(rooms.user, [botRoom, created, portal].sort(), "the bot room, the portal, and the room the user created");
          const members = (await stack.admin().then((a) => memberships(a, [ghost]))).get(created);
          assert.equal(members?.[ghost], "leave", "the ghost left the room the user created");
          await erin.waitFor((e) => e.room_id === created && e.sender === ghost && /You already have a chat/.test(String(e.content.body)));
        }
      });
    }
  }

  test("the ghost follows the WhatsApp user's name changes", async () => {
    const phone = "+4915100000006";
    await stack.sim.createUser(phone, "Finn");
    const fay = await stack.user("fay");
    await stack.botRoom(fay, { enable: true });
    await stack.sim.sendText(phone, uriOf(fay.userId), "hi");
    const invite = await fay.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await fay.joinRoom(invite.roomId);
    await stack.sim.updateUser(phone, { name: "Finn Renamed" });
    await fay.waitFor(
      (e) => e.room_id === invite.roomId && e.type === "m.room.member" && e.state_key === stack.ghostId(phone) && e.content.displayname === "Finn Renamed (WhatsApp)",
    );
  });

  test("a restart of the bridge keeps the portal: no second room", async () => {
    const phone = "+4915100000007";
    await stack.sim.createUser(phone, "Gus");
    const gina = await stack.user("gina");
    const botRoom = await stack.botRoom(gina, { enable: true });
    await stack.sim.sendText(phone, uriOf(gina.userId), "before restart");
    const invite = await gina.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await gina.joinRoom(invite.roomId);
    await gina.waitFor((e) => e.room_id === invite.roomId && e.content.body === "before restart");
    await stack.restartBridge();
    await stack.sim.sendText(phone, uriOf(gina.userId), "after restart");
    const after = await gina.waitFor((e) => e.content.body === "after restart" && e.sender === stack.ghostId(phone));
    assert.equal(after.room_id, invite.roomId);
    await gina.sendText(invite.roomId, "reply after restart");
    await stack.sim.waitForInbox(phone, (e) => e.text === "reply after restart");
    await assertOneRoom(gina, stack.ghostId(phone), botRoom, invite.roomId);
  });
});
