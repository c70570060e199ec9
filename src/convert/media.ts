/**
 * Media conversions, all pure: Matrix media events ↔ the network-neutral RemoteContent; what
 * to call a file in a notice. What a file is (ffprobe) and making thumbnails and conversions
 * (ffmpeg) live in src/media; HTTP and uploads in src/network and src/matrix.
 *
 * Matrix shapes follow the client-server spec: m.image / m.video / m.audio / m.file with
 * `info` (mimetype, size, w, h, duration, thumbnail_url + thumbnail_info), captions as of
 * v1.10 (`filename` plus a different `body`, optionally `format`/`formatted_body`), blurhash
 * as MSC2448 (`info["xyz.amorgan.blurhash"]`), voice messages as MSC3245 (`m.audio` with
 * `org.matrix.msc3245.voice: {}` and `org.matrix.msc1767.audio: {duration, waveform}`).
 */
import { AttachmentKeys, MediaKind, RemoteContent, RemoteMedia } from "../network/connector";
import { markdownToMatrix, matrixToMarkdown } from "./formatting";

/** A Matrix message the network cannot carry: the user is told `reason` (defined here, below message-content.ts, which imports this file). */
export interface Unbridgeable {
  unbridgeable: true;
  reason: string;
}

// ---------------------------------------------------------------------------------------------
// Content types

/**
 * The content type to announce once the kind is settled: a file that claimed to be a picture,
 * video or sound but is not one loses the type that said so.
 */
export function settledMimetype(claimed: MediaKind, settled: MediaKind, mimetype: string): string {
  if (settled !== "file" || claimed === "file") return mimetype;
  return kindOfMimetype(mimetype) === "file" ? mimetype : "application/octet-stream";
}

/** The kind a bare content type suggests (used when nothing else says what a file is). */
export function kindOfMimetype(mimetype: string): MediaKind {
  const base = baseMimetype(mimetype);
  if (base.startsWith("image/")) return "image";
  if (base.startsWith("video/")) return "video";
  if (base.startsWith("audio/")) return "audio";
  return "file";
}

// ---------------------------------------------------------------------------------------------
// Thumbnails, blurhash, waveforms

/** Element's bounds: pictures larger than this get a thumbnail in `info`. */
export const THUMBNAIL_MAX = { width: 800, height: 600 } as const;

export function needsThumbnail(kind: MediaKind, width: number | undefined, height: number | undefined): boolean {
  if (kind === "video") return true;
  return kind === "image" && width !== undefined && height !== undefined && (width > THUMBNAIL_MAX.width || height > THUMBNAIL_MAX.height);
}

/** PNG thumbnails keep transparency; everything else is JPEG. */
export function thumbnailMimetype(mimetype: string): "image/png" | "image/jpeg" {
  return baseMimetype(mimetype) === "image/png" ? "image/png" : "image/jpeg";
}

