/**
 * The pieces that make a crash lose and duplicate nothing, each alone: the appservice
 * transaction journal, the atomic decrypt-and-keep of the Signal layer, and the Matrix send
 * that looks for an interrupted earlier attempt before repeating it.
 */
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { Bridge } from "matrix-appservice-bridge";
import { BridgeConfig, validateConfig } from "../../src/config";
import { DurableAppService } from "../../src/matrix/durable-appservice";
import { AppserviceMatrixPort } from "../../src/matrix/matrix-side";
import { EncryptedRecordStore, SignalLayerError, SignalParty, type PreKeyBundleData } from "../../src/protocol/signal.js";
import { BridgeStore } from "../../src/store";
import { fakeMatrixPort, fakeNetwork } from "../support/fakes";
import { freePort } from "../support/homeserver";

const HS_TOKEN = "hs-token-for-unit-tests-0123456789";
const dirs: string[] = [];
const tempStore = (file?: string) => {
  if (!file) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-once-"));
    dirs.push(dir);
    file = path.join(dir, "bridge.db");
  }
  return { file, store: BridgeStore.open(file) };
};
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const event = (n: number, extra: Record<string, unknown> = {}) => ({
  event_id: `$event${n}`,
  room_id: "!room:hs",
  sender: "@alice:hs",
  type: "m.room.message",
  origin_server_ts: 1000 + n,
  content: { msgtype: "m.text", body: `message ${n}` },
  ...extra,
});

