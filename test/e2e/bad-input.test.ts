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
import { PROVIDER_DOMAIN, PROVISIONING_SECRET, Stack } from "../support/stack";

let stack: Stack;
/** Alice's chat from the first test: the second checks it still works after its own fuzz. */
let aliceChat: { client: TestClient; roomId: string; phone: string } | undefined;
const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

before(async () => {
  stack = await Stack.start("badinput", { logLevel: "info" });
});

after(async () => {
  await stack?.stop();
});

async function openChat(client: TestClient, phone: string): Promise<string> {
  await stack.sim.createUser(phone, "Fuzzy");
  await stack.botRoom(client, { enable: true });
  await stack.sim.sendText(phone, uriOf(client.userId), "hello, fuzz me");
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone));
  await client.joinRoom(invite.roomId);
  await client.waitFor((e) => e.room_id === invite.roomId && e.content.body === "hello, fuzz me");
  return invite.roomId;
}

/** A refusal notice: "Your message was not sent: …", or for media the kind and file name, "Your photo (x.png) was not sent: …". */
const NOT_SENT = /^Your (message|(photo|video|voice message|audio file|file)( \([^\n]*\))?) was not sent: /;
const anyValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 2 }),
);
const badMxc = fc.constantFrom("mxc://", "mxc://server", "mxc:///id", "http://169.254.169.254/latest/meta-data", "mxc://ser ver/id", "mxc://localhost/../../etc/passwd", "");
const oddMimetype = fc.constantFrom("", "image/", "text/html", "application/x-msdownload", "image/svg+xml", "a/b;c=d", "ÿ/ÿ", "image/png\u0000");

/** Message contents the network cannot carry: each must come back as a notice saying why. */
const unbridgeableContent = fc.oneof(
  fc.record({
    msgtype: fc.constantFrom("m.image", "m.file", "m.video", "m.audio"),
    body: fc.string({ maxLength: 20 }),
    url: badMxc,
    info: fc.record({ mimetype: oddMimetype, size: fc.oneof(fc.integer(), anyValue) }),
  }),
  fc.record({ msgtype: fc.oneof(fc.constantFrom("m.location", "", "M.TEXT", "org.example.odd"), anyValue), body: fc.string({ maxLength: 20 }) }),
  fc.record({
    msgtype: fc.constant("m.text"),
    body: fc.oneof(
      anyValue.filter((v) => typeof v !== "string"),
      fc.constant(undefined),
    ),
  }),
  fc.record({ msgtype: fc.constantFrom("m.text", "m.notice"), body: fc.string({ minLength: 70_000, maxLength: 70_000 }) }),
);

