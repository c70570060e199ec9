/**
 * The provisioning API (docs/provisioning.md) and the operators' listener (/metrics, /health,
 * /ready), against a whole running stack: every route, and every way a request is refused.
 */
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import BetterSqlite3 from "better-sqlite3";
import { PROVIDER_DOMAIN, PROVISIONING_SECRET, Stack } from "../support/stack";

let stack: Stack;
const PREFIX = "/_matrix/provision/v1";
const WAIT = { timeoutMs: 30_000 };

interface Answer {
  status: number;
  json: any;
}

interface CallOptions {
  token?: string;
  userId?: string;
  body?: unknown;
  rawBody?: string;
  contentType?: string;
}

async function call(method: string, path: string, opts: CallOptions = {}): Promise<Answer> {
  const url = new URL(stack.appserviceUrl + PREFIX + path);
  if (opts.userId) url.searchParams.set("user_id", opts.userId);
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.rawBody !== undefined || opts.body !== undefined) {
    headers["content-type"] = opts.contentType ?? "application/json";
    body = opts.rawBody ?? JSON.stringify(opts.body);
  }
  const res = await fetch(url, { method, headers, body });
  return { status: res.status, json: await res.json() };
}

/** As an integration holding the shared secret, acting for `userId`. */
function asIntegration(method: string, path: string, userId: string, body?: unknown): Promise<Answer> {
  return call(method, path, { token: PROVISIONING_SECRET, userId, body });
}

function ok(answer: Answer, status = 200): any {
  assert.equal(answer.status, status, JSON.stringify(answer.json));
  return answer.json;
}

function refused(answer: Answer, status: number, errcode: string, reason?: RegExp): void {
  assert.equal(answer.status, status, JSON.stringify(answer.json));
  assert.equal(answer.json.errcode, errcode, JSON.stringify(answer.json));
  assert.equal(typeof answer.json.error, "string", "every refusal says why");
  if (reason) assert.match(answer.json.error, reason);
}

/** Counts, in the bridge's database (read-only, beside the running bridge), of what it keeps about a user. */
function bridgeRows(mxid: string, uri: string): { signal: number; signalKeys: string[]; otherSignal: number; user: number; portals: number } {
  const db = new BetterSqlite3(path.join(stack.dir, "bridge.db"), { readonly: true });
  try {
    const count = (sql: string, ...args: unknown[]) => (db.prepare(sql).get(...args) as { n: number }).n;
    return {
      signal: count("SELECT COUNT(*) AS n FROM signal_records WHERE owner = ?", uri),
      signalKeys: (db.prepare("SELECT DISTINCT key FROM signal_records WHERE owner = ?").all(uri) as { key: string }[]).map((r) => r.key),
      otherSignal: count("SELECT COUNT(*) AS n FROM signal_records WHERE owner <> ?", uri),
      user: count("SELECT COUNT(*) AS n FROM matrix_users WHERE mxid = ?", mxid),
      portals: count("SELECT COUNT(*) AS n FROM portals WHERE receiver = ?", mxid),
    };
  } finally {
    db.close();
  }
}

before(async () => {
  stack = await Stack.start("provisioning", {
    bridgeConfig: (c) => {
      const domain = c.homeserver.domain;
      c.bridge = { permissions: { [domain]: "user", [`@outsider_provisioning:${domain}`]: "none", [`@chief_provisioning:${domain}`]: "admin" } };
    },
  });
});

after(async () => {
  await stack?.stop();
});