/** A small size with the picture's aspect ratio for the blurhash pixels (at most `max` on a side). */
export function blurhashSampleSize(width: number, height: number, max = 32): { width: number; height: number } {
  const scale = Math.min(1, max / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/** Blurhash components: 4 across the longer side, 3 across the shorter. */
export function blurhashComponents(width: number, height: number): { x: number; y: number } {
  return width >= height ? { x: 4, y: 3 } : { x: 3, y: 4 };
}

export const WAVEFORM_MAX_SAMPLES = 100;
export const WAVEFORM_MAX_VALUE = 1024;

/**
 * Peak levels (any non-negative scale) → at most `samples` integers 0..1024, the loudest being
 * 1024 (MSC1767 audio waveform). Each output value is the peak of its share of the input.
 */
export function waveformFromPeaks(peaks: readonly number[], samples = 64): number[] {
  if (peaks.length === 0) return [];
  const count = Math.min(samples, WAVEFORM_MAX_SAMPLES, peaks.length);
  const bins: number[] = [];
  for (let i = 0; i < count; i++) {
    const from = Math.floor((i * peaks.length) / count);
    const to = Math.max(from + 1, Math.floor(((i + 1) * peaks.length) / count));
    let peak = 0;
    for (let j = from; j < to; j++) peak = Math.max(peak, peaks[j]);
    bins.push(peak);
  }
  const loudest = Math.max(...bins);
  return bins.map((b) => (loudest > 0 ? Math.round((b / loudest) * WAVEFORM_MAX_VALUE) : 0));
}

/** Keeps only what MSC1767 allows: up to 100 integers 0..1024. */
export function cleanWaveform(value: unknown): number[] | undefined {
  if (!Array.isArray(value) || value.length === 0) return undefined;
  const samples = value.slice(0, WAVEFORM_MAX_SAMPLES).map((v) => (typeof v === "number" && Number.isFinite(v) ? Math.round(Math.min(WAVEFORM_MAX_VALUE, Math.max(0, v))) : 0));
  return samples;
}

// ---------------------------------------------------------------------------------------------
// Names

export function baseMimetype(mimetype: string): string {
  return mimetype.split(";")[0]!.trim().toLowerCase();
}

const EXTENSIONS: Record<string, string> = {
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

const DEFAULT_NAMES: Record<MediaKind, string> = { image: "image", video: "video", voice: "voice-message", audio: "audio", file: "file" };

/** A safe file name: no folders, no control characters, an extension when the type has a known one. */
export function fileNameFor(kind: MediaKind, mimetype: string, given: string | undefined): string {
  const cleaned = (given ?? "")
    .replace(/[\\/]/g, "_")
    // eslint-disable-next-line no-control-regex -- control characters are what this removes from a file name
    .replace(/[\u0000-\u001f\u007f]/g, "")
    .trim()
    .slice(0, 255);
  const name = cleaned && cleaned !== "." && cleaned !== ".." ? cleaned : DEFAULT_NAMES[kind];
  const ext = EXTENSIONS[baseMimetype(mimetype)];
  return ext && !/\.[A-Za-z0-9]{1,5}$/.test(name) ? `${name}.${ext}` : name;
}

const KIND_WORDS: Record<MediaKind, string> = { image: "photo", video: "video", voice: "voice message", audio: "audio file", file: "file" };

/** "a photo (beach.jpg)", "a voice message" — how notices name a piece of media. */
export function describeMedia(media: Pick<RemoteMedia, "kind" | "filename">): string {
  const word = KIND_WORDS[media.kind];
  const article = /^[aeiou]/.test(word) ? "an" : "a";
  return media.kind === "voice" || !media.filename ? `${article} ${word}` : `${article} ${word} (${media.filename})`;
}

export function megabytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

/** "Your photo (beach.jpg) was not sent: <reason>." */
export function notSentText(media: Pick<RemoteMedia, "kind" | "filename">, reason: string): string {
  return `Your ${describeMedia(media).replace(/^an? /, "")} was not sent: ${reason}.`;
}

/** Why a file over the limit is refused, for a notice. */
export function overLimitReason(size: number, limit: number): string {
  return `it is ${megabytes(size)}, over this bridge's limit of ${megabytes(limit)}`;
}

// ---------------------------------------------------------------------------------------------
// Matrix → network

const MEDIA_MSGTYPES: Record<string, MediaKind> = { "m.image": "image", "m.video": "video", "m.audio": "audio", "m.file": "file" };

export function isMatrixMediaMsgtype(msgtype: unknown): boolean {
  return typeof msgtype === "string" && msgtype in MEDIA_MSGTYPES;
}

function positiveInt(v: unknown): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/**
 * The server name and media id of an mxc:// URI, or null when it is not one the spec allows
 * (server name: DNS name, IPv4 or [IPv6], optional port; media id: [A-Za-z0-9_-]). Anything
 * else is refused before a request is made of it: a homeserver may fail on it for ever.
 */
export function parseMxc(uri: string): { serverName: string; mediaId: string } | null {
  const m = /^mxc:\/\/((?:[A-Za-z0-9.-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?)\/([A-Za-z0-9_-]+)$/.exec(uri);
  return m ? { serverName: m[1]!, mediaId: m[2]! } : null;
}

/**
 * An m.image / m.video / m.audio / m.file event → media content whose bytes are still on the
 * homeserver (`source.from === "matrix"`). An Element voice message (MSC3245) becomes a voice
 * note. The probe later confirms or corrects the kind; sizes and dimensions here are the
 * sender's claims, used to refuse an oversized file before downloading it.
 */
export function matrixMediaToRemote(content: Record<string, unknown>): RemoteContent | Unbridgeable {
  const msgtype = String(content.msgtype);
  let kind = MEDIA_MSGTYPES[msgtype];
  if (!kind) return { unbridgeable: true, reason: `messages of type ${msgtype} are not supported yet` };
  const encrypted = content.url === undefined && content.file !== undefined ? encryptedFileOf(content.file) : undefined;
  if (content.url === undefined && content.file !== undefined && !encrypted) {
    return { unbridgeable: true, reason: "encrypted attachments cannot be bridged (this room is end-to-end encrypted)" };
  }
  const url = encrypted ? encrypted.url : content.url;
  if (typeof url !== "string") return { unbridgeable: true, reason: "the attachment has no URL" };
  if (!parseMxc(url)) return { unbridgeable: true, reason: "the attachment's URL is not an mxc:// URI" };
  if (kind === "audio" && typeof content["org.matrix.msc3245.voice"] === "object" && content["org.matrix.msc3245.voice"] !== null) kind = "voice";
  const info = (typeof content.info === "object" && content.info !== null ? content.info : {}) as Record<string, unknown>;
  const mimetype = typeof info.mimetype === "string" && info.mimetype ? info.mimetype : "application/octet-stream";
  const body = typeof content.body === "string" ? content.body : "";
  const filenameField = typeof content.filename === "string" && content.filename ? content.filename : undefined;
  // Spec v1.10: with a filename that differs from the body, the body is a caption.
  const hasCaption = filenameField !== undefined && body !== "" && body !== filenameField;
  const media: RemoteMedia = { kind, mimetype, filename: fileNameFor(kind, mimetype, filenameField ?? body) };
  const size = positiveInt(info.size);
  if (size !== undefined) media.size = size;
  const width = positiveInt(info.w);
  const height = positiveInt(info.h);
  if ((kind === "image" || kind === "video") && width && height) {
    media.width = width;
    media.height = height;
  }
  const voiceAudio = (content["org.matrix.msc1767.audio"] ?? {}) as Record<string, unknown>;
  const duration = positiveInt(info.duration) ?? positiveInt(voiceAudio.duration);
  if (kind !== "image" && kind !== "file" && duration !== undefined) media.durationMs = duration;
  if (kind === "voice") {
    const waveform = cleanWaveform(voiceAudio.waveform);
    if (waveform) media.waveform = waveform;
  }
  const result: RemoteContent = { type: "media", media, source: { from: "matrix", mxc: url, ...(encrypted ? { encryption: encrypted.keys } : {}) } };
  if (hasCaption) {
    const format = typeof content.format === "string" ? content.format : undefined;
    const formatted = typeof content.formatted_body === "string" ? content.formatted_body : undefined;
    result.caption = matrixToMarkdown({ msgtype: "m.text", body, format, formatted_body: formatted });
  }
  return result;
}

/**
 * An encrypted attachment (EncryptedFile, v2) the bridge can decrypt: an AES-256 key (JWK
 * `A256CTR`), a 16-byte counter block and the ciphertext's SHA-256; undefined when any is missing.
 */
function encryptedFileOf(file: unknown): { url: string; keys: AttachmentKeys } | undefined {
  if (typeof file !== "object" || file === null) return undefined;
  const f = file as { url?: unknown; key?: { k?: unknown; alg?: unknown }; iv?: unknown; hashes?: { sha256?: unknown }; v?: unknown };
  const k = f.key?.k;
  const sha256 = f.hashes?.sha256;
  if (typeof f.url !== "string" || typeof k !== "string" || typeof f.iv !== "string" || typeof sha256 !== "string") return undefined;
  if (f.v !== "v2" || (f.key?.alg !== undefined && f.key.alg !== "A256CTR")) return undefined;
  if (Buffer.from(k, "base64url").length !== 32 || Buffer.from(f.iv, "base64").length !== 16 || Buffer.from(sha256, "base64").length !== 32) return undefined;
  return { url: f.url, keys: { key: k, iv: f.iv, sha256 } };
}

// ---------------------------------------------------------------------------------------------
// Network → Matrix

export interface UploadedThumbnail {
  mxc: string;
  mimetype: string;
  size: number;
  width: number;
  height: number;
}

export interface MatrixMediaInput {
  media: RemoteMedia;
  /** The uploaded file. */
  mxc: string;
  /** Bytes uploaded. */
  size: number;
  thumbnail?: UploadedThumbnail;
  blurhash?: string;
  /** GFM-MIMI markdown. */
  caption?: string;
}

const MATRIX_MSGTYPES: Record<MediaKind, string> = { image: "m.image", video: "m.video", voice: "m.audio", audio: "m.audio", file: "m.file" };

/** The m.room.message content for uploaded media. */
export function remoteMediaToMatrix(input: MatrixMediaInput): Record<string, unknown> {
  const { media } = input;
  const info: Record<string, unknown> = { mimetype: baseMimetype(media.mimetype), size: input.size };
  if ((media.kind === "image" || media.kind === "video") && media.width && media.height) {
    info.w = media.width;
    info.h = media.height;
  }
  if (media.kind !== "image" && media.kind !== "file" && media.durationMs !== undefined) info.duration = media.durationMs;
  if (input.thumbnail) {
    info.thumbnail_url = input.thumbnail.mxc;
    info.thumbnail_info = { mimetype: input.thumbnail.mimetype, size: input.thumbnail.size, w: input.thumbnail.width, h: input.thumbnail.height };
  }
  if (input.blurhash) info["xyz.amorgan.blurhash"] = input.blurhash;
  const content: Record<string, unknown> = { msgtype: MATRIX_MSGTYPES[media.kind], body: media.filename, filename: media.filename, url: input.mxc, info };
  const caption = input.caption?.trim() ? markdownToMatrix(input.caption) : undefined;
  if (caption && caption.body !== media.filename) {
    content.body = caption.body;
    if (caption.format && caption.formatted_body) {
      content.format = caption.format;
      content.formatted_body = caption.formatted_body;
    }
  }
  if (media.kind === "voice") {
    const audio: Record<string, unknown> = {};
    if (media.durationMs !== undefined) audio.duration = media.durationMs;
    if (media.waveform?.length) audio.waveform = media.waveform;
    content["org.matrix.msc1767.audio"] = audio;
    content["org.matrix.msc3245.voice"] = {};
  }
  return content;
}

/** What a Matrix user sees when a remote user's media could not be bridged. */
export function mediaFailureNotice(media: Pick<RemoteMedia, "kind" | "filename">, reason: string): Record<string, unknown> {
  return { msgtype: "m.notice", body: `Sent ${describeMedia(media)} that could not be bridged: ${reason}.` };
}