test("1,000 generated bad events and malformed transactions: every request answered, every user told why, the bridge stays up and keeps bridging", async (t) => {
  const alice = await stack.user("alice");
  const phone = "+4915200000077";
  const roomId = await openChat(alice, phone);
  aliceChat = { client: alice, roomId, phone };
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
  const randomEvent = fc
    .record(
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
    )
    .filter((e) => !(e.room_id === roomId && e.sender === alice.userId));
  const others = fc.sample(randomEvent, { numRuns: 850, seed: 78 });
  const events: unknown[] = [...others];
  // The user's events are spread among the others.
  involved.forEach((e, i) => events.splice(Math.floor((i * events.length) / involved.length) + i, 0, e));
  assert.equal(events.length, 1000);

  const statuses = new Map<number, number>();
  const count = (status: number) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
  for (let i = 0; i < events.length; i += 10) count((await put(`fuzz${i}`, JSON.stringify({ events: events.slice(i, i + 10) }))).status);
  for (const body of ["not json", "[]", "42", '{"events": {}}', '{"events": "x"}', '{"de.sorunome.msc2409.ephemeral": 7}'])
    count((await put(`garbage${body.length}`, body)).status);
  count((await put("unauth", JSON.stringify({ events: [] }), "not-the-token")).status);
  count((await put("huge", JSON.stringify({ events: [{ padding: "x".repeat(17 * 1024 * 1024) }] }))).status);
  t.diagnostic(
    `transaction endpoint: ${events.length} generated events in ${events.length / 10} transactions, plus 8 malformed requests; answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`,
  );
  assert.equal(statuses.get(200), 100, "every well-formed transaction is answered 200 (bad events in it are dropped or refused later)");
  assert.equal(statuses.get(400), 6, "malformed bodies: 400");
  assert.equal(statuses.get(403), 1);
  assert.equal(statuses.get(413), 1, "an oversized body: 413");

  // Each of the user's messages gets a notice in their room saying why it was not sent.
  // (Read from the room's history: a burst of notices makes /sync skip some.)
  const notices = async () =>
    (await alice.history(roomId, { types: ["m.room.message"] })).filter(
      (e) => e.sender === stack.ghostId(phone) && e.content.msgtype === "m.notice" && NOT_SENT.test(String(e.content.body)),
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
  for (const text of texts) assert.match(text, new RegExp(`${NOT_SENT.source}[^\\n]+\\.$`));
  t.diagnostic(`${texts.length} notices, e.g. ${JSON.stringify([...new Set(texts.map((x) => x.replace(/\d+/g, "N")))].slice(0, 6))}`);

  // Still up, nothing else lost: the chat works both ways and WhatsApp saw none of the fuzz.
  assert.ok(stack.bridge.running, "the bridge process is still running");
  await alice.sendText(roomId, "still here?");
  await stack.sim.waitForInbox(phone, (e) => e.text === "still here?", 60_000);
  await stack.sim.sendText(phone, uriOf(alice.userId), "yes, still here");
  await alice.waitFor((e) => e.room_id === roomId && e.content.body === "yes, still here", { timeoutMs: 60_000 });
  const inbox = await stack.sim.inbox(phone);
  assert.deepEqual(
    inbox.filter((e) => e.kind === "text").map((e) => e.text),
    ["still here?"],
    "WhatsApp received only the real message",
  );
});

test("1,000 generated provisioning requests: only the shared secret or the user's own token act, every answer is JSON with a reason, no 5xx, the bridge keeps bridging", async (t) => {
  assert.ok(aliceChat, "the first test opened Alice's chat");
  const bob = await stack.user("bob");
  const domain = stack.botId.split(":")[1];
  const base = `${stack.appserviceUrl}/_matrix/provision/v1`;
  const request = fc.record({
    // Mostly real routes, so that requests get past the router to authentication and the handlers.
    route: fc.oneof(
      {
        arbitrary: fc.constantFrom<[string, string]>(["GET", "/status"], ["PUT", "/settings"], ["GET", "/chats"], ["POST", "/chats"], ["DELETE", "/user"], ["GET", "/version"]),
        weight: 6,
      },
      fc.tuple(
        fc.constantFrom<string>("GET", "PUT", "POST", "DELETE", "PATCH"),
        fc.oneof(
          fc.constantFrom(
            "/status",
            "/settings",
            "/chats",
            "/user",
            "/version",
            "",
            "/",
            "/nope",
            "/status/extra",
            "/status/../version",
            "/chats/",
            "/STATUS",
            "/settings%00",
            "/user%2F..%2Fstatus",
          ),
          // ("." and ".." would be resolved by the URL parser, to paths outside the API.)
          fc
            .string({ maxLength: 12 })
            .filter((x) => x !== "." && x !== "..")
            .map((x) => `/${encodeURIComponent(x)}`),
        ),
      ),
    ),
    scheme: fc.constantFrom("Bearer ", "Bearer ", "Bearer ", "bearer ", "Basic ", "", null),
    token: fc.constantFrom(
      PROVISIONING_SECRET,
      PROVISIONING_SECRET,
      bob.accessToken,
      bob.accessToken,
      "",
      `${PROVISIONING_SECRET}x`,
      PROVISIONING_SECRET.slice(0, -1),
      PROVISIONING_SECRET.toUpperCase(),
      "syt_not_a_token",
      " ",
    ),
    // Never the shared secret for Alice: her chat must survive (her id appears only with Bob's token, which must be refused).
    userIds: fc.constantFrom<string[]>(
      [],
      [],
      [bob.userId],
      [bob.userId],
      [bob.userId, bob.userId],
      [aliceChat!.client.userId],
      [`@mallory:${domain}`],
      [stack.botId],
      [stack.ghostId("+4915200000077")],
      ["not-an-id"],
      ["@x:elsewhere.example"],
      [""],
    ),
    contentType: fc.constantFrom("application/json", "application/json", "text/plain", "application/x-www-form-urlencoded", null),
    body: fc.oneof(
      {
        arbitrary: fc
          .record(
            {
              third_party_chats: fc.oneof(fc.boolean(), anyValue),
              inbox: fc.oneof(fc.constantFrom("dedicated", "unified"), anyValue),
              phone: fc.oneof(fc.constantFrom("+4915200000088", "+4915200000077", "123", "", "+", "+49 152 0000 0088"), anyValue),
              extra: anyValue,
            },
            { requiredKeys: [] },
          )
          .map((b) => JSON.stringify(b)),
        weight: 4,
      },
      fc.json({ maxDepth: 2 }),
      fc.constantFrom("not json", "{", "[1,2]", "null", '"x"', "", '{"third_party_chats": true'),
      fc.constant(null),
    ),
  });
  const cases = fc
    .sample(request, { numRuns: 1200, seed: 79 })
    .filter((r) => !(r.token === PROVISIONING_SECRET && r.userIds.includes(aliceChat!.client.userId)))
    .slice(0, 1000);
  assert.equal(cases.length, 1000);

  const statuses = new Map<number, number>();
  const problems: string[] = [];
  for (const [i, r] of cases.entries()) {
    const [method, path] = r.route;
    const url = new URL(base + path);
    for (const id of r.userIds) url.searchParams.append("user_id", id);
    const headers: Record<string, string> = {};
    if (r.scheme !== null) headers.authorization = `${r.scheme}${r.token}`;
    const withBody = method !== "GET" && r.body !== null;
    if (withBody && r.contentType) headers["content-type"] = r.contentType;
    const res = await fetch(url, { method, headers, body: withBody ? r.body! : undefined });
    statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    const text = await res.text();
    const what = `#${i} ${method} ${path} ${JSON.stringify({ scheme: r.scheme, secret: r.token === PROVISIONING_SECRET, bobToken: r.token === bob.accessToken, userIds: r.userIds })} → ${res.status} ${text.slice(0, 200)}`;
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      problems.push(`not JSON: ${what}`);
      continue;
    }
    if (res.status >= 500) problems.push(`server error: ${what}`);
    if (res.status >= 400 && (typeof json.errcode !== "string" || typeof json.error !== "string")) problems.push(`refusal without errcode and reason: ${what}`);
    const asSecret = r.scheme === "Bearer " && r.token === PROVISIONING_SECRET;
    const asBob = r.scheme === "Bearer " && r.token === bob.accessToken;
    if (res.status < 400 && !asSecret && !asBob) problems.push(`acted without valid credentials: ${what}`);
    if (res.status < 400 && asBob && r.userIds.some((id) => id !== bob.userId)) problems.push(`Bob's token acted for someone else: ${what}`);
  }
  const huge = await fetch(`${base}/settings?user_id=${encodeURIComponent(bob.userId)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${PROVISIONING_SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ inbox: "x".repeat(17 * 1024 * 1024) }),
  });
  const hugeJson = (await huge.json()) as { errcode?: string };
  t.diagnostic(
    `provisioning API: ${cases.length} generated requests, plus 1 oversized body; answers by status: ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`,
  );
  assert.deepEqual(problems.slice(0, 10), [], `${problems.length} bad answers`);
  assert.deepEqual({ status: huge.status, errcode: hugeJson.errcode }, { status: 413, errcode: "M_TOO_LARGE" }, "an oversized body: 413 before it is read");
  for (const status of [200, 400, 401, 403, 404]) assert.ok((statuses.get(status) ?? 0) > 0, `the generated requests reach status ${status}`);

  // Still up and bridging: Alice's chat works both ways.
  assert.ok(stack.bridge.running, "the bridge process is still running");
  const { client: alice, roomId, phone } = aliceChat!;
  await alice.sendText(roomId, "after the provisioning fuzz");
  await stack.sim.waitForInbox(phone, (e) => e.text === "after the provisioning fuzz", 60_000);
  await stack.sim.sendText(phone, uriOf(alice.userId), "received after the provisioning fuzz");
  await alice.waitFor((e) => e.room_id === roomId && e.content.body === "received after the provisioning fuzz", { timeoutMs: 60_000 });
});
