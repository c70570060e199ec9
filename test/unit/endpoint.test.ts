/**
 * SecureEndpoint over the real gateway process: one endpoint as the home provider (WhatsApp),
 * one as a third-party provider, exchanging encrypted payloads through the gateway.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { encode as cborEncode } from "cbor2";
import { InteropClient } from "../../src/protocol/client.js";
import { EndpointError, SecureEndpoint, type DeliveredEvent, type PayloadEvent, type UndecryptableEvent } from "../../src/protocol/endpoint.js";
import { dmRoomUri, userUri, type Frame } from "../../src/protocol/frames.js";
import { MIMI_CONTENT_TYPE_MARKDOWN, computeMessageId, decodeMimi, encodeMimi, newTextMessage } from "../../src/protocol/mimi.js";
import { encodePayload } from "../../src/protocol/payload.js";
import { MemoryRecordStore, SignalParty, type SignalRecordStore } from "../../src/protocol/signal.js";
import { GatewayProcess, until } from "../support/gateway-process.js";

const HOME = "whatsapp.example";
const THIRD = "matrix.test";
const SECRETS = { [HOME]: "home-secret", [THIRD]: "third-secret" };
const wa = userUri(HOME, "+4915123456789");
const alice = userUri(THIRD, "@alice:matrix.test");
const carol = userUri(THIRD, "@carol:matrix.test");

const utf8 = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));
const newId = () => new Uint8Array(randomBytes(16));

/** Everything one endpoint reports, for assertions. */
class Side {
  readonly received: PayloadEvent[] = [];
  readonly undecryptable: UndecryptableEvent[] = [];
  readonly delivered: DeliveredEvent[] = [];
  readonly identityChanges: Array<[string, string]> = [];
  readonly stores = new Map<string, MemoryRecordStore>();
  /** Texts whose first onPayload call fails, to exercise redelivery. */
  readonly failOnce = new Set<string>();
  readonly client: InteropClient;
  readonly endpoint: SecureEndpoint;

  constructor(gw: GatewayProcess, provider: keyof typeof SECRETS, keys: { target?: number } = {}) {
    this.client = new InteropClient({
      url: gw.url,
      provider,
      secret: SECRETS[provider],
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
      handlerRetryDelayMs: 50,
    });
    this.endpoint = new SecureEndpoint({
      client: this.client,
      openRecords: (uri) => this.storeOf(uri),
      onPayload: async (ev) => {
        const text = ev.payload.kind === "content" ? textOf(ev.payload.mimi) : undefined;
        if (text !== undefined && this.failOnce.delete(text)) throw new Error("handler failing once on purpose");
        this.received.push(ev);
      },
      onUndecryptable: (ev) => {
        this.undecryptable.push(ev);
      },
      onDelivered: async (ev) => {
        this.delivered.push(ev);
      },
      onIdentityChange: (local, peer) => this.identityChanges.push([local, peer]),
      ...(keys.target !== undefined ? { oneTimeKeyTarget: keys.target, oneTimeKeyLow: 2 } : {}),
    });
  }

  storeOf(uri: string): SignalRecordStore {
    let store = this.stores.get(uri);
    if (!store) {
      store = new MemoryRecordStore();
      this.stores.set(uri, store);
    }
    return store;
  }

  texts(from?: string): string[] {
    return this.received.filter((ev) => ev.payload.kind === "content" && (from === undefined || ev.from === from)).map((ev) => textOf((ev.payload as { mimi: Uint8Array }).mimi));
  }

  async waitForText(text: string): Promise<PayloadEvent> {
    await until(`"${text}" to arrive`, () => this.texts().includes(text));
    return this.received.find((ev) => ev.payload.kind === "content" && textOf(ev.payload.mimi) === text)!;
  }
}

function textOf(mimi: Uint8Array): string {
  const body = decodeMimi(mimi).body;
  assert.equal(body.cardinality, "single");
  assert.equal(body.contentType, MIMI_CONTENT_TYPE_MARKDOWN);
  return Buffer.from(body.content).toString("utf8");
}

function textPayload(sender: string, room: string, markdown: string) {
  return { kind: "content" as const, mimi: encodeMimi(newTextMessage({ sender, room, markdown })) };
}