/** An appservice on a free port whose "bridge" records what it was handed, with a chosen outcome. */
async function startAppservice(
  store: BridgeStore,
  handle: (e: Record<string, unknown>) => Promise<void> = async () => undefined,
  retry?: { initialMs: number; maxMs: number; maxAttempts: number },
  isOwnUser?: (mxid: string) => boolean,
) {
  const appservice = new DurableAppService({ homeserverToken: HS_TOKEN, journal: store.journal, maxBodyBytes: 64 * 1024, retry, isOwnUser });
  const handed: string[] = [];
  appservice.on("event", async (e: Record<string, unknown>) => {
    handed.push(String(e.event_id));
    await handle(e);
  });
  const port = await freePort();
  await appservice.listen(port, "127.0.0.1", 10);
  const url = `http://127.0.0.1:${port}`;
  const put = (txnId: string, body: unknown, token: string | null = HS_TOKEN) =>
    fetch(`${url}/_matrix/app/v1/transactions/${txnId}`, {
      method: "PUT",
      headers: { "content-type": "application/json", ...(token === null ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body),
    });
  return { appservice, handed, url, put };
}

const until = async (cond: () => boolean, what: string) => {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe("the appservice transaction journal", () => {
  it("answers 200 only with the events stored, and replays after a crash what was not handled", async () => {
    const { file, store } = tempStore();
    // The first process "dies" while handling: its handler never finishes.
    const first = await startAppservice(store, () => new Promise(() => undefined));
    first.appservice.startDispatching();
    const res = await first.put("1", { events: [event(1), event(2)] });
    assert.equal(res.status, 200);
    assert.equal(store.journal.pendingCount(), 2, "both events were journaled before the answer");
    await until(() => first.handed.length === 2, "the events to be handed over");
    await first.appservice.close();
    first.appservice.stopDispatching();
    store.close();

    const { store: reopened } = tempStore(file);
    const second = await startAppservice(reopened);
    const early = await second.put("1", { events: [event(3)] });
    assert.equal(early.status, 200);
    assert.deepEqual(second.handed, [], "nothing is handed over before the bridge is ready");
    second.appservice.startDispatching();
    await until(() => second.handed.length === 3, "the replay");
    assert.deepEqual(second.handed, ["$event1", "$event2", "$event3"], "replayed in the order received, then the new one");
    await until(() => reopened.journal.pendingCount() === 0, "the entries to be marked handled");
    await second.appservice.close();
    reopened.close();
  });

  it("hands an event over once although the homeserver sends it again under a new transaction id", async () => {
    const { store } = tempStore();
    const as = await startAppservice(store);
    as.appservice.startDispatching();
    for (const txn of ["5", "5", "1"]) assert.equal((await as.put(txn, { events: [event(1), event(2)] })).status, 200);
    await until(() => store.journal.pendingCount() === 0, "handling");
    assert.deepEqual(as.handed, ["$event1", "$event2"]);
    await as.appservice.close();
  });

  it("answers the echo of the bridge's own messages without journaling it, but keeps its own users' state events", async () => {
    const { store } = tempStore();
    const as = await startAppservice(
      store,
      async () => undefined,
      undefined,
      (mxid) => mxid === "@bot:hs" || mxid.startsWith("@wa_"),
    );
    as.appservice.startDispatching();
    const events = [
      event(1, { sender: "@wa_491:hs" }),
      event(2),
      event(3, { sender: "@bot:hs", type: "m.reaction", content: { "m.relates_to": { rel_type: "m.annotation", event_id: "$event2", key: "👍" } } }),
      event(4, { sender: "@wa_491:hs", type: "m.room.member", state_key: "@alice:hs", content: { membership: "leave" } }),
    ];
    assert.equal((await as.put("1", { events })).status, 200);
    await until(() => as.handed.length === 2, "handling");
    assert.deepEqual(as.handed, ["$event2", "$event4"], "the ghost's and the bot's messages are echoes; the ghost's kick is not");
    assert.equal(store.journal.pendingCount(), 0);
    await as.appservice.close();
  });

  it("retries an event whose handling failed, then gives up with an error in the log", async () => {
    const { store } = tempStore();
    let failures = 0;
    const as = await startAppservice(
      store,
      async (e) => {
        if (e.event_id === "$event1" && failures++ < 1) throw new Error("homeserver hiccup");
        if (e.event_id === "$event2") throw new Error("always fails");
      },
      { initialMs: 10, maxMs: 10, maxAttempts: 3 },
    );
    as.appservice.startDispatching();
    await as.put("1", { events: [event(1), event(2)] });
    await until(() => store.journal.pendingCount() === 0, "both to be done or given up");
    assert.deepEqual(as.handed.filter((id) => id === "$event1").length, 2, "the failed event was handled again");
    assert.deepEqual(as.handed.filter((id) => id === "$event2").length, 3, "a failing event is tried three times");
    await as.appservice.close();
  });

  it("refuses requests without the homeserver token on every route, and malformed transactions", async () => {
    const { store } = tempStore();
    const as = await startAppservice(store);
    as.appservice.startDispatching();
    assert.equal((await as.put("1", { events: [event(1)] }, null)).status, 401);
    assert.equal((await as.put("1", { events: [event(1)] }, "wrong")).status, 403);
    assert.equal((await as.put("1", { events: [event(1)] }, HS_TOKEN + "x")).status, 403);
    for (const route of ["/_matrix/app/v1/users/@x:hs", "/_matrix/app/v1/rooms/%23x:hs"]) {
      assert.equal((await fetch(as.url + route)).status, 401, route);
      assert.equal((await fetch(as.url + route, { headers: { authorization: "Bearer nope" } })).status, 403, route);
      assert.equal((await fetch(`${as.url}${route}?access_token=nope`)).status, 403, route);
    }
    assert.equal((await as.put("2", { events: "not a list" })).status, 400);
    assert.equal((await as.put("3", [1, 2])).status, 400);
    const mixed = await as.put("4", { events: [event(7), { type: "m.room.message" }, event(8, { content: "text" }), 42] });
    assert.equal(mixed.status, 200, "a transaction with malformed events is still answered, or the homeserver would resend it forever");
    await until(() => as.handed.includes("$event7"), "the good event");
    assert.deepEqual(as.handed, ["$event7"]);
    assert.equal(store.journal.pendingCount(), 0);
    await as.appservice.close();
  });

  it("compares the token in constant time over digests (any length, no early exit)", (t) => {
    const { store } = tempStore();
    const appservice = new DurableAppService({ homeserverToken: HS_TOKEN, journal: store.journal, maxBodyBytes: 1024 });
    const req = (authorization?: string, access_token?: string) => ({ headers: authorization ? { authorization } : {}, query: access_token ? { access_token } : {} }) as never;
    // Every check that has a token must go through crypto.timingSafeEqual, on two SHA-256 digests
    // (equal lengths whatever was sent), and its answer must be that comparison's.
    const compare = t.mock.method(crypto, "timingSafeEqual");
    const cases: Array<[string, ReturnType<typeof req>, boolean]> = [
      ["the right token in the header", req(`Bearer ${HS_TOKEN}`), true],
      ["the right token in the query", req(undefined, HS_TOKEN), true],
      ["one character short", req(`Bearer ${HS_TOKEN.slice(0, -1)}`), false],
      ["the last character changed", req(`Bearer ${HS_TOKEN.slice(0, -1)}X`), false],
      ["the first character changed", req(`Bearer X${HS_TOKEN.slice(1)}`), false],
      ["much longer", req(`Bearer ${HS_TOKEN.repeat(40)}`), false],
      ["empty", req("Bearer "), false],
    ];
    for (const [what, request, expected] of cases) {
      const calls = compare.mock.callCount();
      assert.equal(appservice.hasHomeserverToken(request), expected, what);
      assert.equal(compare.mock.callCount(), calls + 1, `${what}: compared once with timingSafeEqual`);
      const call = compare.mock.calls.at(-1)!;
      const [a, b] = call.arguments as [Buffer, Buffer];
      assert.deepEqual([a.length, b.length], [32, 32], `${what}: two SHA-256 digests, whatever the token's length`);
      assert.equal(call.result, expected, `${what}: the answer is the constant-time comparison's`);
    }
    // No token at all, or another scheme: nothing to compare.
    const calls = compare.mock.callCount();
    assert.equal(appservice.hasHomeserverToken(req(`Basic ${HS_TOKEN}`)), false);
    assert.equal(appservice.hasHomeserverToken(req()), false);
    assert.equal(compare.mock.callCount(), calls);
  });

  // Not "without reading it": body-parser (inside matrix-appservice) drains a refused body before
  // answering. What holds is that the size decides before any parsing or journaling.
  it("refuses a body over the limit with 413 before parsing it: even an unparsable body gets 413, and nothing is journaled", async () => {
    const { store } = tempStore();
    const as = await startAppservice(store);
    const put = (body: string) =>
      fetch(`${as.url}/_matrix/app/v1/transactions/9`, { method: "PUT", headers: { "content-type": "application/json", authorization: `Bearer ${HS_TOKEN}` }, body });
    const small = await put("x".repeat(1024));
    assert.equal(small.status, 400, "under the limit, the same garbage is parsed and refused as not JSON");
    assert.equal(((await small.json()) as { errcode: string }).errcode, "M_NOT_JSON");
    const big = await put("x".repeat(100 * 1024));
    assert.equal(big.status, 413, "over the limit (64 KiB), it is refused for its size before anyone parses it");
    assert.equal(((await big.json()) as { errcode: string }).errcode, "M_TOO_LARGE");
    const bigValid = await put(JSON.stringify({ events: [event(1, { content: { msgtype: "m.text", body: "x".repeat(100 * 1024) } })] }));
    assert.equal(bigValid.status, 413);
    assert.equal(store.journal.pendingCount(), 0);
    assert.equal(as.handed.length, 0);
    await as.appservice.close();
  });
});

describe("decrypting and keeping a message is one step", () => {
  const ALICE = "mimi://matrix.example.org/u/@alice:example.org";
  const BOB = "mimi://whatsapp.example/u/+4915123456789";

  it("a crash before the plaintext is kept leaves the session as it was, so the message decrypts again", async () => {
    const key = new Uint8Array(32).fill(7);
    const { store } = tempStore();
    const bobRecords = new EncryptedRecordStore(store.signalRecords(BOB), key);
    const alice = SignalParty.open(ALICE, new EncryptedRecordStore(tempStore().store.signalRecords(ALICE), key));
    const bob = SignalParty.open(BOB, bobRecords);
    const keys = bob.prepareKeys({ oneTimeCount: 2 });
    const bundle: PreKeyBundleData = { ...keys, deviceId: 1, oneTimePreKey: keys.oneTimePreKeys[0] };
    const first = await alice.encrypt(BOB, new Uint8Array(Buffer.from("first, a PreKey message")), async () => bundle);
    const second = await alice.encrypt(BOB, new Uint8Array(Buffer.from("second")), async () => bundle);

    for (const message of [first, second]) {
      // The process "dies" while keeping the plaintext: the store transaction is rolled back.
      await assert.rejects(
        bob.decrypt(ALICE, message, {
          keep: () => {
            throw new Error("killed");
          },
        }),
        /killed/,
      );
      let kept: Uint8Array | undefined;
      const plaintext = await bob.decrypt(ALICE, message, { keep: (p) => (kept = p) });
      assert.deepEqual(kept, plaintext, "kept in the same step");
      // Once kept, the message is spent: a third attempt is a duplicate.
      await assert.rejects(bob.decrypt(ALICE, message), (err: unknown) => err instanceof SignalLayerError && err.code === "duplicate_message");
    }
  });
});

describe("a Matrix send interrupted by a crash is not repeated", () => {
  const config = (): BridgeConfig =>
    validateConfig({
      homeserver: { url: "http://127.0.0.1:1", domain: "hs" },
      appservice: { port: 1 },
      database: { path: path.join(os.tmpdir(), "unused.db") },
      network: {
        gateway_url: "ws://127.0.0.1:1/v1",
        provider_domain: "matrix.example",
        provider_secret: "secret-for-tests",
        home_domain: "whatsapp.example",
        store_key: "store-key-for-unit-tests",
        media: {},
      },
      bridge: {},
    });

  /** A homeserver that stores events per room and forgets transaction ids (as Synapse does for appservices after a restart). */
  function fakeHomeserver() {
    const rooms = new Map<string, Array<{ event_id: string; sender: string; type: string; origin_server_ts: number; content: unknown }>>();
    let puts = 0;
    let crashAfterStoring = false;
    const doRequest = async (method: string, urlPath: string, qs: Record<string, unknown>, body: Record<string, unknown>, sender: string) => {
      const send = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/send\/([^/]+)\/([^/]+)$/.exec(urlPath);
      if (method === "PUT" && send) {
        puts++;
        const roomId = decodeURIComponent(send[1]);
        const events = rooms.get(roomId) ?? [];
        const e = { event_id: `$${events.length + 1}`, sender, type: decodeURIComponent(send[2]), origin_server_ts: Number(qs.ts ?? Date.now()), content: body };
        events.push(e);
        rooms.set(roomId, events);
        if (crashAfterStoring) throw new Error("connection reset");
        return { event_id: e.event_id };
      }
      const messages = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/messages$/.exec(urlPath);
      if (method === "GET" && messages) {
        const filter = JSON.parse(String(qs.filter)) as { senders: string[]; types: string[] };
        const events = (rooms.get(decodeURIComponent(messages[1])) ?? []).filter((e) => filter.senders.includes(e.sender) && filter.types.includes(e.type));
        return { chunk: [...events].reverse() };
      }
      throw new Error(`unexpected ${method} ${urlPath}`);
    };
    const bridge = {
      // An appservice's user_id query parameter asserts who sends (identity assertion), whichever client asks.
      getIntent: (mxid: string) => ({
        matrixClient: {
          doRequest: (m: string, p: string, q: Record<string, unknown>, b: Record<string, unknown>) => doRequest(m, p, q ?? {}, b, q?.user_id ? String(q.user_id) : mxid),
        },
      }),
    } as unknown as Bridge;
    return {
      bridge,
      rooms,
      get puts() {
        return puts;
      },
      crashNextPut(on: boolean) {
        crashAfterStoring = on;
      },
    };
  }

  it("finds the event the interrupted attempt created instead of sending a second one", async () => {
    const { store } = tempStore();
    const hs = fakeHomeserver();
    const port = new AppserviceMatrixPort(hs.bridge, config(), store, "as-token-for-tests");
    const ghost = "@whatsapp_491:hs";
    const content = { msgtype: "m.text", body: "hello" };
    hs.crashNextPut(true);
    await assert.rejects(port.send(ghost, "!r:hs", content, { txnId: "in.1.abc", ts: 5000 }), /connection reset/);
    hs.crashNextPut(false);
    // An unrelated message with the same text but another timestamp must not be taken for it.
    await port.send(ghost, "!r:hs", content, { txnId: "in.1.other", ts: 4000 });
    const eventId = await port.send(ghost, "!r:hs", content, { txnId: "in.1.abc", ts: 5000 });
    assert.equal(eventId, "$1");
    assert.equal(hs.rooms.get("!r:hs")!.length, 2, "no second copy in the room");
    assert.equal(hs.puts, 2);
    // Later retries (the core had not recorded the answer) get the stored event id without any request.
    assert.equal(await port.send(ghost, "!r:hs", content, { txnId: "in.1.abc", ts: 5000 }), "$1");
    assert.equal(hs.puts, 2);
  });

  it("does not take an equal message sent just before (same text, same timestamp) for the interrupted one", async () => {
    const { store } = tempStore();
    const hs = fakeHomeserver();
    const port = new AppserviceMatrixPort(hs.bridge, config(), store, "as-token-for-tests");
    const ghost = "@whatsapp_491:hs";
    const content = { msgtype: "m.text", body: "ok" };
    assert.equal(await port.send(ghost, "!r:hs", content, { txnId: "in.1.first", ts: 7000 }), "$1");
    // The second "ok" of the same millisecond: the process dies before its request goes out.
    store.matrixSends.begin("!r:hs", "in.1.second", ghost);
    assert.equal(await port.send(ghost, "!r:hs", content, { txnId: "in.1.second", ts: 7000 }), "$2", "sent, not mistaken for the first");
    assert.equal(hs.rooms.get("!r:hs")!.length, 2);
  });

  it("sends again when the interrupted attempt never reached the room", async () => {
    const { store } = tempStore();
    const hs = fakeHomeserver();
    const port = new AppserviceMatrixPort(hs.bridge, config(), store, "as-token-for-tests");
    store.matrixSends.begin("!r:hs", "in.1.lost", "@whatsapp_491:hs");
    const eventId = await port.send("@whatsapp_491:hs", "!r:hs", { msgtype: "m.text", body: "lost" }, { txnId: "in.1.lost", ts: 6000 });
    assert.equal(eventId, "$1");
    assert.equal(hs.rooms.get("!r:hs")!.length, 1);
  });
});

describe("a portal room created just before a crash is not created twice", () => {
  it("the next run finds the room no portal maps and makes it the portal", async () => {
    const { BridgeCore } = await import("../../src/bridge/core.js");
    const { Permissions } = await import("../../src/bridge/permissions.js");
    const opts = { thirdPartyDefault: true, permissions: new Permissions({ hs: "user" }) };
    const { store } = tempStore();
    const receiver = "@alice:hs";
    const ghost = "@whatsapp_491:hs";
    const rooms = new Map<string, string[]>();
    let created = 0;
    let crashAfterCreate = true;
    const matrix = fakeMatrixPort({
      ghostMxid: () => ghost,
      remoteIdOfGhost: () => "+491",
      ensureGhost: async () => ghost,
      createDm: async (by: string, invitee: string) => {
        const roomId = `!room${++created}:hs`;
        rooms.set(roomId, [by, invitee]);
        if (crashAfterCreate) throw new Error("killed right after the homeserver created the room");
        return roomId;
      },
      joinedRooms: async (who: string) => [...rooms].filter(([, m]) => m.includes(who)).map(([id]) => id),
      members: async (_who: string, roomId: string) => rooms.get(roomId) ?? [],
    });
    const network = fakeNetwork({
      ensureUser: async () => undefined,
      getProfile: async () => ({ userId: "+491", displayName: "Ana", avatar: null }),
    });
    const chat = { id: "mimi://whatsapp.example/r/dm", kind: "dm" as const, participants: ["+491"] };

    await assert.rejects(new BridgeCore(store, matrix, network, opts).ensurePortal(receiver, chat), /killed/);
    crashAfterCreate = false;
    // An unrelated room of the ghost with someone else is not taken.
    rooms.set("!other:hs", [ghost, "@bob:hs"]);
    const portal = await new BridgeCore(store, matrix, network, opts).ensurePortal(receiver, chat);
    assert.equal(portal.roomId, "!room1:hs");
    assert.equal(created, 1, "no second room");
    assert.equal(store.portals.byRoom("!room1:hs")?.id, portal.id);
  });
});
