import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode as cborEncode } from "cbor2";
import { encodeMimi, newTextMessage, type MimiMessage } from "../../src/protocol/mimi.js";
import { MAX_READ_IDS, PayloadError, decodePayload, encodePayload, isSticker, waKindOf, withWaKind, type Payload, type PayloadErrorCode } from "../../src/protocol/payload.js";

const SENDER = "mimi://whatsapp.example/u/+4915123456789";
const ROOM = "mimi://whatsapp.example/r/dm-00112233445566778899aabbccddeeff";
const text = (markdown: string) => encodeMimi(newTextMessage({ sender: SENDER, room: ROOM, markdown }));
const cde = (v: unknown) => cborEncode(v, { cde: true });

function sticker(body: MimiMessage["body"]): Uint8Array {
  const base = newTextMessage({ sender: SENDER, room: ROOM, markdown: "x" });
  return encodeMimi(withWaKind({ ...base, body }, "sticker"));
}

function throwsCode(fn: () => unknown, code: PayloadErrorCode, field?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PayloadError, `expected PayloadError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (field !== undefined) assert.equal(err.field, field, err.message);
    return true;
  });
}

describe("encrypted payload codec", () => {
  it("round-trips every kind", () => {
    const samples: Payload[] = [
      { kind: "content", mimi: text("hi *there*") },
      { kind: "read", ids: [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)] },
      { kind: "status", mimi: text("at the beach") },
      { kind: "disappearing", seconds: 86400 },
      { kind: "disappearing", seconds: 0 },
    ];
    for (const p of samples) assert.deepEqual(decodePayload(encodePayload(p)), p);
  });

  it("encodes deterministically (keys in bytewise order) and refuses other encodings", () => {
    const bytes = encodePayload({ kind: "disappearing", seconds: 5 });
    assert.deepEqual(Buffer.from(bytes), Buffer.from(cde({ kind: "disappearing", seconds: 5 })));
    // Same map, keys in the wrong order: a0 map(2) "seconds" 5 "kind" "disappearing"
    const unordered = Buffer.concat([
      Buffer.from([0xa2, 0x67]),
      Buffer.from("seconds"),
      Buffer.from([0x05, 0x64]),
      Buffer.from("kind"),
      Buffer.from([0x6c]),
      Buffer.from("disappearing"),
    ]);
    throwsCode(() => decodePayload(unordered), "malformed", "payload");
    // Integer in a longer form than needed (0x18 0x05 instead of 0x05).
    const longInt = Buffer.concat([Buffer.from(bytes.subarray(0, -1)), Buffer.from([0x18, 0x05])]);
    throwsCode(() => decodePayload(longInt), "malformed", "payload");
    throwsCode(() => decodePayload(new Uint8Array([0xff])), "malformed", "payload");
    throwsCode(() => decodePayload(Buffer.concat([Buffer.from(bytes), Buffer.from([0x00])])), "malformed", "payload");
  });

  it("names the offending field", () => {
    throwsCode(() => decodePayload(cde(["content"])), "malformed", "payload");
    throwsCode(() => decodePayload(cde({ mimi: text("x") })), "malformed", "kind");
    throwsCode(() => decodePayload(cde({ kind: "content" })), "malformed", "mimi");
    throwsCode(() => decodePayload(cde({ kind: "content", mimi: "text" })), "malformed", "mimi");
    throwsCode(() => decodePayload(cde({ kind: "content", mimi: new Uint8Array([1, 2, 3]) })), "bad_mimi", "mimi");
    throwsCode(() => decodePayload(cde({ kind: "read", ids: [] })), "malformed", "ids");
    throwsCode(() => decodePayload(cde({ kind: "read", ids: [new Uint8Array(16)] })), "malformed", "ids[0]");
    const tooMany = Array.from({ length: MAX_READ_IDS + 1 }, () => new Uint8Array(32));
    throwsCode(() => decodePayload(cde({ kind: "read", ids: tooMany })), "malformed", "ids");
    throwsCode(() => decodePayload(cde({ kind: "disappearing", seconds: -1 })), "malformed", "seconds");
    throwsCode(() => decodePayload(cde({ kind: "disappearing", seconds: 1.5 })), "malformed", "seconds");
    throwsCode(() => decodePayload(cde({ kind: "disappearing", seconds: 2 ** 32 })), "malformed", "seconds");
    throwsCode(() => decodePayload(cde({ kind: "poll", question: "?" })), "unknown_kind", "kind");
  });

  it("ignores fields it does not know (forward compatibility)", () => {
    const decoded = decodePayload(cde({ kind: "disappearing", seconds: 60, note: "later field" }));
    assert.deepEqual(decoded, { kind: "disappearing", seconds: 60 });
  });

  it("checks the encoder's input like the decoder's", () => {
    throwsCode(() => encodePayload({ kind: "read", ids: [] }), "malformed", "ids");
    throwsCode(() => encodePayload({ kind: "nope" } as unknown as Payload), "unknown_kind", "kind");
  });

  it("marks stickers with x-wa-kind and requires an image/webp body", () => {
    const webp = sticker({ disposition: 1, language: "", cardinality: "single", contentType: "image/webp", content: new Uint8Array([1, 2]) });
    const decoded = decodePayload(encodePayload({ kind: "content", mimi: webp }));
    assert.equal(decoded.kind, "content");
    const message = withWaKind(newTextMessage({ sender: SENDER, room: ROOM, markdown: "x" }), "sticker");
    assert.equal(waKindOf(message), "sticker");
    assert.ok(isSticker(message));
    assert.equal(isSticker(newTextMessage({ sender: SENDER, room: ROOM, markdown: "x" })), false);
    const png = sticker({ disposition: 1, language: "", cardinality: "single", contentType: "image/png", content: new Uint8Array([1]) });
    throwsCode(() => decodePayload(cde({ kind: "content", mimi: png })), "bad_mimi", "mimi.body");
    // A markdown body marked as sticker is not a sticker either.
    throwsCode(() => decodePayload(cde({ kind: "content", mimi: encodeMimi(message) })), "bad_mimi", "mimi.body");
  });
});
