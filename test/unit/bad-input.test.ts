/**
 * Bad input, generated (fast-check, at least 1,000 cases each): every decoder and validator
 * the outside world can reach either accepts an input or refuses it with its own typed error
 * and a one-line reason naming what is wrong, and never throws anything else.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { decode as cborDecode, encode as cborEncode } from "cbor2";
import fc from "fast-check";
import YAML from "yaml";
import { AppServiceRegistration } from "matrix-appservice-bridge";
import { ConfigError, validateConfig } from "../../src/config";
import { GhostIds } from "../../src/matrix/ghost-ids";
import { fillRegistration } from "../../src/matrix/registration";
import { matrixToRemote, remoteToMatrix } from "../../src/convert/message-content";
import { mimiToRemoteContent } from "../../src/network/mimi-content";
import { ProtocolError, decodeFrame, dmRoomUri, encodeFrame, type Frame } from "../../src/protocol/frames.js";
import { MimiError, decodeMimi, encodeMimi, mimiFromJson, mimiToJson, newTextMessage } from "../../src/protocol/mimi.js";
import { PayloadError, decodePayload, encodePayload } from "../../src/protocol/payload.js";

const RUNS = 1000;
const alice = "mimi://matrix.example.org/u/@alice:example.org";
const wanda = "mimi://whatsapp.example/u/+4915123456789";
const room = dmRoomUri(alice, wanda, "whatsapp.example");

/** Tallies what a property saw, for the diagnostic line each test prints. */
class Tally {
  cases = 0;
  accepted = 0;
  refused = new Map<string, number>();
  refuse(code: string): void {
    this.refused.set(code, (this.refused.get(code) ?? 0) + 1);
  }
  toString(): string {
    const refused = [...this.refused].map(([code, n]) => `${n} ${code}`).join(", ");
    return `${this.cases} generated cases: ${this.accepted} accepted, refused: ${refused || "none"}`;
  }
}

/** A clear reason: one line, not empty. */
function assertClear(message: string): void {
  assert.ok(message.length > 0 && !message.includes("\n"), `a one-line reason, got ${JSON.stringify(message)}`);
}

/** Values CBOR (and JSON, without bytes) can carry, nested a little. */
const cborValue: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.string({ maxLength: 20 }),
    fc.integer(),
    fc.double({ noNaN: true }),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 40 }),
    fc.array(tie("v"), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 8 }), tie("v"), { maxKeys: 4 }),
  ),
})).v;
const jsonValue = fc.jsonValue({ maxDepth: 3 });

type Mutation = { at: number; kind: "replace" | "delete" | "add"; value: unknown; key: string };
const mutation = (values: fc.Arbitrary<unknown>) =>
  fc.record({ at: fc.nat(), kind: fc.constantFrom("replace", "delete", "add"), value: values, key: fc.string({ maxLength: 8 }) }) as fc.Arbitrary<Mutation>;

/** Applies one mutation at one of the value's nodes (objects' fields, arrays' elements). */
function mutate(root: unknown, m: Mutation): unknown {
  const copy = structuredClone(root);
  const containers: Array<Record<string, unknown> | unknown[]> = [];
  const walk = (v: unknown) => {
    if (v instanceof Uint8Array || v === null || typeof v !== "object") return;
    containers.push(v as Record<string, unknown>);
    for (const child of Object.values(v as Record<string, unknown>)) walk(child);
  };
  walk(copy);
  if (containers.length === 0) return m.value;
  const target = containers[m.at % containers.length];
  const keys = Object.keys(target);
  const key = keys.length ? keys[Math.floor(m.at / containers.length) % keys.length] : m.key;
  if (Array.isArray(target)) {
    const i = Number(key) || 0;
    if (m.kind === "delete") target.splice(i, 1);
    else if (m.kind === "add") target.push(m.value);
    else target[i] = m.value;
  } else if (m.kind === "delete") delete target[key];
  else target[m.kind === "add" ? m.key : key] = m.value;
  return copy;
}

const validFrames: Frame[] = [
  { t: "send", rid: 7, from: alice, to: wanda, room, id: new Uint8Array(16).fill(1), payload: { type: 3, body: new Uint8Array([1, 2, 3]) } },
  { t: "hello", provider: "matrix.example.org", secret: "s3cret-s3cret", version: 1 },
  { t: "ack", user: alice, seq: 12 },
  { t: "login", rid: 1, user: alice },
  { t: "typing", from: alice, to: wanda, room, state: "on" },
] as Frame[];

