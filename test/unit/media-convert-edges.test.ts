/**
 * The small media decisions of src/convert/media.ts, each at its edges: which kind a content type
 * suggests, when a picture gets a thumbnail and of which type, the blurhash sample size and
 * components, and how sizes are written in notices.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  baseMimetype,
  cleanWaveform,
  fileNameFor,
  matrixMediaToRemote,
  parseMxc,
  remoteMediaToMatrix,
  waveformFromPeaks,
  blurhashComponents,
  blurhashSampleSize,
  kindOfMimetype,
  megabytes,
  needsThumbnail,
  overLimitReason,
  settledMimetype,
  THUMBNAIL_MAX,
  thumbnailMimetype,
} from "../../src/convert/media";
import type { RemoteMedia } from "../../src/network/connector";

describe("content types", () => {
  it("the base type drops parameters and case", () => {
    assert.equal(baseMimetype(" Image/PNG ; charset=x"), "image/png");
    assert.equal(baseMimetype("audio/ogg; codecs=opus"), "audio/ogg");
  });

  it("a type suggests a kind by its top-level type only", () => {
    assert.equal(kindOfMimetype("image/webp"), "image");
    assert.equal(kindOfMimetype("VIDEO/mp4; codecs=avc1"), "video");
    assert.equal(kindOfMimetype("audio/mpeg"), "audio");
    assert.equal(kindOfMimetype("application/pdf"), "file");
    assert.equal(kindOfMimetype("text/image/x"), "file", "image/ must start the type");
    assert.equal(kindOfMimetype("xvideo/mp4"), "file");
    assert.equal(kindOfMimetype("imagex/png"), "file");
  });

  it("a settled kind keeps the claimed type unless the file is not what its type claimed", () => {
    assert.equal(settledMimetype("image", "image", "image/png"), "image/png");
    assert.equal(settledMimetype("file", "file", "image/png"), "image/png", "a file that was sent as a file keeps its type");
    assert.equal(settledMimetype("video", "file", "video/mp4"), "application/octet-stream");
    assert.equal(settledMimetype("audio", "file", "application/zip"), "application/zip", "a type that claimed no kind is kept");
    assert.equal(settledMimetype("image", "video", "image/gif"), "image/gif", "settled as another kind than file: kept");
  });
});

describe("thumbnails and blurhash", () => {
  it("videos always get a thumbnail, pictures only when larger than 800 × 600, others never", () => {
    assert.deepEqual(THUMBNAIL_MAX, { width: 800, height: 600 });
    assert.equal(needsThumbnail("video", undefined, undefined), true);
    assert.equal(needsThumbnail("image", 800, 600), false);
    assert.equal(needsThumbnail("image", 801, 600), true);
    assert.equal(needsThumbnail("image", 800, 601), true);
    assert.equal(needsThumbnail("image", 100, 100), false);
    assert.equal(needsThumbnail("image", undefined, 5000), false, "no size known: no thumbnail");
    assert.equal(needsThumbnail("image", 5000, undefined), false);
    assert.equal(needsThumbnail("file", 5000, 5000), false);
    assert.equal(needsThumbnail("audio", 5000, 5000), false);
  });

  it("PNG thumbnails stay PNG, every other type becomes JPEG", () => {
    assert.equal(thumbnailMimetype("image/png"), "image/png");
    assert.equal(thumbnailMimetype("IMAGE/PNG; x=y"), "image/png");
    assert.equal(thumbnailMimetype("image/gif"), "image/jpeg");
    assert.equal(thumbnailMimetype("video/mp4"), "image/jpeg");
  });

  it("the blurhash sample keeps the aspect ratio within 32 pixels a side, at least 1", () => {
    assert.deepEqual(blurhashSampleSize(1280, 960), { width: 32, height: 24 });
    assert.deepEqual(blurhashSampleSize(960, 1280), { width: 24, height: 32 });
    assert.deepEqual(blurhashSampleSize(20, 10), { width: 20, height: 10 }, "small pictures are not enlarged");
    assert.deepEqual(blurhashSampleSize(10000, 10), { width: 32, height: 1 }, "never 0 pixels");
    assert.deepEqual(blurhashSampleSize(100, 50, 10), { width: 10, height: 5 });
    assert.deepEqual(blurhashSampleSize(1000, 333), { width: 32, height: 11 }, "rounded, not truncated");
  });

  it("blurhash components: 4 along the longer side, 3 along the shorter; a square counts as wide", () => {
    assert.deepEqual(blurhashComponents(1280, 960), { x: 4, y: 3 });
    assert.deepEqual(blurhashComponents(960, 1280), { x: 3, y: 4 });
    assert.deepEqual(blurhashComponents(500, 500), { x: 4, y: 3 });
  });
});

describe("sizes in notices", () => {
  it("megabytes have one decimal below 10 MB and none from 10 MB on", () => {
    assert.equal(megabytes(1.5 * 1024 * 1024), "1.5 MB");
    assert.equal(megabytes(10 * 1024 * 1024 - 1), "10.0 MB");
    assert.equal(megabytes(10 * 1024 * 1024), "10 MB");
    assert.equal(megabytes(100.4 * 1024 * 1024), "100 MB");
    assert.equal(megabytes(0), "0.0 MB");
  });

  it("an over-limit file's reason names its size and the limit", () => {
    assert.equal(overLimitReason(150 * 1024 * 1024, 100 * 1024 * 1024), "it is 150 MB, over this bridge's limit of 100 MB");
    assert.equal(overLimitReason(2.25 * 1024 * 1024, 2 * 1024 * 1024), "it is 2.3 MB, over this bridge's limit of 2.0 MB");
  });
});

describe("waveforms", () => {
  it("each bin is the peak of its share of the input, even when the shares are uneven", () => {
    assert.deepEqual(waveformFromPeaks([1, 9, 3, 4, 2], 2), [1024, 455]);
    assert.deepEqual(waveformFromPeaks([1, 5, 2, 8], 2), [640, 1024]);
    assert.deepEqual(waveformFromPeaks([4, 2], 5), [1024, 512], "never more bins than peaks");
  });

  it("only finite numbers count; an empty or non-list waveform is none", () => {
    assert.deepEqual(cleanWaveform([Infinity, NaN, 10]), [0, 0, 10]);
    assert.equal(cleanWaveform([]), undefined);
    assert.equal(cleanWaveform({ length: 3 }), undefined);
  });
});

describe("file names", () => {
  it("each known type gets its extension", () => {
    const extensions: Record<string, string> = {
      "image/jpeg": "jpg",
      "image/png": "png",
      "image/gif": "gif",
      "image/webp": "webp",
      "video/mp4": "mp4",
      "video/webm": "webm",
      "video/quicktime": "mov",
      "audio/ogg": "ogg",
      "audio/mpeg": "mp3",
      "audio/mp4": "m4a",
      "audio/aac": "aac",
      "audio/webm": "weba",
      "audio/wav": "wav",
      "application/pdf": "pdf",
    };
    for (const [type, ext] of Object.entries(extensions)) assert.equal(fileNameFor("file", type, "x"), `x.${ext}`, type);
  });

  it("without a usable name each kind has its default", () => {
    for (const [kind, name] of [
      ["image", "image"],
      ["video", "video"],
      ["voice", "voice-message"],
      ["audio", "audio"],
      ["file", "file"],
    ] as const) {
      assert.equal(fileNameFor(kind, "application/x-unknown", ""), name);
      assert.equal(fileNameFor(kind, "application/x-unknown", "."), name);
      assert.equal(fileNameFor(kind, "application/x-unknown", ".."), name);
      assert.equal(fileNameFor(kind, "application/x-unknown", " \u0001 "), name);
    }
  });

  it("control characters go, slashes become _, space around is trimmed, at most 255 characters", () => {
    assert.equal(fileNameFor("file", "application/x-unknown", " a\u0000b\u001fc\u007fd/e\\f "), "abcd_e_f");
    assert.equal(fileNameFor("file", "application/x-unknown", "x".repeat(300)).length, 255);
    assert.equal(fileNameFor("file", "application/x-unknown", "...."), "....");
  });

  it("an extension is added unless the name already ends in one", () => {
    assert.equal(fileNameFor("image", "image/jpeg", "v1.2 final"), "v1.2 final.jpg");
    assert.equal(fileNameFor("image", "image/jpeg", "photo.JPEG"), "photo.JPEG");
    assert.equal(fileNameFor("image", "image/jpeg", "archive.toolong"), "archive.toolong.jpg");
  });

  it("an mxc URI must be the whole string", () => {
    assert.equal(parseMxc("xmxc://hs/a"), null);
    assert.equal(parseMxc("mxc://hs/a/"), null);
    assert.deepEqual(parseMxc("mxc://hs.example:8448/A_b-1"), { serverName: "hs.example:8448", mediaId: "A_b-1" });
  });
});

describe("Matrix media fields, each only where it belongs", () => {
  const image = (extra: Record<string, unknown> = {}, info: Record<string, unknown> = {}) =>
    matrixMediaToRemote({ msgtype: "m.image", url: "mxc://hs/a", body: "a.png", info: { mimetype: "image/png", ...info }, ...extra }) as {
      type: string;
      media: RemoteMedia;
      caption?: string;
    };

  it("no size, dimensions or duration unless given as positive integers, and dimensions only in pairs", () => {
    assert.deepEqual(image().media, { kind: "image", mimetype: "image/png", filename: "a.png" });
    assert.deepEqual(image({}, { size: 0, w: 0, h: 10 }).media, { kind: "image", mimetype: "image/png", filename: "a.png" });
    assert.deepEqual(image({}, { size: "12", w: 10 }).media, { kind: "image", mimetype: "image/png", filename: "a.png" });
    assert.deepEqual(image({}, { h: 10 }).media, { kind: "image", mimetype: "image/png", filename: "a.png" });
    assert.deepEqual(image({}, { size: 12, w: 10, h: 20, duration: 500 }).media, { kind: "image", mimetype: "image/png", filename: "a.png", size: 12, width: 10, height: 20 });
  });

  it("files have no dimensions or duration; videos have both; audio a duration from info or MSC1767", () => {
    const file = matrixMediaToRemote({ msgtype: "m.file", url: "mxc://hs/f", body: "f.bin", info: { w: 10, h: 10, duration: 5 } }) as { media: RemoteMedia };
    assert.deepEqual(file.media, { kind: "file", mimetype: "application/octet-stream", filename: "f.bin" });
    const video = matrixMediaToRemote({ msgtype: "m.video", url: "mxc://hs/v", body: "v.mp4", info: { mimetype: "video/mp4", w: 10, h: 20, duration: 5 } }) as {
      media: RemoteMedia;
    };
    assert.deepEqual(video.media, { kind: "video", mimetype: "video/mp4", filename: "v.mp4", width: 10, height: 20, durationMs: 5 });
    const audio = matrixMediaToRemote({
      msgtype: "m.audio",
      url: "mxc://hs/s",
      body: "s.mp3",
      info: { mimetype: "audio/mpeg", w: 10, h: 20 },
      "org.matrix.msc1767.audio": { duration: 7, waveform: [1, 2] },
    }) as { media: RemoteMedia };
    assert.deepEqual(audio.media, { kind: "audio", mimetype: "audio/mpeg", filename: "s.mp3", durationMs: 7 }, "no dimensions, no waveform for plain audio");
  });

  it("a voice note needs an object under org.matrix.msc3245.voice, and only m.audio can be one", () => {
    const audio = (voice: unknown, msgtype = "m.audio") =>
      (matrixMediaToRemote({ msgtype, url: "mxc://hs/s", body: "s.ogg", info: { mimetype: "audio/ogg" }, "org.matrix.msc3245.voice": voice }) as { media: RemoteMedia }).media.kind;
    assert.equal(audio({}), "voice");
    assert.equal(audio(null), "audio");
    assert.equal(audio("yes"), "audio");
    assert.equal(audio({}, "m.file"), "file");
    const voice = matrixMediaToRemote({
      msgtype: "m.audio",
      url: "mxc://hs/s",
      body: "s.ogg",
      "org.matrix.msc3245.voice": {},
      "org.matrix.msc1767.audio": { waveform: "bad" },
    }) as {
      media: RemoteMedia;
    };
    assert.deepEqual(voice.media, { kind: "voice", mimetype: "application/octet-stream", filename: "s.ogg" }, "no usable waveform, no duration: neither field");
  });

  it("a caption only when filename and body are both given and differ", () => {
    const withCaption = (body: unknown, filename: unknown) =>
      matrixMediaToRemote({ msgtype: "m.file", url: "mxc://hs/f", body, filename, info: { mimetype: "application/pdf" } }) as { caption?: string; media: RemoteMedia };
    assert.equal(withCaption("see *this*", "r.pdf").caption, "see \\*this\\*");
    assert.equal("caption" in withCaption("", "r.pdf"), false);
    assert.equal(withCaption("", "r.pdf").media.filename, "r.pdf");
    assert.equal("caption" in withCaption("r.pdf", "r.pdf"), false);
    assert.equal("caption" in withCaption("r.pdf", ""), false);
    assert.equal(withCaption(undefined, undefined).media.filename, "file.pdf", "no name at all: the kind's default");
  });

  it("refuses unknown msgtypes and attachments without a URL, saying which", () => {
    assert.deepEqual(matrixMediaToRemote({ msgtype: "m.location", url: "mxc://hs/a" }), { unbridgeable: true, reason: "messages of type m.location are not supported yet" });
    assert.deepEqual(matrixMediaToRemote({ msgtype: "m.image", file: { url: "mxc://hs/e" } }), {
      unbridgeable: true,
      reason: "encrypted attachments cannot be bridged (this room is end-to-end encrypted)",
    });
    assert.deepEqual(matrixMediaToRemote({ msgtype: "m.image" }), { unbridgeable: true, reason: "the attachment has no URL" });
  });
});

describe("network media to Matrix, each field only where it belongs", () => {
  const media = (m: Partial<RemoteMedia>): RemoteMedia => ({ kind: "file", mimetype: "application/pdf", filename: "r.pdf", ...m });

  it("durations for what plays, not for pictures or files", () => {
    for (const kind of ["image", "file"] as const) {
      const content = remoteMediaToMatrix({ media: media({ kind, durationMs: 5 }), mxc: "mxc://hs/m", size: 3 });
      assert.deepEqual(content.info, { mimetype: "application/pdf", size: 3 }, kind);
    }
    assert.deepEqual(remoteMediaToMatrix({ media: media({ kind: "audio", mimetype: "audio/mpeg" }), mxc: "mxc://hs/m", size: 3 }).info, { mimetype: "audio/mpeg", size: 3 });
    assert.deepEqual(remoteMediaToMatrix({ media: media({ kind: "audio", mimetype: "audio/mpeg", durationMs: 5 }), mxc: "mxc://hs/m", size: 3 }).info, {
      mimetype: "audio/mpeg",
      size: 3,
      duration: 5,
    });
  });

  it("a blank caption or one equal to the file name changes nothing; a plain one sets only the body", () => {
    const plain = { msgtype: "m.file", body: "r.pdf", filename: "r.pdf", url: "mxc://hs/m", info: { mimetype: "application/pdf", size: 3 } };
    assert.deepEqual(remoteMediaToMatrix({ media: media({}), mxc: "mxc://hs/m", size: 3, caption: "   " }), plain);
    assert.deepEqual(remoteMediaToMatrix({ media: media({}), mxc: "mxc://hs/m", size: 3, caption: "r.pdf" }), plain);
    assert.deepEqual(remoteMediaToMatrix({ media: media({}), mxc: "mxc://hs/m", size: 3, caption: " see this " }), { ...plain, body: "see this" });
    // MSC2530: a body equal to the file name means "no caption", so a caption that repeats a file
    // name which reads as markdown sends no formatted_body either (no client would show it).
    const starred = { ...plain, body: "*draft*.pdf", filename: "*draft*.pdf" };
    assert.deepEqual(remoteMediaToMatrix({ media: media({ filename: "*draft*.pdf" }), mxc: "mxc://hs/m", size: 3, caption: "*draft*.pdf" }), starred);
  });

  it("a voice message without duration or waveform has an empty MSC1767 audio block", () => {
    const content = remoteMediaToMatrix({ media: media({ kind: "voice", mimetype: "audio/ogg", filename: "v.ogg", waveform: [] }), mxc: "mxc://hs/v", size: 3 });
    assert.deepEqual(content["org.matrix.msc1767.audio"], {});
    assert.deepEqual(content["org.matrix.msc3245.voice"], {});
    assert.equal((content.info as Record<string, unknown>).duration, undefined);
  });
});
