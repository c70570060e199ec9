/**
 * MIMI content codec (draft-ietf-mimi-content-08): the message format carried on our wire.
 *
 * Three representations of one message:
 * - wire: deterministic CBOR (RFC 8949 section 4.2.1), exactly as the draft's examples are encoded;
 * - model: `MimiMessage`, what the bridge reads and builds;
 * - JSON: `MimiJson`, what the `mimi` CLI prints and reads (see `mimiToJson` for its conventions).
 */
import { createHash, randomBytes } from "node:crypto";
import { decode as cborDecode, Tag, type DecodeOptions, type EncodeOptions, type Writer } from "cbor2";
import { encodeDeterministic } from "./deterministic-cbor.js";

export type MimiErrorCode =
  | "MALFORMED_CBOR" // bytes are not one well-formed CBOR item
  | "NOT_DETERMINISTIC" // well-formed CBOR, but not in the deterministic encoding the draft requires
  | "INVALID_MESSAGE" // a field has the wrong type, length or range
  | "INVALID_JSON" // the JSON form is not a valid MIMI message
  | "INVALID_ARGUMENT"; // a builder or helper got arguments it cannot use

/** Every refusal of this module; `field` names the offending field (e.g. "body.parts[1].contentType"). */
export class MimiError extends Error {
  override readonly name = "MimiError";
  constructor(
    readonly code: MimiErrorCode,
    readonly reason: string,
    readonly field?: string,
  ) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

/** Disposition values of the draft's "MIMI Content Disposition" registry; 9..255 are unknown and rendered like `render`. */
export const MIMI_DISPOSITION = {
  unspecified: 0,
  render: 1,
  reaction: 2,
  profile: 3,
  inline: 4,
  icon: 5,
  attachment: 6,
  session: 7,
  preview: 8,
} as const;

/** IANA Named Information hash algorithm id; also the first octet of every message id. */
export const MIMI_HASH_SHA256 = 1;
/** IANA AEAD algorithm ids used in external parts; AES-128-GCM is mandatory to implement. */
export const MIMI_ENC_NONE = 0;
export const MIMI_ENC_AES_128_GCM = 1;
export const MIMI_ENC_AES_256_GCM = 2;

export const MIMI_CONTENT_TYPE_MARKDOWN = "text/markdown;variant=GFM-MIMI";
export const MIMI_CONTENT_TYPE_PLAIN = "text/plain;charset=utf-8";

/** Extension map keys registered by the draft. */
export const MIMI_EXTENSION_SENDER_URI = 1;
export const MIMI_EXTENSION_ROOM_URI = 2;

export const MIMI_SALT_LENGTH = 16;
export const MIMI_MESSAGE_ID_LENGTH = 32;
/** Section 6.3: NestedParts nest at most 4 levels (the body is level 1). */
export const MIMI_MAX_PART_DEPTH = 4;
/** Section 9.1: more parts than this "most likely represent malicious messages". */
export const MIMI_MAX_PARTS = 1024;
/** Section 6.3: containers in an extension value stop at level 4 (the extensions map is level 1). */
const MAX_EXTENSION_DEPTH = 4;

export interface MimiExpiration {
  /** true: seconds to stay visible after being read; false: seconds since the UNIX epoch. */
  relative: boolean;
  /** uint32 seconds. */
  time: number;
}

/** An extension the codec has no meaning for, kept as its encoded CBOR so re-encoding is byte-identical. */
export interface MimiUnknownExtension {
  /** Integer (|key| <= 2^53-1) or text string of 1..255 UTF-8 octets; never 1 or 2 (those are `senderUri`/`roomUri`). */
  key: number | string;
  /** Exactly one CBOR data item in deterministic encoding. */
  encodedValue: Uint8Array;
}

export interface MimiExtensions {
  /** Extension key 1. */
  senderUri: string | null;
  /** Extension key 2. */
  roomUri: string | null;
  unknown: MimiUnknownExtension[];
}

export type MimiPartSemantics = "chooseOne" | "singleUnit" | "processAll";

interface MimiPartHeader {
  /** 0..255, see MIMI_DISPOSITION. */
  disposition: number;
  /** "" or a comma-separated list of RFC 5646 language tags. */
  language: string;
}

export interface MimiNullPart extends MimiPartHeader {
  cardinality: "null";
}

export interface MimiSinglePart extends MimiPartHeader {
  cardinality: "single";
  contentType: string;
  content: Uint8Array;
}

export interface MimiExternalPart extends MimiPartHeader {
  cardinality: "external";
  contentType: string;
  url: string;
  /** uint32 seconds since the UNIX epoch after which the URL is invalid; 0 = never. */
  expires: number;
  /** Octets; 0 = not given. Limited to 2^53-1 here although the draft allows uint64. */
  size: number;
  /** IANA AEAD algorithm (uint16); 0 = not encrypted. */
  encAlg: number;
  key: Uint8Array;
  nonce: Uint8Array;
  aad: Uint8Array;
  /** IANA Named Information hash algorithm (uint8); 0 = none. */
  hashAlg: number;
  contentHash: Uint8Array;
  description: string;
  filename: string;
}

export interface MimiMultiPart extends MimiPartHeader {
  cardinality: "multi";
  partSemantics: MimiPartSemantics;
  /** At least 2. */
  parts: MimiNestedPart[];
}

export type MimiNestedPart = MimiNullPart | MimiSinglePart | MimiExternalPart | MimiMultiPart;

export interface MimiMessage {
  /** 16 random octets. */
  salt: Uint8Array;
  /** Id of the message this one edits, deletes or un-reacts. */
  replaces: Uint8Array | null;
  /** Empty = no topic. */
  topicId: Uint8Array;
  expires: MimiExpiration | null;
  /** Id of the message this one replies or reacts to. */
  inReplyTo: Uint8Array | null;
  extensions: MimiExtensions;
  body: MimiNestedPart;
}

const CARDINALITY = { null: 0, single: 1, external: 2, multi: 3 } as const;
const PART_SEMANTICS: readonly MimiPartSemantics[] = ["chooseOne", "singleUnit", "processAll"];

const UINT8_MAX = 0xff;
const UINT16_MAX = 0xffff;
const UINT32_MAX = 0xffffffff;

// cde: preferred integers/lengths, definite lengths, sorted unique map keys; the rest closes float and tag loopholes.
const DECODE_OPTIONS: DecodeOptions = {
  cde: true,
  preferMap: true,
  ignoreGlobalTags: true,
  rejectLongFloats: true,
  rejectLongLoundNaN: true,
  // Bounds hostile nesting early; the precise section 6.3 limits are checked on the decoded tree.
  maxDepth: 64,
};
const ENCODE_OPTIONS: EncodeOptions = { cde: true };

const LONE_SURROGATE = /\p{Cs}/u;
const utf8Encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF so decoding then encoding gives back the same bytes.
const strictUtf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function fail(field: string, reason: string, code: MimiErrorCode = "INVALID_MESSAGE"): never {
  throw new MimiError(code, reason, field);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (v instanceof Uint8Array) return `a byte string of ${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length} elements`;
  if (v instanceof Map) return "a map";
  if (v instanceof Tag) return `tag ${String(v.tag)}`;
  if (typeof v === "string") return "a text string";
  if (typeof v === "boolean") return "a boolean";
  if (typeof v === "bigint") return `the integer ${v}`;
  if (typeof v === "number") return Number.isInteger(v) && !Object.is(v, -0) ? `the integer ${v}` : `the float ${Object.is(v, -0) ? "-0" : v}`;
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function toPlainBytes(v: Uint8Array): Uint8Array {
  // Copies; a Buffer (a Uint8Array subclass) would otherwise be encoded by cbor2 as a tagged object.
  return new Uint8Array(v);
}

function bytesField(field: string, v: unknown, exactLength?: number): Uint8Array {
  if (!(v instanceof Uint8Array)) fail(field, `expected a byte string, got ${describe(v)}`);
  if (exactLength !== undefined && v.length !== exactLength) fail(field, `expected ${exactLength} bytes, got ${v.length}`);
  return toPlainBytes(v);
}

function messageIdField(field: string, v: unknown): Uint8Array | null {
  if (v === null) return null;
  if (!(v instanceof Uint8Array)) fail(field, `expected null or a ${MIMI_MESSAGE_ID_LENGTH}-byte message id, got ${describe(v)}`);
  return bytesField(field, v, MIMI_MESSAGE_ID_LENGTH);
}

function textField(field: string, v: unknown): string {
  if (typeof v !== "string") fail(field, `expected a text string, got ${describe(v)}`);
  if (LONE_SURROGATE.test(v)) fail(field, "contains an unpaired surrogate, which has no UTF-8 encoding");
  return v;
}

function uintField(field: string, v: unknown, max: number, what: string): number {
  if (typeof v === "bigint" && v > 0n) fail(field, `${v} is larger than ${what} allows`);
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || Object.is(v, -0)) {
    fail(field, `expected an unsigned integer, got ${describe(v)}`);
  }
  if (v > max) fail(field, `${v} is larger than ${what} allows`);
  return v;
}

function boolField(field: string, v: unknown): boolean {
  if (typeof v !== "boolean") fail(field, `expected a boolean, got ${describe(v)}`);
  return v;
}

function arrayField(field: string, v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) fail(field, `expected ${what}, got ${describe(v)}`);
  return v;
}

