/**
 * Third-Party Chats controls, end to end (real Synapse, gateway, simulator and bridge): opt-in on
 * both sides, the dedicated inbox, what the network does not carry, the bot's commands and who
 * may use the bridge at all.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import BetterSqlite3 from "better-sqlite3";
import { SyncedEvent, TestClient } from "../support/matrix-client";
import { SimApiError } from "../support/sim-api";
import { PROVIDER_DOMAIN, PROVISIONING_SECRET, Stack } from "../support/stack";

let stack: Stack;
const WAIT = { timeoutMs: 30_000 };

function uriOf(mxid: string): string {
  return `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;
}

function body(e: SyncedEvent): string {
  return String(e.content.body ?? "");
}

/** The next bot message in the room after event `afterId` whose body matches. */
function botSays(client: TestClient, room: string, afterId: string, pattern: RegExp, description: string): Promise<SyncedEvent> {
  return client.waitFor((e) => e.room_id === room && e.sender === stack.botId && pattern.test(body(e)) && stack.after(client, room, afterId, e.event_id), {
    ...WAIT,
    description,
  });
}

async function command(client: TestClient, room: string, text: string, reply: RegExp): Promise<SyncedEvent> {
  const sent = await client.sendText(room, text);
  return botSays(client, room, sent, reply, `the bot's answer to "${text}"`);
}

/** A WhatsApp user writes first; the Matrix user accepts the chat. Returns the portal room. */
async function chatFromWhatsApp(client: TestClient, phone: string, name: string): Promise<string> {
  await stack.sim.createUser(phone, name);
  await stack.sim.sendText(phone, uriOf(client.userId), `hi, this is ${name}`);
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone), WAIT);
  await client.joinRoom(invite.roomId);
  await client.waitFor((e) => e.room_id === invite.roomId && body(e) === `hi, this is ${name}`, WAIT);
  return invite.roomId;
}

