/**
 * MIMI codec: builders reproduce the draft's example ids, ids depend on the salt, unknown extensions
 * survive byte for byte, and every malformed input is refused with a MimiError naming the field.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { encode as cborEncode, Tag } from "cbor2";
import {
  computeMessageId,
  decodeMimi,
  encodeMimi,
  messageIdOf,
  MIMI_CONTENT_TYPE_MARKDOWN,
  MIMI_DISPOSITION,
  MimiError,
  type MimiErrorCode,
  mimiFromJson,
  type MimiMessage,
  type MimiSinglePart,
  mimiToJson,
  newAttachment,
  newDelete,
  newEdit,
  newReaction,
  newTextMessage,
  newUnreaction,
} from "../../src/protocol/mimi";
import { runMimiCommand } from "../../src/protocol/mimi-cli";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const unhex = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s/g, ""), "hex"));
const utf8 = (s: string) => new TextEncoder().encode(s);

// Values from the draft's examples (section 5), so builders can be checked against its published ids.
const ROOM = "mimi://example.com/r/engineering_team";
const ALICE = "mimi://example.com/u/alice-smith";
const BOB = "mimi://example.com/u/bob-jones";
const CATHY = "mimi://example.com/u/cathy-washington";
const ORIGINAL_ID = unhex("017ce54837404c3696e0c747b985cb172716d0ed0a3d249ca63ace7d82a096f4");
const REPLY_ID = unhex("015354973c2b65ca937bf1e035ae53a5ab80e947afa43d46920d4202e5cc0b27");
const REACTION_ID = unhex("0158c4288911e50a8f6be3f47746b6682f10fd91bc8c05557aa589a3157aff68");

function withSalt(msg: MimiMessage, saltHex: string): MimiMessage {
  return { ...msg, salt: unhex(saltHex) };
}

function idHex(msg: MimiMessage): string {
  const id = messageIdOf(msg);
  assert.ok(id);
  return hex(id);
}

function roundTrips(msg: MimiMessage): void {
  const bytes = encodeMimi(msg);
  assert.deepEqual(decodeMimi(bytes), msg);
  assert.equal(hex(encodeMimi(mimiFromJson(JSON.parse(JSON.stringify(mimiToJson(msg)))))), hex(bytes));
}

test("newTextMessage reproduces the draft's original and expiring examples", () => {
  const original = newTextMessage({ sender: ALICE, room: ROOM, markdown: "Hi everyone, we just shipped release 2.0. __Good  work__!" });
  assert.equal(original.salt.length, 16);
  assert.equal(original.replaces, null);
  assert.equal(original.inReplyTo, null);
  assert.equal(original.expires, null);
  assert.deepEqual(original.extensions, { senderUri: ALICE, roomUri: ROOM, unknown: [] });
  const body = original.body as MimiSinglePart;
  assert.equal(body.cardinality, "single");
  assert.equal(body.disposition, MIMI_DISPOSITION.render);
  assert.equal(body.contentType, MIMI_CONTENT_TYPE_MARKDOWN);
  assert.equal(new TextDecoder().decode(body.content), "Hi everyone, we just shipped release 2.0. __Good  work__!");
  roundTrips(original);
  assert.equal(idHex(withSalt(original, "5eed9406c2545547ab6f09f20a18b003")), hex(ORIGINAL_ID));

  const expiring = newTextMessage({
    sender: ALICE,
    room: ROOM,
    markdown: "__*VPN GOING DOWN*__ I'm rebooting the VPN in ten minutes unless anyone objects.",
    expires: { relative: false, time: 1644390004 },
  });
  roundTrips(expiring);
  assert.equal(idHex(withSalt(expiring, "33be993eb39f418f9295afc2ae160d2d")), "01e59db8173939facc2c8a4a0f0ae8d0c7a11a81239626630c9464a8d6717a03");
});

test("a reply carries inReplyTo (draft reply example)", () => {
  const reply = newTextMessage({ sender: BOB, room: ROOM, markdown: "Right on! _Congratulations_ 'all!", inReplyTo: ORIGINAL_ID });
  assert.deepEqual(reply.inReplyTo, ORIGINAL_ID);
  roundTrips(reply);
  assert.equal(idHex(withSalt(reply, "11a458c73b8dd2cf404db4b378b8fe4d")), hex(REPLY_ID));
});

test("newReaction and newUnreaction reproduce the draft's reaction and unlike examples", () => {
  const reaction = newReaction({ sender: CATHY, room: ROOM, target: ORIGINAL_ID, emoji: "❤" });
  assert.deepEqual(reaction.inReplyTo, ORIGINAL_ID);
  assert.equal(reaction.replaces, null);
  const part = reaction.body as MimiSinglePart;
  assert.equal(part.disposition, MIMI_DISPOSITION.reaction);
  assert.equal(part.contentType, "text/plain;charset=utf-8");
  assert.equal(hex(part.content), "e29da4");
  roundTrips(reaction);
  assert.equal(idHex(withSalt(reaction, "d37bc0e6a8b4f04e9e6382375f587bf6")), hex(REACTION_ID));

  const unlike = newUnreaction({ sender: CATHY, room: ROOM, reaction: REACTION_ID, target: ORIGINAL_ID });
  assert.deepEqual(unlike.replaces, REACTION_ID);
  assert.deepEqual(unlike.inReplyTo, ORIGINAL_ID);
  assert.deepEqual(unlike.body, { disposition: MIMI_DISPOSITION.reaction, language: "", cardinality: "null" });
  roundTrips(unlike);
  assert.equal(idHex(withSalt(unlike, "c5ba86dc9fd272e58ca52ec805b79199")), "013aadbb8f313253c8930f4e93c6ca54b2ed06d258185bdcec3870534c8a4ec4");
});

test("newEdit and newDelete reproduce the draft's edit and delete examples", () => {
  const edit = newEdit({ sender: BOB, room: ROOM, replaces: REPLY_ID, markdown: "Right on! _Congratulations_ y'all!", inReplyTo: ORIGINAL_ID });
  assert.deepEqual(edit.replaces, REPLY_ID);
  roundTrips(edit);
  assert.equal(idHex(withSalt(edit, "b8c2e6d8800ecf45df39be6c45f4c042")), "014028c0deddbdea56bec26172f6ede953d11024cb82b8192b5e2aea62d7fb47");

  const del = newDelete({ sender: BOB, room: ROOM, replaces: REPLY_ID, inReplyTo: ORIGINAL_ID });
  assert.deepEqual(del.body, { disposition: MIMI_DISPOSITION.render, language: "", cardinality: "null" });
  roundTrips(del);
  assert.equal(idHex(withSalt(del, "0a590d73b2c7761c39168be5ebf7f2e6")), "011d9efc78d04d4dcf4d82b07d5199bbef37011c1f0c7e004b6111c6dda504b4");
});

test("newAttachment without caption reproduces the draft's attachment example", () => {
  const msg = newAttachment({
    sender: BOB,
    room: ROOM,
    language: "en",
    external: {
      contentType: "video/mp4",
      url: "https://example.com/storage/8ksB4bSrrRE.mp4",
      size: 708234961,
      encAlg: 1,
      key: unhex("21399320958a6f4c745dde670d95e0d8"),
      nonce: unhex("c86cf2c33f21527d1dd76f5b"),
      hashAlg: 1,
      contentHash: unhex("9ab17a8cf0890baaae7ee016c7312fcc080ba46498389458ee44f0276e783163"),
      description: "2 hours of key signing video",
      filename: "bigfile.mp4",
    },
  });
  assert.equal(msg.body.cardinality, "external");
  assert.equal(msg.body.disposition, MIMI_DISPOSITION.attachment);
  roundTrips(msg);
  assert.equal(idHex(withSalt(msg, "18fac6371e4e53f1aeaf8a013155c166")), "0176180c7d19a925021fe446d241134d05c38e0d999cdc0f39c391d2377ed9d1");
});

test("newAttachment with a caption sends processAll [media, markdown caption]", () => {
  const msg = newAttachment({
    sender: ALICE,
    room: ROOM,
    disposition: MIMI_DISPOSITION.inline,
    caption: "our *new* logo",
    external: { contentType: "image/png", url: "https://media.example/x.png", size: 1234 },
  });
  assert.equal(msg.body.cardinality, "multi");
  if (msg.body.cardinality !== "multi") return;
  assert.equal(msg.body.partSemantics, "processAll");
  assert.equal(msg.body.parts.length, 2);
  const [media, caption] = msg.body.parts;
  assert.equal(media.cardinality, "external");
  assert.equal(media.disposition, MIMI_DISPOSITION.inline);
  assert.equal(caption.cardinality, "single");
  if (caption.cardinality !== "single") return;
  assert.equal(caption.contentType, MIMI_CONTENT_TYPE_MARKDOWN);
  assert.equal(new TextDecoder().decode(caption.content), "our *new* logo");
  roundTrips(msg);
});

test("builders refuse bad arguments with MimiError INVALID_ARGUMENT", () => {
  const refused = (fn: () => unknown, field: RegExp) => assert.throws(fn, (e: unknown) => e instanceof MimiError && e.code === "INVALID_ARGUMENT" && field.test(e.message));
  refused(() => newReaction({ sender: ALICE, room: ROOM, target: new Uint8Array(31), emoji: "👍" }), /^target: expected 32 bytes/);
  refused(() => newReaction({ sender: ALICE, room: ROOM, target: ORIGINAL_ID, emoji: "" }), /^emoji:/);
  refused(() => newEdit({ sender: ALICE, room: ROOM, replaces: undefined as unknown as Uint8Array, markdown: "x" }), /^replaces:/);
  refused(() => newTextMessage({ sender: "", room: ROOM, markdown: "x" }), /^sender:/);
  refused(() => newTextMessage({ sender: ALICE, room: ROOM, markdown: "x", expires: { relative: true, time: 2 ** 32 } }), /^expires\.time:/);
  refused(() => newTextMessage({ sender: ALICE, room: ROOM, markdown: "bad \ud800 surrogate" }), /^markdown:/);
  refused(() => newAttachment({ sender: ALICE, room: ROOM, external: { contentType: "a/b", url: "u", key: new Uint8Array(16) } }), /^external\.encAlg:/);
  refused(
    () => newAttachment({ sender: ALICE, room: ROOM, external: { contentType: "a/b", url: "u", encAlg: 1, key: new Uint8Array(15), nonce: new Uint8Array(12) } }),
    /^external\.key:/,
  );
  refused(() => newAttachment({ sender: ALICE, room: ROOM, external: { contentType: "a/b", url: "u", hashAlg: 1, contentHash: new Uint8Array(20) } }), /^external\.contentHash:/);
});

test("ids change with the salt, the sender and the room", () => {
  const a = newTextMessage({ sender: ALICE, room: ROOM, markdown: "same" });
  const b = newTextMessage({ sender: ALICE, room: ROOM, markdown: "same" });
  assert.notEqual(hex(a.salt), hex(b.salt));
  assert.notEqual(idHex(a), idHex(b));
  const resalted = withSalt(a, "00000000000000000000000000000001");
  assert.notEqual(idHex(resalted), idHex(a));
  const bytes = encodeMimi(a);
  assert.notEqual(hex(computeMessageId(BOB, ROOM, bytes)), hex(computeMessageId(ALICE, ROOM, bytes)));
  assert.notEqual(hex(computeMessageId(ALICE, "mimi://example.com/r/other", bytes)), hex(computeMessageId(ALICE, ROOM, bytes)));
  assert.equal(computeMessageId(ALICE, ROOM, bytes)[0], 1);
  assert.equal(computeMessageId(ALICE, ROOM, bytes).length, 32);
});

test("messageIdOf is null without sender or room URI; mimiToJson then prints null", () => {
  const msg = newTextMessage({ sender: ALICE, room: ROOM, markdown: "x" });
  const anonymous: MimiMessage = { ...msg, extensions: { senderUri: null, roomUri: ROOM, unknown: [] } };
  assert.equal(messageIdOf(anonymous), null);
  assert.equal(mimiToJson(anonymous).messageId, null);
  roundTrips(anonymous);
  assert.throws(
    () => computeMessageId(ALICE, ROOM, unhex("a0")),
    (e: unknown) => e instanceof MimiError && e.code === "INVALID_ARGUMENT",
  );
});

// A valid message as the CBOR value tree, for mutating one field at a time.
function wireMessage(): unknown[] {
  return [
    new Uint8Array(16).fill(0xaa),
    null,
    new Uint8Array(0),
    null,
    null,
    new Map<number | string, unknown>([
      [1, ALICE],
      [2, ROOM],
    ]),
    [1, "", 1, "text/plain;charset=utf-8", utf8("hi")],
  ];
}

function encodeWire(v: unknown): Uint8Array {
  return cborEncode(v, { cde: true });
}

function withField(index: number, value: unknown): Uint8Array {
  const w = wireMessage();
  w[index] = value;
  return encodeWire(w);
}

function withBody(body: unknown): Uint8Array {
  return withField(6, body);
}

function refuses(bytes: Uint8Array | string, code: MimiErrorCode, message: RegExp): void {
  const input = typeof bytes === "string" ? unhex(bytes) : bytes;
  assert.throws(
    () => decodeMimi(input),
    (e: unknown) => {
      assert.ok(e instanceof MimiError, `expected a MimiError, got ${String(e)}`);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, message);
      return true;
    },
  );
}

test("the wire helper itself produces a valid message", () => {
  const msg = decodeMimi(encodeWire(wireMessage()));
  assert.equal(msg.extensions.senderUri, ALICE);
});

test("malformed CBOR is refused", () => {
  const good = encodeWire(wireMessage());
  refuses(new Uint8Array(0), "MALFORMED_CBOR", /empty/);
  for (const cut of [1, 2, 10, good.length - 1]) refuses(good.subarray(0, cut), "MALFORMED_CBOR", /truncated/);
  refuses(new Uint8Array([...good, 0x00]), "MALFORMED_CBOR", /trailing bytes/);
  refuses("1c", "MALFORMED_CBOR", /malformed CBOR/);
  refuses("ff", "MALFORMED_CBOR", /malformed CBOR/);
  const deep = (n: number): unknown => (n === 0 ? 0 : [deep(n - 1)]);
  refuses(withBody(deep(500)), "MALFORMED_CBOR", /nested deeper than any valid MIMI message/);
  // "language" as text with an invalid UTF-8 sequence (c3 28).
  const bad = Buffer.from(hex(withBody([1, "ab", 0])).replace("626162", "62c328"), "hex");
  refuses(new Uint8Array(bad), "MALFORMED_CBOR", /utf-8/i);
  assert.throws(
    () => decodeMimi("87" as unknown as Uint8Array),
    (e: unknown) => e instanceof MimiError && e.code === "INVALID_ARGUMENT",
  );
});

test("non-deterministic encodings are refused", () => {
  const good = hex(withBody([1, "", 0]));
  assert.ok(good.endsWith("830160" + "00"));
  // disposition 1 as a one-byte-argument integer (18 01) instead of 01.
  refuses(good.replace(/830160(00)$/, "83180160$1"), "NOT_DETERMINISTIC", /long/i);
  // indefinite-length body array.
  refuses(good.replace(/830160(00)$/, "9f016000ff"), "NOT_DETERMINISTIC", /Streaming/i);
  // extension keys out of order: {2: room, 1: sender}.
  const w = wireMessage();
  w[5] = new Map<number, string>([
    [1, ALICE],
    [2, ROOM],
  ]);
  const sorted = hex(encodeWire(w));
  const senderItem = hex(cborEncode(1)) + hex(cborEncode(ALICE));
  const roomItem = hex(cborEncode(2)) + hex(cborEncode(ROOM));
  refuses(sorted.replace(senderItem + roomItem, roomItem + senderItem), "NOT_DETERMINISTIC", /out of order/);
  // duplicate key.
  refuses(sorted.replace("a2" + senderItem + roomItem, "a2" + senderItem + senderItem), "NOT_DETERMINISTIC", /Duplicate/);
  // a 16-bit float where an integer belongs in an extension: 1.0 encoded as f93c00.
  const ext = wireMessage();
  (ext[5] as Map<number, unknown>).set(3, 7);
  refuses(hex(encodeWire(ext)).replace(/0307/, "03f93c00"), "NOT_DETERMINISTIC", /int/);
});

test("wrong message shapes are refused with the field named", () => {
  refuses(encodeWire(new Map()), "INVALID_MESSAGE", /^message: expected an array of 7/);
  refuses(encodeWire(wireMessage().slice(0, 6)), "INVALID_MESSAGE", /^message: .*7 elements, got 6/);
  refuses(encodeWire([...wireMessage(), null]), "INVALID_MESSAGE", /^message: .*7 elements, got 8/);
  refuses(withField(0, new Uint8Array(15)), "INVALID_MESSAGE", /^salt: expected 16 bytes, got 15/);
  refuses(withField(0, new Uint8Array(17)), "INVALID_MESSAGE", /^salt: expected 16 bytes, got 17/);
  refuses(withField(0, "0123456789abcdef"), "INVALID_MESSAGE", /^salt: expected a byte string, got a text string/);
  refuses(withField(1, new Uint8Array(31)), "INVALID_MESSAGE", /^replaces: expected 32 bytes/);
  refuses(withField(1, undefined), "INVALID_MESSAGE", /^replaces: expected null or a 32-byte message id, got undefined/);
  refuses(withField(2, "topic"), "INVALID_MESSAGE", /^topicId: expected a byte string/);
  refuses(withField(3, [true]), "INVALID_MESSAGE", /^expires: .*2 elements, got 1/);
  refuses(withField(3, [1, 5]), "INVALID_MESSAGE", /^expires\.relative: expected a boolean/);
  refuses(withField(3, [false, 2 ** 32]), "INVALID_MESSAGE", /^expires\.time: 4294967296 is larger than uint32/);
  refuses(withField(3, [false, -1]), "INVALID_MESSAGE", /^expires\.time: expected an unsigned integer/);
  refuses(withField(3, [false, 1.5]), "INVALID_MESSAGE", /^expires\.time: expected an unsigned integer, got the float 1.5/);
  refuses(withField(3, [false, -0]), "INVALID_MESSAGE", /^expires\.time: expected an unsigned integer/);
  refuses(withField(4, 7), "INVALID_MESSAGE", /^inReplyTo: expected null or a 32-byte message id/);
});

test("wrong extensions are refused with the key named", () => {
  const ext = (entries: [unknown, unknown][]) => withField(5, new Map(entries));
  refuses(withField(5, [1, ALICE]), "INVALID_MESSAGE", /^extensions: expected a map/);
  refuses(ext([[1, utf8(ALICE)]]), "INVALID_MESSAGE", /^extensions\[1\] \(senderUri\): expected a text string/);
  refuses(ext([[2, 42]]), "INVALID_MESSAGE", /^extensions\[2\] \(roomUri\): expected a text string/);
  refuses(ext([[1.5, "x"]]), "INVALID_MESSAGE", /^extensions: a key must be an integer/);
  refuses(ext([[new Uint8Array(1), "x"]]), "INVALID_MESSAGE", /^extensions: a key must be an integer/);
  refuses(ext([["", "x"]]), "INVALID_MESSAGE", /^extensions: a text key must be 1\.\.255 UTF-8 octets, got 0/);
  refuses(ext([["k".repeat(256), "x"]]), "INVALID_MESSAGE", /^extensions: a text key must be 1\.\.255 UTF-8 octets, got 256/);
  refuses(ext([[2n ** 60n, "x"]]), "INVALID_MESSAGE", /^extensions: a key must be an integer within/);
  refuses(ext([[3, [[[[1]]]]]]), "INVALID_MESSAGE", /^extensions\[3\]\[0\]\[0\]\[0\]: .*nest deeper than the 4 levels/);
  refuses(ext([[3, new Map([[[1], 2]])]]), "INVALID_MESSAGE", /^extensions\[3\]: nested map keys must be/);
  // Exactly 4 levels (the draft's own example shape) is fine.
  decodeMimi(ext([[256, [[new Uint8Array([0x12, 0x34]), new Tag(32, "http://example.com")]]]]));
});

test("wrong body parts are refused with the part path named", () => {
  refuses(withBody("hi"), "INVALID_MESSAGE", /^body: expected a NestedPart array, got a text string/);
  refuses(withBody([1, ""]), "INVALID_MESSAGE", /^body: a NestedPart needs at least/);
  refuses(withBody([1, "", 1, "text/plain"]), "INVALID_MESSAGE", /^body: a single part must have 5 elements, got 4/);
  refuses(withBody([1, "", 0, null]), "INVALID_MESSAGE", /^body: a null part must have 3 elements, got 4/);
  refuses(withBody([1, "", 1, "text/plain", utf8("x"), null]), "INVALID_MESSAGE", /^body: a single part must have 5 elements, got 6/);
  refuses(withBody([1, "", 4]), "INVALID_MESSAGE", /^body\.cardinality: unknown cardinality 4/);
  refuses(withBody([1, "", "1", "text/plain", utf8("x")]), "INVALID_MESSAGE", /^body\.cardinality: expected an unsigned integer/);
  refuses(withBody([256, "", 0]), "INVALID_MESSAGE", /^body\.disposition: 256 is larger than a disposition/);
  refuses(withBody([-1, "", 0]), "INVALID_MESSAGE", /^body\.disposition: expected an unsigned integer/);
  refuses(withBody([1.5, "", 0]), "INVALID_MESSAGE", /^body\.disposition: expected an unsigned integer, got the float 1.5/);
  refuses(withBody([1, utf8("en"), 0]), "INVALID_MESSAGE", /^body\.language: expected a text string/);
  refuses(withBody([1, "", 1, "text/plain", "hi"]), "INVALID_MESSAGE", /^body\.content: expected a byte string, got a text string/);
  refuses(withBody([1, "", 1, utf8("text/plain"), utf8("hi")]), "INVALID_MESSAGE", /^body\.contentType: expected a text string/);

  const external = (): unknown[] => [6, "", 2, "video/mp4", "https://x", 0, 10, 0, new Uint8Array(0), new Uint8Array(0), new Uint8Array(0), 0, new Uint8Array(0), "", ""];
  decodeMimi(withBody(external()));
  refuses(withBody(external().slice(0, 14)), "INVALID_MESSAGE", /^body: an external part must have 15 elements, got 14/);
  const set = (i: number, v: unknown) => {
    const p = external();
    p[i] = v;
    return withBody(p);
  };
  refuses(set(5, 2 ** 32), "INVALID_MESSAGE", /^body\.expires: .*uint32/);
  refuses(set(6, 2n ** 60n), "INVALID_MESSAGE", /^body\.size: .*larger than this implementation/);
  refuses(set(7, 70000), "INVALID_MESSAGE", /^body\.encAlg: .*uint16/);
  refuses(set(8, "key"), "INVALID_MESSAGE", /^body\.key: expected a byte string/);
  refuses(set(11, 256), "INVALID_MESSAGE", /^body\.hashAlg: .*uint8/);
  refuses(set(4, null), "INVALID_MESSAGE", /^body\.url: expected a text string, got null/);

  const single = [1, "", 1, "text/plain", utf8("x")];
  refuses(withBody([1, "", 3, 3, [single, single]]), "INVALID_MESSAGE", /^body\.partSemantics: unknown partSemantics 3/);
  refuses(withBody([1, "", 3, 0, single]), "INVALID_MESSAGE", /^body\.parts\[0\]: expected a NestedPart array, got the integer 1/);
  refuses(withBody([1, "", 3, 0, [single]]), "INVALID_MESSAGE", /^body\.parts: a multipart needs at least 2 parts, got 1/);
  refuses(withBody([1, "", 3, 0, "parts"]), "INVALID_MESSAGE", /^body\.parts: expected an array of NestedParts/);
  refuses(withBody([1, "", 3, 0, [single, [1, "", 9]]]), "INVALID_MESSAGE", /^body\.parts\[1\]\.cardinality: unknown cardinality 9/);

  const nest = (levels: number): unknown => (levels === 1 ? single : [1, "", 3, 2, [nest(levels - 1), single]]);
  decodeMimi(withBody(nest(4)));
  refuses(withBody(nest(5)), "INVALID_MESSAGE", /^body\.parts\[0\]\.parts\[0\]\.parts\[0\]\.parts\[0\]: NestedParts nest deeper than the 4 levels/);
  refuses(withBody([1, "", 3, 2, Array.from({ length: 1024 }, () => single)]), "INVALID_MESSAGE", /more than 1024 body parts/);
});

test("unknown extensions are kept byte for byte, through CBOR and JSON", () => {
  const w = wireMessage();
  const ext = w[5] as Map<number | string, unknown>;
  ext.set(3, [
    1,
    new Map<unknown, unknown>([
      ["a", new Uint8Array([0])],
      [-2, null],
    ]),
  ]);
  ext.set(-5, 1.5);
  ext.set("x-vendor", new Tag(32, "https://example.com/"));
  ext.set(0, undefined);
  ext.set(2 ** 53 - 1, -(2n ** 64n));
  const bytes = encodeWire(w);
  const msg = decodeMimi(bytes);
  assert.deepEqual(
    msg.extensions.unknown.map((e) => e.key),
    [0, 3, 2 ** 53 - 1, -5, "x-vendor"], // sorted by encoded key: 00, 03, 1b…, 24, 68…
  );
  assert.equal(hex(encodeMimi(msg)), hex(bytes));
  const json = JSON.parse(JSON.stringify(mimiToJson(msg)));
  assert.deepEqual(json.extensions.unknown[3], { key: -5, cbor: "f93e00" });
  assert.equal(hex(encodeMimi(mimiFromJson(json))), hex(bytes));
});

test("encodeMimi refuses models that break the draft's rules", () => {
  const base = newTextMessage({ sender: ALICE, room: ROOM, markdown: "x" });
  const refusedModel = (msg: unknown, code: MimiErrorCode, message: RegExp) =>
    assert.throws(
      () => encodeMimi(msg as MimiMessage),
      (e: unknown) => e instanceof MimiError && e.code === code && message.test(e.message),
    );
  refusedModel({ ...base, salt: new Uint8Array(15) }, "INVALID_MESSAGE", /^salt: expected 16 bytes/);
  refusedModel({ ...base, body: { ...base.body, cardinality: "double" } }, "INVALID_MESSAGE", /^body\.cardinality:/);
  refusedModel({ ...base, body: { disposition: 1, language: "", cardinality: "multi", partSemantics: "any", parts: [] } }, "INVALID_MESSAGE", /^body\.partSemantics:/);
  refusedModel({ ...base, body: { ...base.body, contentType: "text/\udc00" } }, "INVALID_MESSAGE", /^body\.contentType: contains an unpaired surrogate/);
  refusedModel(
    { ...base, extensions: { ...base.extensions, unknown: [{ key: 1, encodedValue: unhex("01") }] } },
    "INVALID_MESSAGE",
    /^extensions\.unknown\[0\]\.key: key 1 is senderUri/,
  );
  refusedModel(
    {
      ...base,
      extensions: {
        ...base.extensions,
        unknown: [
          { key: 9, encodedValue: unhex("01") },
          { key: 9, encodedValue: unhex("02") },
        ],
      },
    },
    "INVALID_MESSAGE",
    /^extensions\.unknown\[1\]\.key: duplicate/,
  );
  refusedModel(
    { ...base, extensions: { ...base.extensions, unknown: [{ key: 9, encodedValue: unhex("1817") }] } },
    "NOT_DETERMINISTIC",
    /^extensions\.unknown\[0\]\.encodedValue:/,
  );
  refusedModel({ ...base, extensions: { ...base.extensions, unknown: [{ key: 9, encodedValue: unhex("0101") }] } }, "MALFORMED_CBOR", /trailing bytes/);
  refusedModel({ ...base, extensions: { ...base.extensions, unknown: [{ key: 9, encodedValue: new Uint8Array(0) }] } }, "INVALID_MESSAGE", /no bytes/);
  // A Buffer (Uint8Array subclass) is accepted and encoded as a plain byte string.
  assert.equal(hex(encodeMimi({ ...base, salt: Buffer.from(base.salt) })), hex(encodeMimi(base)));
});

test("mimiFromJson refuses bad JSON with the field path", () => {
  const good = mimiToJson(newTextMessage({ sender: ALICE, room: ROOM, markdown: "hello" }));
  const refusedJson = (mutate: (j: Record<string, any>) => void, message: RegExp) => {
    const j = JSON.parse(JSON.stringify(good));
    mutate(j);
    assert.throws(
      () => mimiFromJson(j),
      (e: unknown) => e instanceof MimiError && e.code === "INVALID_JSON" && message.test(e.message),
    );
  };
  refusedJson((j) => (j.extra = 1), /^extra: unknown field/);
  refusedJson((j) => delete j.salt, /^salt: missing/);
  refusedJson((j) => (j.salt = j.salt.toUpperCase()), /^salt: expected lowercase hex/);
  refusedJson((j) => (j.salt = "abc"), /^salt: expected lowercase hex/);
  refusedJson((j) => (j.salt = "00"), /^salt: expected 16 bytes/);
  refusedJson((j) => (j.replaces = "00".repeat(31)), /^replaces: expected 32 bytes/);
  refusedJson((j) => (j.expires = { relative: "no", time: 1 }), /^expires\.relative: expected true or false/);
  refusedJson((j) => (j.body.contentText = "other"), /^body\.contentText: does not match content/);
  refusedJson((j) => delete j.body.content && delete j.body.contentText, /^body\.content: missing/);
  refusedJson((j) => (j.body.cardinality = "many"), /^body\.cardinality: expected "null"/);
  refusedJson((j) => (j.body.disposition = 300), /^body\.disposition: 300 is larger/);
  refusedJson((j) => (j.body.bogus = true), /^body\.bogus: unknown field/);
  refusedJson((j) => (j.extensions.unknown = [{ key: 7, cbor: "1817" }]), /^extensions\.unknown\[0\]\.cbor: not deterministic/);
  refusedJson((j) => (j.extensions.unknown = [{ key: true, cbor: "01" }]), /^extensions\.unknown\[0\]\.key: expected an integer or a string/);
  refusedJson((j) => (j.messageId = "xyz"), /^messageId: expected lowercase hex/);
  assert.throws(
    () => mimiFromJson([]),
    (e: unknown) => e instanceof MimiError && /expected an object/.test(e.message),
  );

  // Hand-written JSON may give contentText alone and leave out messageId and extensions.unknown.
  const hand = JSON.parse(JSON.stringify(good));
  delete hand.messageId;
  delete hand.extensions.unknown;
  delete hand.body.content;
  const msg = mimiFromJson(hand);
  assert.equal(hex((msg.body as MimiSinglePart).content), hex(utf8("hello")));
});

class Collector extends Writable {
  text = "";
  bytes: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.bytes.push(Buffer.from(chunk));
    this.text += Buffer.from(chunk).toString("utf8");
    done();
  }
}

test("the CLI reports bad input in one line with exit code 1, wrong usage with 2", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "mimi-cli-"));
  try {
    const run = async (args: string[]) => {
      const out = new Collector();
      const err = new Collector();
      const code = await runMimiCommand(args, out, err);
      return { code, out: out.text, err: err.text };
    };
    const oneLine = (s: string) => assert.match(s, /^[^\n]+\n$/, `expected one line, got ${JSON.stringify(s)}`);

    const missing = await run(["decode", path.join(dir, "nope.cbor")]);
    assert.equal(missing.code, 1);
    oneLine(missing.err);
    assert.match(missing.err, /no such file/);

    const garbage = path.join(dir, "garbage.cbor");
    writeFileSync(garbage, Buffer.from("870102", "hex"));
    const bad = await run(["decode", garbage]);
    assert.equal(bad.code, 1);
    oneLine(bad.err);
    assert.match(bad.err, /truncated/);
    assert.doesNotMatch(bad.err, /\bat .*\.js/);

    const salt = path.join(dir, "salt.cbor");
    writeFileSync(salt, withField(0, new Uint8Array(3)));
    const shortSalt = await run(["decode", salt]);
    assert.equal(shortSalt.code, 1);
    assert.match(shortSalt.err, /salt: expected 16 bytes, got 3/);

    const notJson = path.join(dir, "bad.json");
    writeFileSync(notJson, "{ nope");
    const parse = await run(["encode", notJson]);
    assert.equal(parse.code, 1);
    oneLine(parse.err);
    assert.match(parse.err, /not valid JSON/);

    const wrongJson = path.join(dir, "wrong.json");
    writeFileSync(wrongJson, JSON.stringify({ salt: "00" }));
    const invalid = await run(["encode", wrongJson]);
    assert.equal(invalid.code, 1);
    oneLine(invalid.err);

    for (const args of [[], ["decode"], ["frobnicate", "x"], ["decode", "a", "b"]]) {
      const usage = await run(args);
      assert.equal(usage.code, 2);
      assert.match(usage.err, /^usage: mimi decode/);
    }
    const help = await run(["--help"]);
    assert.equal(help.code, 0);
    assert.match(help.out, /^usage:/);

    const good = path.join(dir, "good.cbor");
    const bytes = encodeMimi(newTextMessage({ sender: ALICE, room: ROOM, markdown: "hi" }));
    writeFileSync(good, bytes);
    const decoded = await run(["decode", good]);
    assert.equal(decoded.code, 0);
    const json = JSON.parse(decoded.out);
    assert.equal(json.body.contentText, "hi");
    assert.equal(json.messageId, hex(computeMessageId(ALICE, ROOM, bytes)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