function expectLength(field: string, a: unknown[], n: number, what: string): void {
  if (a.length !== n) fail(field, `${what} must have ${n} elements, got ${a.length}`);
}

function extensionKey(field: string, k: unknown): number | string {
  if (typeof k === "number" && Number.isSafeInteger(k) && !Object.is(k, -0)) return k;
  if (typeof k === "string") {
    const octets = utf8Encoder.encode(textField(field, k)).length;
    if (octets < 1 || octets > 255) fail(field, `a text key must be 1..255 UTF-8 octets, got ${octets}`);
    return k;
  }
  return fail(field, `a key must be an integer within ±(2^53-1) or a text string, got ${describe(k)}`);
}

function extensionField(key: number | string): string {
  return `extensions[${JSON.stringify(key)}]`;
}

/** Section 6.2/6.3 limits on whatever an unknown extension carries. */
function checkExtensionValue(field: string, v: unknown, level: number): void {
  const isContainer = Array.isArray(v) || v instanceof Map || v instanceof Tag;
  if (!isContainer) return;
  if (level > MAX_EXTENSION_DEPTH) fail(field, `arrays, maps and tags nest deeper than the ${MAX_EXTENSION_DEPTH} levels allowed`);
  if (Array.isArray(v)) {
    v.forEach((item, i) => checkExtensionValue(`${field}[${i}]`, item, level + 1));
  } else if (v instanceof Map) {
    for (const [k, item] of v) {
      const keyOk = typeof k === "string" || k instanceof Uint8Array || (typeof k === "number" && Number.isSafeInteger(k));
      if (!keyOk) fail(field, `nested map keys must be integers within ±(2^53-1), text or byte strings, got ${describe(k)}`);
      checkExtensionValue(`${field}[${typeof k === "string" || typeof k === "number" ? JSON.stringify(k) : "…"}]`, item, level + 1);
    }
  } else if (v instanceof Tag) {
    checkExtensionValue(field, v.contents, level + 1);
  }
}

interface PartBudget {
  count: number;
}

