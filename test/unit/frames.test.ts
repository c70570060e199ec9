import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { encode as cborEncode } from "cbor2";
import { ProtocolError, decodeFrame, dmRoomUri, encodeFrame, parseMimiUri, peekRid, type Frame } from "../../src/protocol/frames.js";

const alice = "mimi://matrix.example.org/u/@alice:example.org";
const wanda = "mimi://whatsapp.example/u/+4915123456789";

function badFrame(fn: () => unknown, field: string): void {
  assert.throws(fn, (e: unknown) => e instanceof ProtocolError && e.code === "bad_frame" && e.field === field);
}

describe("frames codec", () => {
  it("round-trips a send frame and encodes deterministically", () => {
    const frame: Frame = {
      t: "send",
      rid: 7,
      from: alice,
      to: wanda,
      room: dmRoomUri(alice, wanda, "whatsapp.example"),
      id: new Uint8Array(16).fill(1),
      payload: { type: 3, body: Buffer.from("ciphertext") },
    };
    const bytes = encodeFrame(frame);
    const decoded = decodeFrame(bytes);
    assert.deepEqual(decoded, { ...frame, payload: { type: 3, body: new Uint8Array(Buffer.from("ciphertext")) } });
    // Field order of the input does not matter; the bytes do not change.
    const reordered = { payload: frame.payload, id: frame.id, room: frame.room, to: wanda, from: alice, rid: 7, t: "send" } as Frame;
    assert.deepEqual(encodeFrame(reordered), bytes);
    // keys sorted bytewise by their encoding: "t" (shortest) first
    assert.equal(Buffer.from(bytes.subarray(1, 3)).toString("hex"), "6174");
  });

  it("names the offending field", () => {
    const enc = (v: unknown) => cborEncode(v, { cde: true });
    badFrame(() => decodeFrame(enc({ t: "login", rid: 1 })), "login.user");
    badFrame(() => decodeFrame(enc({ t: "login", rid: -1, user: alice })), "login.rid");
    badFrame(() => decodeFrame(enc({ t: "login", rid: 1, user: "alice" })), "login.user");
    badFrame(() => decodeFrame(enc({ t: "nope" })), "t");
    badFrame(() => decodeFrame(enc([1, 2])), "frame");
    badFrame(() => decodeFrame(Buffer.from("garbage")), "frame");
    badFrame(
      () =>
        decodeFrame(enc({ t: "send", rid: 1, from: alice, to: wanda, room: "mimi://whatsapp.example/r/x", id: new Uint8Array(15), payload: { type: 2, body: new Uint8Array(1) } })),
      "send.id",
    );
    badFrame(() => decodeFrame(enc({ t: "ack", user: alice, seq: 1.5 })), "ack.seq");
  });

  it("refuses non-deterministic encodings and trailing bytes", () => {
    // {"rid": 1, "t": "ping"} with keys out of order
    assert.throws(() => decodeFrame(Buffer.from("a263726964016174647069 6e67".replace(/ /g, ""), "hex")), ProtocolError);
    const ok = encodeFrame({ t: "ping", nonce: 1 });
    assert.throws(() => decodeFrame(Buffer.concat([ok, Buffer.from([0])])), ProtocolError);
  });

  it("ignores unknown fields (forward compatibility)", () => {
    const bytes = cborEncode({ t: "ping", nonce: 3, future: "x" }, { cde: true });
    assert.deepEqual(decodeFrame(bytes), { t: "ping", nonce: 3 });
  });

  it("recovers the rid of an invalid request", () => {
    assert.equal(peekRid(cborEncode({ t: "login", rid: 12, user: 5 }, { cde: true })), 12);
    assert.equal(peekRid(Buffer.from("zz")), undefined);
  });

  it("derives the same dm room from either side", () => {
    const a = dmRoomUri(alice, wanda, "whatsapp.example");
    assert.equal(a, dmRoomUri(wanda, alice, "whatsapp.example"));
    assert.match(a, /^mimi:\/\/whatsapp\.example\/r\/dm-[0-9a-f]{32}$/);
    // documented vector (docs/protocol.md)
    assert.equal(a, "mimi://whatsapp.example/r/dm-c4f127892d424d3446f150873f40cfdc");
  });

  it("parses user and room URIs", () => {
    assert.deepEqual(parseMimiUri(alice), { kind: "u", domain: "matrix.example.org", id: "@alice:example.org" });
    assert.equal(parseMimiUri("mimi://Upper.example/u/x"), undefined);
    assert.equal(parseMimiUri("mimi://a.example/u/has space"), undefined);
    assert.equal(parseMimiUri("https://a.example/u/x"), undefined);
  });
});
