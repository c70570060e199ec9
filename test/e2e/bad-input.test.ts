/**
 * Bad Matrix input into the running bridge, through its real transaction endpoint: 1,000
 * generated events (wrong types, missing fields, huge bodies, bad mxc URIs, odd mimetypes) and
 * malformed transactions. The bridge answers every request, tells the user in the room why
 * each of their messages was not sent, stays up, and the chat works as before.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, test } from "node:test";
import fc from "fast-check";
import YAML from "yaml";
import { TestClient } from "../support/matrix-client";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

let stack: Stack;
const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

before(async () => {
  stack = await Stack.start("badinput", { logLevel: "info" });
});

after(async () => {
  await stack?.stop();
});

async function openChat(client: TestClient, phone: string): Promise<string> {
  await stack.sim.createUser(phone, "Fuzzy");
  await stack.botRoom(client);
  await stack.sim.sendText(phone, uriOf(client.userId), "hello, fuzz me");
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone));
  await client.joinRoom(invite.roomId);
  await client.waitFor((e) => e.room_id === invite.roomId && e.content.body === "hello, fuzz me");
  return invite.roomId;
}

const anyValue = fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }));
const badMxc = fc.constantFrom("mxc://", "mxc://server", "mxc:///id", "http://169.254.169.254/latest/meta-data", "mxc://ser ver/id", "mxc://localhost/../../etc/passwd", "");
const oddMimetype = fc.constantFrom("", "image/", "text/html", "application/x-msdownload", "image/svg+xml", "a/b;c=d", "ÿ/ÿ", "image/png\u0000");

/** Message contents the network cannot carry: each must come back as a notice saying why. */
const unbridgeableContent = fc.oneof(
  fc.record({ msgtype: fc.constantFrom("m.image", "m.file", "m.video", "m.audio"), body: fc.string({ maxLength: 20 }), url: badMxc, info: fc.record({ mimetype: oddMimetype, size: fc.oneof(fc.integer(), anyValue) }) }),
  fc.record({ msgtype: fc.oneof(fc.constantFrom("m.location", "", "M.TEXT", "org.example.odd"), anyValue), body: fc.string({ maxLength: 20 }) }),
  fc.record({ msgtype: fc.constant("m.text"), body: fc.oneof(anyValue.filter((v) => typeof v !== "string"), fc.constant(undefined)) }),
  fc.record({ msgtype: fc.constantFrom("m.text", "m.notice"), body: fc.string({ minLength: 70_000, maxLength: 70_000 }) }),
);