function partFromWire(field: string, v: unknown, level: number, budget: PartBudget): MimiNestedPart {
  const a = arrayField(field, v, "a NestedPart array");
  if (level > MIMI_MAX_PART_DEPTH) fail(field, `NestedParts nest deeper than the ${MIMI_MAX_PART_DEPTH} levels allowed`);
  if (++budget.count > MIMI_MAX_PARTS) fail(field, `more than ${MIMI_MAX_PARTS} body parts`);
  if (a.length < 3) fail(field, `a NestedPart needs at least disposition, language and cardinality, got ${a.length} elements`);
  const disposition = uintField(`${field}.disposition`, a[0], UINT8_MAX, "a disposition (0..255)");
  const language = textField(`${field}.language`, a[1]);
  const cardinality = uintField(`${field}.cardinality`, a[2], Number.MAX_SAFE_INTEGER, "a cardinality");
  switch (cardinality) {
    case CARDINALITY.null:
      expectLength(field, a, 3, "a null part");
      return { disposition, language, cardinality: "null" };
    case CARDINALITY.single:
      expectLength(field, a, 5, "a single part");
      return {
        disposition,
        language,
        cardinality: "single",
        contentType: textField(`${field}.contentType`, a[3]),
        content: bytesField(`${field}.content`, a[4]),
      };
    case CARDINALITY.external:
      expectLength(field, a, 15, "an external part");
      return {
        disposition,
        language,
        cardinality: "external",
        contentType: textField(`${field}.contentType`, a[3]),
        url: textField(`${field}.url`, a[4]),
        expires: uintField(`${field}.expires`, a[5], UINT32_MAX, "uint32"),
        size: uintField(`${field}.size`, a[6], Number.MAX_SAFE_INTEGER, "this implementation (2^53-1)"),
        encAlg: uintField(`${field}.encAlg`, a[7], UINT16_MAX, "uint16"),
        key: bytesField(`${field}.key`, a[8]),
        nonce: bytesField(`${field}.nonce`, a[9]),
        aad: bytesField(`${field}.aad`, a[10]),
        hashAlg: uintField(`${field}.hashAlg`, a[11], UINT8_MAX, "uint8"),
        contentHash: bytesField(`${field}.contentHash`, a[12]),
        description: textField(`${field}.description`, a[13]),
        filename: textField(`${field}.filename`, a[14]),
      };
    case CARDINALITY.multi: {
      expectLength(field, a, 5, "a multipart");
      const semantics = uintField(`${field}.partSemantics`, a[3], Number.MAX_SAFE_INTEGER, "partSemantics");
      const partSemantics = PART_SEMANTICS[semantics];
      if (partSemantics === undefined) fail(`${field}.partSemantics`, `unknown partSemantics ${semantics} (0 chooseOne, 1 singleUnit, 2 processAll)`);
      const parts = arrayField(`${field}.parts`, a[4], "an array of NestedParts");
      if (parts.length < 2) fail(`${field}.parts`, `a multipart needs at least 2 parts, got ${parts.length}`);
      return {
        disposition,
        language,
        cardinality: "multi",
        partSemantics,
        parts: parts.map((p, i) => partFromWire(`${field}.parts[${i}]`, p, level + 1, budget)),
      };
    }
    default:
      return fail(`${field}.cardinality`, `unknown cardinality ${cardinality} (0 null, 1 single, 2 external, 3 multi)`);
  }
}

function extensionsFromWire(v: unknown): MimiExtensions {
  if (!(v instanceof Map)) fail("extensions", `expected a map, got ${describe(v)}`);
  const extensions: MimiExtensions = { senderUri: null, roomUri: null, unknown: [] };
  for (const [rawKey, value] of v) {
    const key = extensionKey("extensions", rawKey);
    if (key === MIMI_EXTENSION_SENDER_URI) extensions.senderUri = textField("extensions[1] (senderUri)", value);
    else if (key === MIMI_EXTENSION_ROOM_URI) extensions.roomUri = textField("extensions[2] (roomUri)", value);
    else {
      checkExtensionValue(extensionField(key), value, 2);
      extensions.unknown.push({ key, encodedValue: encodeDeterministic(value, ENCODE_OPTIONS) });
    }
  }
  return extensions;
}

function messageFromWire(v: unknown): MimiMessage {
  const a = arrayField("message", v, "an array of 7 elements");
  expectLength("message", a, 7, "a MIMI message");
  const salt = bytesField("salt", a[0], MIMI_SALT_LENGTH);
  const replaces = messageIdField("replaces", a[1]);
  const topicId = bytesField("topicId", a[2]);
  let expires: MimiExpiration | null = null;
  if (a[3] !== null) {
    const e = arrayField("expires", a[3], "null or [relative, time]");
    expectLength("expires", e, 2, "an expiration");
    expires = { relative: boolField("expires.relative", e[0]), time: uintField("expires.time", e[1], UINT32_MAX, "uint32") };
  }
  const inReplyTo = messageIdField("inReplyTo", a[4]);
  const extensions = extensionsFromWire(a[5]);
  const body = partFromWire("body", a[6], 1, { count: 0 });
  return { salt, replaces, topicId, expires, inReplyTo, extensions, body };
}

/** Writes bytes already known to be one deterministic CBOR item, verbatim. */
class EncodedItem {
  constructor(readonly bytes: Uint8Array) {}
  toCBOR(w: Writer): undefined {
    w.write(this.bytes);
    return undefined;
  }
}

function cborErrorToMimi(e: unknown): MimiError {
  const detail = e instanceof Error ? e.message : String(e);
  if (e instanceof RangeError || /Unexpected end of stream/i.test(detail)) {
    return new MimiError("MALFORMED_CBOR", "truncated CBOR: the input ends inside a data item");
  }
  if (/Maximum depth/i.test(detail)) return new MimiError("MALFORMED_CBOR", "CBOR nested deeper than any valid MIMI message");
  if (/Extra data/i.test(detail)) return new MimiError("MALFORMED_CBOR", "malformed CBOR: trailing bytes after the first data item");
  if (/long|shorter|out of order|Duplicate|Streaming|NaN|encoded as int/i.test(detail)) {
    return new MimiError("NOT_DETERMINISTIC", `not deterministic CBOR: ${detail}`);
  }
  return new MimiError("MALFORMED_CBOR", `malformed CBOR: ${detail}`);
}