describe("provisioning API", () => {
  test("every route with the shared secret: version, settings, inbox, chats, status, forget", async () => {
    const ida = await stack.user("ida");
    const version = ok(await asIntegration("GET", "/version", ida.userId));
    assert.match(version.bridge, /^\d+\.\d+\.\d+/);
    assert.equal(version.protocol, 1);

    refused(await asIntegration("GET", "/status", ida.userId), 404, "M_NOT_FOUND", /no record of you/);
    assert.deepEqual(ok(await asIntegration("GET", "/chats", ida.userId)), { chats: [] }, "listing creates nothing");
    refused(await asIntegration("GET", "/status", ida.userId), 404, "M_NOT_FOUND");

    const phone = "+4915300000001";
    await stack.sim.createUser(phone, "Jan");
    refused(await asIntegration("POST", "/chats", ida.userId, { phone }), 409, "M_BAD_STATE", /Third-Party Chats are off/);

    const on = ok(await asIntegration("PUT", "/settings", ida.userId, { third_party_chats: true }));
    assert.equal(on.third_party_chats, true);
    assert.deepEqual(on.changed, { third_party_chats: true });
    assert.equal(on.network.state, "connected");

    const started = ok(await asIntegration("POST", "/chats", ida.userId, { phone }), 201);
    assert.equal(started.created, true);
    assert.equal(started.name, "Jan");
    const invite = await ida.waitForInvite((i) => i.roomId === started.room_id, WAIT);
    assert.equal(invite.inviter, stack.ghostId(phone));
    const again = ok(await asIntegration("POST", "/chats", ida.userId, { phone }), 200);
    assert.deepEqual(again, { room_id: started.room_id, name: "Jan", created: false });
    assert.deepEqual(ok(await asIntegration("GET", "/chats", ida.userId)), { chats: [{ room_id: started.room_id, kind: "dm", remote_user_id: phone, name: "Jan (WhatsApp)" }] });
    refused(await asIntegration("POST", "/chats", ida.userId, { phone: "+4915399999999" }), 404, "M_NOT_FOUND", /not on WhatsApp/);

    const dedicated = ok(await asIntegration("PUT", "/settings", ida.userId, { inbox: "dedicated" }));
    assert.equal(dedicated.inbox, "dedicated");
    assert.deepEqual(dedicated.changed, { inbox: true });
    const space = await ida.waitForInvite((i) => i.roomId === dedicated.space_room_id, WAIT);
    assert.equal(space.inviter, stack.botId);

    const status = ok(await asIntegration("GET", "/status", ida.userId));
    assert.deepEqual(
      { ...status, network: status.network.state },
      {
        user_id: ida.userId,
        permission: "user",
        third_party_chats: true,
        inbox: "dedicated",
        space_room_id: dedicated.space_room_id,
        network: "connected",
        chats: 1,
        queued: 0,
        refused_contacts: [],
      },
    );

    // What `forget` must delete is really there before: her Signal identity, prekeys (and any
    // sessions), her settings row and her portal, in the bridge's own database.
    const idaUri = `mimi://${PROVIDER_DOMAIN}/u/${ida.userId}`;
    const before = bridgeRows(ida.userId, idaUri);
    assert.ok(before.signal >= 2, `the bridge holds her Signal records (${before.signal})`);
    assert.ok(before.signalKeys.includes("account"), `her identity among them (${before.signalKeys.slice(0, 8).join(", ")}…)`);
    assert.deepEqual([before.user, before.portals], [1, 1]);
    const othersBefore = bridgeRows(ida.userId, idaUri).otherSignal;

    const forgotten = ok(await asIntegration("DELETE", "/user", ida.userId));
    assert.deepEqual(forgotten.deleted, {
      network_identity: true,
      keys_and_sessions: true,
      portals: 1,
      messages: 0,
      queued: 0,
      refused_contacts: 0,
      space: true,
      settings: true,
    });
    const gone = bridgeRows(ida.userId, idaUri);
    assert.deepEqual({ signal: gone.signal, user: gone.user, portals: gone.portals }, { signal: 0, user: 0, portals: 0 }, "her records are gone from the bridge's database");
    assert.equal(gone.otherSignal, othersBefore, "and only hers");
    refused(await asIntegration("GET", "/status", ida.userId), 404, "M_NOT_FOUND");
    refused(await asIntegration("DELETE", "/user", ida.userId), 404, "M_NOT_FOUND", /no data about you/);
    await assert.rejects(stack.sim.sendText(phone, `mimi://${PROVIDER_DOMAIN}/u/${ida.userId}`, "hello?"), (err: { code?: string }) => err.code === "unknown_user");
  });

  test("a user's own access token: acts for that user only, unless the user is a bridge admin", async () => {
    const kai = await stack.user("kai");
    const other = await stack.user("lena");
    const chief = await stack.user("chief");
    const off = ok(await call("PUT", "/settings", { token: kai.accessToken, body: { third_party_chats: false } }));
    assert.equal(off.user_id, kai.userId, "the token names the user (checked with /whoami)");
    assert.equal(off.third_party_chats, false);
    assert.equal(ok(await call("GET", "/status", { token: kai.accessToken })).user_id, kai.userId);
    refused(await call("GET", "/status", { token: kai.accessToken, userId: other.userId }), 403, "M_FORBIDDEN", /only bridge admins/);
    const byChief = ok(await call("GET", "/status", { token: chief.accessToken, userId: kai.userId }));
    assert.equal(byChief.user_id, kai.userId, "an admin may act for another user");
    const chiefOwn = ok(await call("PUT", "/settings", { token: chief.accessToken, body: { third_party_chats: false } }));
    assert.equal(chiefOwn.permission, "admin");
    assert.ok(chiefOwn.bridge && typeof chiefOwn.bridge.users === "number", "admins see the whole bridge");
  });

  test("refused requests: no or wrong credentials, unknown or not permitted users, bad bodies, unknown routes", async () => {
    const mia = await stack.user("mia");
    const outsider = await stack.user("outsider");
    refused(await call("GET", "/status", { userId: mia.userId }), 401, "M_MISSING_TOKEN");
    refused(await call("GET", "/status", { token: "", userId: mia.userId }), 401, "M_MISSING_TOKEN");
    refused(await call("GET", "/status", { token: "not-the-secret", userId: mia.userId }), 401, "M_UNKNOWN_TOKEN");
    refused(await call("GET", "/status", { token: PROVISIONING_SECRET }), 400, "M_MISSING_PARAM", /user_id is required/);
    refused(await call("GET", "/status", { token: PROVISIONING_SECRET, userId: "mia" }), 400, "M_INVALID_PARAM", /not a Matrix user id/);
    refused(
      await call("PUT", "/settings", { token: PROVISIONING_SECRET, userId: outsider.userId, body: { third_party_chats: true } }),
      403,
      "M_FORBIDDEN",
      /not allowed to use this bridge/,
    );
    refused(await call("GET", "/chats", { token: outsider.accessToken }), 403, "M_FORBIDDEN", /not allowed/);
    refused(await call("GET", "/status", { token: PROVISIONING_SECRET, userId: "@someone:elsewhere.example" }), 403, "M_FORBIDDEN", /not allowed/);
    refused(await call("GET", "/status", { token: PROVISIONING_SECRET, userId: stack.botId }), 403, "M_FORBIDDEN", /belongs to the bridge/);
    refused(await call("GET", "/status", { token: PROVISIONING_SECRET, userId: stack.ghostId("+4915300000009") }), 403, "M_FORBIDDEN", /belongs to the bridge/);

    const asMia = (method: string, path: string, extra: CallOptions) => call(method, path, { token: PROVISIONING_SECRET, userId: mia.userId, ...extra });
    refused(await asMia("PUT", "/settings", { rawBody: "third_party_chats=true", contentType: "application/x-www-form-urlencoded" }), 400, "M_NOT_JSON");
    // Bodies the JSON parser refuses before any route runs are counted like every other refusal.
    const refusedBodies = (status: string) => stack.metric("bridge_provisioning_request_duration_seconds_count", { route: "/settings", method: "PUT", status });
    const badJsonBefore = await refusedBodies("400");
    refused(await asMia("PUT", "/settings", { rawBody: "{not json" }), 400, "M_NOT_JSON");
    assert.equal(await refusedBodies("400"), badJsonBefore + 1, "the unreadable body is counted");
    refused(await asMia("PUT", "/settings", { body: { inbox: "x".repeat(17 * 1024 * 1024) } }), 413, "M_TOO_LARGE");
    assert.equal(await refusedBodies("413"), 1, "the oversized body is counted");
    refused(await asMia("PUT", "/settings", { body: [true] }), 400, "M_BAD_JSON", /JSON object/);
    refused(await asMia("PUT", "/settings", { body: {} }), 400, "M_BAD_JSON", /third_party_chats and\/or inbox/);
    refused(await asMia("PUT", "/settings", { body: { third_party_chats: "yes" } }), 400, "M_BAD_JSON", /true or false/);
    refused(await asMia("PUT", "/settings", { body: { inbox: "sideways" } }), 400, "M_BAD_JSON", /"dedicated" or "unified"/);
    refused(await asMia("PUT", "/settings", { body: { third_party: true } }), 400, "M_BAD_JSON", /unknown setting "third_party"/);
    refused(await asMia("POST", "/chats", { body: { phone: "12" } }), 400, "M_BAD_JSON", /international format/);
    refused(await asMia("POST", "/chats", { body: { phone: "+4915300000001", name: "x" } }), 400, "M_BAD_JSON", /unknown field "name"/);
    refused(await asMia("GET", "/nothing-here", {}), 404, "M_UNRECOGNIZED");
    refused(await asMia("POST", "/status", { body: {} }), 404, "M_UNRECOGNIZED");
    refused(await asMia("GET", "/status", {}), 404, "M_NOT_FOUND", /no record of you/);
  });
});

