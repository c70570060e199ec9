/**
 * Media both ways, end to end: real files made by ffmpeg here, a real Synapse, our gateway, the
 * WhatsApp simulator and the bridge. Each Matrix event is checked field by field against the
 * client-server spec (v1.10 captions, MSC2448 blurhash, MSC3245 voice messages), and the bytes'
 * SHA-256 at the far end must equal the original's. The Matrix events as received are printed
 * with t.diagnostic.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { isBlurhashValid } from "blurhash";
import { SyncedEvent, TestClient } from "../support/matrix-client";
import { ffmpeg, makeClip, makePhoto, makeVoice } from "../support/media-files";
import { InboxEntry } from "../support/sim-api";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

const LIMIT = 5 * 1024 * 1024;
let stack: Stack;
let dir: string;

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const sha256OfFile = (file: string) => sha256(fs.readFileSync(file));

function ffprobeJson(file: string): { format: { format_name: string; duration?: string }; streams: { codec_name: string; codec_type: string; width?: number; height?: number }[] } {
  return JSON.parse(execFileSync("ffprobe", ["-v", "error", "-print_format", "json", "-show_format", "-show_streams", file]).toString());
}

/** The test files, made once by ffmpeg (and one PDF written by hand). */
const files = {
  photo: "", // 1280×960 PNG: large enough for a thumbnail
  snapshot: "", // 320×240 JPEG
  clip: "", // 640×480 H.264/AAC MP4, 2 s
  voice: "", // Ogg/Opus, 3 s
  tone: "", // AAC in MP4 (.m4a), 2 s: ordinary audio
  report: "", // a one-page PDF
  big: "", // 6 MB of noise: over the bridge's 5 MB limit
};

function makeFiles(): void {
  files.photo = makePhoto(dir);
  files.snapshot = path.join(dir, "snapshot.jpg");
  ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240", "-frames:v", "1", "-q:v", "3", files.snapshot);
  files.clip = makeClip(dir);
  // Loud, quiet, loud: the waveform has a shape.
  files.voice = makeVoice(dir, 0.1);
  files.tone = path.join(dir, "tone.m4a");
  ffmpeg("-f", "lavfi", "-i", "sine=frequency=660:duration=2", "-c:a", "aac", files.tone);
  files.report = path.join(dir, "report.pdf");
  fs.writeFileSync(files.report, minimalPdf("Quarterly report"));
  files.big = path.join(dir, "big.bin");
  fs.writeFileSync(files.big, Buffer.alloc(6 * 1024 * 1024, 7));
}

/** A valid one-page PDF showing `text`, with a correct cross-reference table. */
function minimalPdf(text: string): Buffer {
  const stream = `BT /F1 24 Tf 72 720 Td (${text}) Tj ET`;
  const objects = [
    "<< /Type /Catalog /Pages 2 0 R >>",
    "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    `<< /Length ${stream.length} >>\nstream\n${stream}\nendstream`,
    "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
  ];
  let pdf = "%PDF-1.4\n";
  const offsets: number[] = [];
  objects.forEach((o, i) => {
    offsets.push(pdf.length);
    pdf += `${i + 1} 0 obj\n${o}\nendobj\n`;
  });
  const xref = pdf.length;
  pdf += `xref\n0 ${objects.length + 1}\n0000000000 65535 f \n${offsets.map((o) => `${String(o).padStart(10, "0")} 00000 n \n`).join("")}`;
  pdf += `trailer\n<< /Size ${objects.length + 1} /Root 1 0 R >>\nstartxref\n${xref}\n%%EOF\n`;
  return Buffer.from(pdf, "latin1");
}

interface Chat {
  client: TestClient;
  roomId: string;
  phone: string;
  ghost: string;
  uri: string;
}