/**
 * A decoder or validator the outside world reaches: inputs generated for it, what it must do
 * with what it accepts, and the one error type it may refuse with.
 */
interface Target<E extends Error> {
  title: string;
  /** Names it in the diagnostic line. */
  name: string;
  inputs: fc.Arbitrary<unknown>;
  /** Runs one input; throws what the target throws. Checks on what it accepted go here. */
  accept(input: unknown): void;
  refusal: abstract new (...args: never[]) => E;
  /** How a refusal is counted (its code) and any further checks of it. */
  refused(err: E): string;
  /** Cases found by the property before, checked as examples. */
  examples?(): void;
}

const validMimi = encodeMimi(newTextMessage({ sender: alice, room, markdown: "**hello** _world_" }));
const validMimiJson = JSON.parse(JSON.stringify(mimiToJson(decodeMimi(validMimi)))) as unknown;
/** The sample config with real secrets in place of its placeholders (which the bridge refuses). */
function samplePlusSecrets(): Record<string, any> {
  const c = YAML.parse(fs.readFileSync(path.resolve(__dirname, "../../../config/config.sample.yaml"), "utf8"));
  c.network.provider_secret = "provider-secret-0123456789";
  c.network.store_key = "store-key-0123456789abcdef";
  return c;
}
const sampleConfig = samplePlusSecrets() as unknown;

const targets: Target<Error>[] = [
  {
    title: "wire frames: decodeFrame accepts a valid frame or refuses with bad_frame, whatever the bytes",
    name: "decodeFrame",
    inputs: fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc.tuple(fc.constantFrom(...validFrames), mutation(cborValue)).map(([frame, m]) => {
        const value = mutate(cborDecode(encodeFrame(frame)), m);
        try {
          return cborEncode(value, { cde: true });
        } catch {
          return new Uint8Array(cborEncode(String(value)));
        }
      }),
      fc.tuple(fc.constantFrom(...validFrames), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([frame, at, byte]) => {
        const b = new Uint8Array(encodeFrame(frame));
        b[at % b.length] = byte;
        return b;
      }),
    ),
    accept: (input) => assert.equal(typeof decodeFrame(input as Uint8Array, { maxFrameBytes: 256 * 1024 }).t, "string"),
    refusal: ProtocolError,
    refused: (err) => {
      const { code } = err as ProtocolError;
      assert.ok(code === "bad_frame" || code === "too_large");
      return code;
    },
    examples: () =>
      assert.throws(
        () => decodeFrame(new Uint8Array(300), { maxFrameBytes: 200 }),
        (e: unknown) => e instanceof ProtocolError && e.code === "too_large",
      ),
  },
  {
    title: "MIMI content: decodeMimi accepts or refuses with a MimiError; what it accepts re-encodes to the same bytes and converts for the core",
    name: "decodeMimi",
    inputs: fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      mutation(cborValue).map((m) => {
        try {
          return cborEncode(mutate(cborDecode(validMimi), m), { cde: true });
        } catch {
          return new Uint8Array([0xff]);
        }
      }),
      fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
        const b = new Uint8Array(validMimi);
        b[at % b.length] = byte;
        return b;
      }),
    ),
    accept: (input) => {
      const message = decodeMimi(input as Uint8Array);
      assert.deepEqual(encodeMimi(message), new Uint8Array(input as Uint8Array), "an accepted message re-encodes to its own bytes");
      const content = mimiToRemoteContent(message);
      assert.ok(content.type === "text" || content.type === "unsupported");
    },
    refusal: MimiError,
    refused: (err) => (err as MimiError).code,
  },
  {
    title: "MIMI content: mimiFromJson accepts or refuses with INVALID_JSON naming the field",
    name: "mimiFromJson",
    inputs: fc.oneof(
      jsonValue,
      mutation(jsonValue).map((m) => mutate(validMimiJson, m)),
    ),
    accept: (input) => void encodeMimi(mimiFromJson(input as never)),
    refusal: MimiError,
    refused: (err) => (err as MimiError).code,
  },
  {
    title: "payloads: decodePayload accepts or refuses with a PayloadError",
    name: "decodePayload",
    inputs: fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      fc
        .tuple(
          fc.constantFrom(
            encodePayload({ kind: "content", mimi: validMimi }),
            encodePayload({ kind: "read", ids: [new Uint8Array(32).fill(3)] } as never),
            encodePayload({ kind: "disappearing", seconds: 3600 } as never),
          ),
          mutation(cborValue),
        )
        .map(([valid, m]) => {
          try {
            return cborEncode(mutate(cborDecode(valid), m), { cde: true });
          } catch {
            return new Uint8Array([0xa0]);
          }
        }),
    ),
    accept: (input) => void decodePayload(input as Uint8Array),
    refusal: PayloadError,
    refused: (err) => (err as PayloadError).code,
    // Found by this property: CBOR `undefined` (alone or as a value) decoded, then failed to re-encode with a plain Error.
    examples: () => {
      for (const hex of ["f7", "a1646b696e64f7"])
        assert.throws(
          () => decodePayload(Buffer.from(hex, "hex")),
          (e: unknown) => e instanceof PayloadError && e.code === "malformed",
        );
    },
  },
  {
    title: "configs: validateConfig accepts or refuses with one line naming the setting",
    name: "validateConfig",
    inputs: fc.oneof({ weight: 1, arbitrary: jsonValue }, { weight: 5, arbitrary: fc.array(mutation(jsonValue), { minLength: 1, maxLength: 3 }) }),
    accept: (input) => {
      const config =
        Array.isArray(input) && input.every((m) => typeof m === "object" && m !== null && "kind" in m) ? (input as Mutation[]).reduce((c, m) => mutate(c, m), sampleConfig) : input;
      validateConfig(config, "/tmp");
    },
    refusal: ConfigError,
    refused: (err) => {
      const { field, message } = err as ConfigError;
      assert.ok(message.startsWith(`${field || "config"}: `), `starts with the setting it is about: ${message}`);
      return "ConfigError";
    },
  },
];

