// The encrypted payload codec at its edges: what each refusal says (the receiver logs it, the
// sender's author reads it), the exact limits, byte strings that arrive as Buffers, and the
// "x-wa-kind" / "x-wa-media" extensions read and written on their own.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode as cborEncode } from "cbor2";
import { encodeMimi, newTextMessage, type MimiMessage } from "../../src/protocol/mimi.js";
import {
  MAX_DISAPPEARING_SECONDS,
  MAX_READ_IDS,
  PayloadError,
  WA_KIND_EXTENSION,
  WA_MEDIA_EXTENSION,
  decodePayload,
  encodePayload,
  waKindOf,
  waMediaOf,
  withWaKind,
  withWaMedia,
  type Payload,
} from "../../src/protocol/payload.js";

const SENDER = "mimi://whatsapp.example/u/+4915123456789";
const ROOM = "mimi://whatsapp.example/r/dm-00112233445566778899aabbccddeeff";
const message = (): MimiMessage => newTextMessage({ sender: SENDER, room: ROOM, markdown: "x" });
const cde = (v: unknown) => cborEncode(v, { cde: true });

/** The PayloadError that fn throws (fails when it throws anything else or nothing). */
function refusal(fn: () => unknown): PayloadError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PayloadError, `expected a PayloadError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a PayloadError, nothing was thrown");
}

const withExtension = (key: string, encodedValue: Uint8Array): MimiMessage => {
  const base = message();
  return { ...base, extensions: { ...base.extensions, unknown: [...base.extensions.unknown, { key, encodedValue }] } };
};

describe("payload refusals say what was wrong", () => {
  it("the error is a PayloadError named so, its message led by the field", () => {
    const err = refusal(() => decodePayload(cde({ kind: "disappearing", seconds: -1 })));
    assert.equal(err.name, "PayloadError");
    assert.equal(err.code, "malformed");
    assert.equal(err.field, "seconds");
    assert.equal(err.message, "seconds: must be an unsigned integer, got the integer -1");
    const bare = new PayloadError("malformed", "no field");
    assert.equal(bare.message, "no field");
    assert.equal(bare.field, undefined);
  });

  it("describes the value it found", () => {
    const found = (value: unknown) => refusal(() => decodePayload(cde(value))).message;
    assert.equal(found(null), "payload: must be a map with text keys, got null");
    assert.equal(found(["x"]), "payload: must be a map with text keys, got an array");
    assert.equal(found(new Uint8Array(3)), "payload: must be a map with text keys, got a byte string of 3 bytes");
    assert.equal(found(new Map([[1, "x"]])), "payload: must be a map with text keys, got a map with non-text keys");
    assert.equal(found("text"), "payload: must be a map with text keys, got a string");
    assert.equal(found(true), "payload: must be a map with text keys, got a boolean");
    assert.equal(found(7), "payload: must be a map with text keys, got the integer 7");
    assert.equal(found({ kind: 2n ** 60n }), "kind: must be a text string, got an integer beyond 2^53-1");
    assert.equal(found({ kind: 1.5 }), "kind: must be a text string, got a float");
    assert.equal(found({ kind: { a: 1 } }), "kind: must be a text string, got an object");
    assert.equal(found({ seconds: 1 }), "kind: must be a text string, got nothing");
    assert.equal(found({ kind: "read", ids: "x" }), "ids: must be an array, got a string");
    assert.equal(found({ kind: "read", ids: [] }), `ids: must hold 1..${MAX_READ_IDS} ids, got 0`);
    assert.equal(found({ kind: "read", ids: [new Uint8Array(32), new Uint8Array(31)] }), "ids[1]: must be exactly 32 bytes, got 31");
    assert.equal(found({ kind: "read", ids: [new Uint8Array(32), "id"] }), "ids[1]: must be a byte string, got a string");
    assert.equal(found({ kind: "disappearing", seconds: 2 ** 32 }), `seconds: must be at most ${MAX_DISAPPEARING_SECONDS}`);
    assert.equal(found({ kind: "disappearing", seconds: "5" }), "seconds: must be an unsigned integer, got a string");
  });

  it("an unknown kind is named, cut to 64 characters", () => {
    const err = refusal(() => decodePayload(cde({ kind: "p".repeat(100) })));
    assert.equal(err.code, "unknown_kind");
    assert.equal(err.message, `kind: names an unknown payload kind "${"p".repeat(64)}"`);
  });

  it("a MIMI message that does not decode is bad_mimi, with the MIMI codec's reason", () => {
    const err = refusal(() => decodePayload(cde({ kind: "status", mimi: new Uint8Array([1, 2, 3]) })));
    assert.equal(err.code, "bad_mimi");
    assert.match(err.message, /^mimi: is not a valid MIMI message \(.+\)$/);
  });

  it("input that is not bytes, not CBOR, or holds undefined is refused as malformed", () => {
    const notBytes = refusal(() => decodePayload("a0" as unknown as Uint8Array));
    assert.equal(notBytes.message, "payload: must be bytes, got a string");
    const truncated = refusal(() => decodePayload(new Uint8Array([0xa1, 0x64])));
    assert.equal(truncated.code, "malformed");
    assert.match(truncated.message, /^payload: is not one deterministically encoded CBOR item: /);
    // {"kind": undefined}: decodes, but a payload may not carry undefined.
    const undef = refusal(() => decodePayload(new Uint8Array([0xa1, 0x64, ...Buffer.from("kind"), 0xf7])));
    assert.equal(undef.code, "malformed");
    assert.match(undef.message, /^payload: holds a value a payload may not carry: /);
  });

  it("an indefinite-length map is refused even with its keys in order", () => {
    const definite = cde({ kind: "disappearing", seconds: 5 });
    const streamed = new Uint8Array([0xbf, ...definite.subarray(1), 0xff]);
    const err = refusal(() => decodePayload(streamed));
    assert.equal(err.field, "payload");
  });

  it("nesting past the decoder's depth limit (8, as cbor2 counts it) is refused before any field is read", () => {
    const nested = (levels: number): unknown => (levels === 0 ? 1 : [nested(levels - 1)]);
    // An unknown field holding 3 nested arrays is at the limit; one more is past it.
    assert.deepEqual(decodePayload(cde({ kind: "disappearing", seconds: 1, later: nested(3) })), { kind: "disappearing", seconds: 1 });
    const err = refusal(() => decodePayload(cde({ kind: "disappearing", seconds: 1, later: nested(4) })));
    assert.equal(err.field, "payload");
    assert.match(err.message, /is not one deterministically encoded CBOR item: Maximum depth 8 exceeded/);
  });
});

describe("payload limits", () => {
  it("accepts exactly MAX_READ_IDS ids and a timer of exactly 2^32-1 seconds", () => {
    const ids = Array.from({ length: MAX_READ_IDS }, (_, i) => new Uint8Array(32).fill(i));
    assert.equal((decodePayload(encodePayload({ kind: "read", ids })) as { ids: Uint8Array[] }).ids.length, MAX_READ_IDS);
    assert.deepEqual(decodePayload(encodePayload({ kind: "disappearing", seconds: MAX_DISAPPEARING_SECONDS })), { kind: "disappearing", seconds: MAX_DISAPPEARING_SECONDS });
  });

  it("the encoder refuses what the decoder refuses, before encoding anything", () => {
    assert.equal(refusal(() => encodePayload({ kind: "disappearing", seconds: -5 })).field, "seconds");
    assert.equal(refusal(() => encodePayload({ kind: "content", mimi: new Uint8Array([9]) })).code, "bad_mimi");
    assert.equal(refusal(() => encodePayload({ kind: "read", ids: [new Uint8Array(5)] })).field, "ids[0]");
  });
});

describe("payload byte strings that are Buffers", () => {
  it("are encoded as plain byte strings and decoded as plain Uint8Arrays", () => {
    const mimi = encodeMimi(message());
    const id = new Uint8Array(32).fill(7);
    const asBuffers: Payload[] = [
      { kind: "content", mimi: Buffer.from(mimi) },
      { kind: "read", ids: [Buffer.from(id)] },
    ];
    const plain: Payload[] = [
      { kind: "content", mimi },
      { kind: "read", ids: [id] },
    ];
    for (const [i, payload] of asBuffers.entries()) {
      const bytes = encodePayload(payload);
      assert.deepEqual(Buffer.from(bytes), Buffer.from(encodePayload(plain[i]!)), "the same bytes as from a Uint8Array");
      const back = decodePayload(Buffer.from(bytes));
      const fields = back.kind === "content" ? [back.mimi] : back.kind === "read" ? back.ids : [];
      for (const field of fields) assert.equal(Object.getPrototypeOf(field), Uint8Array.prototype, "a plain Uint8Array, not a Buffer");
      assert.deepEqual(back, plain[i]);
    }
  });
});

describe("x-wa-kind", () => {
  it("a status is checked for stickers like content; an external webp sticker is fine", () => {
    const base = message();
    const png = encodeMimi(
      withWaKind({ ...base, body: { disposition: 1, language: "", cardinality: "single", contentType: "image/png", content: new Uint8Array([1]) } }, "sticker"),
    );
    const err = refusal(() => decodePayload(cde({ kind: "status", mimi: png })));
    assert.equal(err.code, "bad_mimi");
    assert.equal(err.field, "mimi.body");
    assert.equal(err.message, "mimi.body: a sticker's body must be one single or external image/webp part");
    const external = withWaKind(
      {
        ...base,
        body: {
          disposition: 1,
          language: "",
          cardinality: "external",
          contentType: "image/webp",
          url: "https://media.example/s",
          expires: 0,
          size: 10,
          encAlg: 0,
          key: new Uint8Array(0),
          nonce: new Uint8Array(0),
          aad: new Uint8Array(0),
          hashAlg: 1,
          contentHash: new Uint8Array(32),
          description: "",
          filename: "s.webp",
        },
      },
      "sticker",
    );
    const bytes = encodeMimi(external);
    assert.deepEqual(decodePayload(encodePayload({ kind: "content", mimi: bytes })), { kind: "content", mimi: bytes });
  });

  it("another kind (a voice note) with a markdown body is not held to the sticker rule", () => {
    const bytes = encodeMimi(withWaKind(message(), "voice"));
    assert.deepEqual(decodePayload(encodePayload({ kind: "content", mimi: bytes })), { kind: "content", mimi: bytes });
  });

  it("withWaKind replaces an earlier value and keeps the other extensions", () => {
    const other = { key: "x-later", encodedValue: cde("keep") };
    const base = withExtension(other.key, other.encodedValue);
    const twice = withWaKind(withWaKind(base, "sticker"), "voice");
    assert.equal(waKindOf(twice), "voice");
    assert.deepEqual(
      twice.extensions.unknown.map((e) => e.key),
      ["x-later", WA_KIND_EXTENSION],
    );
    assert.deepEqual(twice.extensions.unknown[1]!.encodedValue, cde("voice"));
    assert.equal(waKindOf(base), undefined, "the original is not changed");
  });

  it("a non-text x-wa-kind is no kind at all", () => {
    assert.equal(waKindOf(withExtension(WA_KIND_EXTENSION, cde(7))), undefined);
    assert.equal(waKindOf(withExtension("x-other", cde("sticker"))), undefined);
  });
});

describe("x-wa-media", () => {
  it("writes width and height only as a pair, a duration, and up to 100 waveform samples", () => {
    const m = withWaMedia(message(), { width: 640, height: 480, durationMs: 1500, waveform: new Uint8Array(150).fill(9) });
    const ext = m.extensions.unknown.find((e) => e.key === WA_MEDIA_EXTENSION);
    assert.ok(ext);
    assert.deepEqual(ext.encodedValue, cde({ width: 640, height: 480, durationMs: 1500, waveform: new Uint8Array(100).fill(9) }));
    assert.deepEqual(waMediaOf(m), { width: 640, height: 480, durationMs: 1500, waveform: new Uint8Array(100).fill(9) });
    assert.deepEqual(waMediaOf(withWaMedia(message(), { width: 640 })), {}, "a width alone is left out");
    assert.deepEqual(waMediaOf(withWaMedia(message(), { height: 480 })), {}, "a height alone is left out");
    assert.deepEqual(waMediaOf(withWaMedia(message(), { durationMs: 20 })), { durationMs: 20 });
  });

  it("an empty info adds nothing and drops an earlier value; a new value replaces it", () => {
    const other = { key: "x-later", encodedValue: cde("keep") };
    const first = withWaMedia(withExtension(other.key, other.encodedValue), { durationMs: 5 });
    const replaced = withWaMedia(first, { durationMs: 6 });
    assert.deepEqual(
      replaced.extensions.unknown.map((e) => e.key),
      ["x-later", WA_MEDIA_EXTENSION],
    );
    assert.deepEqual(waMediaOf(replaced), { durationMs: 6 });
    const emptied = withWaMedia(first, { waveform: new Uint8Array(0) });
    assert.deepEqual(emptied.extensions.unknown, [other]);
    assert.deepEqual(waMediaOf(message()), {});
  });

  it("reads only sane hints: positive safe integers, 1..100 waveform samples, a map", () => {
    const read = (value: unknown) => waMediaOf(withExtension(WA_MEDIA_EXTENSION, cde(value)));
    assert.deepEqual(read({ width: 0, height: 5, durationMs: -1 }), {});
    assert.deepEqual(read({ width: 2.5, height: 5, durationMs: 1.5 }), {});
    assert.deepEqual(read({ width: "640", height: 480, durationMs: "9" }), {});
    assert.deepEqual(read({ width: 1, height: 1, durationMs: 1 }), { width: 1, height: 1, durationMs: 1 });
    assert.deepEqual(read({ waveform: new Uint8Array(0) }), {});
    assert.deepEqual(read({ waveform: new Uint8Array(101) }), {});
    assert.deepEqual(read({ waveform: [1, 2] }), {});
    assert.deepEqual(read({ waveform: new Uint8Array([4]) }), { waveform: new Uint8Array([4]) });
    assert.deepEqual(read({ waveform: new Uint8Array(100) }), { waveform: new Uint8Array(100) });
    assert.deepEqual(read([640, 480]), {});
    assert.deepEqual(read(null), {});
  });

  it("a waveform read back is a plain Uint8Array", () => {
    const m = withWaMedia(message(), { waveform: Buffer.from([1, 2, 3]) });
    const waveform = waMediaOf(m).waveform!;
    assert.equal(Object.getPrototypeOf(waveform), Uint8Array.prototype);
    assert.deepEqual([...waveform], [1, 2, 3]);
  });
});