let chatCount = 0;
/** A Matrix user and a WhatsApp user with a bridged DM between them. */
async function openChat(): Promise<Chat> {
  const n = ++chatCount;
  const phone = `+49151000099${String(n).padStart(2, "0")}`;
  await stack.sim.createUser(phone, `Media Friend ${n}`);
  const client = await stack.user(`media${n}`);
  await stack.botRoom(client, { enable: true });
  const uri = `mimi://${PROVIDER_DOMAIN}/u/${client.userId}`;
  await stack.sim.sendText(phone, uri, "hello");
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone));
  await client.joinRoom(invite.roomId);
  await client.waitFor((e) => e.room_id === invite.roomId && e.content.body === "hello");
  return { client, roomId: invite.roomId, phone, ghost: stack.ghostId(phone), uri };
}

/** The next message event the ghost sends in the chat's room. */
function nextFromGhost(chat: Chat, what: string, match: (e: SyncedEvent) => boolean = () => true): Promise<SyncedEvent> {
  return chat.client.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.message" && e.sender === chat.ghost && match(e), {
    timeoutMs: 60_000,
    description: what,
  });
}

function show(t: TestContext, label: string, event: SyncedEvent): void {
  const { section: _section, ...asReceived } = event;
  t.diagnostic(`${label}: ${JSON.stringify(asReceived)}`);
}

async function downloadSha(chat: Chat, mxc: unknown): Promise<{ sha: string; data: Buffer; contentType?: string }> {
  assert.match(String(mxc), /^mxc:\/\/[^/]+\/[^/]+$/);
  const media = await chat.client.downloadMedia(String(mxc));
  return { sha: sha256(media.data), data: media.data, contentType: media.contentType };
}

/** Downloads the event's file as the Matrix user and checks it is the original, byte for byte. */
async function assertSameBytes(t: TestContext, chat: Chat, mxc: unknown, original: string): Promise<void> {
  const { sha } = await downloadSha(chat, mxc);
  t.diagnostic(`sha256 at the Matrix end ${sha}, original ${path.basename(original)} ${sha256OfFile(original)}`);
  assert.equal(sha, sha256OfFile(original), "SHA-256 at the Matrix end equals the original's");
}

async function uploadAndSend(chat: Chat, file: string, mimetype: string, content: Record<string, unknown>): Promise<string> {
  const bytes = fs.readFileSync(file);
  const mxc = await chat.client.uploadMedia(bytes, mimetype, path.basename(file));
  const info = { mimetype, size: bytes.length, ...((content.info as Record<string, unknown>) ?? {}) };
  return chat.client.sendEvent(chat.roomId, "m.room.message", { ...content, url: mxc, info });
}

function waitForMedia(chat: Chat, match: (e: InboxEntry) => boolean): Promise<InboxEntry> {
  return stack.sim.waitForInbox(chat.phone, (e) => e.kind === "media" && match(e), 60_000);
}

function showHash(t: TestContext, entry: InboxEntry, original: string): void {
  t.diagnostic(`sha256 at the WhatsApp end ${entry.sha256}, original ${path.basename(original)} ${sha256OfFile(original)}`);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-media-files-"));
  makeFiles();
  stack = await Stack.start("media", {
    bridgeConfig: (c) => {
      c.network.media.max_size = LIMIT;
      c.bridge = { ...c.bridge, media_download_attempts: 2 };
    },
  });
});