function strictCborDecode(bytes: Uint8Array): unknown {
  try {
    return cborDecode(bytes, DECODE_OPTIONS);
  } catch (e) {
    throw cborErrorToMimi(e);
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function unknownExtensionToWire(field: string, ext: MimiUnknownExtension): EncodedItem {
  const bytes = bytesField(`${field}.encodedValue`, ext.encodedValue);
  if (bytes.length === 0) fail(`${field}.encodedValue`, "must hold one encoded CBOR item, got no bytes");
  let value: unknown;
  try {
    value = cborDecode(bytes, DECODE_OPTIONS);
  } catch (e) {
    const err = cborErrorToMimi(e);
    return fail(`${field}.encodedValue`, err.reason, err.code);
  }
  checkExtensionValue(field, value, 2);
  if (firstDifference(encodeDeterministic(value, ENCODE_OPTIONS), bytes) !== -1) {
    fail(`${field}.encodedValue`, "not in deterministic CBOR encoding", "NOT_DETERMINISTIC");
  }
  return new EncodedItem(bytes);
}

function extensionsToWire(v: unknown): Map<number | string, unknown> {
  if (typeof v !== "object" || v === null) fail("extensions", `expected an object, got ${describe(v)}`);
  const ext = v as MimiExtensions;
  const map = new Map<number | string, unknown>();
  if (ext.senderUri !== null) map.set(MIMI_EXTENSION_SENDER_URI, textField("extensions.senderUri", ext.senderUri));
  if (ext.roomUri !== null) map.set(MIMI_EXTENSION_ROOM_URI, textField("extensions.roomUri", ext.roomUri));
  arrayField("extensions.unknown", ext.unknown, "an array").forEach((raw, i) => {
    const field = `extensions.unknown[${i}]`;
    if (typeof raw !== "object" || raw === null) fail(field, `expected an object, got ${describe(raw)}`);
    const entry = raw as MimiUnknownExtension;
    const key = extensionKey(`${field}.key`, entry.key);
    if (key === MIMI_EXTENSION_SENDER_URI || key === MIMI_EXTENSION_ROOM_URI) {
      fail(`${field}.key`, `key ${key} is ${key === 1 ? "senderUri" : "roomUri"}; set it there, not as an unknown extension`);
    }
    if (map.has(key)) fail(`${field}.key`, `duplicate extension key ${JSON.stringify(key)}`);
    map.set(key, unknownExtensionToWire(field, entry));
  });
  return map;
}

function partToWire(field: string, v: unknown, level: number, budget: PartBudget): unknown[] {
  if (typeof v !== "object" || v === null) fail(field, `expected a NestedPart object, got ${describe(v)}`);
  if (level > MIMI_MAX_PART_DEPTH) fail(field, `NestedParts nest deeper than the ${MIMI_MAX_PART_DEPTH} levels allowed`);
  if (++budget.count > MIMI_MAX_PARTS) fail(field, `more than ${MIMI_MAX_PARTS} body parts`);
  const p = v as MimiNestedPart;
  const head = [uintField(`${field}.disposition`, p.disposition, UINT8_MAX, "a disposition (0..255)"), textField(`${field}.language`, p.language)];
  switch (p.cardinality) {
    case "null":
      return [...head, CARDINALITY.null];
    case "single":
      return [...head, CARDINALITY.single, textField(`${field}.contentType`, p.contentType), bytesField(`${field}.content`, p.content)];
    case "external":
      return [
        ...head,
        CARDINALITY.external,
        textField(`${field}.contentType`, p.contentType),
        textField(`${field}.url`, p.url),
        uintField(`${field}.expires`, p.expires, UINT32_MAX, "uint32"),
        uintField(`${field}.size`, p.size, Number.MAX_SAFE_INTEGER, "this implementation (2^53-1)"),
        uintField(`${field}.encAlg`, p.encAlg, UINT16_MAX, "uint16"),
        bytesField(`${field}.key`, p.key),
        bytesField(`${field}.nonce`, p.nonce),
        bytesField(`${field}.aad`, p.aad),
        uintField(`${field}.hashAlg`, p.hashAlg, UINT8_MAX, "uint8"),
        bytesField(`${field}.contentHash`, p.contentHash),
        textField(`${field}.description`, p.description),
        textField(`${field}.filename`, p.filename),
      ];
    case "multi": {
      const semantics = PART_SEMANTICS.indexOf(p.partSemantics);
      if (semantics < 0) fail(`${field}.partSemantics`, `expected one of ${PART_SEMANTICS.join(", ")}, got ${describe(p.partSemantics)}`);
      const parts = arrayField(`${field}.parts`, p.parts, "an array of NestedParts");
      if (parts.length < 2) fail(`${field}.parts`, `a multipart needs at least 2 parts, got ${parts.length}`);
      return [...head, CARDINALITY.multi, semantics, parts.map((q, i) => partToWire(`${field}.parts[${i}]`, q, level + 1, budget))];
    }
    default:
      return fail(`${field}.cardinality`, `expected "null", "single", "external" or "multi", got ${describe((p as { cardinality: unknown }).cardinality)}`);
  }
}

/** Validates the model while turning it into the value tree cbor2 encodes. */
function messageToWire(v: unknown): unknown[] {
  if (typeof v !== "object" || v === null) fail("message", `expected a MimiMessage object, got ${describe(v)}`);
  const msg = v as MimiMessage;
  let expires: unknown[] | null = null;
  if (msg.expires !== null) {
    if (typeof msg.expires !== "object") fail("expires", `expected null or {relative, time}, got ${describe(msg.expires)}`);
    expires = [boolField("expires.relative", msg.expires.relative), uintField("expires.time", msg.expires.time, UINT32_MAX, "uint32")];
  }
  return [
    bytesField("salt", msg.salt, MIMI_SALT_LENGTH),
    messageIdField("replaces", msg.replaces),
    bytesField("topicId", msg.topicId),
    expires,
    messageIdField("inReplyTo", msg.inReplyTo),
    extensionsToWire(msg.extensions),
    partToWire("body", msg.body, 1, { count: 0 }),
  ];
}

/**
 * Decodes one MIMI message. Strict: refuses malformed CBOR, trailing bytes, any encoding other than the
 * deterministic one (checked by re-encoding and comparing), and every shape the draft's CDDL does not allow.
 */
export function decodeMimi(bytes: Uint8Array): MimiMessage {
  if (!(bytes instanceof Uint8Array)) throw new MimiError("INVALID_ARGUMENT", `decodeMimi expects bytes, got ${describe(bytes)}`);
  const input = toPlainBytes(bytes);
  if (input.length === 0) throw new MimiError("MALFORMED_CBOR", "empty input: a MIMI message is at least a few bytes of CBOR");
  const msg = messageFromWire(strictCborDecode(input));
  const canonical = encodeDeterministic(messageToWire(msg), ENCODE_OPTIONS);
  const at = firstDifference(canonical, input);
  if (at !== -1) {
    throw new MimiError("NOT_DETERMINISTIC", `not in deterministic CBOR encoding (RFC 8949 section 4.2.1): re-encoding differs at byte ${at}`);
  }
  return msg;
}

/** Encodes in deterministic CBOR; throws MimiError naming the field when the model breaks the draft's rules. */
export function encodeMimi(msg: MimiMessage): Uint8Array {
  return encodeDeterministic(messageToWire(msg), ENCODE_OPTIONS);
}

function uint16BigEndian(n: number): Uint8Array {
  return new Uint8Array([n >> 8, n & 0xff]);
}

/**
 * Section 3.3: 0x01 || SHA-256(senderLen16 || sender || roomLen16 || room || message || salt)[0..30].
 * Lengths are the UTF-8 octet counts (the draft says "length"; all its examples are ASCII).
 */
export function computeMessageId(senderUri: string, roomUri: string, encodedMessage: Uint8Array): Uint8Array {
  const sender = utf8Encoder.encode(textField("senderUri", senderUri));
  const room = utf8Encoder.encode(textField("roomUri", roomUri));
  if (sender.length > UINT16_MAX) fail("senderUri", "longer than 65535 octets", "INVALID_ARGUMENT");
  if (room.length > UINT16_MAX) fail("roomUri", "longer than 65535 octets", "INVALID_ARGUMENT");
  if (!(encodedMessage instanceof Uint8Array)) fail("encodedMessage", `expected bytes, got ${describe(encodedMessage)}`, "INVALID_ARGUMENT");
  // A deterministic encoding starts with array(7) (0x87) then bytes(16) (0x50): the salt sits at offset 2.
  if (encodedMessage.length < 2 + MIMI_SALT_LENGTH || encodedMessage[0] !== 0x87 || encodedMessage[1] !== 0x50) {
    fail("encodedMessage", "not an encoded MIMI message (expected an array of 7 starting with a 16-byte salt)", "INVALID_ARGUMENT");
  }
  const salt = encodedMessage.subarray(2, 2 + MIMI_SALT_LENGTH);
  const digest = createHash("sha256")
    .update(uint16BigEndian(sender.length))
    .update(sender)
    .update(uint16BigEndian(room.length))
    .update(room)
    .update(encodedMessage)
    .update(salt)
    .digest();
  const id = new Uint8Array(MIMI_MESSAGE_ID_LENGTH);
  id[0] = MIMI_HASH_SHA256;
  id.set(digest.subarray(0, MIMI_MESSAGE_ID_LENGTH - 1), 1);
  return id;
}

/** The message id from the sender and room URIs in the extensions; null when either is absent. */
export function messageIdOf(msg: MimiMessage): Uint8Array | null {
  const { senderUri, roomUri } = msg.extensions;
  if (senderUri === null || roomUri === null) return null;
  return computeMessageId(senderUri, roomUri, encodeMimi(msg));
}

// ---------------------------------------------------------------------------------------------
// Builders for what the bridge sends.

export interface MimiEnvelope {
  /** Sender URI (extension 1). */
  sender: string;
  /** Room URI (extension 2). */
  room: string;
}

/** Builder failures are the caller's arguments, whatever check caught them. */
function asArgumentError<T>(build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof MimiError && e.code !== "INVALID_ARGUMENT") throw new MimiError("INVALID_ARGUMENT", e.reason, e.field);
    throw e;
  }
}

