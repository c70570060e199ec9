/**
 * Gateway + client over real WebSockets, with the gateway as a child process
 * (node dist/gateway/main.js) on a random port and a temporary database, so
 * restarts and crashes are real process restarts.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { encode as cborEncode } from "cbor2";
import { InteropClient } from "../../src/protocol/client.js";
import {
  CloseCode,
  ProtocolError,
  decodeFrame,
  dmRoomUri,
  encodeFrame,
  type DeliverFrame,
  type DeliveredFrame,
  type Frame,
  type KeysLowFrame,
  type ProfileFrame,
  type RefusedFrame,
} from "../../src/protocol/frames.js";

const MAIN = path.resolve(__dirname, "../../gateway/main.js");
const HOME = "whatsapp.example";
const BRIDGE = "matrix.example.org";
const SECRETS: Record<string, string> = { [HOME]: "home-secret", [BRIDGE]: "bridge-secret" };
const alice = `mimi://${BRIDGE}/u/@alice:example.org`;
const bob = `mimi://${BRIDGE}/u/@bob:example.org`;
const wa1 = `mimi://${HOME}/u/+4915123456789`;
const wa2 = `mimi://${HOME}/u/+4915100000002`;

class GatewayProcess {
  child?: ChildProcess;
  url = "";
  port = 0;
  constructor(
    readonly dbPath: string,
    readonly recordPath?: string,
  ) {}

  async start(port = 0): Promise<void> {
    const args = [MAIN, "--port", String(port), "--db", this.dbPath, "--home-provider", HOME];
    for (const [name, secret] of Object.entries(SECRETS)) args.push("--provider", `${name}=${secret}`);
    args.push("--max-frame-bytes", String(64 * 1024));
    const env: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn" };
    if (this.recordPath) env.GATEWAY_RECORD_FRAMES = this.recordPath;
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"], env });
    this.child = child;
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.once("line", resolve);
      child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before listening`)));
    });
    const m = /^gateway listening on (ws:\/\/[^\s]+)$/.exec(line);
    assert.ok(m, `unexpected first line: ${line}`);
    this.url = m[1]!;
    this.port = Number(new URL(this.url).port);
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill(signal);
    return exited;
  }

  async restart(signal: NodeJS.Signals, pauseMs = 200): Promise<void> {
    await this.stop(signal);
    await sleep(pauseMs);
    await this.start(this.port);
  }

  get httpBase(): string {
    return `http://127.0.0.1:${this.port}`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A bare WebSocket speaking frames by hand, for what the client library would never send. */
class RawConn {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  closed?: { code: number; reason: string };
  private constructor(url: string) {
    this.ws = new WebSocket(url);
    this.ws.on("message", (data) => this.frames.push(decodeFrame(data as Buffer)));
    this.ws.on("close", (code, reason) => (this.closed = { code, reason: reason.toString() }));
    this.ws.on("error", () => undefined);
  }
  static async open(url: string, provider: string, secret: string): Promise<RawConn> {
    const conn = new RawConn(url);
    await new Promise((resolve, reject) => {
      conn.ws.once("open", resolve);
      conn.ws.once("error", reject);
    });
    conn.send({ t: "hello", provider, secret, version: 1 });
    return conn;
  }
  send(frame: Frame): void {
    this.ws.send(encodeFrame(frame));
  }
  async next(pred: (f: Frame) => boolean = () => true): Promise<Frame> {
    await until("a frame", () => this.frames.some(pred) || this.closed !== undefined);
    const i = this.frames.findIndex(pred);
    if (i < 0) throw new Error(`connection closed ${JSON.stringify(this.closed)}`);
    return this.frames.splice(i, 1)[0]!;
  }
  async waitClosed(): Promise<{ code: number; reason: string }> {
    await until("close", () => this.closed !== undefined);
    return this.closed!;
  }
  close(): void {
    this.ws.terminate();
  }
}

function client(gw: GatewayProcess, provider: string): InteropClient {
  return new InteropClient({
    url: gw.url,
    provider,
    secret: SECRETS[provider]!,
    reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
    answerTimeoutMs: 5000,
  });
}

function keyBytes(n: number, fill: number): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

function payload(text: string) {
  return { type: 2, body: new TextEncoder().encode(text) };
}

function text(frame: DeliverFrame): string {
  return new TextDecoder().decode(frame.payload.body);
}