after(async () => {
  await stack?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("media from WhatsApp to Matrix", () => {
  let chat: Chat;
  before(async () => {
    chat = await openChat();
  });

  test("a photo with a caption arrives as m.image with size, dimensions, a thumbnail, a blurhash and the caption", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.photo, mimetype: "image/png", caption: "Look **here**" });
    const event = await nextFromGhost(chat, "the photo", (e) => e.content.msgtype === "m.image");
    show(t, "m.image (photo with caption)", event);
    const c = event.content;
    assert.equal(c.filename, "photo.png");
    assert.equal(c.body, "Look **here**", "spec v1.10: body differs from filename, so it is the caption (its plain form is the markdown)");
    assert.equal(c.format, "org.matrix.custom.html");
    assert.equal(c.formatted_body, "Look <strong>here</strong>");
    assert.equal(c.info.mimetype, "image/png");
    assert.equal(c.info.size, fs.statSync(files.photo).size);
    assert.equal(c.info.w, 1280);
    assert.equal(c.info.h, 960);
    assert.ok(isBlurhashValid(c.info["xyz.amorgan.blurhash"]).result, "a valid blurhash");
    assert.equal(c.info.thumbnail_info.mimetype, "image/png");
    assert.equal(c.info.thumbnail_info.w, 800);
    assert.equal(c.info.thumbnail_info.h, 600);
    const thumb = await downloadSha(chat, c.info.thumbnail_url);
    assert.equal(thumb.data.length, c.info.thumbnail_info.size);
    await assertSameBytes(t, chat, c.url, files.photo);
  });

  test("a small JPEG arrives as m.image without a thumbnail, its file name as the body", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.snapshot, mimetype: "image/jpeg" });
    const event = await nextFromGhost(chat, "the JPEG", (e) => e.content.filename === "snapshot.jpg");
    show(t, "m.image (small JPEG)", event);
    const c = event.content;
    assert.equal(c.msgtype, "m.image");
    assert.equal(c.body, "snapshot.jpg", "no caption: body is the file name");
    assert.equal(c.format, undefined);
    assert.deepEqual([c.info.w, c.info.h, c.info.mimetype], [320, 240, "image/jpeg"]);
    assert.equal(c.info.thumbnail_url, undefined, "pictures within 800×600 need no thumbnail");
    assert.ok(isBlurhashValid(c.info["xyz.amorgan.blurhash"]).result);
    await assertSameBytes(t, chat, c.url, files.snapshot);
  });

  test("a video arrives as m.video with duration, dimensions and a JPEG thumbnail", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.clip, mimetype: "video/mp4" });
    const event = await nextFromGhost(chat, "the video", (e) => e.content.msgtype === "m.video");
    show(t, "m.video", event);
    const c = event.content;
    assert.equal(c.body, "clip.mp4");
    assert.equal(c.filename, "clip.mp4");
    assert.equal(c.info.mimetype, "video/mp4");
    assert.equal(c.info.size, fs.statSync(files.clip).size);
    assert.deepEqual([c.info.w, c.info.h], [640, 480]);
    assert.ok(Math.abs(c.info.duration - 2000) <= 100, `duration ${c.info.duration} ms ≈ 2000 ms`);
    assert.equal(c.info.thumbnail_info.mimetype, "image/jpeg");
    assert.deepEqual([c.info.thumbnail_info.w, c.info.thumbnail_info.h], [640, 480]);
    const thumb = await downloadSha(chat, c.info.thumbnail_url);
    assert.equal(thumb.data.subarray(0, 2).toString("hex"), "ffd8", "the thumbnail is a JPEG");
    assert.ok(isBlurhashValid(c.info["xyz.amorgan.blurhash"]).result);
    await assertSameBytes(t, chat, c.url, files.clip);
  });

  test("a voice note arrives as an MSC3245 voice message with duration and a waveform", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.voice, mimetype: "audio/ogg", kind: "voice" });
    const event = await nextFromGhost(chat, "the voice note", (e) => e.content.msgtype === "m.audio" && "org.matrix.msc3245.voice" in e.content);
    show(t, "m.audio (voice note)", event);
    const c = event.content;
    assert.deepEqual(c["org.matrix.msc3245.voice"], {});
    const audio = c["org.matrix.msc1767.audio"];
    assert.ok(Math.abs(audio.duration - 3000) <= 100, `duration ${audio.duration} ≈ 3000 ms`);
    assert.equal(c.info.duration, audio.duration);
    assert.equal(c.info.mimetype, "audio/ogg");
    assert.ok(Array.isArray(audio.waveform) && audio.waveform.length > 10 && audio.waveform.length <= 100, "up to 100 samples");
    assert.ok(
      audio.waveform.every((v: number) => Number.isInteger(v) && v >= 0 && v <= 1024),
      "integers 0..1024",
    );
    assert.equal(Math.max(...audio.waveform), 1024);
    const middle = audio.waveform[Math.floor(audio.waveform.length / 2)];
    assert.ok(middle < 300, `the quiet middle second is low in the waveform (${middle})`);
    await assertSameBytes(t, chat, c.url, files.voice);
  });

  test("other audio arrives as plain m.audio with its duration", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.tone, mimetype: "audio/mp4" });
    const event = await nextFromGhost(chat, "the audio file", (e) => e.content.filename === "tone.m4a");
    show(t, "m.audio (audio file)", event);
    const c = event.content;
    assert.equal(c.msgtype, "m.audio");
    assert.equal("org.matrix.msc3245.voice" in c, false, "not a voice message");
    assert.ok(Math.abs(c.info.duration - 2000) <= 100);
    assert.equal(c.info.mimetype, "audio/mp4");
    await assertSameBytes(t, chat, c.url, files.tone);
  });

  test("a document arrives as m.file with its name, type and size", async (t) => {
    await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.report, mimetype: "application/pdf", caption: "the numbers" });
    const event = await nextFromGhost(chat, "the PDF", (e) => e.content.msgtype === "m.file");
    show(t, "m.file (PDF with caption)", event);
    const c = event.content;
    assert.equal(c.filename, "report.pdf");
    assert.equal(c.body, "the numbers");
    assert.deepEqual([c.info.mimetype, c.info.size], ["application/pdf", fs.statSync(files.report).size]);
    await assertSameBytes(t, chat, c.url, files.report);
  });

  test("a file over the size limit is not fetched: the room gets a notice naming it and why", async (t) => {
    const sent = await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.big, mimetype: "application/octet-stream" });
    const event = await nextFromGhost(chat, "the over-limit notice", (e) => e.content.msgtype === "m.notice");
    show(t, "m.notice (over the limit)", event);
    assert.equal(event.content.body, "Sent a file (big.bin) that could not be bridged: it is 6.0 MB, over this bridge's limit of 5.0 MB.");
    // The simulator's media host saw the bridge fetch the earlier files, but never this one.
    const requests = await stack.sim.blobRequests();
    const blobPath = new URL(sent.url).pathname;
    assert.ok(
      requests.some((r) => r.method === "GET" && r.path !== blobPath),
      "the media host records the bridge's fetches (it fetched the earlier files)",
    );
    assert.deepEqual(
      requests.filter((r) => r.path === blobPath),
      [],
      "nobody asked for the over-limit blob",
    );
  });
});