function requireMessageId(field: string, v: unknown): Uint8Array {
  if (v === null || v === undefined) fail(field, "a message id is required", "INVALID_ARGUMENT");
  return bytesField(field, v, MIMI_MESSAGE_ID_LENGTH);
}

function newMessage(
  env: MimiEnvelope,
  body: MimiNestedPart,
  fields: { replaces?: Uint8Array | null; inReplyTo?: Uint8Array | null; expires?: MimiExpiration | null; topicId?: Uint8Array },
): MimiMessage {
  if (typeof env.sender !== "string" || env.sender === "") fail("sender", "a sender URI is required", "INVALID_ARGUMENT");
  if (typeof env.room !== "string" || env.room === "") fail("room", "a room URI is required", "INVALID_ARGUMENT");
  const msg: MimiMessage = {
    // Section 9.2 suggests deriving the salt from an MLS exporter; the bridge has no MLS group here, so CSPRNG.
    salt: toPlainBytes(randomBytes(MIMI_SALT_LENGTH)),
    replaces: fields.replaces ? requireMessageId("replaces", fields.replaces) : null,
    topicId: fields.topicId ? bytesField("topicId", fields.topicId) : new Uint8Array(0),
    expires: fields.expires ? { relative: fields.expires.relative, time: fields.expires.time } : null,
    inReplyTo: fields.inReplyTo ? requireMessageId("inReplyTo", fields.inReplyTo) : null,
    extensions: { senderUri: env.sender, roomUri: env.room, unknown: [] },
    body,
  };
  messageToWire(msg);
  return msg;
}

function markdownPart(markdown: string): MimiSinglePart {
  return {
    disposition: MIMI_DISPOSITION.render,
    language: "",
    cardinality: "single",
    contentType: MIMI_CONTENT_TYPE_MARKDOWN,
    content: utf8Encoder.encode(textField("markdown", markdown)),
  };
}

export interface NewTextMessageOptions extends MimiEnvelope {
  /** GFM-MIMI markdown (section 7.1.1: no raw HTML; the caller escapes `<`). */
  markdown: string;
  inReplyTo?: Uint8Array | null;
  expires?: MimiExpiration | null;
  topicId?: Uint8Array;
}

/** A text message (draft examples "original", "reply", "expiring"). */
export function newTextMessage(opts: NewTextMessageOptions): MimiMessage {
  return asArgumentError(() => newMessage(opts, markdownPart(opts.markdown), opts));
}

export interface NewReactionOptions extends MimiEnvelope {
  /** Id of the message reacted to. */
  target: Uint8Array;
  /** One reaction (e.g. "❤" or a multi-codepoint emoji); several reactions are several messages. */
  emoji: string;
}

/** A reaction: inReplyTo = target, a single text/plain part with disposition reaction (draft example "reaction"). */
export function newReaction(opts: NewReactionOptions): MimiMessage {
  return asArgumentError(() => {
    const emoji = textField("emoji", opts.emoji);
    if (emoji.length === 0) fail("emoji", "must not be empty", "INVALID_ARGUMENT");
    return newMessage(
      opts,
      {
        disposition: MIMI_DISPOSITION.reaction,
        language: "",
        cardinality: "single",
        contentType: MIMI_CONTENT_TYPE_PLAIN,
        content: utf8Encoder.encode(emoji),
      },
      { inReplyTo: requireMessageId("target", opts.target) },
    );
  });
}

export interface NewUnreactionOptions extends MimiEnvelope {
  /** Id of the reaction message being withdrawn. */
  reaction: Uint8Array;
  /** Id of the message that reaction was on. */
  target: Uint8Array;
}

/** Withdraws a reaction: replaces = the reaction, inReplyTo = its target, a null part with disposition reaction (draft "unlike"). */
export function newUnreaction(opts: NewUnreactionOptions): MimiMessage {
  return asArgumentError(() =>
    newMessage(
      opts,
      { disposition: MIMI_DISPOSITION.reaction, language: "", cardinality: "null" },
      { replaces: requireMessageId("reaction", opts.reaction), inReplyTo: requireMessageId("target", opts.target) },
    ),
  );
}

