/**
 * Every way the bridge refuses, drops or holds back something a Matrix user sent, driven through
 * the core with a fake homeserver and network: each gives the sender both a
 * com.beeper.message_send_status event on their event and (unless it only says "pending") a
 * notice. The list of kinds is the failure model's own (FAILURE_KINDS): a new kind without a
 * scenario here fails the test.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { MESSAGE_STATUS_EVENT_TYPE } from "../../src/convert/message-status";
import { BridgeCore } from "../../src/bridge/core";
import { FAILURE_KINDS, FAILURES, FailureKind } from "../../src/bridge/failure";
import type { MatrixEvent, MatrixPort, SendOptions } from "../../src/bridge/matrix-port";
import { Permissions } from "../../src/bridge/permissions";
import { ChatCapabilities, MediaError, NetworkConnector, NetworkError, OutboundMessage } from "../../src/network/connector";
import { BridgeStore } from "../../src/store";

const USER = "@alice:hs";
const ROOM = "!portal:hs";
const GHOST = "@wa_491:hs";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

interface Posted {
  type: string;
  as: string;
  content: Record<string, unknown>;
  txnId: string;
}

/** One bridge with a fake homeserver (it records what is posted) and a fake network (scenarios change its behaviour). */
function harness(opts: { caps?: Partial<ChatCapabilities>; permitted?: boolean; messageStatusEvents?: boolean } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-failure-"));
  dirs.push(dir);
  const store = BridgeStore.open(path.join(dir, "bridge.db"));
  store.users.getOrCreate(USER, { thirdPartyEnabled: true });
  const portal = store.portals.getOrCreate("dm:+491", USER, "dm", ["+491"]);
  store.portals.setRoom(portal.id, ROOM);
  const posted: Posted[] = [];
  const matrix: Partial<MatrixPort> = {
    botMxid: "@bot:hs",
    serverName: "hs",
    ghostMxid: () => GHOST,
    remoteIdOfGhost: () => null,
    send: async (as: string, _room: string, content: Record<string, unknown>, o: SendOptions) => {
      posted.push({ type: o.type ?? "m.room.message", as, content, txnId: o.txnId });
      return `$posted${posted.length}`;
    },
    notice: async (as: string, _room: string, text: string, txnId?: string, replyTo?: string) => {
      const content = { msgtype: "m.notice", body: text, ...(replyTo ? { "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } } : {}) };
      posted.push({ type: "m.room.message", as, content, txnId: txnId ?? "" });
    },
  };
  const caps: ChatCapabilities = {
    text: { maxLength: 100 },
    media: { file: { mimetypes: ["*/*"], maxSize: 1000 } },
    replies: true,
    edits: { maxAgeMs: 60_000 },
    deletes: { maxAgeMs: 0 },
    reactions: { maxPerUser: 1 },
    readReceipts: false,
    typing: false,
    deliveryReceipts: true,
    ...opts.caps,
  };
  const network: Partial<NetworkConnector> & { send: (m: OutboundMessage) => Promise<{ remoteId: string; timestamp: number }> } = {
    networkName: "WhatsApp",
    getCapabilities: () => caps,
    ensureUser: async () => undefined,
    send: async (m) => ({ remoteId: `r-${m.txnId}`, timestamp: Date.now() }),
    sendMessage: async (_u, _c, m) => network.send(m),
    sendChange: async (_u, _c, change) => ({ remoteId: `r-${change.txnId}`, timestamp: Date.now() }),
  };
  const core = new BridgeCore(store, matrix as MatrixPort, network as NetworkConnector, {
    thirdPartyDefault: true,
    permissions: new Permissions(opts.permitted === false ? {} : { hs: "user" }),
    retryDelayMs: 2,
    maxRetryDelayMs: 5,
    // Off by default in the product; on here, where most tests read the statuses, unless a test passes its own (undefined: the core's default).
    messageStatusEvents: "messageStatusEvents" in opts ? opts.messageStatusEvents : true,
    mediaDownloadAttempts: 1,
  });
  let n = 0;
  const event = (content: Record<string, unknown>, type = "m.room.message", extra: Partial<MatrixEvent> = {}): MatrixEvent => ({
    event_id: `$e${++n}`,
    room_id: ROOM,
    sender: USER,
    type,
    origin_server_ts: Date.now(),
    content,
    ...extra,
  });
  const statusesOf = (eventId: string) =>
    posted.filter((p) => p.type === MESSAGE_STATUS_EVENT_TYPE && (p.content["m.relates_to"] as { event_id: string }).event_id === eventId).map((p) => p.content);
  const noticesOf = (eventId: string) => posted.filter((p) => p.type === "m.room.message" && p.txnId === `fail.${eventId}`).map((p) => String(p.content.body));
  return { store, core, network, portal, posted, event, statusesOf, noticesOf };
}

type Harness = ReturnType<typeof harness>;

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`never happened: ${what}`);
}

/** Sends a first message through, so that later events have something bridged to point at. */
async function bridged(h: Harness): Promise<string> {
  const e = h.event({ msgtype: "m.text", body: "hello" });
  await h.core.onMatrixMessage(e);
  await until("the first message went", () => h.store.messages.byEventId(e.event_id) !== undefined);
  return e.event_id;
}

/** A message the other side sent, as the inbound pipeline records it. */
function received(h: Harness): string {
  h.store.messages.insert({ portalId: h.portal.id, remoteId: "theirs", part: 0, eventId: "$theirs", sender: "+491", timestamp: Date.now() });
  return "$theirs";
}

interface Scenario {
  /** Options of the harness; the scenario's action returns the Matrix event the failure is about. */
  harness?: Parameters<typeof harness>[0];
  act(h: Harness): Promise<string>;
  /** What the notice says (absent: no notice is expected). */
  notice?: RegExp;
  status: "FAIL_PERMANENT" | "PENDING";
  reason: string;
}

const SCENARIOS: Record<FailureKind, Scenario> = {
  unsupported_content: {
    act: async (h) => {
      const e = h.event({ msgtype: "m.location", body: "here", geo_uri: "geo:1,2" });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Your message was not sent: messages of type m.location are not supported yet\.$/,
    status: "FAIL_PERMANENT",
    reason: "com.beeper.unsupported_event",
  },
  too_long: {
    act: async (h) => {
      const e = h.event({ msgtype: "m.text", body: "x".repeat(101) });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Your message was not sent: it is too long for the network \(101 bytes of text, at most 100\)\.$/,
    status: "FAIL_PERMANENT",
    reason: "com.beeper.unsupported_event",
  },
  media_refused: {
    act: async (h) => {
      const e = h.event({ msgtype: "m.file", body: "big.pdf", url: "mxc://hs/big", info: { mimetype: "application/pdf", size: 5000 } });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /big\.pdf.* was not sent: it is .*over this bridge's limit/,
    status: "FAIL_PERMANENT",
    reason: "com.beeper.unsupported_event",
  },
  media_failed: {
    act: async (h) => {
      // The homeserver cannot give the file (a final answer): the file is given up.
      (h.core as unknown as { matrix: MatrixPort }).matrix.downloadMedia = async () => {
        throw new MediaError("not_found", "the homeserver no longer has the file");
      };
      const e = h.event({ msgtype: "m.file", body: "gone.pdf", url: "mxc://hs/gone", info: { mimetype: "application/pdf", size: 10 } });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /gone\.pdf.* was not sent: the homeserver no longer has the file\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.foreign_network_error",
  },
  third_party_chats_off: {
    act: async (h) => {
      h.store.users.setThirdPartyEnabled(USER, false);
      const e = h.event({ msgtype: "m.text", body: "while off" });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Not sent: your Third-Party Chats are off, so nothing you write here reaches WhatsApp, now or later\./,
    status: "FAIL_PERMANENT",
    reason: "m.no_permission",
  },
  not_permitted: {
    harness: { permitted: false },
    act: async (h) => {
      const e = h.event({ msgtype: "m.text", body: "not allowed" });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Not sent: you are no longer allowed to use this bridge\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.no_permission",
  },
  withdrawn_while_queued: {
    act: async (h) => {
      // The network holds the first message; the user turns the chats off while the second waits behind it.
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const send = h.network.send;
      h.network.send = async (m) => {
        await held;
        return send(m);
      };
      await h.core.onMatrixMessage(h.event({ msgtype: "m.text", body: "first" }));
      const second = h.event({ msgtype: "m.text", body: "second" });
      await h.core.onMatrixMessage(second);
      h.store.users.setThirdPartyEnabled(USER, false);
      release();
      return second.event_id;
    },
    notice: /^Your message was not sent: you turned Third-Party Chats off before the network took it\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.no_permission",
  },
  unbridgeable_event: {
    act: async (h) => {
      const e = h.event({ body: "a sticker", url: "mxc://hs/sticker", info: {} }, "m.sticker");
      await h.core.onMatrixEvent(e);
      return e.event_id;
    },
    notice: /^Your sticker was not sent: third-party chats don't support stickers\.$/,
    status: "FAIL_PERMANENT",
    reason: "com.beeper.unsupported_event",
  },
  target_not_bridged: {
    act: async (h) => {
      const e = h.event({ "m.relates_to": { rel_type: "m.annotation", event_id: "$never", key: "👍" } }, "m.reaction");
      await h.core.onMatrixReaction(e);
      return e.event_id;
    },
    notice: /^Your reaction was not sent: the message it reacts to was never bridged\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.event_not_handled",
  },
  not_sender: {
    act: async (h) => {
      const theirs = received(h);
      const e = h.event({ redacts: theirs }, "m.room.redaction");
      await h.core.onMatrixRedaction(e);
      return e.event_id;
    },
    notice: /^Your deletion was not sent: WhatsApp lets only the sender delete a message for everyone, so it was deleted here only\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.no_permission",
  },
  feature_unsupported: {
    harness: { caps: { edits: undefined } },
    act: async (h) => {
      const mine = await bridged(h);
      const e = h.event({ msgtype: "m.text", body: "* fixed", "m.new_content": { msgtype: "m.text", body: "fixed" }, "m.relates_to": { rel_type: "m.replace", event_id: mine } });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Your edit was not sent: WhatsApp does not support editing messages here\.$/,
    status: "FAIL_PERMANENT",
    reason: "com.beeper.unsupported_event",
  },
  too_old: {
    act: async (h) => {
      const mine = await bridged(h);
      const later = Date.now() + 61_000;
      const e = h.event(
        { msgtype: "m.text", body: "* late", "m.new_content": { msgtype: "m.text", body: "late" }, "m.relates_to": { rel_type: "m.replace", event_id: mine } },
        "m.room.message",
        {
          origin_server_ts: later,
        },
      );
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Your edit was not sent: WhatsApp allows editing a message only within 1 minute of sending it\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.event_too_old",
  },
  network_refused: {
    act: async (h) => {
      h.network.send = async () => {
        throw new NetworkError("unknown_user", "this WhatsApp account does not exist (any more)", false);
      };
      const e = h.event({ msgtype: "m.text", body: "to nobody" });
      await h.core.onMatrixMessage(e);
      return e.event_id;
    },
    notice: /^Your message was not delivered: this WhatsApp account does not exist \(any more\)\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.foreign_network_error",
  },
  not_handled: {
    act: async (h) => {
      // What durable-appservice.ts calls after the last retry of an event the bridge kept failing on.
      const e = h.event({ msgtype: "m.text", body: "unlucky" });
      await h.core.onMatrixEventFailed(e);
      return e.event_id;
    },
    notice: /^Your message may not have been bridged: the bridge could not handle it after several tries\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.event_not_handled",
  },
  undecryptable: {
    act: async (h) => {
      // What the appservice calls when an m.room.encrypted event of the portal's user does not decrypt.
      const e = h.event({ algorithm: "m.megolm.v1.aes-sha2", ciphertext: "x", session_id: "s" }, "m.room.encrypted");
      await h.core.onMatrixEventRefused(e, FAILURES.undecryptable("MissingRoomKey"));
      return e.event_id;
    },
    notice: /^Your message was not sent: the bridge could not decrypt it \(MissingRoomKey\)\. Please send it again\.$/,
    status: "FAIL_PERMANENT",
    reason: "m.event_not_handled",
  },
  unencrypted_room: {
    act: async (h) => {
      // What the appservice calls for a message in an unencrypted portal when encryption.require is on.
      const e = h.event({ msgtype: "m.text", body: "in the clear" });
      await h.core.onMatrixEventRefused(e, FAILURES.unencrypted_room());
      return e.event_id;
    },
    notice: /^Your message was not sent: this bridge only bridges encrypted rooms\. Turn on encryption/,
    status: "FAIL_PERMANENT",
    reason: "m.no_permission",
  },
  waiting_for_network: {
    act: async (h) => {
      h.network.send = () => new Promise(() => undefined);
      const e = h.event({ msgtype: "m.text", body: "into the void" });
      await h.core.onMatrixMessage(e);
      h.core.onConnectionState({ state: "disconnected", reason: "gateway gone" });
      return e.event_id;
    },
    status: "PENDING",
    reason: "m.bridge_unavailable",
  },
};

describe("every refusal reaches the sender as a status event and a notice", () => {
  it("has a scenario for every kind of failure the model declares", () => {
    assert.deepEqual(Object.keys(SCENARIOS).sort(), [...FAILURE_KINDS].sort());
  });

  for (const kind of FAILURE_KINDS) {
    const scenario = SCENARIOS[kind];
    it(`${kind}: ${scenario.status} status (${scenario.reason})${scenario.notice ? " and a notice" : ", no notice"}`, async (t) => {
      const h = harness(scenario.harness);
      t.after(() => h.core.stop());
      const eventId = await scenario.act(h);
      await until(`a status on ${eventId}`, () => h.statusesOf(eventId).length > 0);
      if (scenario.notice) await until(`a notice about ${eventId}`, () => h.noticesOf(eventId).length > 0);
      const [status, ...more] = h.statusesOf(eventId);
      assert.equal(more.length, 0, "one status event");
      assert.equal(status!.status, scenario.status);
      assert.equal(status!.reason, scenario.reason);
      assert.equal(typeof status!.message, "string");
      const notices = h.noticesOf(eventId);
      if (scenario.notice) {
        assert.equal(notices.length, 1, "one notice");
        assert.match(notices[0]!, scenario.notice);
      } else {
        assert.deepEqual(notices, [], "a pending state gets no notice");
      }
    });
  }

  it("with bridge.message_status_events off, a refusal still gets its notice and no status event", async (t) => {
    const h = harness({ messageStatusEvents: false });
    t.after(() => h.core.stop());
    const eventId = await SCENARIOS.too_long.act(h);
    await until("the notice", () => h.noticesOf(eventId).length > 0);
    assert.deepEqual(h.statusesOf(eventId), []);
  });

  it("by default (bridge.message_status_events not set) there are no status events, and a refusal still gets its notice", async (t) => {
    const h = harness({ messageStatusEvents: undefined });
    t.after(() => h.core.stop());
    const eventId = await SCENARIOS.too_long.act(h);
    await until("the notice", () => h.noticesOf(eventId).length > 0);
    assert.equal(h.noticesOf(eventId).length, 1);
    assert.deepEqual(h.statusesOf(eventId), []);
    // A message the network takes gets no "sent" or "delivered" status either.
    const ok = h.event({ msgtype: "m.text", body: "fine" });
    await h.core.onMatrixMessage(ok);
    await until("the message was sent", () => h.store.messages.byEventId(ok.event_id) !== undefined);
    assert.deepEqual(h.statusesOf(ok.event_id), []);
  });
});

describe("a gateway outage seen from Matrix", () => {
  it("a message sent while the gateway is away shows one pending state however often it is retried, then delivered", async (t) => {
    const h = harness();
    // Stopped even when an assertion fails, or its retries would keep the test process alive.
    t.after(() => h.core.stop());
    let up = false;
    let tries = 0;
    h.network.send = async (m) => {
      tries += 1;
      if (!up) throw new NetworkError("closed", "the gateway is not reachable", true);
      return { remoteId: `r-${m.txnId}`, timestamp: Date.now() };
    };
    h.core.onConnectionState({ state: "connected" });
    h.core.onConnectionState({ state: "disconnected", reason: "gateway gone" });
    const e = h.event({ msgtype: "m.text", body: "during the outage" });
    await h.core.onMatrixMessage(e);
    await until("several retries", () => tries >= 5);
    assert.deepEqual(
      h.statusesOf(e.event_id).map((s) => s.status),
      ["PENDING"],
      "one pending state, not one per retry",
    );
    h.core.onConnectionState({ state: "disconnected", reason: "still gone" });
    up = true;
    h.core.onConnectionState({ state: "connected" });
    await until("sent", () => h.statusesOf(e.event_id).length === 2);
    await h.core.onDelivered(USER, { chat: { id: "dm:+491", kind: "dm", participants: ["+491"] }, txnId: e.event_id, recipient: "+491", timestamp: Date.now() });
    await until("delivered", () => h.statusesOf(e.event_id).some((s) => Array.isArray(s.delivered_to_users) && (s.delivered_to_users as string[]).length > 0));
    const statuses = h.statusesOf(e.event_id);
    assert.deepEqual(
      statuses.map((s) => s.status),
      ["PENDING", "SUCCESS", "SUCCESS"],
      "pending once, then sent, then delivered",
    );
    assert.deepEqual(statuses[2]!.delivered_to_users, [GHOST]);
    assert.deepEqual(h.noticesOf(e.event_id), [], "no failure notice");
  });
});