describe("bad input, generated", () => {
  for (const target of targets) {
    it(target.title, (t) => {
      const tally = new Tally();
      fc.assert(
        fc.property(target.inputs, (input) => {
          tally.cases++;
          try {
            target.accept(input);
            tally.accepted++;
          } catch (err) {
            assert.ok(err instanceof target.refusal, `a ${target.refusal.name}, got ${String(err)}`);
            assertClear(err.message);
            tally.refuse(target.refused(err));
          }
        }),
        { numRuns: RUNS },
      );
      target.examples?.();
      t.diagnostic(`${target.name}: ${tally}`);
      assert.ok(tally.cases >= RUNS);
    });
  }

  it("Matrix events: matrixToRemote converts a message or names why it cannot, whatever the content", (t) => {
    const TEXT_MSGTYPES = ["m.text", "m.notice", "m.emote"];
    const MEDIA_MSGTYPES = ["m.image", "m.video", "m.audio", "m.file"];
    const tally = new Tally();
    const oddString = fc.oneof(
      fc.string({ maxLength: 30 }),
      fc.constantFrom("m.text", "m.notice", "m.emote", "m.image", "m.file", "m.audio", "m.video", "m.location", "m.sticker", "", "M.TEXT", "m.text\u0000", "org.example.custom"),
    );
    const mxc = fc.oneof(
      fc.constantFrom("mxc://", "mxc://server", "mxc://server/", "mxc:///id", "http://evil.example/x", "mxc://ser ver/id", "mxc://server/../../etc"),
      fc.string({ maxLength: 30 }),
    );
    const mimetype = fc.oneof(fc.constantFrom("image/png", "", "image/", "text/html", "application/x-msdownload", "image/svg+xml", "a/b;c=d", "ÿ/ÿ"), fc.string({ maxLength: 20 }));
    const content = fc.record(
      {
        msgtype: fc.oneof(oddString, cborValue),
        body: fc.oneof(fc.string({ maxLength: 200 }), fc.string({ minLength: 70_000, maxLength: 70_001 }), cborValue),
        format: fc.oneof(fc.constant("org.matrix.custom.html"), cborValue),
        formatted_body: fc.oneof(
          fc.string({ maxLength: 200 }).map((s) => `<b>${s}</i><a href="${s}">x</a><table><tr><td>${s}`),
          cborValue,
        ),
        url: fc.oneof(mxc, cborValue),
        info: fc.oneof(fc.record({ mimetype, size: fc.oneof(fc.integer(), cborValue), w: cborValue }, { requiredKeys: [] }), cborValue),
        "m.relates_to": fc.oneof(
          fc.record({ "m.in_reply_to": fc.oneof(fc.record({ event_id: cborValue }), cborValue), rel_type: oddString, event_id: cborValue }, { requiredKeys: [] }),
          cborValue,
        ),
        "m.new_content": cborValue,
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(content, (c) => {
        tally.cases++;
        const result = matrixToRemote(c as Record<string, unknown>);
        if ("unbridgeable" in result) {
          assert.equal(result.unbridgeable, true);
          assertClear(result.reason);
          tally.refuse("unbridgeable");
        } else {
          // What is accepted is text with its markdown, or media still on the homeserver (an mxc URI the input gave).
          if (result.type === "text") {
            assert.equal(typeof result.markdown, "string");
            assert.ok(TEXT_MSGTYPES.includes(String(c.msgtype)), `text only from a text msgtype, not ${JSON.stringify(c.msgtype)}`);
            assert.equal(typeof c.body, "string", "text only from a string body");
          } else {
            assert.equal(result.type, "media", `an accepted message is text or media, not ${JSON.stringify(result)}`);
            assert.deepEqual(result.source, { from: "matrix", mxc: c.url }, "media names the mxc URI it was given");
            assert.match(String(c.url), /^mxc:\/\/[^/\s]+\/[^/\s]+$/, "and only a well-formed one");
            assert.ok(MEDIA_MSGTYPES.includes(String(c.msgtype)), `media only from a media msgtype, not ${JSON.stringify(c.msgtype)}`);
            assert.ok(["image", "video", "voice", "audio", "file"].includes(result.media.kind));
            assert.equal(typeof result.media.mimetype, "string");
            assert.ok(result.media.filename.length > 0, "a file name, even when the event had none");
          }
          // What the core accepts converts back to Matrix without error.
          remoteToMatrix(result);
          tally.accepted++;
        }
      }),
      { numRuns: RUNS },
    );
    t.diagnostic(`matrixToRemote: ${tally}`);
    assert.ok(tally.cases >= RUNS);
  });

  it("ghost ids: whatever a remote id or Matrix id looks like, the bridge only acts inside the namespace it registered", (t) => {
    const config = validateConfig(samplePlusSecrets(), "/tmp");
    const registration = fillRegistration(new AppServiceRegistration("http://127.0.0.1:1"), config, "http://127.0.0.1:1");
    const claimed = (id: string) => registration.isUserMatch(id, true);
    const ids = new GhostIds(config);
    const tally = new Tally();
    const remoteId = fc.oneof(fc.string({ maxLength: 20 }), fc.stringMatching(/^\+?[0-9]{1,17}$/), fc.constantFrom("+49 151", "+١٢٣", "+0", "+4915123456789:evil", "../1"));
    const mxid = fc.oneof(
      fc.string({ maxLength: 40 }),
      remoteId.map((r) => `@whatsapp_${r}:${config.homeserver.domain}`),
      fc.constantFrom(`@whatsapp_1:${config.homeserver.domain}.evil`, `@whatsapp_1:${config.homeserver.domain}:1`, "@whatsapp_1:other", `@Whatsapp_1:${config.homeserver.domain}`),
    );
    fc.assert(
      fc.property(remoteId, mxid, (remote, matrixId) => {
        tally.cases++;
        try {
          const ghost = ids.mxidFor(remote);
          assert.ok(claimed(ghost), `${ghost} is inside the namespace`);
          assert.equal(ids.remoteIdOf(ghost), `+${remote.replace(/^\+/, "")}`, "and maps back");
          tally.accepted++;
        } catch (err) {
          assert.match((err as Error).message, /^not an E\.164 number: /);
          tally.refuse("not E.164");
        }
        if (ids.remoteIdOf(matrixId) !== null) assert.ok(claimed(matrixId), `${matrixId} is treated as a ghost only inside the namespace`);
      }),
      { numRuns: RUNS },
    );
    t.diagnostic(`ghost ids: ${tally}`);
  });
});