export interface NewEditOptions extends MimiEnvelope {
  /** Id of the FIRST version of the edited message (section 5.5), not of an earlier edit. */
  replaces: Uint8Array;
  markdown: string;
  /** Keep the original's inReplyTo so an edited reply stays a reply (as the draft's "edit" example does). */
  inReplyTo?: Uint8Array | null;
}

/** An edit: replaces = the original, body = the new text (draft example "edit"). */
export function newEdit(opts: NewEditOptions): MimiMessage {
  return asArgumentError(() =>
    newMessage(opts, markdownPart(opts.markdown), {
      replaces: requireMessageId("replaces", opts.replaces),
      inReplyTo: opts.inReplyTo,
    }),
  );
}

export interface NewDeleteOptions extends MimiEnvelope {
  /** Id of the FIRST version of the deleted message. */
  replaces: Uint8Array;
  /** The original's inReplyTo, as the draft's "delete" example carries it. */
  inReplyTo?: Uint8Array | null;
}

/** A delete: replaces = the original, a null part with disposition render (draft example "delete"). */
export function newDelete(opts: NewDeleteOptions): MimiMessage {
  return asArgumentError(() =>
    newMessage(
      opts,
      { disposition: MIMI_DISPOSITION.render, language: "", cardinality: "null" },
      { replaces: requireMessageId("replaces", opts.replaces), inReplyTo: opts.inReplyTo },
    ),
  );
}

/** External part fields for `newAttachment`; omitted ones take the draft's "not provided" values (0, empty). */
export interface MimiExternalFields {
  contentType: string;
  url: string;
  size?: number;
  expires?: number;
  encAlg?: number;
  key?: Uint8Array;
  nonce?: Uint8Array;
  aad?: Uint8Array;
  hashAlg?: number;
  contentHash?: Uint8Array;
  description?: string;
  filename?: string;
}

export interface NewAttachmentOptions extends MimiEnvelope {
  external: MimiExternalFields;
  /** MIMI_DISPOSITION.attachment (default: download) or MIMI_DISPOSITION.inline (render in the timeline). */
  disposition?: number;
  language?: string;
  /** GFM-MIMI markdown shown with the media. */
  caption?: string;
  inReplyTo?: Uint8Array | null;
  expires?: MimiExpiration | null;
}

const AEAD_KEY_NONCE_LENGTHS: ReadonlyMap<number, [number, number]> = new Map([
  [MIMI_ENC_AES_128_GCM, [16, 12]],
  [MIMI_ENC_AES_256_GCM, [32, 12]],
]);
const HASH_LENGTHS: ReadonlyMap<number, number> = new Map([[MIMI_HASH_SHA256, 32]]);

function externalPart(f: MimiExternalFields, disposition: number, language: string): MimiExternalPart {
  const part: MimiExternalPart = {
    disposition,
    language,
    cardinality: "external",
    contentType: f.contentType,
    url: f.url,
    expires: f.expires ?? 0,
    size: f.size ?? 0,
    encAlg: f.encAlg ?? MIMI_ENC_NONE,
    key: toPlainBytes(f.key ?? new Uint8Array(0)),
    nonce: toPlainBytes(f.nonce ?? new Uint8Array(0)),
    aad: toPlainBytes(f.aad ?? new Uint8Array(0)),
    hashAlg: f.hashAlg ?? (f.contentHash?.length ? MIMI_HASH_SHA256 : 0),
    contentHash: toPlainBytes(f.contentHash ?? new Uint8Array(0)),
    description: f.description ?? "",
    filename: f.filename ?? "",
  };
  // Section 4.5: unencrypted content carries no key material; mismatched lengths would make the media undecryptable.
  if (part.encAlg === MIMI_ENC_NONE && part.key.length + part.nonce.length + part.aad.length > 0) {
    fail("external.encAlg", "is 0 (not encrypted) but key, nonce or aad is set", "INVALID_ARGUMENT");
  }
  const lengths = AEAD_KEY_NONCE_LENGTHS.get(part.encAlg);
  if (lengths && (part.key.length !== lengths[0] || part.nonce.length !== lengths[1])) {
    fail("external.key", `encAlg ${part.encAlg} needs a ${lengths[0]}-byte key and ${lengths[1]}-byte nonce`, "INVALID_ARGUMENT");
  }
  const hashLength = HASH_LENGTHS.get(part.hashAlg);
  if (hashLength !== undefined && part.contentHash.length !== hashLength) {
    fail("external.contentHash", `hashAlg ${part.hashAlg} needs a ${hashLength}-byte hash, got ${part.contentHash.length}`, "INVALID_ARGUMENT");
  }
  if (part.hashAlg === 0 && part.contentHash.length > 0) fail("external.hashAlg", "is 0 (none) but contentHash is set", "INVALID_ARGUMENT");
  return part;
}

/**
 * Media by reference (section 4.5/5.9). Without a caption the body is the ExternalPart itself, as in the
 * draft's "attachment" example. With a caption the body is a MultiPart with processAll semantics holding
 * [ExternalPart, GFM-MIMI caption part]: the draft has no caption example; processAll (like multipart/mixed,
 * "a rich text document with a link, and a preview image") lets a client that cannot show the media still show
 * the caption, which singleUnit would forbid; media first, caption second, in the order clients render them.
 * `description` stays the media's own description (alt text), not the caption.
 */
export function newAttachment(opts: NewAttachmentOptions): MimiMessage {
  return asArgumentError(() => buildAttachment(opts));
}

function buildAttachment(opts: NewAttachmentOptions): MimiMessage {
  if (typeof opts.external !== "object" || opts.external === null) fail("external", "the external part fields are required", "INVALID_ARGUMENT");
  const media = externalPart(opts.external, opts.disposition ?? MIMI_DISPOSITION.attachment, opts.language ?? "");
  const body: MimiNestedPart =
    opts.caption === undefined
      ? media
      : {
          disposition: MIMI_DISPOSITION.render,
          language: "",
          cardinality: "multi",
          partSemantics: "processAll",
          parts: [media, markdownPart(opts.caption)],
        };
  return newMessage(opts, body, opts);
}

// ---------------------------------------------------------------------------------------------
// JSON form for the CLI.

export interface MimiUnknownExtensionJson {
  key: number | string;
  /** Lowercase hex of the value's encoded CBOR. */
  cbor: string;
}