describe("SecureEndpoint over the gateway", () => {
  let dir: string;
  let gw: GatewayProcess;
  let home: Side;
  let third: Side;
  let room: string;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "endpoint-test-"));
    gw = new GatewayProcess({
      dbPath: path.join(dir, "gateway.db"),
      recordPath: path.join(dir, "frames.log"),
      homeProvider: HOME,
      providers: SECRETS,
    });
    await gw.start(0);
    home = new Side(gw, HOME, { target: 12 });
    third = new Side(gw, THIRD);
    await Promise.all([home.client.connect(), third.client.connect()]);
    await home.client.upsertAccount({ user: wa, displayName: "Ana" });
    // WhatsApp accounts start with Third-Party Chats off, as on a real phone.
    await home.client.setSettings(wa, { thirdPartyChats: true });
    await home.endpoint.addUser(wa, { home: true });
    await third.endpoint.addUser(alice, { displayName: "Alice" });
    room = dmRoomUri(alice, wa, home.client.welcome!.roomDomain);
  });

  after(async () => {
    await home?.client.close();
    await third?.client.close();
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("carries content both ways and the gateway never sees the plaintext", async () => {
    const first = textPayload(alice, room, "plaintext-marker-from-alice");
    const sent = await third.endpoint.send(alice, wa, room, first, newId());
    assert.equal(typeof sent.ts, "number");
    assert.equal(sent.duplicate, false);
    const got = await home.waitForText("plaintext-marker-from-alice");
    assert.equal(got.from, alice);
    assert.equal(got.to, wa);
    assert.equal(got.room, room);

    await home.endpoint.send(wa, alice, room, textPayload(wa, room, "plaintext-marker-from-wa"), newId());
    const reply = await third.waitForText("plaintext-marker-from-wa");
    assert.equal(reply.from, wa);

    // The recorder saw the traffic (a PreKey send from alice, a Whisper send back) but no plaintext.
    const sends = gw.recordedFrames().filter((r) => r.direction === "in" && r.frame.t === "send") as Array<{ frame: Extract<Frame, { t: "send" }> }>;
    assert.ok(
      sends.some((s) => s.frame.from === alice && s.frame.payload.type === 3),
      "alice's first message is a PreKey message",
    );
    assert.ok(
      sends.some((s) => s.frame.from === wa && s.frame.payload.type === 2),
      "the answer runs on the established session",
    );
    for (const marker of ["plaintext-marker-from-alice", "plaintext-marker-from-wa"]) {
      assert.equal(gw.recordingContains(utf8(marker)), false, `${marker} leaked to the gateway`);
    }
    assert.equal(gw.recordingContains(encodePayload(first)), false);
    assert.equal(gw.recordingContains(first.mimi), false);
  });

  it("reports delivery receipts to the sender", async () => {
    const id = newId();
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "receipt please"), id);
    await until("a delivered receipt", () => third.delivered.some((d) => Buffer.compare(d.id, id) === 0));
    const receipt = third.delivered.find((d) => Buffer.compare(d.id, id) === 0)!;
    assert.equal(receipt.user, alice);
    assert.equal(receipt.to, wa);
  });

  it("delivers a retried send (same id) once", async () => {
    const id = newId();
    const payload = textPayload(alice, room, "only once");
    assert.equal((await third.endpoint.send(alice, wa, room, payload, id)).duplicate, false);
    // A retry after, say, a restart encrypts again; the gateway recognises the id.
    const again = await third.endpoint.send(alice, wa, room, payload, id);
    assert.equal(again.duplicate, true);
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "after the retry"), newId());
    await home.waitForText("after the retry");
    assert.equal(home.texts().filter((t) => t === "only once").length, 1);
  });

  it("keeps order and hands the same payload again when the handler fails", async () => {
    home.failOnce.add("handler fails on this one");
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "handler fails on this one"), newId());
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "and this one follows"), newId());
    await home.waitForText("and this one follows");
    const texts = home.texts(alice);
    assert.equal(texts.filter((t) => t === "handler fails on this one").length, 1);
    assert.ok(texts.indexOf("handler fails on this one") < texts.indexOf("and this one follows"));
    assert.equal(home.undecryptable.length, 0, "the redelivered frame was not taken for a replay");
  });

  it("sends status, read and disappearing payloads", async () => {
    const status = { kind: "status" as const, mimi: encodeMimi(newTextMessage({ sender: wa, room, markdown: "at the beach" })) };
    await home.endpoint.send(wa, alice, room, status, newId());
    const ids = [computeMessageId(alice, room, textPayload(alice, room, "x").mimi)];
    await home.endpoint.send(wa, alice, room, { kind: "read", ids }, newId());
    await home.endpoint.send(wa, alice, room, { kind: "disappearing", seconds: 604800 }, newId());
    await until("three payloads", () => ["status", "read", "disappearing"].every((k) => third.received.some((e) => e.payload.kind === k)));
    const read = third.received.find((e) => e.payload.kind === "read")!.payload;
    assert.deepEqual(read, { kind: "read", ids });
    const timer = third.received.find((e) => e.payload.kind === "disappearing")!.payload;
    assert.deepEqual(timer, { kind: "disappearing", seconds: 604800 });
  });

  it("passes the gateway's refusal as a typed error: third_party_disabled", async () => {
    await home.client.setSettings(wa, { thirdPartyChats: false });
    try {
      await assert.rejects(third.endpoint.send(alice, wa, room, textPayload(alice, room, "refused"), newId()), (err: unknown) => {
        assert.ok(err instanceof EndpointError, String(err));
        assert.equal(err.code, "third_party_disabled");
        assert.equal(err.retryable, false);
        return true;
      });
      const nobody = userUri(HOME, "+4915100000000");
      await assert.rejects(
        third.endpoint.send(alice, nobody, dmRoomUri(alice, nobody, HOME), textPayload(alice, dmRoomUri(alice, nobody, HOME), "x"), newId()),
        (err: unknown) => err instanceof EndpointError && err.code === "unknown_user" && !err.retryable,
      );
    } finally {
      await home.client.setSettings(wa, { thirdPartyChats: true });
    }
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "allowed again"), newId());
    await home.waitForText("allowed again");
  });

  it("acks what it cannot decrypt or decode, reports it, and carries on", async () => {
    // Garbage ciphertext on alice's session.
    await third.client.send({ from: alice, to: wa, room, id: newId(), payload: { type: 2, body: new Uint8Array(randomBytes(80)) } });
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "after the garbage"), newId());
    await home.waitForText("after the garbage");
    assert.equal(home.undecryptable.length, 1);
    assert.deepEqual(home.undecryptable[0]!.reason.stage, "decrypt");
    assert.equal(home.undecryptable[0]!.from, alice);

    // Carol encrypts properly, but what she encrypts is not a payload, then one whose MIMI
    // claims to come from alice; then a good one.
    const carolClient = new InteropClient({ url: gw.url, provider: THIRD, secret: SECRETS[THIRD], reconnect: { initialDelayMs: 50 } });
    try {
      await carolClient.connect();
      await carolClient.enlist(carol, "Carol");
      await carolClient.login(carol);
      const party = SignalParty.open(carol, new MemoryRecordStore());
      const keys = party.prepareKeys({ oneTimeCount: 5 });
      await carolClient.publishKeys({ ...keys, user: carol });
      const carolRoom = dmRoomUri(carol, wa, HOME);
      const fetchBundle = async () => {
        const b = await carolClient.fetchKeys(carol, wa);
        return { ...b, deviceId: 1 as const };
      };
      const sendRaw = async (plaintext: Uint8Array) => {
        const ct = await party.encrypt(wa, plaintext, fetchBundle);
        await carolClient.send({ from: carol, to: wa, room: carolRoom, id: newId(), payload: ct });
      };
      await sendRaw(utf8("this is not CBOR"));
      // A kind from a later version is ignored without complaint.
      await sendRaw(cborEncode({ kind: "poll", question: "tea?" }, { cde: true }));
      await sendRaw(encodePayload(textPayload(alice, carolRoom, "pretending to be alice")));
      await sendRaw(encodePayload(textPayload(carol, carolRoom, "carol for real")));
      await home.waitForText("carol for real");
      const fromCarol = home.undecryptable.filter((u) => u.from === carol).map((u) => u.reason);
      assert.deepEqual(fromCarol, [
        { stage: "decode", code: "malformed" },
        { stage: "envelope", code: "envelope_mismatch" },
      ]);
      assert.equal(home.texts().includes("pretending to be alice"), false);
      assert.equal(home.received.filter((ev) => ev.from === carol).length, 1, "only the good one reached onPayload");
    } finally {
      await carolClient.close();
    }
  });

  it("tops up one-time keys when the gateway says they run low", async () => {
    // The home side keeps 12; every fetch by someone starting a session takes one.
    const before = await home.client.countKeys(wa);
    assert.ok(before >= 10, `expected a stocked directory, found ${before}`);
    for (let i = 0; i < before - 8; i++) await third.client.fetchKeys(alice, wa);
    let count = 0;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && (count = await home.client.countKeys(wa)) < 12) await new Promise((r) => setTimeout(r, 50));
    assert.equal(count, 12);
  });

  it("logs a user whose keys the directory holds in without loading its Signal state, which it loads when it sends", async () => {
    // A restart of the third provider's side over the same records, counting reads of the Signal party's.
    const reads: string[] = [];
    const records = third.stores.get(alice)!;
    const restarted = new Side(gw, THIRD);
    const counting = Object.create(records) as MemoryRecordStore;
    counting.get = (ns: string, key: string) => {
      if (ns.startsWith("signal/")) reads.push(key);
      return records.get(ns, key);
    };
    restarted.stores.set(alice, counting);
    try {
      await restarted.client.connect();
      await restarted.endpoint.addUser(alice, { displayName: "Alice" });
      assert.equal(reads.join(", "), "", "no Signal record read at login");
      await restarted.endpoint.send(alice, wa, room, textPayload(alice, room, "after a restart"), newId());
      await home.waitForText("after a restart");
      assert.ok(reads.includes("account"), "the party was loaded to encrypt");
    } finally {
      await restarted.client.close();
    }
    // Back on the original side (the restarted one took alice's session over).
    await third.endpoint.addUser(alice, { displayName: "Alice" });
  });

  it("removes a user; when it comes back with a new identity, the peer is told", async () => {
    await third.endpoint.removeUser(alice);
    assert.equal(third.stores.get(alice)!.size, 0, "every record of alice is gone");
    await third.endpoint.addUser(alice, { displayName: "Alice" });
    await third.endpoint.send(alice, wa, room, textPayload(alice, room, "new phone, who dis"), newId());
    await home.waitForText("new phone, who dis");
    assert.deepEqual(home.identityChanges, [[wa, alice]]);
    await home.endpoint.send(wa, alice, room, textPayload(wa, room, "welcome back"), newId());
    await third.waitForText("welcome back");
  });
});