describe("interop gateway", () => {
  let dir: string;
  let gw: GatewayProcess;
  let home: InteropClient;
  const clients: InteropClient[] = [];
  const track = (c: InteropClient) => (clients.push(c), c);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "gateway-test-"));
    gw = new GatewayProcess(path.join(dir, "gateway.db"), path.join(dir, "frames.log"));
    await gw.start();
    home = track(client(gw, HOME));
    await home.connect();
    await home.upsertAccount({ user: wa1, displayName: "Wanda One" });
    await home.setSettings(wa1, { thirdPartyChats: true });
    await home.upsertAccount({ user: wa2, displayName: "Walter Two" });
    const bridge = track(client(gw, BRIDGE));
    await bridge.connect();
    assert.deepEqual(await bridge.enlist(alice, "Alice"), { created: true });
    assert.deepEqual(await bridge.enlist(bob, "Bob"), { created: true });
    await bridge.close();
  });

  after(async () => {
    for (const c of clients) await c.close();
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a wrong secret with unauthorized and close code 4001", async () => {
    const raw = await RawConn.open(gw.url, BRIDGE, "not-the-secret");
    const err = await raw.next();
    assert.equal(err.t, "error");
    assert.equal((err as { code: string }).code, "unauthorized");
    assert.equal((await raw.waitClosed()).code, CloseCode.unauthorized);

    const c = new InteropClient({ url: gw.url, provider: BRIDGE, secret: "wrong", reconnect: { initialDelayMs: 50 } });
    await assert.rejects(c.connect(), (e: ProtocolError) => e.code === "unauthorized");
    assert.equal(c.connectionState, "disconnected");
    await c.close();
  });

  it("refuses logging in a user of another provider", async () => {
    const bridge = track(client(gw, BRIDGE));
    await bridge.connect();
    await assert.rejects(bridge.login(wa1), (e: ProtocolError) => e.code === "forbidden");
    await assert.rejects(bridge.login(`mimi://${BRIDGE}/u/@nobody:example.org`), (e: ProtocolError) => e.code === "unknown_user");
    await assert.rejects(bridge.upsertAccount({ user: wa2, displayName: "x" }), (e: ProtocolError) => e.code === "forbidden");
    // acting for a user not logged in on this connection
    await assert.rejects(bridge.countKeys(alice), (e: ProtocolError) => e.code === "not_logged_in");
    await bridge.close();
  });

  it("hands out each one-time prekey once and warns when they run low", async () => {
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(bob);
    await wa.login(wa1);
    const lows: KeysLowFrame[] = [];
    bridge.on("keysLow", (f) => lows.push(f));
    const published = await bridge.publishKeys({
      user: bob,
      registrationId: 1234,
      identityKey: keyBytes(33, 5),
      signedPreKey: { id: 1, publicKey: keyBytes(33, 6), signature: keyBytes(64, 7) },
      kyberPreKey: { id: 1, publicKey: keyBytes(1569, 8), signature: keyBytes(64, 9) },
      oneTimePreKeys: [11, 12, 13].map((id) => ({ id, publicKey: keyBytes(33, id) })),
    });
    assert.equal(published.remaining, 3);
    const seen: number[] = [];
    for (let i = 0; i < 4; i++) {
      const bundle = await wa.fetchKeys(wa1, bob);
      assert.equal(bundle.registrationId, 1234);
      assert.equal(bundle.deviceId, 1);
      assert.deepEqual(bundle.identityKey, keyBytes(33, 5));
      assert.equal(bundle.kyberPreKey.publicKey.length, 1569);
      if (bundle.oneTimePreKey) seen.push(bundle.oneTimePreKey.id);
    }
    assert.deepEqual(seen, [11, 12, 13], "each one-time key once, then none");
    assert.equal(await bridge.countKeys(bob), 0);
    await until("keys.low", () => lows.some((f) => f.remaining === 0));
    await assert.rejects(wa.fetchKeys(wa1, alice), (e: ProtocolError) => e.code === "no_keys");
    await bridge.close();
    await wa.close();
  });

  it("send → deliver → ack → delivered", async () => {
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const got: DeliverFrame[] = [];
    wa.onDeliver(async (f) => void got.push(f));
    const receipts: DeliveredFrame[] = [];
    bridge.onDelivered(async (f) => void receipts.push(f));
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(alice);
    await wa.login(wa1);
    const sent = await bridge.send({ from: alice, to: wa1, payload: payload("hello wanda") });
    assert.equal(sent.id.length, 16);
    assert.equal(sent.duplicate, false);
    await until("deliver", () => got.length === 1);
    const d = got[0]!;
    assert.equal(d.from, alice);
    assert.equal(d.to, wa1);
    assert.equal(d.room, dmRoomUri(wa1, alice, HOME));
    assert.deepEqual(d.id, sent.id);
    assert.equal(d.ts, sent.ts);
    assert.equal(text(d), "hello wanda");
    await until("delivered receipt", () => receipts.length === 1);
    assert.deepEqual(receipts[0]!.id, sent.id);
    assert.equal(receipts[0]!.to, wa1);
    assert.equal(receipts[0]!.user, alice);
    assert.ok(receipts[0]!.ts >= sent.ts);
    await bridge.close();
    await wa.close();
  });

  it("refuses a send to a WhatsApp user with Third-Party Chats off", async () => {
    const bridge = track(client(gw, BRIDGE));
    await bridge.connect();
    await bridge.login(alice);
    await assert.rejects(bridge.send({ from: alice, to: wa2, payload: payload("hi") }), (e: ProtocolError) => e.code === "third_party_disabled");
    await assert.rejects(bridge.send({ from: alice, to: bob, payload: payload("hi") }), (e: ProtocolError) => e.code === "forbidden", "third-party users cannot reach each other");
    await assert.rejects(bridge.send({ from: alice, to: wa1, room: `mimi://${HOME}/r/dm-elsewhere`, payload: payload("hi") }), (e: ProtocolError) => e.code === "unknown_room");
    await bridge.close();
  });

  it("refuses home users' messages to a third-party user who has Third-Party Chats off, and tells that user once", async () => {
    const carol = `mimi://${BRIDGE}/u/@carol:example.org`;
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const refused: RefusedFrame[] = [];
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    // The first report stays unacknowledged until released: meanwhile no second one is queued.
    bridge.onRefused(async (f) => {
      refused.push(f);
      if (refused.length === 1) await held;
    });
    await Promise.all([bridge.connect(), wa.connect()]);
    assert.deepEqual(await bridge.enlist(carol, "Carol", { thirdPartyChats: false }), { created: true });
    await bridge.login(carol);
    await wa.login(wa1);
    await assert.rejects(wa.send({ from: wa1, to: carol, payload: payload("are you there?") }), (e: ProtocolError) => e.code === "not_opted_in");
    await assert.rejects(wa.fetchKeys(wa1, carol), (e: ProtocolError) => e.code === "not_opted_in");
    await assert.rejects(bridge.send({ from: carol, to: wa1, payload: payload("hi") }), (e: ProtocolError) => e.code === "not_opted_in");
    await until("refused", () => refused.length === 1);
    await wa.send({ from: wa1, to: carol, payload: payload("still there?") }).catch(() => undefined);
    release();
    assert.equal(refused.length, 1, "one report per sender while unacknowledged");
    assert.equal(refused[0]!.user, carol);
    assert.equal(refused[0]!.from, wa1);
    assert.equal(refused[0]!.room, dmRoomUri(wa1, carol, HOME));
    // Acked now: the next attempt is reported again; the refused sends were never stored. The ack
    // travels on the bridge's connection, so a send on wa's may still reach the gateway before it.
    for (let attempt = 0; refused.length < 2; attempt++) {
      assert.ok(attempt < 50, "an attempt after the acknowledgement is reported again");
      await wa.send({ from: wa1, to: carol, payload: payload("again") }).catch(() => undefined);
      await until("second refused", () => refused.length >= 2, 200).catch(() => undefined);
    }
    await assert.rejects(wa.setSettings(carol, { thirdPartyChats: true }), (e: ProtocolError) => e.code === "forbidden", "only the owning provider sets it");
    await bridge.setSettings(carol, { thirdPartyChats: true });
    const got: DeliverFrame[] = [];
    bridge.onDeliver(async (f) => void got.push(f));
    await wa.send({ from: wa1, to: carol, payload: payload("now it works") });
    await until("deliver", () => got.length === 1);
    assert.deepEqual(got.map(text), ["now it works"], "nothing refused earlier arrives late");
    await bridge.close();
    await wa.close();
  });

  it("accepts a repeated send (same id) once and answers it the same way", async () => {
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const got: DeliverFrame[] = [];
    wa.onDeliver(async (f) => void got.push(f));
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(alice);
    await wa.login(wa1);
    const id = new Uint8Array(16).fill(0xab);
    const first = await bridge.send({ from: alice, to: wa1, id, payload: payload("once") });
    const second = await bridge.send({ from: alice, to: wa1, id, payload: payload("once") });
    assert.equal(second.ts, first.ts);
    assert.equal(second.duplicate, true);
    // A sender that crashed and re-encrypted the message sends other ciphertext under the same id.
    const reencrypted = await bridge.send({ from: alice, to: wa1, id, payload: payload("once, re-encrypted") });
    assert.deepEqual([reencrypted.ts, reencrypted.duplicate], [first.ts, true]);
    const marker = await bridge.send({ from: alice, to: wa1, payload: payload("marker") });
    await until("marker", () => got.some((f) => text(f) === "marker"));
    assert.equal(got.filter((f) => text(f).startsWith("once")).length, 1);
    assert.ok(marker.ts >= first.ts);
    await bridge.close();
    await wa.close();
  });

  it("redelivers unacknowledged frames when the receiver reconnects", async () => {
    const bridge = track(client(gw, BRIDGE));
    await bridge.connect();
    await bridge.login(alice);
    // A receiver that takes the frame but never finishes processing it.
    const stuck = client(gw, HOME);
    let stuckSeq = 0;
    stuck.onDeliver((f) => {
      stuckSeq = f.seq;
      return new Promise(() => undefined);
    });
    await stuck.connect();
    await stuck.login(wa1);
    const sent = await bridge.send({ from: alice, to: wa1, payload: payload("again") });
    await until("first delivery", () => stuckSeq > 0);
    await stuck.close();

    const fresh = track(client(gw, HOME));
    const got: DeliverFrame[] = [];
    fresh.onDeliver(async (f) => void got.push(f));
    await fresh.connect();
    const { queued } = await fresh.login(wa1);
    assert.ok(queued >= 1);
    await until("redelivery", () => got.some((f) => f.seq === stuckSeq));
    assert.deepEqual(got.find((f) => f.seq === stuckSeq)!.id, sent.id);
    await bridge.close();
    await fresh.close();
  });

  it("pushes profile changes to chat peers and answers profile.get", async () => {
    const bridge = track(client(gw, BRIDGE));
    const profiles: ProfileFrame[] = [];
    bridge.onProfile(async (f) => void profiles.push(f));
    await bridge.connect();
    await bridge.login(alice);
    const avatar = { url: "https://media.whatsapp.example/a/xyz", mimetype: "image/jpeg", size: 1234, sha256: keyBytes(32, 1) };
    await home.upsertAccount({ user: wa1, displayName: "Wanda Renamed", avatar });
    await until("profile event", () => profiles.some((p) => p.subject === wa1 && p.displayName === "Wanda Renamed"));
    const p = profiles.find((p) => p.displayName === "Wanda Renamed")!;
    assert.deepEqual(p.avatar, avatar);
    assert.equal(p.thirdPartyChats, true);
    const got = await bridge.getProfile(wa1);
    assert.equal(got.exists, true);
    assert.equal(got.home, true);
    assert.equal(got.displayName, "Wanda Renamed");
    assert.deepEqual(await bridge.getProfile(`mimi://${HOME}/u/+10000000000`), { user: `mimi://${HOME}/u/+10000000000`, exists: false });
    await bridge.close();
  });

  it("relays typing live and ends a session that another connection takes over", async () => {
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const typing: string[] = [];
    wa.on("typing", (f) => typing.push(`${f.from} ${f.state}`));
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(alice);
    await wa.login(wa1);
    assert.equal(bridge.typing({ from: alice, to: wa1, state: "on" }), true);
    await until("typing relayed", () => typing.length === 1);
    assert.deepEqual(typing, [`${alice} on`]);

    const ended: string[] = [];
    bridge.on("sessionEnded", (user, reason) => ended.push(`${user} ${reason}`));
    const other = track(client(gw, BRIDGE));
    await other.connect();
    await other.login(alice);
    await until("session.ended", () => ended.length === 1);
    assert.deepEqual(ended, [`${alice} replaced`]);
    assert.deepEqual(bridge.loggedInUsers, []);
    await assert.rejects(bridge.countKeys(alice), (e: ProtocolError) => e.code === "not_logged_in");
    await bridge.close();
    await other.close();
    await wa.close();
  });

  it("refuses payloads over the body limit and closes on frames over the frame limit", async () => {
    const bridge = track(client(gw, BRIDGE));
    await bridge.connect();
    await bridge.login(alice);
    const limits = bridge.limits;
    assert.equal(limits.maxFrameBytes, 64 * 1024);
    // The client refuses locally what the gateway would refuse…
    await assert.rejects(bridge.send({ from: alice, to: wa1, payload: { type: 2, body: new Uint8Array(limits.maxBodyBytes + 1) } }), (e: ProtocolError) => e.code === "too_large");
    await bridge.close();
    // …and the gateway refuses it too when a client does send it.
    const raw = await RawConn.open(gw.url, BRIDGE, SECRETS[BRIDGE]!);
    assert.equal((await raw.next()).t, "welcome");
    raw.send({ t: "login", rid: 1, user: alice });
    assert.equal((await raw.next()).t, "ok");
    raw.send({
      t: "send",
      rid: 2,
      from: alice,
      to: wa1,
      room: dmRoomUri(alice, wa1, HOME),
      id: keyBytes(16, 3),
      payload: { type: 2, body: new Uint8Array(limits.maxBodyBytes + 1) },
    });
    assert.deepEqual((({ t, rid, code }) => ({ t, rid, code }))((await raw.next()) as { t: string; rid: number; code: string }), { t: "error", rid: 2, code: "too_large" });
    // A WebSocket message over maxFrameBytes is cut off before it is buffered: close 1009.
    raw.ws.send(new Uint8Array(limits.maxFrameBytes + 1));
    assert.equal((await raw.waitClosed()).code, CloseCode.tooBig);
    const health = await fetch(`${gw.httpBase}/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, "ok");
  });

  it("answers garbage with bad_frame and keeps serving", async () => {
    const raw = await RawConn.open(gw.url, BRIDGE, SECRETS[BRIDGE]!);
    assert.equal((await raw.next()).t, "welcome");
    raw.ws.send(Buffer.from("this is not cbor at all \xff\xfe"));
    const err = (await raw.next()) as { t: string; code: string; rid?: number };
    assert.equal(err.t, "error");
    assert.equal(err.code, "bad_frame");
    assert.equal(err.rid, undefined);
    // A well-formed CBOR map with a mistyped field names the field, and carries the rid.
    raw.send({ t: "login", rid: 7, user: alice });
    await raw.next((f) => f.t === "ok");
    raw.ws.send(encodeFrame({ t: "ping", nonce: 1 }).subarray(0, 3));
    assert.equal(((await raw.next()) as { code: string }).code, "bad_frame");
    raw.ws.send(cborEncode({ t: "login", rid: 9, user: 42 }, { cde: true }));
    const named = (await raw.next()) as { code: string; message: string; rid?: number };
    assert.equal(named.code, "bad_frame");
    assert.equal(named.rid, 9);
    assert.match(named.message, /login\.user/);
    raw.send({ t: "ping", nonce: 42 });
    assert.deepEqual(await raw.next((f) => f.t === "pong"), { t: "pong", nonce: 42 });
    raw.close();
    assert.equal((await fetch(`${gw.httpBase}/health`)).status, 200);
  });

  it("loses nothing across a gateway restart and clients resume by themselves", async () => {
    const bridge = track(client(gw, BRIDGE));
    const states: string[] = [];
    bridge.on("state", (s) => states.push(s));
    await bridge.connect();
    await bridge.login(alice);
    const wa = client(gw, HOME);
    await wa.connect();
    await wa.login(wa1);
    // wa1 is logged in but has no handler: the message stays unacked across the restart.
    const before = await bridge.send({ from: alice, to: wa1, payload: payload("before restart") });
    await wa.close();

    await gw.restart("SIGTERM");
    await until("bridge reconnected", () => bridge.connectionState === "connected" && states.includes("disconnected"));
    const after = await bridge.send({ from: alice, to: wa1, payload: payload("after restart") });

    const wa2nd = track(client(gw, HOME));
    const got: DeliverFrame[] = [];
    wa2nd.onDeliver(async (f) => void got.push(f));
    await wa2nd.connect();
    await wa2nd.login(wa1);
    await until("both messages", () => got.some((f) => text(f) === "after restart"));
    const texts = got.map(text);
    assert.ok(texts.indexOf("before restart") >= 0 && texts.indexOf("before restart") < texts.indexOf("after restart"));
    assert.deepEqual(got.find((f) => text(f) === "before restart")!.id, before.id);
    assert.ok(after.ts >= before.ts);
    await bridge.close();
    await wa2nd.close();
  });

  it("delivers a burst of 200 in order exactly once while the gateway crashes mid-burst", async () => {
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const got: string[] = [];
    const seqs = new Set<number>();
    let handledTwice = 0;
    wa.onDeliver(async (f) => {
      if (seqs.has(f.seq)) handledTwice += 1;
      seqs.add(f.seq);
      const t = text(f);
      if (t.startsWith("burst ")) got.push(t);
    });
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(alice);
    await wa.login(wa1);
    let accepted = 0;
    const sends = Array.from({ length: 200 }, (_, i) =>
      bridge.send({ from: alice, to: wa1, payload: payload(`burst ${i}`) }).then((r) => {
        accepted += 1;
        return r;
      }),
    );
    await until("part of the burst accepted", () => accepted >= 60);
    await gw.restart("SIGKILL", 300);
    const results = await Promise.all(sends);
    assert.equal(new Set(results.map((r) => Buffer.from(r.id).toString("hex"))).size, 200);
    await until("all 200 delivered", () => got.length >= 200, 30_000);
    await sleep(200);
    assert.deepEqual(
      got,
      Array.from({ length: 200 }, (_, i) => `burst ${i}`),
    );
    assert.equal(handledTwice, 0, "the client never hands the same seq to the handler twice");
    await bridge.close();
    await wa.close();
  });

  // The gateway cannot know whether a payload is encrypted; that it only ever gets ciphertext from
  // our clients is shown by endpoint.test.ts ("the gateway never sees the plaintext"). Here: what
  // the recorder writes, for this test's own traffic (it does not rely on earlier tests).
  it("records each frame it relays as one hex line, payload bytes as sent, and never a provider's secret from the handshake", async () => {
    const linesBefore = readFileSync(gw.recordPath!, "utf8").split("\n").filter(Boolean).length;
    const bridge = track(client(gw, BRIDGE));
    const wa = track(client(gw, HOME));
    const got: DeliverFrame[] = [];
    wa.onDeliver(async (f) => void got.push(f));
    await Promise.all([bridge.connect(), wa.connect()]);
    await bridge.login(alice);
    await wa.login(wa1);
    const marker = `recorder marker ${Date.now()}`;
    const sent = await bridge.send({ from: alice, to: wa1, payload: payload(marker) });
    await until("deliver", () => got.some((f) => text(f) === marker));
    await bridge.close();
    await wa.close();
    // The recorder writes through a stream: wait for the delivery's line, then read what this test caused.
    const hex = (s: string) => Buffer.from(s).toString("hex");
    await until("the delivery recorded", () => readFileSync(gw.recordPath!, "utf8").includes(hex(marker)));
    const lines = readFileSync(gw.recordPath!, "utf8").split("\n").filter(Boolean).slice(linesBefore);
    for (const line of lines) assert.match(line, /^(in|out) \d+ [0-9a-f]+$/);
    const frames = lines.map((line) => ({ direction: line.split(" ")[0], frame: decodeFrame(Buffer.from(line.split(" ")[2]!, "hex")) }));
    const hellos = frames.filter((f) => f.direction === "in" && f.frame.t === "hello");
    assert.equal(hellos.length, 2, "both handshakes were recorded");
    for (const h of hellos) assert.equal((h.frame as { secret?: string }).secret, "<redacted>", "with the secret replaced");
    const send = frames.find((f) => f.direction === "in" && f.frame.t === "send" && Buffer.from((f.frame as { id: Uint8Array }).id).equals(Buffer.from(sent.id)));
    const deliver = frames.find((f) => f.direction === "out" && f.frame.t === "deliver" && Buffer.from((f.frame as DeliverFrame).id).equals(Buffer.from(sent.id)));
    assert.ok(send && deliver, "the send in and the deliver out are both recorded");
    assert.equal(new TextDecoder().decode((deliver.frame as DeliverFrame).payload.body), marker, "the payload is recorded as relayed, byte for byte");
    const all = lines.join("\n");
    for (const secret of Object.values(SECRETS)) {
      for (const form of [hex(secret), Buffer.from(secret).toString("base64"), secret]) assert.ok(!all.includes(form), `a provider secret (${form.slice(0, 6)}…) is in the record`);
    }
  });
});
