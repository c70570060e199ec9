/**
 * The plaintext inside the Signal ciphertext of a `send`/`deliver` frame (docs/protocol.md,
 * "Encrypted payload"): one deterministic-CBOR map whose `kind` says what it carries.
 *
 * The gateway never sees these bytes, so nothing but the two endpoints checks them: the
 * decoder is strict about every field it knows (PayloadError naming the field) and about the
 * encoding itself, so that a sender that drifts from the spec fails loudly. Fields it does not
 * know are ignored, as in the frames, so a later version can add optional ones.
 */
import { decode as cborDecode, encode as cborEncode } from "cbor2";
import { encodeDeterministic } from "./deterministic-cbor.js";
import { MIMI_MESSAGE_ID_LENGTH, MimiError, decodeMimi, type MimiMessage, type MimiNestedPart, type MimiUnknownExtension } from "./mimi.js";

/** A MIMI message shown in the chat: text, reaction, edit, delete, attachment, sticker. */
export interface ContentPayload {
  kind: "content";
  /** One encoded MIMI message (docs/mimi.md). */
  mimi: Uint8Array;
}
/** The sender has read these messages of the chat. */
export interface ReadPayload {
  kind: "read";
  /** MIMI message ids (32 bytes each), 1..MAX_READ_IDS of them. */
  ids: Uint8Array[];
}
/**
 * A WhatsApp status update the sender broadcast to its contacts. Third-party chats do not
 * carry status updates: a receiver drops it (acknowledging the deliver) and shows nothing.
 */
export interface StatusPayload {
  kind: "status";
  mimi: Uint8Array;
}
/** The sender set the chat's disappearing-messages timer. */
export interface DisappearingPayload {
  kind: "disappearing";
  /** Lifetime of new messages in seconds; 0 turns disappearing messages off. */
  seconds: number;
}

export type Payload = ContentPayload | ReadPayload | StatusPayload | DisappearingPayload;
export type PayloadKind = Payload["kind"];

export const PAYLOAD_KINDS: readonly PayloadKind[] = ["content", "read", "status", "disappearing"];
/** Read receipts for more messages than this are split over several payloads. */
export const MAX_READ_IDS = 256;
/** The timer is a uint32 like MIMI's own expiry times. */
export const MAX_DISAPPEARING_SECONDS = 0xffffffff;

/** MIMI extension (text key) naming a WhatsApp message kind the MIMI model has no slot for. */
export const WA_KIND_EXTENSION = "x-wa-kind";
export const WA_KIND_STICKER = "sticker";
/** A voice note (push-to-talk recording), as opposed to a sent audio file. */
export const WA_KIND_VOICE = "voice";
/** MIMI extension (text key) describing a message's media: see WaMediaInfo. */
export const WA_MEDIA_EXTENSION = "x-wa-media";
export const WA_WAVEFORM_MAX_SAMPLES = 100;
export const STICKER_CONTENT_TYPE = "image/webp";

export type PayloadErrorCode =
  /** Not one deterministic CBOR map, or a known field of the wrong type, size or range. */
  | "malformed"
  /** A well-formed payload of a kind this version does not know (a newer sender). */
  | "unknown_kind"
  /** The embedded MIMI message does not decode, or breaks a rule stated for its kind (stickers). */
  | "bad_mimi";

export class PayloadError extends Error {
  override readonly name = "PayloadError";
  constructor(
    readonly code: PayloadErrorCode,
    message: string,
    /** Dotted path of the offending field, e.g. "ids[2]". */
    readonly field?: string,
  ) {
    super(field ? `${field}: ${message}` : message);
  }
}

const ENCODE_OPTIONS = { cde: true, rejectUndefined: true } as const;
const DECODE_OPTIONS = { cde: true, rejectStreaming: true, ignoreGlobalTags: true, maxDepth: 8 } as const;

function fail(field: string, message: string, code: PayloadErrorCode = "malformed"): never {
  throw new PayloadError(code, message, field);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "nothing";
  if (v instanceof Uint8Array) return `a byte string of ${v.length} bytes`;
  if (Array.isArray(v)) return "an array";
  if (v instanceof Map) return "a map with non-text keys";
  if (typeof v === "bigint") return "an integer beyond 2^53-1";
  if (typeof v === "number") return Number.isInteger(v) ? `the integer ${v}` : "a float";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function isTextKeyedMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Map);
}

