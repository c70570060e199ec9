/**
 * Bad input over a real socket: the gateway process gets 1,000+ generated bad frames (before
 * and after the handshake), a text frame and an oversized frame. It answers each with an
 * error frame or closes that one connection with the documented code, and stays up: a
 * well-behaved provider connects and works afterwards.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, it } from "node:test";
import { decode as cborDecode, encode as cborEncode } from "cbor2";
import fc from "fast-check";
import WebSocket from "ws";
import { DEFAULT_LIMITS, decodeFrame, dmRoomUri, encodeFrame, type Frame } from "../../src/protocol/frames.js";
import { GatewayProcess, until } from "../support/gateway-process.js";

const HOME = "whatsapp.example";
const THIRD = "matrix.example.org";
const SECRETS = { [HOME]: "home-secret-1234", [THIRD]: "third-secret-1234" };
const alice = `mimi://${THIRD}/u/@alice:example.org`;
const wanda = `mimi://${HOME}/u/+4915123456789`;

let dir: string;
let gw: GatewayProcess;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "mib-gwfuzz-"));
  gw = new GatewayProcess({ dbPath: path.join(dir, "gw.db"), recordPath: path.join(dir, "frames.log"), homeProvider: HOME, providers: SECRETS });
  await gw.start(0);
});

after(async () => {
  await gw.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A bare socket that records the gateway's frames and how it closed. */
class Raw {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  closed?: number;
  private constructor() {
    this.ws = new WebSocket(gw.url);
    this.ws.on("message", (data) => this.frames.push(decodeFrame(data as Buffer)));
    this.ws.on("close", (code) => (this.closed = code));
    this.ws.on("error", () => undefined);
  }
  static async open(hello: boolean): Promise<Raw> {
    const raw = new Raw();
    await new Promise((resolve, reject) => {
      raw.ws.once("open", resolve);
      raw.ws.once("error", reject);
    });
    if (hello) {
      raw.ws.send(encodeFrame({ t: "hello", provider: THIRD, secret: SECRETS[THIRD], version: 1 }));
      await until("welcome", () => raw.frames.some((f) => f.t === "welcome") || raw.closed !== undefined);
      assert.equal(raw.closed, undefined, "the handshake worked");
    }
    return raw;
  }
  /** A ping the gateway must answer: proves every frame before it was handled and the connection lives. */
  async barrier(nonce: number): Promise<boolean> {
    if (this.closed !== undefined) return false;
    this.ws.send(encodeFrame({ t: "ping", nonce }));
    await until("pong or close", () => this.frames.some((f) => f.t === "pong" && f.nonce === nonce) || this.closed !== undefined, 20_000);
    return this.closed === undefined;
  }
}

const room = dmRoomUri(alice, wanda, HOME);
const validFrames = [
  { t: "send", rid: 7, from: alice, to: wanda, room, id: new Uint8Array(16).fill(1), payload: { type: 3, body: new Uint8Array([1, 2, 3]) } },
  { t: "ack", user: alice, seq: 12 },
  { t: "login", rid: 1, user: alice },
  { t: "keys.fetch", rid: 3, from: alice, user: wanda },
  { t: "typing", from: alice, to: wanda, room, state: "on" },
] as Frame[];

const badBytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 200 }),
  fc
    .tuple(
      fc.constantFrom(...validFrames),
      fc.string({ maxLength: 6 }),
      fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.uint8Array({ maxLength: 20 }), fc.constant(null), fc.boolean()),
    )
    .map(([frame, key, value]) => {
      const map = cborDecode(encodeFrame(frame)) as Record<string, unknown>;
      const keys = Object.keys(map);
      map[key.length > 0 ? key : keys[value === null ? 0 : keys.length - 1]] = value;
      return new Uint8Array(cborEncode(map, { cde: true }));
    }),
  fc.tuple(fc.constantFrom(...validFrames), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([frame, at, byte]) => {
    const b = new Uint8Array(encodeFrame(frame));
    b[at % b.length] = byte;
    return b;
  }),
);

/** Whether the bytes are a frame the protocol accepts (a mutation can produce a valid one). */
function isValidFrame(bytes: Uint8Array): boolean {
  try {
    decodeFrame(bytes);
    return true;
  } catch {
    return false;
  }
}

