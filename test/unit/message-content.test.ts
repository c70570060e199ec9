/**
 * Matrix m.room.message content ↔ network content (src/convert/message-content.ts): which
 * messages go as text and how, which are refused with which reason, and what network content
 * becomes on Matrix.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { matrixToRemote, remoteToMatrix } from "../../src/convert/message-content";

const HTML = "org.matrix.custom.html";

describe("Matrix → network", () => {
  it("text, notices and emotes go as markdown; an emote gets the /me prefix, the others do not", () => {
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body: "hello" }), { type: "text", markdown: "hello" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.notice", body: "*hi*" }), { type: "text", markdown: "\\*hi\\*" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.emote", body: "waves" }), { type: "text", markdown: "/me waves" });
  });

  it("an HTML body is used when format says so, and only when formatted_body is a string", () => {
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body: "bold", format: HTML, formatted_body: "<b>bold</b>" }), { type: "text", markdown: "**bold**" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body: "bold", format: HTML, formatted_body: 7 }), { type: "text", markdown: "bold" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body: "bold", format: 7, formatted_body: "<b>bold</b>" }), { type: "text", markdown: "bold" });
  });

  it("a reply's fallback quote is stripped, a quote in a message that replies to nothing is kept", () => {
    const body = "> <@a:hs> question\n\nanswer";
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body, "m.relates_to": { "m.in_reply_to": { event_id: "$q" } } }), { type: "text", markdown: "answer" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body }), { type: "text", markdown: "\\> <@a:hs> question\n\nanswer" });
    assert.deepEqual(
      matrixToRemote({ msgtype: "m.text", body, "m.relates_to": { "m.in_reply_to": "$q" } }),
      { type: "text", markdown: "\\> <@a:hs> question\n\nanswer" },
      "in_reply_to must be an object",
    );
  });

  it("refuses what has no msgtype, no text body, or a type it does not know, saying which", () => {
    assert.deepEqual(matrixToRemote({ body: "x" }), { unbridgeable: true, reason: "the message has no msgtype" });
    assert.deepEqual(matrixToRemote({ msgtype: 5, body: "x" }), { unbridgeable: true, reason: "the message has no msgtype" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.text" }), { unbridgeable: true, reason: "the message has no text body" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.text", body: 5 }), { unbridgeable: true, reason: "the message has no text body" });
    assert.deepEqual(matrixToRemote({ msgtype: "m.location", body: "here", geo_uri: "geo:1,2" }), {
      unbridgeable: true,
      reason: "messages of type m.location are not supported yet",
    });
  });

  it("media msgtypes go to the media conversion, even without a body", () => {
    const media = matrixToRemote({ msgtype: "m.file", url: "mxc://hs/f", filename: "a.pdf", info: { mimetype: "application/pdf" } });
    assert.equal((media as { type: string }).type, "media");
  });
});

describe("network → Matrix", () => {
  it("text becomes m.text (HTML when it has formatting) or m.emote", () => {
    assert.deepEqual(remoteToMatrix({ type: "text", markdown: "**b**" }), { msgtype: "m.text", body: "**b**", format: HTML, formatted_body: "<strong>b</strong>" });
    assert.deepEqual(remoteToMatrix({ type: "text", markdown: "/me waves" }), { msgtype: "m.emote", body: "waves" });
  });

  it("unsupported content becomes a notice with its description", () => {
    assert.deepEqual(remoteToMatrix({ type: "unsupported", what: "poll", description: "a poll (not supported)" }), { msgtype: "m.notice", body: "a poll (not supported)" });
  });

  it("media without uploaded bytes becomes a notice naming it", () => {
    assert.deepEqual(remoteToMatrix({ type: "media", media: { kind: "image", mimetype: "image/png", filename: "a.png" }, source: { from: "matrix", mxc: "mxc://hs/a" } }), {
      msgtype: "m.notice",
      body: "Sent a photo (a.png) that could not be bridged: it was not downloaded.",
    });
  });
});