function plainBytes(v: Uint8Array): Uint8Array {
  // cbor2 would encode a Buffer (a Uint8Array subclass) as a tagged object.
  return Object.getPrototypeOf(v) === Uint8Array.prototype ? v : new Uint8Array(v);
}

function bytesField(field: string, v: unknown, length?: number): Uint8Array {
  if (!(v instanceof Uint8Array)) fail(field, `must be a byte string, got ${describe(v)}`);
  if (length !== undefined && v.length !== length) fail(field, `must be exactly ${length} bytes, got ${v.length}`);
  return plainBytes(v);
}

function mimiField(field: string, v: unknown): { bytes: Uint8Array; message: MimiMessage } {
  const bytes = bytesField(field, v);
  try {
    return { bytes, message: decodeMimi(bytes) };
  } catch (err) {
    if (err instanceof MimiError) fail(field, `is not a valid MIMI message (${err.message})`, "bad_mimi");
    throw err;
  }
}

function checkSticker(field: string, message: MimiMessage): void {
  const kind = waKindOf(message);
  if (kind === undefined) return;
  if (kind !== WA_KIND_STICKER) return; // later kinds are a newer sender's business
  const body: MimiNestedPart = message.body;
  if ((body.cardinality !== "single" && body.cardinality !== "external") || body.contentType !== STICKER_CONTENT_TYPE)
    fail(`${field}.body`, `a sticker's body must be one single or external ${STICKER_CONTENT_TYPE} part`, "bad_mimi");
}

/** Validates a payload (the same checks the decoder makes) and encodes it as deterministic CBOR. */
export function encodePayload(payload: Payload): Uint8Array {
  return encodeDeterministic(checkPayload(payload), ENCODE_OPTIONS);
}

/** Decodes and validates one payload; any problem is a PayloadError. */
export function decodePayload(bytes: Uint8Array): Payload {
  if (!(bytes instanceof Uint8Array)) fail("payload", `must be bytes, got ${describe(bytes)}`);
  const input = plainBytes(bytes);
  let value: unknown;
  try {
    value = cborDecode(input, DECODE_OPTIONS);
  } catch (err) {
    fail("payload", `is not one deterministically encoded CBOR item: ${(err as Error).message}`);
  }
  // Re-encoding catches what the CDE decoder lets through (e.g. a float where an int would do).
  let reencoded: Uint8Array;
  try {
    reencoded = encodeDeterministic(value, ENCODE_OPTIONS);
  } catch (err) {
    // Found by fuzzing: CBOR `undefined` decodes but does not re-encode; an exception other than
    // PayloadError here would make the endpoint retry the frame forever instead of dropping it.
    fail("payload", `holds a value a payload may not carry: ${(err as Error).message}`);
  }
  if (Buffer.compare(reencoded, input) !== 0) fail("payload", "is not in deterministic CBOR encoding (RFC 8949 section 4.2.1)");
  return checkPayload(value);
}

function checkPayload(value: unknown): Payload {
  if (!isTextKeyedMap(value)) fail("payload", `must be a map with text keys, got ${describe(value)}`);
  const kind = value["kind"];
  if (typeof kind !== "string") fail("kind", `must be a text string, got ${describe(kind)}`);
  switch (kind) {
    case "content":
    case "status": {
      const { bytes, message } = mimiField("mimi", value["mimi"]);
      checkSticker("mimi", message);
      return { kind, mimi: bytes };
    }
    case "read": {
      const ids = value["ids"];
      if (!Array.isArray(ids)) fail("ids", `must be an array, got ${describe(ids)}`);
      if (ids.length === 0 || ids.length > MAX_READ_IDS) fail("ids", `must hold 1..${MAX_READ_IDS} ids, got ${ids.length}`);
      return { kind, ids: ids.map((id, i) => bytesField(`ids[${i}]`, id, MIMI_MESSAGE_ID_LENGTH)) };
    }
    case "disappearing": {
      const seconds = value["seconds"];
      if (typeof seconds !== "number" || !Number.isSafeInteger(seconds) || seconds < 0) fail("seconds", `must be an unsigned integer, got ${describe(seconds)}`);
      if (seconds > MAX_DISAPPEARING_SECONDS) fail("seconds", `must be at most ${MAX_DISAPPEARING_SECONDS}`);
      return { kind, seconds };
    }
    default:
      return fail("kind", `names an unknown payload kind ${JSON.stringify(kind.slice(0, 64))}`, "unknown_kind");
  }
}

