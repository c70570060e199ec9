/**
 * The pure media conversions: ffprobe answers → kinds and facts; Matrix media events ↔
 * RemoteContent, field by field against the client-server spec (v1.10 captions, MSC2448,
 * MSC3245); MIMI attachments ↔ RemoteContent as docs/protocol.md §17 describes them.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  cleanWaveform,
  describeMedia,
  fileNameFor,
  mediaFailureNotice,
  notSentText,
  parseMxc,
  remoteMediaToMatrix,
  settledMimetype,
  waveformFromPeaks,
} from "../../src/convert/media";
import { isOggOpus, parseFfprobe, probedFacts, settleMediaKind, type MediaProbe } from "../../src/media/probe";
import { matrixToRemote } from "../../src/convert/message-content";
import type { RemoteContent, RemoteMedia } from "../../src/network/connector";
import { blobRefOf, mediaToMimi, mimiToRemoteContent } from "../../src/network/mimi-content";
import type { HostedBlob } from "../../src/network/media-host";
import { decodeMimi, encodeMimi, MIMI_DISPOSITION, newAttachment, type MimiMessage } from "../../src/protocol/mimi";
import { decodePayload, encodePayload, waKindOf, waMediaOf, WA_KIND_VOICE } from "../../src/protocol/payload";

const stream = (s: Record<string, unknown>) => ({ disposition: { attached_pic: 0 }, ...s });

const PROBES = {
  png: { format: { format_name: "png_pipe" }, streams: [stream({ codec_type: "video", codec_name: "png", width: 1280, height: 960 })] },
  jpeg: { format: { format_name: "image2", duration: "0.040000" }, streams: [stream({ codec_type: "video", codec_name: "mjpeg", width: 320, height: 240 })] },
  mp4: {
    format: { format_name: "mov,mp4,m4a,3gp,3g2,mj2", duration: "2.000000" },
    streams: [stream({ codec_type: "video", codec_name: "h264", width: 640, height: 480 }), stream({ codec_type: "audio", codec_name: "aac" })],
  },
  portraitPhoneVideo: {
    format: { format_name: "mov,mp4,m4a,3gp,3g2,mj2", duration: "5.5" },
    streams: [stream({ codec_type: "video", codec_name: "h264", width: 1920, height: 1080, side_data_list: [{ side_data_type: "Display Matrix", rotation: -90 }] })],
  },
  opus: { format: { format_name: "ogg", duration: "3.006500" }, streams: [stream({ codec_type: "audio", codec_name: "opus" })] },
  mp3WithCover: {
    format: { format_name: "mp3", duration: "180.2" },
    streams: [stream({ codec_type: "audio", codec_name: "mp3" }), stream({ codec_type: "video", codec_name: "mjpeg", width: 500, height: 500, disposition: { attached_pic: 1 } })],
  },
};

function probe(name: keyof typeof PROBES): MediaProbe {
  const p = parseFfprobe(PROBES[name]);
  assert.ok(p, `${name} parses`);
  return p;
}

describe("what a file is", () => {
  it("reads ffprobe's answer: pictures, videos (turned upright), sound, cover art", () => {
    assert.deepEqual(probe("png"), { container: "png_pipe", still: true, video: { codec: "png", width: 1280, height: 960 } });
    assert.equal(probe("jpeg").durationMs, undefined, "a still picture has no duration");
    assert.deepEqual(probe("mp4"), {
      container: "mov,mp4,m4a,3gp,3g2,mj2",
      still: false,
      durationMs: 2000,
      video: { codec: "h264", width: 640, height: 480 },
      audio: { codec: "aac" },
    });
    assert.deepEqual(probe("portraitPhoneVideo").video, { codec: "h264", width: 1080, height: 1920 });
    assert.equal(probe("mp3WithCover").video, undefined, "cover art is not a video");
    assert.equal(parseFfprobe({}), null);
    assert.equal(parseFfprobe({ format: { format_name: "x" }, streams: [] }), null);
  });

  it("keeps the sender's kind only when the file is that, else makes it a file", () => {
    const table: [Parameters<typeof settleMediaKind>[0], MediaProbe | null, string][] = [
      ["image", probe("png"), "image"],
      ["image", probe("mp4"), "file"],
      ["image", null, "file"],
      ["video", probe("mp4"), "video"],
      ["video", probe("png"), "file"],
      ["video", probe("mp3WithCover"), "file"],
      ["voice", probe("opus"), "voice"],
      ["voice", probe("png"), "file"],
      ["audio", probe("mp3WithCover"), "audio"],
      ["audio", probe("mp4"), "audio"],
      ["file", probe("png"), "file"],
    ];
    for (const [claimed, p, expected] of table) assert.equal(settleMediaKind(claimed, p), expected, `${claimed} → ${expected}`);
  });

  it("drops a content type that claimed a kind the file turned out not to be", () => {
    assert.equal(settledMimetype("image", "file", "image/png"), "application/octet-stream");
    assert.equal(settledMimetype("image", "image", "image/png"), "image/png");
    assert.equal(settledMimetype("file", "file", "image/png"), "image/png", "a picture sent as a document keeps its type");
    assert.equal(settledMimetype("video", "file", "application/pdf"), "application/pdf");
  });

  it("takes dimensions for pictures and videos, durations for what plays", () => {
    assert.deepEqual(probedFacts("image", probe("png")), { width: 1280, height: 960 });
    assert.deepEqual(probedFacts("video", probe("mp4")), { width: 640, height: 480, durationMs: 2000 });
    assert.deepEqual(probedFacts("voice", probe("opus")), { durationMs: 3007 });
    assert.deepEqual(probedFacts("file", probe("mp4")), {});
    assert.equal(isOggOpus(probe("opus")), true);
    assert.equal(isOggOpus(probe("mp3WithCover")), false);
  });

  it("makes waveforms of at most 100 integers 0..1024, loudest 1024", () => {
    const peaks = Array.from({ length: 300 }, (_, i) => (i >= 100 && i < 200 ? 1000 : 32000));
    const wave = waveformFromPeaks(peaks, 100);
    assert.equal(wave.length, 100);
    assert.equal(Math.max(...wave), 1024);
    assert.ok(wave[50]! < 40, "the quiet third is quiet");
    assert.deepEqual(waveformFromPeaks([0, 0, 0]), [0, 0, 0]);
    assert.deepEqual(waveformFromPeaks([]), []);
    assert.equal(waveformFromPeaks(Array(1000).fill(5)).length, 64, "64 samples by default");
    assert.deepEqual(cleanWaveform([0, 2000, -5, 3.6, "x"]), [0, 1024, 0, 4, 0]);
    assert.equal(cleanWaveform("nope"), undefined);
    assert.equal(cleanWaveform(Array(150).fill(1))!.length, 100);
  });

  it("names files safely and describes them for notices", () => {
    assert.equal(fileNameFor("voice", "audio/ogg", "Voice message"), "Voice message.ogg");
    assert.equal(fileNameFor("image", "image/jpeg", "../../etc/passwd"), ".._.._etc_passwd.jpg");
    assert.equal(fileNameFor("file", "application/pdf", "report.pdf"), "report.pdf");
    assert.equal(fileNameFor("video", "video/mp4", ""), "video.mp4");
    assert.equal(fileNameFor("file", "application/x-unknown", undefined), "file");
    assert.equal(describeMedia({ kind: "image", filename: "a.jpg" }), "a photo (a.jpg)");
    assert.equal(describeMedia({ kind: "audio", filename: "b.mp3" }), "an audio file (b.mp3)");
    assert.equal(describeMedia({ kind: "voice", filename: "voice-message.ogg" }), "a voice message");
    assert.deepEqual(mediaFailureNotice({ kind: "video", filename: "c.mp4" }, "the link expired"), {
      msgtype: "m.notice",
      body: "Sent a video (c.mp4) that could not be bridged: the link expired.",
    });
    assert.equal(notSentText({ kind: "file", filename: "d.bin" }, "it is too big"), "Your file (d.bin) was not sent: it is too big.");
  });
});

describe("Matrix media events → network", () => {
  it("reads an m.image with a v1.10 caption (filename differs from body), its size and dimensions", () => {
    const content = matrixToRemote({
      msgtype: "m.image",
      url: "mxc://example.org/abc123",
      filename: "dog.jpg",
      body: "this is a ~~cat~~ picture :3",
      format: "org.matrix.custom.html",
      formatted_body: "this is a <del>cat</del> <strong>picture</strong> :3",
      info: { w: 479, h: 640, mimetype: "image/jpeg", size: 27253 },
    });
    assert.deepEqual(content, {
      type: "media",
      media: { kind: "image", mimetype: "image/jpeg", filename: "dog.jpg", size: 27253, width: 479, height: 640 },
      source: { from: "matrix", mxc: "mxc://example.org/abc123" },
      caption: "this is a ~~cat~~ **picture** :3",
    });
  });

  it("treats body as the file name when filename is absent or equal", () => {
    for (const extra of [{}, { filename: "report.pdf" }]) {
      const content = matrixToRemote({ msgtype: "m.file", url: "mxc://hs/f", body: "report.pdf", info: { mimetype: "application/pdf", size: 10 }, ...extra }) as Extract<
        RemoteContent,
        { type: "media" }
      >;
      assert.equal(content.media.filename, "report.pdf");
      assert.equal(content.caption, undefined);
    }
  });

  it("turns an Element voice message (MSC3245) into a voice note with duration and waveform", () => {
    const content = matrixToRemote({
      msgtype: "m.audio",
      body: "Voice message",
      url: "mxc://hs/v",
      info: { mimetype: "audio/ogg", size: 5000, duration: 2400 },
      "org.matrix.msc1767.audio": { duration: 2400, waveform: [0, 512, 1024] },
      "org.matrix.msc3245.voice": {},
    }) as Extract<RemoteContent, { type: "media" }>;
    assert.deepEqual(content.media, { kind: "voice", mimetype: "audio/ogg", filename: "Voice message.ogg", size: 5000, durationMs: 2400, waveform: [0, 512, 1024] });
    const plain = matrixToRemote({ msgtype: "m.audio", body: "song.mp3", url: "mxc://hs/s", info: { mimetype: "audio/mpeg", duration: 1000 } }) as Extract<
      RemoteContent,
      { type: "media" }
    >;
    assert.equal(plain.media.kind, "audio");
    assert.equal(plain.media.waveform, undefined);
  });

  it("refuses encrypted attachments and attachments without an mxc URL", () => {
    assert.deepEqual(matrixToRemote({ msgtype: "m.image", body: "x.png", file: { url: "mxc://hs/e" } }), {
      unbridgeable: true,
      reason: "encrypted attachments cannot be bridged (this room is end-to-end encrypted)",
    });
    assert.equal((matrixToRemote({ msgtype: "m.video", body: "x", url: "https://example.org/x.mp4" }) as { reason: string }).reason, "the attachment's URL is not an mxc:// URI");
  });

  it("accepts only mxc URIs the spec allows: a homeserver may fail for ever on the others", () => {
    assert.deepEqual(parseMxc("mxc://example.org/abc_D-9"), { serverName: "example.org", mediaId: "abc_D-9" });
    assert.deepEqual(parseMxc("mxc://[::1]:8448/x"), { serverName: "[::1]:8448", mediaId: "x" });
    assert.deepEqual(parseMxc("mxc://127.0.0.1:8008/x"), { serverName: "127.0.0.1:8008", mediaId: "x" });
    for (const bad of [
      "mxc://ser ver/id",
      "mxc://localhost/../../etc/passwd",
      "mxc://hs/a.b",
      "mxc://hs/a%2F",
      "mxc://hs/",
      "mxc:///id",
      "mxc://hs:port/x",
      "mxc://hs/x?y",
      "MXC://hs/x",
    ]) {
      assert.equal(parseMxc(bad), null, bad);
      assert.equal((matrixToRemote({ msgtype: "m.file", body: "f", url: bad }) as { reason?: string }).reason, "the attachment's URL is not an mxc:// URI", bad);
    }
  });
});

describe("network media → Matrix events", () => {
  const image: RemoteMedia = { kind: "image", mimetype: "image/png", filename: "photo.png", width: 1280, height: 960 };

  it("builds m.image with info, thumbnail, blurhash and a formatted caption", () => {
    const content = remoteMediaToMatrix({
      media: image,
      mxc: "mxc://hs/img",
      size: 143093,
      thumbnail: { mxc: "mxc://hs/thumb", mimetype: "image/png", size: 85571, width: 800, height: 600 },
      blurhash: "LZKLEr}3oY_gxvW+fPrxbbWBbajZ",
      caption: "Look **here**",
    });
    assert.deepEqual(content, {
      msgtype: "m.image",
      body: "Look **here**",
      filename: "photo.png",
      format: "org.matrix.custom.html",
      formatted_body: "Look <strong>here</strong>",
      url: "mxc://hs/img",
      info: {
        mimetype: "image/png",
        size: 143093,
        w: 1280,
        h: 960,
        thumbnail_url: "mxc://hs/thumb",
        thumbnail_info: { mimetype: "image/png", size: 85571, w: 800, h: 600 },
        "xyz.amorgan.blurhash": "LZKLEr}3oY_gxvW+fPrxbbWBbajZ",
      },
    });
  });

  it("builds m.video, m.audio, voice messages and m.file", () => {
    const video = remoteMediaToMatrix({
      media: { kind: "video", mimetype: "video/mp4", filename: "clip.mp4", width: 640, height: 480, durationMs: 2000 },
      mxc: "mxc://hs/v",
      size: 99,
    });
    assert.deepEqual(video, {
      msgtype: "m.video",
      body: "clip.mp4",
      filename: "clip.mp4",
      url: "mxc://hs/v",
      info: { mimetype: "video/mp4", size: 99, w: 640, h: 480, duration: 2000 },
    });
    const voice = remoteMediaToMatrix({
      media: { kind: "voice", mimetype: "audio/ogg; codecs=opus", filename: "voice-message.ogg", durationMs: 3007, waveform: [1024, 20] },
      mxc: "mxc://hs/a",
      size: 7,
    });
    assert.deepEqual(voice, {
      msgtype: "m.audio",
      body: "voice-message.ogg",
      filename: "voice-message.ogg",
      url: "mxc://hs/a",
      info: { mimetype: "audio/ogg", size: 7, duration: 3007 },
      "org.matrix.msc1767.audio": { duration: 3007, waveform: [1024, 20] },
      "org.matrix.msc3245.voice": {},
    });
    const audio = remoteMediaToMatrix({ media: { kind: "audio", mimetype: "audio/mpeg", filename: "a.mp3", durationMs: 5 }, mxc: "mxc://hs/m", size: 3 });
    assert.equal(audio.msgtype, "m.audio");
    assert.equal("org.matrix.msc3245.voice" in audio, false);
    const file = remoteMediaToMatrix({
      media: { kind: "file", mimetype: "application/pdf", filename: "r.pdf", width: 5, height: 5 },
      mxc: "mxc://hs/f",
      size: 591,
      caption: "plain caption",
    });
    assert.deepEqual(file, { msgtype: "m.file", body: "plain caption", filename: "r.pdf", url: "mxc://hs/f", info: { mimetype: "application/pdf", size: 591 } });
  });
});

describe("MIMI attachments (docs/protocol.md §17)", () => {
  const SENDER = "mimi://matrix.example.org/u/@alice:example.org";
  const ROOM = "mimi://whatsapp.example/r/dm-c4f127892d424d3446f150873f40cfdc";
  const blob: HostedBlob = {
    url: "https://media.matrix.example.org/media/v1/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    expires: 1_800_000_000,
    key: new Uint8Array(16).fill(1),
    nonce: new Uint8Array(12).fill(2),
    size: 1016,
    sha256: new Uint8Array(32).fill(3),
  };

  function roundTrip(media: RemoteMedia, caption?: string): { message: MimiMessage; content: Extract<RemoteContent, { type: "media" }> } {
    const bytes = encodeMimi(mediaToMimi(media, caption, blob, SENDER, ROOM));
    assert.deepEqual(decodePayload(encodePayload({ kind: "content", mimi: bytes })), { kind: "content", mimi: bytes }, "a valid content payload");
    const message = decodeMimi(bytes);
    const content = mimiToRemoteContent(message);
    assert.equal(content.type, "media");
    return { message, content: content as Extract<RemoteContent, { type: "media" }> };
  }

  it("sends pictures inline with their dimensions and reads them back, plaintext size = size − 16", () => {
    const { message, content } = roundTrip({ kind: "image", mimetype: "image/jpeg", filename: "a.jpg", width: 320, height: 240, durationMs: 40 });
    assert.equal(message.body.cardinality, "external");
    assert.equal(message.body.disposition, MIMI_DISPOSITION.inline);
    assert.deepEqual(waMediaOf(message), { width: 320, height: 240 }, "no duration for a picture");
    assert.deepEqual(content.media, { kind: "image", mimetype: "image/jpeg", filename: "a.jpg", size: 1000, width: 320, height: 240 });
    const ref = blobRefOf((content.source as { ref: string }).ref);
    assert.deepEqual(ref, { url: blob.url, expires: blob.expires, size: blob.size, sha256: blob.sha256, key: blob.key, nonce: blob.nonce });
  });

  it("marks voice notes with x-wa-kind voice and carries the waveform on a 0..255 scale", () => {
    const { message, content } = roundTrip({ kind: "voice", mimetype: "audio/ogg; codecs=opus", filename: "v.ogg", durationMs: 3000, waveform: [0, 512, 1024] });
    assert.equal(waKindOf(message), WA_KIND_VOICE);
    assert.deepEqual([...waMediaOf(message).waveform!], [0, 128, 255]);
    assert.equal(content.media.kind, "voice");
    assert.equal(content.media.durationMs, 3000);
    assert.deepEqual(content.media.waveform, [0, 514, 1024]);
    const audio = roundTrip({ kind: "audio", mimetype: "audio/mpeg", filename: "s.mp3", durationMs: 9000 });
    assert.equal(waKindOf(audio.message), undefined);
    assert.equal(audio.content.media.kind, "audio");
  });

  it("sends documents with the attachment disposition, which makes even a picture a file", () => {
    const { message, content } = roundTrip({ kind: "file", mimetype: "image/png", filename: "scan.png" }, "the **scan**");
    assert.equal(message.body.cardinality, "multi");
    assert.equal(message.body.cardinality === "multi" && message.body.parts[0]!.disposition, MIMI_DISPOSITION.attachment);
    assert.equal(content.media.kind, "file");
    assert.equal(content.caption, "the **scan**");
  });

  it("encodes x-wa-media as the protocol's example shows", () => {
    const { message } = roundTrip({ kind: "video", mimetype: "video/mp4", filename: "c.mp4", width: 640, height: 480, durationMs: 2000 });
    const ext = message.extensions.unknown.find((e) => e.key === "x-wa-media");
    assert.equal(Buffer.from(ext!.encodedValue).toString("hex"), "a3657769647468190280666865696768741901e06a6475726174696f6e4d731907d0");
  });

  it("tells videos by content type and refuses unencrypted external parts", () => {
    assert.equal(roundTrip({ kind: "video", mimetype: "video/mp4", filename: "c.mp4", width: 2, height: 2, durationMs: 10 }).content.media.kind, "video");
    const plain = newAttachment({ sender: SENDER, room: ROOM, external: { contentType: "image/png", url: "https://x.example/a.png", size: 10, filename: "a.png" } });
    const content = mimiToRemoteContent(plain);
    assert.equal(content.type, "unsupported");
    assert.match((content as { description: string }).description, /not encrypted with AES-128-GCM/);
  });
});