describe("metrics and health", () => {
  test("/health and /ready report liveness and readiness; /metrics exposes what the bridge did", async () => {
    const health = await fetch(`${stack.metricsUrl}/health`);
    assert.equal(health.status, 200);
    const report = (await health.json()) as any;
    assert.equal(report.status, "ok");
    assert.equal(report.ready, true);
    assert.deepEqual(report.checks, { database: "ok", network: "connected", appservice: "ok" });
    assert.deepEqual(
      { homeserver: report.links.homeserver.state, network: report.links.network.state, queue: report.links.outbound_queue },
      { homeserver: "up", network: "up", queue: 0 },
      "the links the bridge depends on, and its outbound queue",
    );
    assert.equal((await fetch(`${stack.metricsUrl}/ready`)).status, 200);
    assert.equal((await fetch(`${stack.metricsUrl}/nope`)).status, 404);

    // The names operators rely on are exposed.
    const text = await stack.metrics();
    for (const name of [
      "bridge_messages_bridged_total",
      "bridge_messages_dropped_total",
      "bridge_message_failures_total",
      "bridge_outbound_queue_depth",
      "bridge_inbound_chats_busy",
      "bridge_portals",
      "bridge_users",
      "bridge_network_connection_state",
      "bridge_link_state",
      "bridge_link_outages",
      "bridge_link_held",
      "bridge_matrix_event_duration_seconds",
      "bridge_network_send_duration_seconds",
      "bridge_matrix_to_network_duration_seconds",
      "bridge_provisioning_request_duration_seconds",
      "bridge_bot_commands_total",
      "process_resident_memory_bytes",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), `${name} is exposed`);
    }
    assert.equal(await stack.metric("bridge_network_connection_state", { state: "connected" }), 1);
    assert.ok((await stack.metric("bridge_users", { third_party_chats: "off" })) >= 2, "users who switched off through the API count");
    assert.ok((await stack.metric("bridge_provisioning_request_duration_seconds_count", { route: "/settings", method: "PUT", status: "400" })) >= 1);

    // And they count what the bridge did: a chat opened from WhatsApp, a message each way, a bot
    // command and a provisioning call move their series by exactly that much.
    const series = {
      toMatrix: ["bridge_messages_bridged_total", { direction: "to_matrix", type: "text" }],
      toNetwork: ["bridge_messages_bridged_total", { direction: "to_network", type: "text" }],
      portals: ["bridge_portals", {}],
      list: ["bridge_bot_commands_total", { command: "list", outcome: "ok" }],
      version: ["bridge_provisioning_request_duration_seconds_count", { route: "/version", method: "GET", status: "200" }],
    } as const;
    const read = async () => Object.fromEntries(await Promise.all(Object.entries(series).map(async ([k, [name, labels]]) => [k, await stack.metric(name, labels)] as const)));
    const before = await read();
    const nora = await stack.user("nora");
    const botRoom = await stack.botRoom(nora, { enable: true });
    const phone = "+4915300000077";
    await stack.sim.createUser(phone, "Olga");
    await stack.sim.sendText(phone, `mimi://${PROVIDER_DOMAIN}/u/${nora.userId}`, "hello Nora");
    const invite = await nora.waitForInvite((i) => i.inviter === stack.ghostId(phone), WAIT);
    await nora.joinRoom(invite.roomId);
    await nora.waitFor((e) => e.room_id === invite.roomId && e.content.body === "hello Nora", WAIT);
    await nora.sendText(invite.roomId, "hello Olga");
    await stack.sim.waitForInbox(phone, (e) => e.text === "hello Olga");
    await nora.sendText(botRoom, "list");
    await nora.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && /Your Third-Party Chats \(1\)/.test(String(e.content.body)), WAIT);
    ok(await call("GET", "/version", { token: nora.accessToken }));
    assert.deepEqual(await read(), {
      toMatrix: before.toMatrix + 1,
      toNetwork: before.toNetwork + 1,
      portals: before.portals + 1,
      list: before.list + 1,
      version: before.version + 1,
    });
  });
});