// ---------------------------------------------------------------------------------------------
// WhatsApp message kinds inside MIMI

/** The text value of the "x-wa-kind" extension, if the message has one. */
export function waKindOf(message: MimiMessage): string | undefined {
  const ext = message.extensions.unknown.find((e) => e.key === WA_KIND_EXTENSION);
  if (!ext) return undefined;
  const value: unknown = cborDecode(ext.encodedValue, DECODE_OPTIONS);
  return typeof value === "string" ? value : undefined;
}

export function isSticker(message: MimiMessage): boolean {
  return waKindOf(message) === WA_KIND_STICKER;
}

/** A copy of the message carrying "x-wa-kind" = kind (replacing an earlier value). */
export function withWaKind(message: MimiMessage, kind: string): MimiMessage {
  const ext: MimiUnknownExtension = { key: WA_KIND_EXTENSION, encodedValue: encodeDeterministic(kind, ENCODE_OPTIONS) };
  return {
    ...message,
    extensions: {
      ...message.extensions,
      unknown: [...message.extensions.unknown.filter((e) => e.key !== WA_KIND_EXTENSION), ext],
    },
  };
}

/**
 * What the sender knows about a message's media, so receivers can lay it out before they
 * download it (docs/protocol.md §17.2). Every field is optional and informative.
 */
export interface WaMediaInfo {
  /** Pixels of the picture or video as displayed. */
  width?: number;
  height?: number;
  /** Length of a video, audio file or voice note. */
  durationMs?: number;
  /** Loudness along a voice note: 1..100 samples, 0 silent .. 255 loudest. */
  waveform?: Uint8Array;
}

function positiveSafeInt(v: unknown): number | undefined {
  return typeof v === "number" && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/** The "x-wa-media" extension, if any; fields of the wrong type are left out (they are only hints). */
export function waMediaOf(message: MimiMessage): WaMediaInfo {
  const ext = message.extensions.unknown.find((e) => e.key === WA_MEDIA_EXTENSION);
  if (!ext) return {};
  const value: unknown = cborDecode(ext.encodedValue, DECODE_OPTIONS);
  if (!isTextKeyedMap(value)) return {};
  const info: WaMediaInfo = {};
  const width = positiveSafeInt(value["width"]);
  const height = positiveSafeInt(value["height"]);
  if (width && height) {
    info.width = width;
    info.height = height;
  }
  const durationMs = positiveSafeInt(value["durationMs"]);
  if (durationMs) info.durationMs = durationMs;
  const waveform = value["waveform"];
  if (waveform instanceof Uint8Array && waveform.length > 0 && waveform.length <= WA_WAVEFORM_MAX_SAMPLES) info.waveform = plainBytes(waveform);
  return info;
}

/** A copy of the message carrying "x-wa-media" = info (replacing an earlier value); an empty info adds nothing. */
export function withWaMedia(message: MimiMessage, info: WaMediaInfo): MimiMessage {
  const map: Record<string, unknown> = {};
  if (info.width && info.height) {
    map["width"] = info.width;
    map["height"] = info.height;
  }
  if (info.durationMs) map["durationMs"] = info.durationMs;
  if (info.waveform && info.waveform.length > 0) map["waveform"] = plainBytes(info.waveform.subarray(0, WA_WAVEFORM_MAX_SAMPLES));
  const others = message.extensions.unknown.filter((e) => e.key !== WA_MEDIA_EXTENSION);
  const unknown = Object.keys(map).length > 0 ? [...others, { key: WA_MEDIA_EXTENSION, encodedValue: cborEncode(map, ENCODE_OPTIONS) }] : others;
  return { ...message, extensions: { ...message.extensions, unknown } };
}