/** The provisioning API as an integration holding the shared secret. */
async function provisioningStatus(userId: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${stack.appserviceUrl}/_matrix/provision/v1/status?user_id=${encodeURIComponent(userId)}`, {
    headers: { authorization: `Bearer ${PROVISIONING_SECRET}` },
  });
  return { status: res.status, json: await res.json() };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

before(async () => {
  stack = await Stack.start("controls", {
    bridgeConfig: (c) => {
      const domain = c.homeserver.domain;
      c.bridge = {
        permissions: { [`@*:${domain}`]: "user", [`@stranger_controls:${domain}`]: "none", [`@boss_controls:${domain}`]: "admin" },
        // Off by default: two tests here read the failed and delivered statuses.
        message_status_events: true,
      };
    },
  });
});

after(async () => {
  await stack?.stop();
});

describe("opt-in, both sides", () => {
  test("chats start off: the first contact explains them once, WhatsApp users are refused at the gateway and nothing arrives late", async () => {
    const olive = await stack.user("olive");
    const botRoom = await stack.botRoom(olive);
    const welcome = olive.eventsIn(botRoom).find((e) => e.sender === stack.botId && e.type === "m.room.message")!;
    assert.match(body(welcome), /Third-Party Chats\*\* connect you with WhatsApp users/, "the one short explanation");
    assert.match(body(welcome), /They are \*\*off\*\* for you/);
    assert.match(body(welcome), /Say `enable` to turn them on/);

    // A WhatsApp user writes: the gateway refuses, and the sender sees why.
    const phone = "+4915200000001";
    await stack.sim.createUser(phone, "Otto");
    await assert.rejects(stack.sim.sendText(phone, uriOf(olive.userId), "first try"), (err: SimApiError) => {
      assert.equal(err.status, 409);
      assert.equal(err.code, "not_opted_in");
      return true;
    });
    // Olive is told who tried (the explanation was given already, so this is the short form).
    const told = await olive.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && /tried to write to you on WhatsApp/.test(body(e)), WAIT);
    assert.match(body(told), /\+4915200000001 tried to write to you on WhatsApp, but your Third-Party Chats are off, so their message was refused and not kept/);
    await assert.rejects(stack.sim.sendText(phone, uriOf(olive.userId), "second try"), (err: SimApiError) => err.code === "not_opted_in");
    const status = await until("the second refusal to be counted", async () => {
      const s = await provisioningStatus(olive.userId);
      return s.json.refused_contacts?.[0]?.attempts === 2 ? s.json : undefined;
    });
    assert.equal(status.third_party_chats, false);
    assert.equal(olive.eventsIn(botRoom).filter((e) => /tried to write to you/.test(body(e))).length, 1, "one notice per WhatsApp user, not one per attempt");

    // Olive starts a chat from Matrix while off: the room becomes the chat, but nothing is sent.
    const ghost = stack.ghostId(phone);
    const portal = await olive.createRoom({ is_direct: true, invite: [ghost], preset: "trusted_private_chat" });
    await olive.waitFor((e) => e.room_id === portal && e.type === "m.room.member" && e.state_key === ghost && e.content.membership === "join", WAIT);
    const offMessage = await olive.sendText(portal, "written while off");
    const notice = await olive.waitFor((e) => e.room_id === portal && e.sender === ghost && /^Not sent: your Third-Party Chats are off/.test(body(e)), WAIT);
    assert.match(body(notice), new RegExp(`Say "enable" in your chat with ${stack.botId.replace(/[.]/g, "\\.")}`));
    assert.ok(stack.after(olive, portal, offMessage, notice.event_id));

    const enabled = await command(olive, botRoom, "enable", /Third-Party Chats are \*\*on\*\*/);
    assert.match(body(enabled), /these WhatsApp users tried to write to you: \+4915200000001\. Their messages were not kept/);
    await olive.sendText(portal, "written after enable");
    await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "written after enable");
    await stack.sim.sendText(phone, uriOf(olive.userId), "third try");
    await olive.waitFor((e) => e.room_id === portal && e.sender === ghost && body(e) === "third try", WAIT);
    const texts = (await stack.sim.inbox(phone)).filter((e) => e.kind === "text").map((e) => e.text);
    assert.deepEqual(texts, ["written after enable"], "what Olive wrote while off was never delivered");
    const fromOtto = olive
      .eventsIn(portal)
      .filter((e) => e.sender === ghost && e.type === "m.room.message" && e.content.msgtype === "m.text")
      .map(body);
    assert.deepEqual(fromOtto, ["third try"], "what Otto wrote while Olive was off never arrived");

    // disable persists across a bridge restart; the gateway refuses again.
    await command(olive, botRoom, "disable", /Third-Party Chats are \*\*off\*\*/);
    await assert.rejects(stack.sim.sendText(phone, uriOf(olive.userId), "after disable"), (err: SimApiError) => err.code === "not_opted_in");
    await stack.restartBridge();
    const afterRestart = await command(olive, botRoom, "status", /Your Third-Party Chats:/);
    assert.match(body(afterRestart), /Third-Party Chats: \*\*off\*\*/);
    await assert.rejects(stack.sim.sendText(phone, uriOf(olive.userId), "after restart"), (err: SimApiError) => err.code === "not_opted_in");
  });

  test("writing to a WhatsApp user who has Third-Party Chats off gives a clear notice and marks the message failed", async () => {
    const pia = await stack.user("pia");
    await stack.botRoom(pia, { enable: true });
    const phone = "+4915200000002";
    const portal = await chatFromWhatsApp(pia, phone, "Paula");
    await stack.sim.setThirdPartyChats(phone, false);
    const failuresBefore = await stack.metric("bridge_message_failures_total", { direction: "to_network", reason: "third_party_disabled" });
    const sent = await pia.sendText(portal, "are you still there?");
    const notice = await pia.waitFor((e) => e.room_id === portal && e.type === "m.room.message" && /not delivered/.test(body(e)), WAIT);
    assert.equal(notice.content.msgtype, "m.notice");
    assert.equal(body(notice), "Your message was not delivered: this WhatsApp user has turned Third-Party Chats off, so they cannot receive messages from other apps.");
    assert.equal((notice.content["m.relates_to"] as any)?.["m.in_reply_to"]?.event_id, sent, "the notice answers the failed message");
    const status = await pia.waitFor((e) => e.room_id === portal && e.type === "com.beeper.message_send_status", WAIT);
    assert.equal(status.content.status, "FAIL_PERMANENT");
    assert.equal((status.content["m.relates_to"] as any)?.event_id, sent, "the failed message itself is marked");
    assert.equal(await stack.metric("bridge_message_failures_total", { direction: "to_network", reason: "third_party_disabled" }), failuresBefore + 1);
    assert.deepEqual(
      (await stack.sim.inbox(phone)).filter((e) => e.kind === "text").map((e) => e.text),
      [],
      "nothing was delivered",
    );
  });
});

describe("inbox", () => {
  test("`inbox dedicated` puts existing and new chats in a personal space; a closed chat leaves it; `inbox unified` removes it", async () => {
    const quinn = await stack.user("quinn");
    const botRoom = await stack.botRoom(quinn, { enable: true });
    const first = await chatFromWhatsApp(quinn, "+4915200000003", "Quentin");

    const answer = await command(quinn, botRoom, "inbox dedicated", /now in the space "Third-Party Chats"/);
    assert.match(body(answer), /1 chat\(s\) are in it/);
    const invite = await quinn.waitForInvite((i) => i.inviter === stack.botId && i.roomId !== botRoom, WAIT);
    const space = invite.roomId;
    assert.ok(body(answer).includes(space), "the answer links the space");
    await quinn.joinRoom(space);
    assert.equal((await quinn.getState(space, "m.room.create")).type, "m.space");
    assert.equal((await quinn.getState(space, "m.room.name")).name, "Third-Party Chats");
    assert.deepEqual((await quinn.getState(space, "m.space.child", first)).via, [stack.domain], "the existing chat is in the space");
    const parent = await quinn.getState(first, "m.space.parent", space);
    assert.deepEqual(parent, { via: [stack.domain], canonical: true }, "and points back to it");

    const second = await chatFromWhatsApp(quinn, "+4915200000004", "Rita");
    const child = await quinn.waitFor((e) => e.room_id === space && e.type === "m.space.child" && e.state_key === second, WAIT);
    assert.deepEqual(child.content.via, [stack.domain], "a new chat joins the space as it starts");

    await quinn.leaveRoom(second);
    await quinn.waitFor((e) => e.room_id === space && e.type === "m.space.child" && e.state_key === second && Object.keys(e.content).length === 0, {
      ...WAIT,
      description: "the closed chat's link removed from the space",
    });
    assert.match(body(await command(quinn, botRoom, "status", /Your Third-Party Chats:/)), /Inbox: dedicated \(space: /);

    await command(quinn, botRoom, "inbox unified", /back among your other chats; the space is gone/);
    await quinn.waitFor((e) => e.room_id === space && e.type === "m.room.member" && e.state_key === quinn.userId && e.content.membership === "leave", {
      ...WAIT,
      description: "Quinn removed from the space",
    });
    assert.deepEqual(await quinn.getState(first, "m.space.parent", space), {}, "the chat no longer points to the space");
    assert.match(body(await command(quinn, botRoom, "status", /Your Third-Party Chats:/)), /Inbox: unified/);
  });
});

describe("what the network does not carry", () => {
  let rose: TestClient;
  let portal: string;
  const phone = "+4915200000005";
  const ghost = () => stack.ghostId(phone);

  before(async () => {
    rose = await stack.user("rose");
    await stack.botRoom(rose, { enable: true });
    portal = await chatFromWhatsApp(rose, phone, "Sam");
  });

  test("a WhatsApp status update is never posted into any room, only counted", async () => {
    const before = await stack.metric("bridge_messages_dropped_total", { direction: "to_matrix", reason: "status_update" });
    const status = await stack.sim.sendStatus(phone, "my secret status");
    assert.deepEqual(
      status.sent.map((s) => s.to),
      [uriOf(rose.userId)],
      "the status went to Rose's bridge",
    );
    // Events of one user are processed in order: once this arrives, the status was handled.
    await stack.sim.sendText(phone, uriOf(rose.userId), "after the status");
    await rose.waitFor((e) => e.room_id === portal && body(e) === "after the status", WAIT);
    assert.equal(rose.allSeenEvents().filter((e) => JSON.stringify(e.content ?? {}).includes("my secret status")).length, 0, "in no room at all");
    assert.equal(await stack.metric("bridge_messages_dropped_total", { direction: "to_matrix", reason: "status_update" }), before + 1);
  });

  test("a sticker from WhatsApp is not bridged: the room is told a sticker was sent and why", async () => {
    await stack.sim.sendSticker(phone, uriOf(rose.userId));
    const notice = await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /sticker/.test(body(e)), WAIT);
    assert.equal(notice.content.msgtype, "m.notice");
    assert.equal(body(notice), "Sam (WhatsApp) sent a sticker. Third-party chats don't support stickers, so it can't be shown here.");
    assert.equal(rose.eventsIn(portal).filter((e) => e.type === "m.sticker" || e.content.msgtype === "m.image").length, 0);
    assert.ok((await stack.metric("bridge_messages_dropped_total", { direction: "to_matrix", reason: "sticker" })) >= 1);
  });

  test("an m.sticker from Matrix is not sent, and a notice says why", async () => {
    const sticker = await rose.sendEvent(portal, "m.sticker", { body: "a cat", url: "mxc://localhost/cat", info: { mimetype: "image/png", w: 64, h: 64 } });
    const notice = await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /sticker was not sent/.test(body(e)), WAIT);
    assert.equal(body(notice), "Your sticker was not sent: third-party chats don't support stickers.");
    assert.ok(stack.after(rose, portal, sticker, notice.event_id));
    await rose.sendText(portal, "after the sticker");
    await stack.sim.waitForInbox(phone, (e) => e.text === "after the sticker");
    assert.deepEqual(
      (await stack.sim.inbox(phone)).filter((e) => e.kind !== "text" && e.kind !== "delivered" && e.kind !== "read" && e.kind !== "typing"),
      [],
      "only the text arrived",
    );
  });

  test("a disappearing-messages timer set on WhatsApp is not applied, and a notice says so", async () => {
    await stack.sim.setDisappearing(phone, uriOf(rose.userId), 86400);
    const notice = await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /disappearing/.test(body(e)), WAIT);
    assert.equal(body(notice), "Sam (WhatsApp) turned on disappearing messages. Third-party chats don't support them: messages here will not disappear.");
    assert.equal(notice.content.msgtype, "m.notice");
  });

  test("an expiry set on Matrix (message timer, room timer) is not applied, with a notice", async () => {
    const sent = await rose.sendText(portal, "this should vanish", { "com.beeper.disappearing_timer": { type: "after_send", timer: 3_600_000 } });
    const notice = await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /^Sent, but it will not disappear/.test(body(e)), WAIT);
    assert.equal(body(notice), "Sent, but it will not disappear: third-party chats don't support disappearing messages, so the WhatsApp user keeps this message.");
    assert.ok(stack.after(rose, portal, sent, notice.event_id));
    const delivered = await stack.sim.waitForInbox(phone, (e) => e.text === "this should vanish");
    assert.equal(delivered.kind, "text", "the message itself was delivered, as an ordinary message");
    await rose.sendText(portal, "so should this", { "m.self_destruct": 60_000 });
    await rose.waitFor((e) => e.room_id === portal && /^Sent, but it will not disappear/.test(body(e)) && e.event_id !== notice.event_id, WAIT);

    await rose.sendState(portal, "com.beeper.disappearing_timer", { type: "after_read", timer: 86_400_000 });
    const timerNotice = await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /timer is not applied/.test(body(e)), WAIT);
    assert.match(body(timerNotice), /messages in this chat will not disappear on WhatsApp/);
  });

  test("anything else the network cannot take gets a notice, never silence", async () => {
    await rose.sendEvent(portal, "org.matrix.msc3381.poll.start", {
      "org.matrix.msc3381.poll.start": {
        question: { "org.matrix.msc1767.text": "Lunch?" },
        kind: "org.matrix.msc3381.poll.disclosed",
        max_selections: 1,
        answers: [{ id: "a", "org.matrix.msc1767.text": "yes" }],
      },
      "org.matrix.msc1767.text": "Lunch?\n1. yes",
    });
    await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && body(e) === "Your poll was not sent: third-party chats don't support polls.", WAIT);
    await rose.sendEvent(portal, "m.room.message", { msgtype: "m.location", body: "Berlin", geo_uri: "geo:52.52,13.40" });
    await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /^Your message was not sent: .*m\.location/.test(body(e)), WAIT);
    await rose.sendEvent(portal, "m.room.message", { msgtype: "org.example.custom", body: "custom" });
    await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /^Your message was not sent: .*org\.example\.custom/.test(body(e)), WAIT);
    await rose.sendState(portal, "m.room.name", { name: "Sam and me" });
    await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /^The room name stays on Matrix/.test(body(e)), WAIT);
    await rose.sendEvent(portal, "m.call.invite", { call_id: "c1", version: "1", lifetime: 60000, offer: { type: "offer", sdp: "v=0" } });
    await rose.waitFor((e) => e.room_id === portal && e.sender === ghost() && /^Your call did not go through/.test(body(e)), WAIT);
    assert.deepEqual(
      (await stack.sim.inbox(phone))
        .filter((e) => e.kind === "text")
        .map((e) => e.text)
        .filter((t) => /Lunch|Berlin|custom|Sam and me/.test(String(t))),
      [],
      "none of it reached WhatsApp",
    );
  });
});

describe("bot commands", () => {
  test("help lists every command, status and version answer, errors answer with the usage line", async () => {
    const tess = await stack.user("tess");
    const botRoom = await stack.botRoom(tess);
    const help = await command(tess, botRoom, "help", /Commands:/);
    for (const usage of ["help", "enable", "disable", "status", "start <phone>", "list", "inbox dedicated|unified", "logout [confirm]", "forget [confirm]", "version"]) {
      assert.ok(body(help).includes(`\`${usage}\``), `help lists ${usage}`);
    }
    const status = await command(tess, botRoom, "status", /Your Third-Party Chats:/);
    assert.match(body(status), /Third-Party Chats: \*\*off\*\*/);
    assert.match(body(status), /Inbox: unified/);
    assert.match(body(status), /Network: connected/);
    assert.match(body(status), /Chats: 0; messages waiting to be sent: 0/);
    assert.doesNotMatch(body(status), /Bridge \(admin\)/, "bridge-wide numbers are for admins");
    assert.match(body(await command(tess, botRoom, "version", /matrix-interop-bridge/)), /^matrix-interop-bridge \d+\.\d+\.\d+ \(interop protocol v1, Node \d+/);
    assert.equal(body(await command(tess, botRoom, "inbox sideways", /usage/)), "usage: inbox dedicated|unified");
    assert.equal(body(await command(tess, botRoom, "start", /usage/)), "usage: start <phone>");
    assert.equal(body(await command(tess, botRoom, "enable now", /usage/)), "usage: enable");
    const off = await command(tess, botRoom, "start +4915200000009", /usage/);
    assert.equal(body(off), "Your Third-Party Chats are off; say `enable` first.\nusage: start <phone>");
    await command(tess, botRoom, "enable", /Third-Party Chats are \*\*on\*\*/);
    const missing = await command(tess, botRoom, "start +4915299999999", /usage/);
    assert.equal(body(missing), "+4915299999999 is not on WhatsApp or does not accept Third-Party Chats.\nusage: start <phone>");
  });

  test("admins see the whole bridge in `status`", async () => {
    const boss = await stack.user("boss");
    const botRoom = await stack.botRoom(boss);
    assert.match(body(await command(boss, botRoom, "status", /Your Third-Party Chats:/)), /Bridge \(admin\): \d+ user\(s\), \d+ chat\(s\), \d+ message\(s\) waiting/);
  });

  test("a flood of commands is rate limited per user, with one answer", async () => {
    const uma = await stack.user("uma");
    const botRoom = await stack.botRoom(uma);
    // Sent all at once, so the flood reaches the bridge faster than any refill. Each command
    // differs, and so does its answer (Synapse merges identical events sent at the same moment).
    await Promise.all(Array.from({ length: 16 }, (_, i) => uma.sendText(botRoom, `start ${i + 1}`)));
    // Counted from the room's history: a sync can skip events when many arrive at once.
    const botSaid = async (pattern: RegExp) =>
      (await uma.messages(botRoom, { limit: 100 })).filter((e) => e.sender === stack.botId && pattern.test(String(e.content.body ?? ""))).length;
    await until("the burst's answers", async () => ((await botSaid(/is not a phone number/)) >= 10 ? true : undefined)).catch(async (err: Error) => {
      const said = (await uma.messages(botRoom, { limit: 100 })).map((e) => `${e.sender === stack.botId ? "bot" : "uma"}: ${String(e.content.body ?? e.type).slice(0, 40)}`);
      throw new Error(`${err.message}; the room holds (newest first):\n${said.join("\n")}`);
    });
    await until("the rate limit answer", async () => ((await botSaid(/sending commands faster than I answer them/)) >= 1 ? true : undefined));
    // A command after the flood, once a token is back, is answered normally.
    await new Promise((r) => setTimeout(r, 2500));
    await command(uma, botRoom, "list", /no Third-Party Chats yet/);
    assert.equal(await botSaid(/sending commands faster/), 1, "the flood got one answer");
    assert.equal(await botSaid(/is not a phone number/), 10, "a burst of 10 was answered, the rest of the flood was not");
  });

  test("`forget` deletes the user's keys, sessions and data and says what it did", async () => {
    const vera = await stack.user("vera");
    const botRoom = await stack.botRoom(vera, { enable: true });
    const phone = "+4915200000006";
    const portal = await chatFromWhatsApp(vera, phone, "Viktor");
    const inboxCommand = await vera.sendText(botRoom, "inbox dedicated");
    await botSays(vera, botRoom, inboxCommand, /space/, "the bot's answer to the inbox command");
    const lastWords = await vera.sendText(portal, "one last thing");
    // Delivered: every status the bridge posts about it is in the room before she asks to be forgotten.
    await vera.waitFor(
      (e) => e.room_id === portal && e.type === "com.beeper.message_send_status" && e.content["m.relates_to"]?.event_id === lastWords && e.content.delivered_to_users?.length > 0,
      WAIT,
    );
    const preview = await command(vera, botRoom, "forget", /Say `forget confirm` to go ahead/);
    assert.match(body(preview), /your 1 chat\(s\)/);
    const done = await command(vera, botRoom, "forget confirm", /^Done\./);
    assert.match(body(done), /deleted your identity on the WhatsApp interop network with its encryption keys and sessions/);
    // Viktor's greeting and her last words.
    assert.match(body(done), /1 chat\(s\) with 2 message link\(s\), 0 message\(s\) waiting to be sent/);
    assert.match(body(done), /your Third-Party Chats space and your settings/);
    await vera.waitFor((e) => e.room_id === portal && e.sender === stack.ghostId(phone) && /This chat is closed: you asked the bridge to forget your data/.test(body(e)), WAIT);
    await vera.waitFor((e) => e.room_id === portal && e.type === "m.room.member" && e.state_key === stack.ghostId(phone) && e.content.membership === "leave", WAIT);
    await vera.waitFor((e) => e.room_id === botRoom && e.type === "m.room.member" && e.state_key === stack.botId && e.content.membership === "leave", {
      ...WAIT,
      description: "the bot leaving the management room: the bridge keeps nothing, this room included",
    });
    // The network no longer knows Vera, and neither does the bridge.
    await assert.rejects(stack.sim.sendText(phone, uriOf(vera.userId), "hello?"), (err: SimApiError) => err.status === 404 && err.code === "unknown_user");
    assert.equal((await provisioningStatus(vera.userId)).status, 404);
    // Nor does its database keep the ids of what was sent and received in her rooms.
    const db = new BetterSqlite3(path.join(stack.dir, "bridge.db"), { readonly: true });
    try {
      const count = (sql: string, ...params: string[]) => (db.prepare(sql).get(...params) as { n: number }).n;
      assert.equal(count("SELECT COUNT(*) AS n FROM appservice_journal WHERE event_key IN (?, ?)", lastWords, inboxCommand), 0, "her events are out of the journal");
      assert.equal(count("SELECT COUNT(*) AS n FROM matrix_sends WHERE room_id = ?", portal), 0, "the chat's sends are forgotten");
      assert.equal(count("SELECT COUNT(*) AS n FROM matrix_sends WHERE room_id = ? AND txn_id = ?", botRoom, `bot.${inboxCommand}`), 0, "so are the bot's answers before `forget`");
    } finally {
      db.close();
    }
  });
});

