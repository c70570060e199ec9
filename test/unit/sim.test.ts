/**
 * The WhatsApp simulator as its own process (node dist/sim/main.js) against the real gateway
 * process, driven through its control API and CLI, with a third-party SecureEndpoint playing
 * the Matrix side.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fetchBlob } from "../../src/network/media-fetch.js";
import { MediaHost, type HostedBlobIndex } from "../../src/network/media-host.js";
import { blobRefOf, mediaToMimi, mimiToRemoteContent } from "../../src/network/mimi-content.js";
import { InteropClient } from "../../src/protocol/client.js";
import { EndpointError, SecureEndpoint, type PayloadEvent } from "../../src/protocol/endpoint.js";
import { dmRoomUri, userUri, type ProfileFrame, type TypingFrame } from "../../src/protocol/frames.js";
import { computeMessageId, decodeMimi, encodeMimi, newTextMessage, type MimiMessage } from "../../src/protocol/mimi.js";
import { isSticker } from "../../src/protocol/payload.js";
import { MemoryRecordStore } from "../../src/protocol/signal.js";
import { CliError, formatEntry, runCli } from "../../sim/cli.js";
import { parseSimArgs, UsageError } from "../../sim/main.js";
import { GatewayProcess, until } from "../support/gateway-process.js";
import { SimProcess } from "../support/sim-process.js";

const HOME = "whatsapp.example";
const THIRD = "matrix.test";
const SECRETS = { [HOME]: "sim-secret", [THIRD]: "bridge-secret" };
const SIM_CLI = path.resolve(__dirname, "../../sim/cli.js");
const PHONE = "+4915123456789";
const wa = userUri(HOME, PHONE);
const ALICE_MXID = "@alice:matrix.test";
const alice = userUri(THIRD, ALICE_MXID);

type Entry = import("../support/sim-process.js").Entry;

/** The Matrix side: a third-party SecureEndpoint for alice. */
class MatrixSide {
  readonly received: PayloadEvent[] = [];
  readonly typing: TypingFrame[] = [];
  readonly profiles: ProfileFrame[] = [];
  readonly client: InteropClient;
  readonly endpoint: SecureEndpoint;
  readonly store = new MemoryRecordStore();

  constructor(gw: GatewayProcess) {
    this.client = new InteropClient({ url: gw.url, provider: THIRD, secret: SECRETS[THIRD], reconnect: { initialDelayMs: 50, maxDelayMs: 500 } });
    this.endpoint = new SecureEndpoint({
      client: this.client,
      openRecords: () => this.store,
      onPayload: async (ev) => {
        this.received.push(ev);
      },
    });
    this.client.on("typing", (f) => this.typing.push(f));
    this.client.on("profile", (f) => this.profiles.push(f));
  }

  messages(): Array<{ ev: PayloadEvent; message: MimiMessage }> {
    return this.received
      .filter((ev) => ev.payload.kind === "content" || ev.payload.kind === "status")
      .map((ev) => ({ ev, message: decodeMimi((ev.payload as { mimi: Uint8Array }).mimi) }));
  }

  async waitForMessage(match: (m: MimiMessage, ev: PayloadEvent) => boolean): Promise<{ ev: PayloadEvent; message: MimiMessage }> {
    await until("a message on the Matrix side", () => this.messages().some(({ ev, message }) => match(message, ev)));
    return this.messages().find(({ ev, message }) => match(message, ev))!;
  }

  async sendText(markdown: string): Promise<string> {
    const room = dmRoomUri(alice, wa, HOME);
    const mimi = encodeMimi(newTextMessage({ sender: alice, room, markdown }));
    await this.endpoint.send(alice, wa, room, { kind: "content", mimi }, new Uint8Array(randomBytes(16)));
    return Buffer.from(computeMessageId(alice, room, mimi)).toString("hex");
  }
}

function textOf(message: MimiMessage): string | undefined {
  const body = message.body;
  return body.cardinality === "single" ? Buffer.from(body.content).toString("utf8") : undefined;
}

const PNG_1x1 = Buffer.from(
  "89504e470d0a1a0a0000000d4948445200000001000000010806000000" + "1f15c4890000000d4944415478da63f8cfc0f01f0005000201" + "a5b1e0b80000000049454e44ae426082",
  "hex",
);

