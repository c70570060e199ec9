/**
 * The group frames of docs/protocol.md §3.3 against the reference codec: the document's room
 * derivation and worked example are what the code produces, byte for byte, and the additions
 * leave version-1 frames as they were.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { decodeFrame, encodeFrame, groupRoomUri, isGroupRoom, type Frame } from "../../src/protocol/frames.js";

const DOC = readFileSync(path.resolve(__dirname, "../../../docs/protocol.md"), "utf8");

/** The text of a section of protocol.md, from its heading to the next heading of any level. */
function section(heading: string): string {
  const start = DOC.indexOf(heading);
  assert.ok(start >= 0, `protocol.md has no "${heading}"`);
  const rest = DOC.slice(start + heading.length);
  const end = rest.search(/\n#{2,4} /);
  return end < 0 ? rest : rest.slice(0, end);
}

describe("group frames as protocol.md describes them", () => {
  it("derives the group room of the test vector", () => {
    const text = section("#### 3.3.1 Group rooms and their state");
    const creator = /creator = (\S+)/.exec(text)![1]!;
    const id = Buffer.from(/id {6}= h'([0-9a-f]{32})'/.exec(text)![1]!, "hex");
    const room = /room {4}= (\S+)/.exec(text)![1]!;
    assert.equal(groupRoomUri(creator, new Uint8Array(id), "whatsapp.example"), room);
    assert.ok(isGroupRoom(room));
    assert.equal(isGroupRoom("mimi://whatsapp.example/r/dm-c4f127892d424d3446f150873f40cfdc"), false);
  });

  it("encodes every frame of the worked example exactly as printed", () => {
    const hexLines = [...section("#### 3.3.6 Worked example").matchAll(/^ {2}([0-9a-f]{40,})$/gm)].map((m) => m[1]!);
    assert.equal(hexLines.length, 7);
    const types = hexLines.map((hex) => {
      const frame = decodeFrame(Buffer.from(hex, "hex"));
      assert.equal(Buffer.from(encodeFrame(frame)).toString("hex"), hex, `${frame.t} re-encodes differently`);
      return frame.t;
    });
    assert.deepEqual(types, ["hello", "group.create", "ok", "group", "send", "group.add", "error"]);
    const event = decodeFrame(Buffer.from(hexLines[3]!, "hex")) as Extract<Frame, { t: "group" }>;
    assert.equal(event.change, "created");
    assert.deepEqual(
      event.group.members.map((m) => m.admin),
      [true, false, false],
    );
  });

  it("leaves version-1 frames unchanged: hello and welcome without features are still valid", () => {
    const v1Hello = "a461746568656c6c6f66736563726574667333637265746776657273696f6e016870726f7669646572726d61747269782e6578616d706c652e6f7267";
    assert.ok(DOC.includes(v1Hello), "the §19 hello is still the version-1 one");
    const hello = decodeFrame(Buffer.from(v1Hello, "hex"));
    assert.equal((hello as { features?: string[] }).features, undefined);
    const welcome: Frame = {
      t: "welcome",
      version: 1,
      connectionId: "c",
      provider: "matrix.example.org",
      homeProvider: "whatsapp.example",
      roomDomain: "whatsapp.example",
      serverTime: 1,
      pingIntervalMs: 25_000,
      idleTimeoutMs: 60_000,
      limits: { maxFrameBytes: 262_144, maxBodyBytes: 258_048, maxOneTimeKeysPerPublish: 100, maxOneTimeKeysStored: 1000 },
    };
    assert.deepEqual(decodeFrame(encodeFrame(welcome)), welcome);
  });
});