it("the gateway refuses 1,000 generated bad frames, one connection at a time, and stays up", async (t) => {
  const cases = fc.sample(badBytes, { numRuns: 1000, seed: 20261125 });
  const tally = { cases: 0, valid: 0, errorFrames: 0, closes: new Map<number, number>(), unanswered: 0 };
  const close = (code: number | undefined) => tally.closes.set(code ?? -1, (tally.closes.get(code ?? -1) ?? 0) + 1);
  const DOCUMENTED = [4000, 4001, 4002, 1003];
  let preHandshakeClosed = 0;

  // 100 before the handshake: each must be refused by closing the connection with a documented code.
  for (const bytes of cases.slice(0, 100)) {
    const raw = await Raw.open(false);
    raw.ws.send(bytes);
    await until("close", () => raw.closed !== undefined, 20_000);
    tally.cases++;
    close(raw.closed);
    if (DOCUMENTED.includes(raw.closed!)) preHandshakeClosed++;
  }
  // 900 after it, at most 15 per connection (the 16th bad frame closes it: tested below). Each
  // bad frame is followed by a ping, so every answer is matched to the frame that caused it: one
  // error frame, or the connection closed with a documented code.
  let nonce = 0;
  for (let i = 100; i < cases.length; i += 15) {
    let raw = await Raw.open(true);
    for (const bytes of cases.slice(i, i + 15)) {
      tally.cases++;
      const valid = isValidFrame(bytes);
      if (valid) tally.valid++;
      const before = raw.frames.length;
      raw.ws.send(bytes);
      const alive = await raw.barrier(++nonce);
      const answers = raw.frames.slice(before).filter((f) => !(f.t === "pong" && f.nonce === nonce));
      const errors = answers.filter((f) => f.t === "error").length;
      tally.errorFrames += errors;
      if (!alive) {
        close(raw.closed);
        raw = await Raw.open(true);
      } else if (!valid && errors !== 1) {
        tally.unanswered++;
        t.diagnostic(`not refused: ${Buffer.from(bytes).toString("hex")} → ${JSON.stringify(answers.map((f) => f.t))}`);
      }
    }
    raw.ws.terminate();
  }
  const closed = [...tally.closes.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(
    `gateway socket: ${tally.cases} generated frames (${tally.valid} of them happened to be valid): ${tally.errorFrames} error frames, ${closed} closes by code ${JSON.stringify(Object.fromEntries(tally.closes))}, ${tally.unanswered} bad frames not refused`,
  );
  assert.equal(tally.cases, 1000);
  for (const code of tally.closes.keys()) assert.ok(DOCUMENTED.includes(code), `close code ${code} is a documented refusal`);
  assert.equal(preHandshakeClosed, 100, "every frame before the handshake closed its connection with a documented code");
  assert.equal(tally.unanswered, 0, "every bad frame after the handshake got exactly one error frame or closed its connection");

  // The 16th bad frame on one connection closes it with 4009.
  const noisy = await Raw.open(true);
  for (let i = 0; i < 16; i++) noisy.ws.send(new Uint8Array([0xff, i]));
  await until("4009", () => noisy.closed !== undefined);
  assert.equal(noisy.closed, 4009);

  // A text frame: 1003. An oversized frame: 1009, refused by ws before it is buffered whole.
  const text = await Raw.open(true);
  text.ws.send("hello?");
  await until("1003", () => text.closed !== undefined);
  assert.equal(text.closed, 1003);
  const big = await Raw.open(true);
  big.ws.send(new Uint8Array(DEFAULT_LIMITS.maxFrameBytes + 1));
  await until("1009", () => big.closed !== undefined);
  assert.equal(big.closed, 1009);

  // Still up and serving: a proper connection logs a user in.
  const good = await Raw.open(true);
  good.ws.send(encodeFrame({ t: "enlist", rid: 1, user: alice, displayName: "Alice" }));
  good.ws.send(encodeFrame({ t: "login", rid: 2, user: alice }));
  await until("login answer", () => good.frames.some((f) => f.t === "ok" && f.rid === 2));
  assert.ok(await good.barrier(nonce + 1));
  good.ws.terminate();
});