/** Hosted-blob bookkeeping in memory, for a media host in a test. */
function memoryIndex(): HostedBlobIndex {
  const rows = new Map<string, { token: string; size: number; expiresAt: number }>();
  return {
    save: (row) => void rows.set(row.token, row),
    get: (token) => rows.get(token),
    expired: (now) => [...rows.values()].filter((r) => r.expiresAt <= now),
    remove: (token) => void rows.delete(token),
  };
}

describe("the WhatsApp simulator", () => {
  let dir: string;
  let gw: GatewayProcess;
  let sim: SimProcess;
  let matrix: MatrixSide;
  const phonePath = `/users/${encodeURIComponent(PHONE)}`;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sim-test-"));
    gw = new GatewayProcess({ dbPath: path.join(dir, "gateway.db"), recordPath: path.join(dir, "frames.log"), homeProvider: HOME, providers: SECRETS });
    await gw.start(0);
    sim = new SimProcess([
      "--gateway",
      gw.url,
      "--provider",
      HOME,
      "--secret",
      SECRETS[HOME],
      "--port",
      "0",
      "--db",
      path.join(dir, "sim.db"),
      "--media-dir",
      path.join(dir, "media"),
      "--matrix-provider",
      THIRD,
    ]);
    await sim.start();
    matrix = new MatrixSide(gw);
    await matrix.client.connect();
    await matrix.endpoint.addUser(alice, { displayName: "Alice" });
  });

  after(async () => {
    await matrix?.client.close();
    await sim?.stop();
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("parses its command line", () => {
    const args = parseSimArgs(["--gateway", "ws://127.0.0.1:1/v1", "--provider", HOME, "--secret", "s", "--port", "29600", "--db", "x.db"]);
    assert.equal(args.port, 29600);
    assert.deepEqual(args.matrixProviders, []);
    assert.throws(() => parseSimArgs(["--provider", HOME, "--secret", "s", "--db", "x.db"]), UsageError);
    assert.throws(() => parseSimArgs(["--gateway", "ws://h/v1", "--provider", HOME, "--db", "x.db"], {}), /--secret/);
  });

  it("creates a WhatsApp account with a profile picture the gateway hands out", async () => {
    assert.deepEqual((await sim.ok("GET", "/health")) as object, { status: "ok", gateway: "connected", users: 0 });
    const avatar = { mimetype: "image/png", base64: PNG_1x1.toString("base64") };
    const created = await sim.call<{ phone: string; uri: string; created: boolean; thirdPartyChats: boolean }>("POST", "/users", { phone: PHONE, name: "Ana", avatar });
    assert.equal(created.status, 201);
    assert.equal(created.json.uri, wa);
    assert.equal(created.json.thirdPartyChats, true, "simulated users opt in to Third-Party Chats unless told otherwise");
    assert.equal((await matrix.client.getProfile(wa)).thirdPartyChats, true);
    const profile = await matrix.client.getProfile(wa);
    assert.equal(profile.displayName, "Ana");
    assert.ok(profile.avatar);
    assert.equal(Buffer.from(profile.avatar.sha256).toString("hex"), createHash("sha256").update(PNG_1x1).digest("hex"));
    const served = await fetch(profile.avatar.url);
    assert.equal(served.headers.get("content-type"), "image/png");
    assert.deepEqual(Buffer.from(await served.arrayBuffer()), PNG_1x1);
    // Creating again updates.
    const again = await sim.call<{ created: boolean }>("POST", "/users", { phone: PHONE, name: "Ana", avatar });
    assert.equal(again.status, 200);
    assert.equal(again.json.created, false);
  });

  it("passes the gateway's third_party_disabled refusal to the caller as 409", async () => {
    const off = await sim.ok<{ thirdPartyChats: boolean }>("PUT", `${phonePath}/settings`, { thirdPartyChats: false });
    assert.equal(off.thirdPartyChats, false);
    const { status, json } = await sim.call<{ error: string; message: string }>("POST", `${phonePath}/messages`, { to: ALICE_MXID, text: "hello?" });
    assert.equal(status, 409);
    assert.equal(json.error, "third_party_disabled");
    assert.match(json.message, /Third-Party Chats/);
    await assert.rejects(matrix.sendText("anyone there?"), (err: unknown) => err instanceof EndpointError && err.code === "third_party_disabled");
    const on = await sim.ok<{ thirdPartyChats: boolean }>("PUT", `${phonePath}/settings`, { thirdPartyChats: true });
    assert.equal(on.thirdPartyChats, true);
  });

  it("sends MIMI text to a Matrix user, end-to-end encrypted", async () => {
    const sent = await sim.ok<{ id: string; ts: number }>("POST", `${phonePath}/messages`, { to: ALICE_MXID, text: "hi *there* sim-secret-words" });
    assert.match(sent.id, /^01[0-9a-f]{62}$/);
    const { ev, message } = await matrix.waitForMessage((m) => textOf(m) === "hi *there* sim-secret-words");
    assert.equal(ev.from, wa);
    assert.equal(ev.room, dmRoomUri(alice, wa, HOME));
    assert.equal(Buffer.from(computeMessageId(ev.from, ev.room, (ev.payload as { mimi: Uint8Array }).mimi)).toString("hex"), sent.id);
    assert.equal(message.extensions.senderUri, wa);
    assert.equal(gw.recordingContains(new Uint8Array(Buffer.from("sim-secret-words"))), false, "plaintext reached the gateway");
    // alice's provider acked it: the sim's user gets the gateway's delivery receipt, named by MIMI id.
    const receipt = await sim.waitFor(PHONE, (e) => e.kind === "delivered" && e.id === sent.id);
    assert.equal(receipt.from, alice);
    assert.equal(receipt.fromId, ALICE_MXID);
  });

  it("shows what the Matrix user sends in the inbox, in order, with long-polling", async () => {
    const before = await sim.ok<Entry[]>("GET", `${phonePath}/inbox`);
    const last = before.length ? before[before.length - 1]!.n : 0;
    const waiting = sim.ok<Entry[]>("GET", `${phonePath}/inbox/wait?after=${last}&timeoutMs=10000`);
    const id = await matrix.sendText("hello from **Matrix**");
    const batch = await waiting;
    assert.ok(batch.length >= 1);
    const entry = (batch.find((e) => e.kind === "text") ?? (await sim.waitFor(PHONE, (e) => e.kind === "text")))!;
    assert.equal(entry.text, "hello from **Matrix**");
    assert.equal(entry.from, alice);
    assert.equal(entry.fromId, ALICE_MXID);
    assert.equal(entry.id, id);
    const all = await sim.ok<Entry[]>("GET", `${phonePath}/inbox?after=0`);
    assert.deepEqual(
      all.map((e) => e.n),
      all.map((_, i) => i + 1),
    );
    assert.deepEqual(await sim.ok("GET", `${phonePath}/inbox/wait?after=${all.length}&timeoutMs=50`), []);
  });

  it("sends reactions, edits, deletions, read receipts, stickers, timers and typing", async () => {
    const original = await sim.ok<{ id: string }>("POST", `${phonePath}/messages`, { to: ALICE_MXID, text: "to be worked on" });
    const thumbs = await sim.ok<{ id: string }>("POST", `${phonePath}/reactions`, { to: ALICE_MXID, target: original.id, emoji: "👍" });
    await sim.ok("POST", `${phonePath}/reactions`, { to: ALICE_MXID, target: original.id, reaction: thumbs.id });
    await sim.ok("POST", `${phonePath}/edits`, { to: ALICE_MXID, target: original.id, text: "worked on" });
    await sim.ok("POST", `${phonePath}/deletions`, { to: ALICE_MXID, target: original.id });
    await sim.ok("POST", `${phonePath}/read`, { to: ALICE_MXID, ids: [original.id] });
    const sticker = await sim.ok<{ id: string }>("POST", `${phonePath}/stickers`, { to: ALICE_MXID });
    await sim.ok("POST", `${phonePath}/disappearing`, { to: ALICE_MXID, seconds: 86400 });
    await sim.ok("POST", `${phonePath}/typing`, { to: ALICE_MXID, state: "on" });

    const target = (m: MimiMessage, field: "inReplyTo" | "replaces"): boolean => m[field] !== null && Buffer.from(m[field]!).toString("hex") === original.id;
    const reaction = await matrix.waitForMessage((m) => target(m, "inReplyTo") && m.body.disposition === 2);
    assert.equal(textOf(reaction.message), "👍");
    const unlike = await matrix.waitForMessage((m) => target(m, "inReplyTo") && m.body.disposition === 2 && m.body.cardinality === "null");
    assert.equal(Buffer.from(unlike.message.replaces!).toString("hex"), thumbs.id, "the withdrawal replaces the reaction");
    await matrix.waitForMessage((m) => target(m, "replaces") && textOf(m) === "worked on");
    await matrix.waitForMessage((m) => target(m, "replaces") && m.body.cardinality === "null");
    const stickerMsg = await matrix.waitForMessage(
      (m, ev) => isSticker(m) && Buffer.from(computeMessageId(ev.from, ev.room, (ev.payload as { mimi: Uint8Array }).mimi)).toString("hex") === sticker.id,
    );
    assert.equal(stickerMsg.message.body.cardinality, "single");
    const webp = Buffer.from((stickerMsg.message.body as { content: Uint8Array }).content);
    assert.equal(webp.subarray(0, 4).toString("ascii"), "RIFF");
    assert.equal(webp.subarray(8, 16).toString("ascii"), "WEBPVP8L");
    await until("read and timer payloads", () => ["read", "disappearing"].every((k) => matrix.received.some((e) => e.payload.kind === k)));
    assert.deepEqual(matrix.received.find((e) => e.payload.kind === "read")!.payload, { kind: "read", ids: [new Uint8Array(Buffer.from(original.id, "hex"))] });
    assert.deepEqual(matrix.received.find((e) => e.payload.kind === "disappearing")!.payload, { kind: "disappearing", seconds: 86400 });
    await until("typing", () => matrix.typing.some((t) => t.from === wa && t.state === "on"));
  });

  it("broadcasts a status update to the Matrix users it chatted with", async () => {
    const r = await sim.ok<{ sent: Array<{ to: string; id: string }>; failed: unknown[] }>("POST", `${phonePath}/status`, { text: "at the beach" });
    assert.deepEqual(
      r.sent.map((s) => s.to),
      [alice],
    );
    assert.deepEqual(r.failed, []);
    const status = await matrix.waitForMessage((m, ev) => ev.payload.kind === "status" && textOf(m) === "at the beach");
    assert.equal(status.ev.payload.kind, "status");
  });

  it("pushes a name change to chat peers through the gateway", async () => {
    const updated = await sim.ok<{ name: string }>("PATCH", phonePath, { name: "Ana B." });
    assert.equal(updated.name, "Ana B.");
    await until("the profile event", () => matrix.profiles.some((p) => p.subject === wa && p.displayName === "Ana B."));
    const p = matrix.profiles.find((p) => p.displayName === "Ana B.")!;
    assert.ok(p.avatar, "the picture is kept when only the name changes");
  });

  it("acks a frame it cannot decrypt, shows it as unreadable and carries on", async () => {
    const room = dmRoomUri(alice, wa, HOME);
    await matrix.client.send({ from: alice, to: wa, room, id: new Uint8Array(randomBytes(16)), payload: { type: 2, body: new Uint8Array(randomBytes(64)) } });
    await matrix.sendText("readable again");
    await sim.waitFor(PHONE, (e) => e.kind === "text" && e.text === "readable again");
    const entries = await sim.ok<Entry[]>("GET", `${phonePath}/inbox`);
    const bad = entries.find((e) => e.kind === "undecryptable");
    assert.ok(bad, "the unreadable frame is in the inbox");
    assert.equal(bad.from, alice);
    assert.ok(bad.n < entries.find((e) => e.text === "readable again")!.n);
  });

  it("survives a restart with the same database and keeps its Signal sessions", async () => {
    const fetchesBefore = gw.recordedFrames().filter((r) => r.direction === "in" && r.frame.t === "keys.fetch").length;
    assert.equal(await sim.stop(), 0, "SIGTERM exits cleanly");
    // Sent while the simulator is down: queued on the gateway, on the existing session.
    const whileDown = await matrix.sendText("sent while you were away");
    await sim.start();
    const entry = await sim.waitFor(PHONE, (e) => e.id === whileDown);
    assert.equal(entry.text, "sent while you were away");
    const afterRestart = await matrix.sendText("and one after the restart");
    await sim.waitFor(PHONE, (e) => e.id === afterRestart);
    const reply = await sim.ok<{ id: string }>("POST", `${phonePath}/messages`, { to: ALICE_MXID, text: "still me" });
    await matrix.waitForMessage((m) => textOf(m) === "still me");
    assert.ok(reply.id);
    // The inbox survived too, numbered on.
    const all = await sim.ok<Entry[]>("GET", `${phonePath}/inbox`);
    assert.deepEqual(
      all.map((e) => e.n),
      all.map((_, i) => i + 1),
    );
    assert.equal(all.filter((e) => e.text === "sent while you were away").length, 1);
    // Both sides went on with the sessions they had: nobody fetched a new bundle.
    const fetchesAfter = gw.recordedFrames().filter((r) => r.direction === "in" && r.frame.t === "keys.fetch").length;
    assert.equal(fetchesAfter, fetchesBefore);
  });

  it("sends media as an encrypted blob it hosts, and downloads, verifies and decrypts media it receives", async () => {
    const mediaTemp = path.join(dir, "matrix-side");
    const bytes = randomBytes(50_000);
    const sent = await sim.ok<{ id: string; url: string; size: number; sha256: string }>("POST", `${phonePath}/media`, {
      to: ALICE_MXID,
      base64: bytes.toString("base64"),
      mimetype: "application/pdf",
      filename: "notes.pdf",
      caption: "my *notes*",
    });
    assert.equal(sent.size, bytes.length + 16);
    assert.equal(sent.sha256, createHash("sha256").update(bytes).digest("hex"));
    const { message } = await matrix.waitForMessage((m) => Buffer.from(computeMessageId(wa, dmRoomUri(alice, wa, HOME), encodeMimi(m))).toString("hex") === sent.id);
    const received = mimiToRemoteContent(message);
    assert.equal(received.type, "media");
    const media = received as Extract<typeof received, { type: "media" }>;
    assert.deepEqual([media.media.kind, media.media.filename, media.caption], ["file", "notes.pdf", "my *notes*"]);
    const fetched = await fetchBlob(blobRefOf((media.source as { ref: string }).ref), { maxBytes: 1e6, allowedHosts: [new URL(sim.url).host], tempDir: mediaTemp });
    assert.equal(createHash("sha256").update(readFileSync(fetched.path)).digest("hex"), sent.sha256, "the Matrix side gets the very bytes");

    // The other way: the Matrix side hosts a voice note and sends it.
    const voice = path.join(mediaTemp, "voice.bin");
    writeFileSync(voice, randomBytes(20_000));
    const host = new MediaHost({ dir: path.join(mediaTemp, "blobs"), index: memoryIndex(), lifetimeMs: 60_000 });
    await host.listen("127.0.0.1", 0);
    try {
      const blob = await host.host(voice);
      const room = dmRoomUri(alice, wa, HOME);
      const mimi = encodeMimi(
        mediaToMimi({ kind: "voice", mimetype: "audio/ogg; codecs=opus", filename: "v.ogg", durationMs: 1500, waveform: [0, 1024] }, undefined, blob, alice, room),
      );
      await matrix.endpoint.send(alice, wa, room, { kind: "content", mimi }, new Uint8Array(randomBytes(16)));
      const entry = await sim.waitFor(PHONE, (e) => e.kind === "media" && e.filename === "v.ogg");
      assert.equal(entry.error, undefined);
      assert.deepEqual([entry.mediaKind, entry.durationMs, entry.waveform, entry.size], ["voice", 1500, [0, 255], 20_000]);
      assert.equal(entry.sha256, createHash("sha256").update(readFileSync(voice)).digest("hex"));
      const stored = Buffer.from(await (await fetch(String(entry.mediaUrl))).arrayBuffer());
      assert.equal(createHash("sha256").update(stored).digest("hex"), entry.sha256, "the simulator serves what it received");
      // A blob that fails its checks shows as an error, and nothing is stored.
      const tampered = encodeMimi(mediaToMimi({ kind: "file", mimetype: "text/plain", filename: "bad.txt" }, undefined, { ...blob, sha256: new Uint8Array(32) }, alice, room));
      await matrix.endpoint.send(alice, wa, room, { kind: "content", mimi: tampered }, new Uint8Array(randomBytes(16)));
      const bad = await sim.waitFor(PHONE, (e) => e.kind === "media" && e.filename === "bad.txt");
      assert.match(String(bad.error), /^bad_hash: /);
      assert.equal(bad.sha256, undefined);
    } finally {
      await host.close();
    }
  });

  it("answers errors as JSON with a status", async () => {
    const media = await sim.call<{ error: string }>("POST", `${phonePath}/media`, { to: ALICE_MXID, mimetype: "image/png" });
    assert.equal(media.status, 400, "media without its bytes");
    assert.equal(media.json.error, "bad_request");
    assert.equal((await sim.call("GET", "/nope")).status, 404);
    assert.equal((await sim.call("DELETE", "/users")).status, 405);
    const badPhone = await sim.call<{ error: string }>("POST", "/users", { phone: "12ab", name: "x" });
    assert.equal(badPhone.status, 400);
    assert.equal(badPhone.json.error, "bad_request");
    assert.equal((await sim.call("GET", "/users/%2B4900000000/inbox")).status, 404);
    const unknownPeer = await sim.call<{ error: string }>("POST", `${phonePath}/messages`, { to: "+4915100000000", text: "x" });
    assert.equal(unknownPeer.status, 404);
    assert.equal(unknownPeer.json.error, "unknown_user");
  });

  it("finds a Matrix user's provider with profile.get when started without --matrix-provider", async () => {
    const bob = userUri(THIRD, "@bob:test");
    await matrix.endpoint.addUser(bob, { displayName: "Bob" });
    const second = new SimProcess(["--gateway", gw.url, "--provider", HOME, "--secret", SECRETS[HOME], "--port", "0", "--db", path.join(dir, "sim2.db")]);
    await second.start();
    try {
      await second.ok("POST", "/users", { phone: "+4917000000001", name: "Zoe" });
      // "@bob:test" lives under matrix.test, not under its server name "test": the second guess.
      await second.ok("POST", `/users/${encodeURIComponent("+4917000000001")}/messages`, { to: "@bob:test", text: "found you" });
      await matrix.waitForMessage((m, ev) => ev.to === bob && textOf(m) === "found you");
      const missing = await second.call<{ error: string; message: string }>("POST", `/users/${encodeURIComponent("+4917000000001")}/messages`, { to: "@nobody:test", text: "x" });
      assert.equal(missing.status, 404);
      assert.match(missing.json.message, /--matrix-provider/);
    } finally {
      await second.stop();
    }
  });

  it("has a CLI over the same API", async () => {
    const lines: string[] = [];
    const io = { out: (l: string) => lines.push(l) };
    assert.equal(await runCli(["--api", sim.url, "send", PHONE, ALICE_MXID, "from the CLI"], io), 0);
    assert.match(lines.at(-1)!, /^sent 01[0-9a-f]{62} at \d{4}-/);
    await matrix.waitForMessage((m) => textOf(m) === "from the CLI");
    assert.equal(await runCli(["--api", sim.url, "user", "list"], io), 0);
    assert.match(lines.at(-1)!, /^\+4915123456789 {2}Ana B\. {2}third-party chats on$/);
    assert.equal(await runCli(["--api", sim.url, "inbox", PHONE, "--after", "0"], io), 0);
    assert.ok(
      lines.some((l) => / @alice:matrix\.test \[[0-9a-f]{12}…\]: hello from \*\*Matrix\*\*$/.test(l)),
      lines.join("\n"),
    );
    assert.equal(formatEntry({ n: 3, kind: "typing", from: alice, fromId: ALICE_MXID, ts: 0, state: "on" }), "#3 1970-01-01 00:00:00Z @alice:matrix.test typing on");

    await runCli(["--api", sim.url, "settings", PHONE, "--third-party", "off"], io);
    await assert.rejects(runCli(["--api", sim.url, "send", PHONE, ALICE_MXID, "blocked"], io), (err: unknown) => err instanceof CliError && err.code === "third_party_disabled");
    // As a process: one line on stderr, exit status 1.
    const result = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [SIM_CLI, "--api", sim.url, "send", PHONE, ALICE_MXID, "blocked"], (err, _stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
      );
      child.stdin?.end();
    });
    assert.equal(result.code, 1);
    assert.match(result.stderr, /^error: third_party_disabled: .*Third-Party Chats.*\n$/);
    assert.equal(result.stderr.split("\n").length, 2);
    await runCli(["--api", sim.url, "settings", PHONE, "--third-party", "on"], io);
  });
});