/** A part's fields in the JSON form: byte strings as lowercase hex, the rest as they are. */
type HexBytes<T> = { [K in keyof T]: T[K] extends Uint8Array ? string : T[K] };
export type MimiPartJson =
  HexBytes<MimiNullPart> | (HexBytes<MimiSinglePart> & { contentText?: string }) | HexBytes<MimiExternalPart> | (Omit<MimiMultiPart, "parts"> & { parts: MimiPartJson[] });

export interface MimiJson {
  /** Derived from the encoded message and extensions 1/2; null when either URI is absent. Ignored on input. */
  messageId: string | null;
  salt: string;
  replaces: string | null;
  topicId: string;
  expires: MimiExpiration | null;
  inReplyTo: string | null;
  extensions: { senderUri: string | null; roomUri: string | null; unknown: MimiUnknownExtensionJson[] };
  body: MimiPartJson;
}

function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

function isTextContentType(contentType: string): boolean {
  return /^text\//i.test(contentType.trim());
}

function utf8OrNull(b: Uint8Array): string | null {
  try {
    return strictUtf8Decoder.decode(b);
  } catch {
    return null;
  }
}

function partToJson(p: MimiNestedPart): MimiPartJson {
  const head = { disposition: p.disposition, language: p.language };
  switch (p.cardinality) {
    case "null":
      return { ...head, cardinality: "null" };
    case "single": {
      const text = isTextContentType(p.contentType) ? utf8OrNull(p.content) : null;
      return {
        ...head,
        cardinality: "single",
        contentType: p.contentType,
        content: toHex(p.content),
        ...(text === null ? {} : { contentText: text }),
      };
    }
    case "external":
      return {
        ...head,
        cardinality: "external",
        contentType: p.contentType,
        url: p.url,
        expires: p.expires,
        size: p.size,
        encAlg: p.encAlg,
        key: toHex(p.key),
        nonce: toHex(p.nonce),
        aad: toHex(p.aad),
        hashAlg: p.hashAlg,
        contentHash: toHex(p.contentHash),
        description: p.description,
        filename: p.filename,
      };
    case "multi":
      return { ...head, cardinality: "multi", partSemantics: p.partSemantics, parts: p.parts.map(partToJson) };
  }
}

/**
 * The JSON form. Conventions: every byte string is lowercase hex ("" for empty), e.g. "salt": "5eed9406…";
 * text strings and integers are themselves; cardinality and partSemantics are names ("single", "processAll"),
 * disposition the registry number. A single part always carries `content` (hex, authoritative) and, when its
 * contentType is text/* and the bytes are valid UTF-8, also `contentText` (for reading; UTF-8 round-trips exactly).
 * Unknown extensions are {"key": 7 | "name", "cbor": "<hex of the value's encoded CBOR>"}.
 * `messageId` is derived (lowercase hex, or null without sender/room URI).
 */
export function mimiToJson(msg: MimiMessage): MimiJson {
  const id = messageIdOf(msg);
  return {
    messageId: id === null ? null : toHex(id),
    salt: toHex(msg.salt),
    replaces: msg.replaces === null ? null : toHex(msg.replaces),
    topicId: toHex(msg.topicId),
    expires: msg.expires === null ? null : { relative: msg.expires.relative, time: msg.expires.time },
    inReplyTo: msg.inReplyTo === null ? null : toHex(msg.inReplyTo),
    extensions: {
      senderUri: msg.extensions.senderUri,
      roomUri: msg.extensions.roomUri,
      unknown: msg.extensions.unknown.map((e) => ({ key: e.key, cbor: toHex(e.encodedValue) })),
    },
    body: partToJson(msg.body),
  };
}

function jsonFail(field: string, reason: string): never {
  throw new MimiError("INVALID_JSON", reason, field);
}

function describeJson(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  return `${typeof v} ${String(v)}`;
}

type JsonObject = Record<string, unknown>;

function jsonObject(field: string, v: unknown, required: readonly string[], optional: readonly string[] = []): JsonObject {
  if (typeof v !== "object" || v === null || Array.isArray(v)) jsonFail(field, `expected an object, got ${describeJson(v)}`);
  const o = v as JsonObject;
  for (const k of Object.keys(o)) {
    if (!required.includes(k) && !optional.includes(k)) jsonFail(field === "" ? k : `${field}.${k}`, "unknown field");
  }
  for (const k of required) if (!(k in o)) jsonFail(field === "" ? k : `${field}.${k}`, "missing");
  return o;
}

function jsonHex(field: string, v: unknown, exactLength?: number): Uint8Array {
  if (typeof v !== "string" || !/^(?:[0-9a-f]{2})*$/.test(v)) jsonFail(field, `expected lowercase hex with an even number of digits, got ${describeJson(v)}`);
  const bytes = toPlainBytes(Buffer.from(v, "hex"));
  if (exactLength !== undefined && bytes.length !== exactLength) jsonFail(field, `expected ${exactLength} bytes (${exactLength * 2} hex digits), got ${bytes.length}`);
  return bytes;
}

function jsonHexOrNull(field: string, v: unknown, exactLength: number): Uint8Array | null {
  return v === null ? null : jsonHex(field, v, exactLength);
}

function jsonString(field: string, v: unknown): string {
  if (typeof v !== "string") jsonFail(field, `expected a string, got ${describeJson(v)}`);
  if (LONE_SURROGATE.test(v)) jsonFail(field, "contains an unpaired surrogate, which has no UTF-8 encoding");
  return v;
}

function jsonStringOrNull(field: string, v: unknown): string | null {
  return v === null ? null : jsonString(field, v);
}

function jsonUint(field: string, v: unknown, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) jsonFail(field, `expected a non-negative integer, got ${describeJson(v)}`);
  if (v > max) jsonFail(field, `${v} is larger than the maximum ${max}`);
  return v;
}

function jsonBool(field: string, v: unknown): boolean {
  if (typeof v !== "boolean") jsonFail(field, `expected true or false, got ${describeJson(v)}`);
  return v;
}

function jsonArray(field: string, v: unknown): unknown[] {
  if (!Array.isArray(v)) jsonFail(field, `expected an array, got ${describeJson(v)}`);
  return v;
}

const HEADER_FIELDS = ["disposition", "language", "cardinality"] as const;
const EXTERNAL_FIELDS = ["contentType", "url", "expires", "size", "encAlg", "key", "nonce", "aad", "hashAlg", "contentHash", "description", "filename"] as const;