describe("media from Matrix to WhatsApp", () => {
  let chat: Chat;
  before(async () => {
    chat = await openChat();
  });

  test("an image with a formatted caption arrives as an image with its caption as markdown", async (t) => {
    await uploadAndSend(chat, files.photo, "image/png", {
      msgtype: "m.image",
      filename: "photo.png",
      body: "Look here",
      format: "org.matrix.custom.html",
      formatted_body: "Look <strong>here</strong>",
      info: { w: 1280, h: 960 },
    });
    const entry = await waitForMedia(chat, (e) => e.filename === "photo.png");
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(entry)}`);
    assert.equal(entry.error, undefined);
    assert.equal(entry.mediaKind, "image");
    assert.equal(entry.contentType, "image/png");
    assert.equal(entry.caption, "Look **here**");
    assert.deepEqual([entry.width, entry.height], [1280, 960]);
    assert.equal(entry.size, fs.statSync(files.photo).size);
    assert.equal(entry.encryptedSize, fs.statSync(files.photo).size + 16, "AES-GCM ciphertext plus its 16-byte tag");
    showHash(t, entry, files.photo);
    assert.equal(entry.sha256, sha256OfFile(files.photo), "SHA-256 at the WhatsApp end equals the original's");
  });

  test("a video arrives as a video with its dimensions and duration", async (t) => {
    await uploadAndSend(chat, files.clip, "video/mp4", { msgtype: "m.video", body: "clip.mp4" });
    const entry = await waitForMedia(chat, (e) => e.filename === "clip.mp4");
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(entry)}`);
    assert.equal(entry.mediaKind, "video");
    assert.deepEqual([entry.width, entry.height], [640, 480], "probed, although the event gave no w/h");
    assert.ok(Math.abs(Number(entry.durationMs) - 2000) <= 100);
    assert.equal(entry.caption, undefined);
    showHash(t, entry, files.clip);
    assert.equal(entry.sha256, sha256OfFile(files.clip));
  });

  test("an Element voice message arrives as a voice note with its waveform", async (t) => {
    const waveform = Array.from({ length: 40 }, (_, i) => (i < 13 || i > 26 ? 1024 : 100));
    await uploadAndSend(chat, files.voice, "audio/ogg", {
      msgtype: "m.audio",
      body: "Voice message",
      info: { duration: 3000 },
      "org.matrix.msc1767.audio": { duration: 3000, waveform },
      "org.matrix.msc3245.voice": {},
    });
    const entry = await waitForMedia(chat, (e) => e.mediaKind === "voice" && e.sha256 === sha256OfFile(files.voice));
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(entry)}`);
    assert.equal(entry.contentType, "audio/ogg; codecs=opus");
    assert.equal(entry.filename, "Voice message.ogg");
    showHash(t, entry, files.voice);
    assert.ok(Math.abs(Number(entry.durationMs) - 3000) <= 100);
    assert.deepEqual(
      entry.waveform,
      waveform.map((v) => Math.round((v / 1024) * 255)),
      "Element's waveform, on the wire's 0..255 scale",
    );
  });

  test("a voice message that is not Ogg/Opus is converted to Ogg/Opus", async (t) => {
    await uploadAndSend(chat, files.tone, "audio/mp4", {
      msgtype: "m.audio",
      body: "recording.m4a",
      "org.matrix.msc1767.audio": { duration: 2000 },
      "org.matrix.msc3245.voice": {},
    });
    const entry = await waitForMedia(chat, (e) => e.mediaKind === "voice" && String(e.filename).startsWith("recording"));
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(entry)}`);
    assert.equal(entry.filename, "recording.ogg");
    assert.equal(entry.contentType, "audio/ogg; codecs=opus");
    const received = path.join(dir, "received-voice.ogg");
    fs.writeFileSync(received, Buffer.from(await (await fetch(String(entry.mediaUrl))).arrayBuffer()));
    const probe = ffprobeJson(received);
    assert.equal(probe.format.format_name, "ogg");
    assert.equal(probe.streams[0]?.codec_name, "opus");
    assert.ok(Array.isArray(entry.waveform) && (entry.waveform as number[]).length > 0, "a waveform was computed");
  });

  test("audio and documents arrive as audio and files, byte for byte", async (t) => {
    await uploadAndSend(chat, files.tone, "audio/mp4", { msgtype: "m.audio", body: "tone.m4a", info: { duration: 2000 } });
    await uploadAndSend(chat, files.report, "application/pdf", { msgtype: "m.file", body: "report.pdf" });
    const audio = await waitForMedia(chat, (e) => e.filename === "tone.m4a");
    const file = await waitForMedia(chat, (e) => e.filename === "report.pdf");
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(audio)}`);
    t.diagnostic(`WhatsApp inbox: ${JSON.stringify(file)}`);
    assert.equal(audio.mediaKind, "audio");
    assert.ok(Math.abs(Number(audio.durationMs) - 2000) <= 100);
    showHash(t, audio, files.tone);
    assert.equal(audio.sha256, sha256OfFile(files.tone));
    assert.equal(file.mediaKind, "file");
    assert.equal(file.contentType, "application/pdf");
    assert.equal(file.width, undefined);
    showHash(t, file, files.report);
    assert.equal(file.sha256, sha256OfFile(files.report));
  });

  test("something sent as an image that is not a picture goes as a file", async () => {
    await uploadAndSend(chat, files.report, "image/png", { msgtype: "m.image", body: "not-really.png" });
    const entry = await waitForMedia(chat, (e) => e.filename === "not-really.png");
    assert.equal(entry.mediaKind, "file");
    assert.equal(entry.contentType, "application/octet-stream", "the false image/png is not passed on");
    assert.equal(entry.sha256, sha256OfFile(files.report));
  });

  test("a file over the limit, or an encrypted one, is refused with a notice and never sent", async (t) => {
    await uploadAndSend(chat, files.big, "application/octet-stream", { msgtype: "m.file", body: "big.bin" });
    const tooBig = await nextFromGhost(chat, "the over-limit notice", (e) => e.content.msgtype === "m.notice" && /big\.bin/.test(e.content.body));
    show(t, "m.notice (not sent, over the limit)", tooBig);
    assert.equal(tooBig.content.body, "Your file (big.bin) was not sent: it is 6.0 MB, over this bridge's limit of 5.0 MB.");
    await chat.client.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.image",
      body: "secret.png",
      file: { url: "mxc://localhost/abc", key: { alg: "A256CTR", k: "x", ext: true, key_ops: ["encrypt", "decrypt"], kty: "oct" }, iv: "x", hashes: { sha256: "x" }, v: "v2" },
    });
    const encrypted = await nextFromGhost(chat, "the encrypted-file notice", (e) => e.content.msgtype === "m.notice" && /encrypted/.test(e.content.body));
    assert.match(encrypted.content.body, /^Your message was not sent: encrypted attachments cannot be bridged/);
    await chat.client.sendText(chat.roomId, "after the refusals");
    await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "text" && e.text === "after the refusals");
    const names = (await stack.sim.inbox(chat.phone)).filter((e) => e.kind === "media").map((e) => e.filename);
    assert.equal(names.includes("big.bin"), false);
    assert.equal(names.includes("secret.png"), false);
  });

  test("a file the homeserver does not have, or never gets, is not sent: a notice says so, and the chat goes on", async (t) => {
    const info = { mimetype: "application/pdf", size: 1000 };
    const missing = await chat.client.sendEvent(chat.roomId, "m.room.message", { msgtype: "m.file", body: "missing.pdf", url: `mxc://${stack.domain}/NoSuchMediaHere`, info });
    // A media id reserved for an upload that never comes: the homeserver answers its download with 504 M_NOT_YET_UPLOADED.
    const { content_uri: reserved } = await chat.client.request<{ content_uri: string }>("POST", "/_matrix/media/v1/create", {});
    const pending = await chat.client.sendEvent(chat.roomId, "m.room.message", { msgtype: "m.file", body: "pending.pdf", url: reserved, info });
    await chat.client.sendText(chat.roomId, "after the files that never came");
    const notFound = await nextFromGhost(chat, "the notice for the missing file", (e) => e.content.msgtype === "m.notice" && /missing\.pdf/.test(e.content.body));
    show(t, "m.notice (not sent, not on the homeserver)", notFound);
    assert.equal(notFound.content.body, "Your file (missing.pdf) was not sent: it could not be fetched from the homeserver, which has no such file (HTTP 404 M_NOT_FOUND).");
    assert.equal(notFound.content["m.relates_to"]?.["m.in_reply_to"]?.event_id, missing, "the notice answers the file's event");
    // The homeserver holds each download open for a while before it answers 504; the bridge's config allows 2 attempts.
    const gaveUp = await chat.client.waitFor(
      (e) => e.room_id === chat.roomId && e.sender === chat.ghost && e.content.msgtype === "m.notice" && /pending\.pdf/.test(e.content.body),
      { timeoutMs: 240_000, description: "the notice for the file that was never uploaded" },
    );
    show(t, "m.notice (not sent, given up)", gaveUp);
    assert.equal(gaveUp.content.body, "Your file (pending.pdf) was not sent: it could not be fetched from the homeserver (HTTP 504 M_NOT_YET_UPLOADED) after 2 attempts.");
    assert.equal(gaveUp.content["m.relates_to"]?.["m.in_reply_to"]?.event_id, pending);
    await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "text" && e.text === "after the files that never came", 60_000);
    const names = (await stack.sim.inbox(chat.phone)).filter((e) => e.kind === "media").map((e) => e.filename);
    assert.deepEqual(
      names.filter((n) => n === "missing.pdf" || n === "pending.pdf"),
      [],
    );
  });
});