describe("permissions", () => {
  test("someone the config does not permit gets a polite refusal, and nothing is created for them", async () => {
    const stranger = await stack.user("stranger");
    const usersBefore = (await stack.metric("bridge_users", { third_party_chats: "on" })) + (await stack.metric("bridge_users", { third_party_chats: "off" }));
    const botRoom = await stranger.createRoom({ is_direct: true, invite: [stack.botId], preset: "trusted_private_chat" });
    const refusal = await stranger.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && e.type === "m.room.message", WAIT);
    assert.equal(body(refusal), "Sorry, you are not allowed to use this bridge. Ask its administrator if you think you should be.");
    await stranger.waitFor((e) => e.room_id === botRoom && e.type === "m.room.member" && e.state_key === stack.botId && e.content.membership === "leave", WAIT);

    const phone = "+4915200000007";
    await stack.sim.createUser(phone, "Walt");
    const ghost = stack.ghostId(phone);
    const dm = await stranger.createRoom({ is_direct: true, invite: [ghost], preset: "trusted_private_chat" });
    const ghostSays = await stranger.waitFor((e) => e.room_id === dm && e.sender === ghost && e.type === "m.room.message", WAIT);
    assert.match(body(ghostSays), /^Sorry, you are not allowed to use this bridge/);
    await stranger.waitFor((e) => e.room_id === dm && e.type === "m.room.member" && e.state_key === ghost && e.content.membership === "leave", WAIT);

    // No network identity: the gateway does not know the stranger. No user record, no portal.
    await assert.rejects(stack.sim.sendText(phone, uriOf(stranger.userId), "hi"), (err: SimApiError) => err.status === 404 && err.code === "unknown_user");
    const usersAfter = (await stack.metric("bridge_users", { third_party_chats: "on" })) + (await stack.metric("bridge_users", { third_party_chats: "off" }));
    assert.equal(usersAfter, usersBefore);
    assert.equal((await provisioningStatus(stranger.userId)).status, 403);
  });
});