function partFromJson(field: string, v: unknown, level: number): MimiNestedPart {
  if (level > MIMI_MAX_PART_DEPTH) jsonFail(field, `NestedParts nest deeper than the ${MIMI_MAX_PART_DEPTH} levels allowed`);
  const peek = jsonObject(field, v, ["cardinality"], [...HEADER_FIELDS, ...EXTERNAL_FIELDS, "content", "contentText", "partSemantics", "parts"]);
  const head = (o: JsonObject) => ({
    disposition: jsonUint(`${field}.disposition`, o.disposition, UINT8_MAX),
    language: jsonString(`${field}.language`, o.language),
  });
  switch (peek.cardinality) {
    case "null":
      return { ...head(jsonObject(field, v, HEADER_FIELDS)), cardinality: "null" };
    case "single": {
      const o = jsonObject(field, v, [...HEADER_FIELDS, "contentType"], ["content", "contentText"]);
      if (!("content" in o) && !("contentText" in o)) jsonFail(`${field}.content`, "missing (give content as hex, or contentText)");
      const fromHex = "content" in o ? jsonHex(`${field}.content`, o.content) : null;
      const fromText = "contentText" in o ? utf8Encoder.encode(jsonString(`${field}.contentText`, o.contentText)) : null;
      if (fromHex && fromText && firstDifference(fromHex, fromText) !== -1) {
        jsonFail(`${field}.contentText`, "does not match content; give one, or both describing the same bytes");
      }
      return {
        ...head(o),
        cardinality: "single",
        contentType: jsonString(`${field}.contentType`, o.contentType),
        content: (fromHex ?? fromText) as Uint8Array,
      };
    }
    case "external": {
      const o = jsonObject(field, v, [...HEADER_FIELDS, ...EXTERNAL_FIELDS]);
      return {
        ...head(o),
        cardinality: "external",
        contentType: jsonString(`${field}.contentType`, o.contentType),
        url: jsonString(`${field}.url`, o.url),
        expires: jsonUint(`${field}.expires`, o.expires, UINT32_MAX),
        size: jsonUint(`${field}.size`, o.size, Number.MAX_SAFE_INTEGER),
        encAlg: jsonUint(`${field}.encAlg`, o.encAlg, UINT16_MAX),
        key: jsonHex(`${field}.key`, o.key),
        nonce: jsonHex(`${field}.nonce`, o.nonce),
        aad: jsonHex(`${field}.aad`, o.aad),
        hashAlg: jsonUint(`${field}.hashAlg`, o.hashAlg, UINT8_MAX),
        contentHash: jsonHex(`${field}.contentHash`, o.contentHash),
        description: jsonString(`${field}.description`, o.description),
        filename: jsonString(`${field}.filename`, o.filename),
      };
    }
    case "multi": {
      const o = jsonObject(field, v, [...HEADER_FIELDS, "partSemantics", "parts"]);
      const semantics = o.partSemantics;
      if (typeof semantics !== "string" || !(PART_SEMANTICS as readonly string[]).includes(semantics)) {
        jsonFail(`${field}.partSemantics`, `expected one of ${PART_SEMANTICS.join(", ")}, got ${describeJson(semantics)}`);
      }
      const parts = jsonArray(`${field}.parts`, o.parts);
      if (parts.length < 2) jsonFail(`${field}.parts`, `a multipart needs at least 2 parts, got ${parts.length}`);
      return {
        ...head(o),
        cardinality: "multi",
        partSemantics: semantics as MimiPartSemantics,
        parts: parts.map((p, i) => partFromJson(`${field}.parts[${i}]`, p, level + 1)),
      };
    }
    default:
      return jsonFail(`${field}.cardinality`, `expected "null", "single", "external" or "multi", got ${describeJson(peek.cardinality)}`);
  }
}

function extensionsFromJson(v: unknown): MimiExtensions {
  const o = jsonObject("extensions", v, ["senderUri", "roomUri"], ["unknown"]);
  const unknown = o.unknown === undefined ? [] : jsonArray("extensions.unknown", o.unknown);
  return {
    senderUri: jsonStringOrNull("extensions.senderUri", o.senderUri),
    roomUri: jsonStringOrNull("extensions.roomUri", o.roomUri),
    unknown: unknown.map((raw, i) => {
      const field = `extensions.unknown[${i}]`;
      const e = jsonObject(field, raw, ["key", "cbor"]);
      if (typeof e.key !== "number" && typeof e.key !== "string") jsonFail(`${field}.key`, `expected an integer or a string, got ${describeJson(e.key)}`);
      return { key: e.key, encodedValue: jsonHex(`${field}.cbor`, e.cbor) };
    }),
  };
}

/**
 * Parses the JSON form (see mimiToJson) strictly: unknown or missing fields, wrong types and bad hex are
 * refused with the field path. `messageId` is optional and ignored (it is derived); `extensions.unknown`
 * defaults to []; a single part may give `contentText` instead of `content`.
 */
export function mimiFromJson(obj: unknown): MimiMessage {
  const o = jsonObject("", obj, ["salt", "replaces", "topicId", "expires", "inReplyTo", "extensions", "body"], ["messageId"]);
  if (o.messageId !== undefined && o.messageId !== null) jsonHex("messageId", o.messageId, MIMI_MESSAGE_ID_LENGTH);
  let expires: MimiExpiration | null = null;
  if (o.expires !== null) {
    const e = jsonObject("expires", o.expires, ["relative", "time"]);
    expires = { relative: jsonBool("expires.relative", e.relative), time: jsonUint("expires.time", e.time, UINT32_MAX) };
  }
  const msg: MimiMessage = {
    salt: jsonHex("salt", o.salt, MIMI_SALT_LENGTH),
    replaces: jsonHexOrNull("replaces", o.replaces, MIMI_MESSAGE_ID_LENGTH),
    topicId: jsonHex("topicId", o.topicId),
    expires,
    inReplyTo: jsonHexOrNull("inReplyTo", o.inReplyTo, MIMI_MESSAGE_ID_LENGTH),
    extensions: extensionsFromJson(o.extensions),
    body: partFromJson("body", o.body, 1),
  };
  try {
    messageToWire(msg);
  } catch (e) {
    // The model's field names are the JSON's, except an unknown extension's value, which JSON calls "cbor".
    if (e instanceof MimiError) throw new MimiError("INVALID_JSON", e.reason, e.field?.replace(/\.encodedValue$/, ".cbor"));
    throw e;
  }
  return msg;
}