test("1,000 generated bad events and malformed transactions: every request answered, every user told why, the bridge stays up and keeps bridging", async (t) => {
  const alice = await stack.user("alice");
  const phone = "+4915200000077";
  const roomId = await openChat(alice, phone);
  const config = YAML.parse(fs.readFileSync(stack.configPath, "utf8"));
  const registration = YAML.parse(fs.readFileSync(stack.registrationPath, "utf8"));
  const url = `http://127.0.0.1:${config.appservice.port}/_matrix/app/v1/transactions`;
  const put = (txnId: string, body: string, token = registration.hs_token as string) =>
    fetch(`${url}/${txnId}`, { method: "PUT", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body });

  let n = 0;
  const eventId = () => `$fuzz${++n}-${Date.now()}`;
  // Events where the user is involved: their own messages in their portal room.
  const involved = fc.sample(unbridgeableContent, { numRuns: 150, seed: 77 }).map((content) => ({
    event_id: eventId(),
    room_id: roomId,
    sender: alice.userId,
    type: "m.room.message",
    origin_server_ts: Date.now(),
    content,
  }));
  // Everything else: random shapes, rooms, senders and types, none a message of the user in a portal.
  const randomEvent = fc.record(
    {
      event_id: fc.oneof(fc.constant("").map(eventId), anyValue),
      room_id: fc.oneof(fc.constantFrom("!nowhere:localhost", "!also-nowhere:localhost", roomId), anyValue),
      sender: fc.oneof(fc.constantFrom("@mallory:localhost", stack.ghostId(phone), stack.botId, "@whatsapp_1:localhost"), anyValue),
      type: fc.oneof(fc.constantFrom("m.room.message", "m.room.member", "m.sticker", "m.reaction", "m.room.redaction", "m.typing", ""), anyValue),
      state_key: fc.oneof(fc.constantFrom("@whatsapp_4915200000099:localhost", "@interopbot:localhost", "@mallory:localhost", ""), anyValue),
      origin_server_ts: fc.oneof(fc.constant(Date.now()), anyValue),
      content: fc.oneof(unbridgeableContent, fc.record({ membership: fc.oneof(fc.constantFrom("invite", "join", "leave", "ban"), anyValue), is_direct: anyValue }), anyValue),
    },
    { requiredKeys: [] },
  ).filter((e) => !(e.room_id === roomId && e.sender === alice.userId));
  const others = fc.sample(randomEvent, { numRuns: 850, seed: 78 });
  const events: unknown[] = [...others];
  // The user's events are spread among the others.
  involved.forEach((e, i) => events.splice(Math.floor((i * events.length) / involved.length) + i, 0, e));
  assert.equal(events.length, 1000);

  const statuses = new Map<number, number>();
  const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
  for (let i = 0; i < events.length; i += 10) count((await put(`fuzz${i}`, JSON.stringify({ events: events.slice(i, i + 10) }))).status);
  for (const body of ["not json", "[]", "42", '{"events": {}}', '{"events": "x"}', '{"de.sorunome.msc2409.ephemeral": 7}']) count((await put(`garbage${body.length}`, body)).status);
  count((await put("unauth", JSON.stringify({ events: [] }), "not-the-token")).status);
  count((await put("huge", JSON.stringify({ events: [{ padding: "x".repeat(17 * 1024 * 1024) }] }))).status);
  t.diagnostic(`transaction endpoint: ${events.length} generated events in ${events.length / 10} transactions, plus 8 malformed requests; answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`);
  assert.equal(statuses.get(200), 100, "every well-formed transaction is answered 200 (bad events in it are dropped or refused later)");
  assert.equal(statuses.get(400), 6, "malformed bodies: 400");
  assert.equal(statuses.get(403), 1);
  assert.equal(statuses.get(413), 1, "an oversized body: 413");

  // Each of the user's messages gets a notice in their room saying why it was not sent.
  // (Read from the room's history: a burst of notices makes /sync skip some.)
  const notices = async () =>
    (await alice.history(roomId, { types: ["m.room.message"] })).filter(
      (e) => e.sender === stack.ghostId(phone) && e.content.msgtype === "m.notice" && /^Your message was not sent: /.test(String(e.content.body)),
    );
  const deadline = Date.now() + 180_000;
  let found = await notices();
  while (found.length < involved.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 2000));
    found = await notices();
  }
  await new Promise((r) => setTimeout(r, 2000));
  const final = await notices();
  const texts = final.map((e) => String(e.content.body));
  assert.equal(texts.length, involved.length, "one notice per refused message");
  const answered = final.map((e) => (e.content["m.relates_to"] as { "m.in_reply_to"?: { event_id?: string } } | undefined)?.["m.in_reply_to"]?.event_id);
  assert.deepEqual(answered.sort(), involved.map((e) => e.event_id).sort(), "each notice replies to the message it is about");
  for (const text of texts) assert.match(text, /^Your message was not sent: [^\n]+\.$/);
  t.diagnostic(`${texts.length} notices, e.g. ${JSON.stringify([...new Set(texts.map((x) => x.replace(/\d+/g, "N")))].slice(0, 6))}`);

  // Still up, nothing else lost: the chat works both ways and WhatsApp saw none of the fuzz.
  assert.ok(stack.bridge.running, "the bridge process is still running");
  await alice.sendText(roomId, "still here?");
  await stack.sim.waitForInbox(phone, (e) => e.text === "still here?", 60_000);
  await stack.sim.sendText(phone, uriOf(alice.userId), "yes, still here");
  await alice.waitFor((e) => e.room_id === roomId && e.content.body === "yes, still here", { timeoutMs: 60_000 });
  const inbox = await stack.sim.inbox(phone);
  assert.deepEqual(inbox.filter((e) => e.kind === "text").map((e) => e.text), ["still here?"], "WhatsApp received only the real message");
});
