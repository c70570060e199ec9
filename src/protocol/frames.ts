/**
 * Wire frames of the interop gateway protocol (docs/protocol.md), shared by the
 * gateway and the client: TypeScript types, a strict validating decoder and an
 * encoder that produces deterministic CBOR.
 *
 * The decoder is deliberately strict (bad_frame naming the field) so that an
 * independent implementation that drifts from the spec fails loudly instead of
 * half-working; unknown *fields* are ignored so that later protocol additions
 * (group rooms, more payload kinds) do not break version-1 peers.
 */
import { createHash } from "node:crypto";
import { decode as cborDecode } from "cbor2";
import { encodeDeterministic } from "./deterministic-cbor.js";
import type { PreKeyBundleData, PublishedKeys } from "./signal/types.js";

export const PROTOCOL_VERSION = 1;
/** WebSocket path of protocol version 1. */
export const PROTOCOL_PATH = "/v1";

/**
 * Optional features negotiated in hello/welcome (docs/protocol.md §4.1). A client announces
 * those it implements; the gateway answers with the ones both sides have, and sends a
 * connection nothing that belongs to a feature it did not get.
 */
export const FEATURE_GROUPS = "groups";
export const KNOWN_FEATURES: readonly string[] = [FEATURE_GROUPS];
/** Group rooms the gateway hosts: mimi://<roomDomain>/r/g-<32 hex digits> (§3.3). */
export const GROUP_ROOM_PREFIX = "g-";

/** Defaults the gateway uses unless configured otherwise; `welcome.limits` carries the values in force. */
export const DEFAULT_LIMITS = {
  /** Largest WebSocket message either side may send; bigger ones close the connection with 1009. */
  maxFrameBytes: 256 * 1024,
  /** Largest `payload.body`; kept below maxFrameBytes so the deliver frame built from it still fits. */
  maxBodyBytes: 256 * 1024 - 4096,
  /** One-time prekeys accepted in one keys.publish, and kept per user. */
  maxOneTimeKeysPerPublish: 100,
  maxOneTimeKeysStored: 1000,
  /** Members a group room may have (groups feature, §3.3). */
  maxGroupMembers: 256,
} as const;

export type ErrorCode =
  | "bad_frame"
  | "unauthorized"
  | "unsupported_version"
  | "not_logged_in"
  | "forbidden"
  | "unknown_user"
  | "unknown_room"
  | "third_party_disabled"
  | "not_opted_in"
  | "no_keys"
  | "queue_full"
  | "too_large"
  | "rate_limited"
  | "internal"
  | "not_member"
  | "not_supported";

/** Codes only the client library produces locally; they never travel on the wire. */
export type LocalErrorCode = "timeout" | "closed";

export const ERROR_CODES: readonly ErrorCode[] = [
  "bad_frame",
  "unauthorized",
  "unsupported_version",
  "not_logged_in",
  "forbidden",
  "unknown_user",
  "unknown_room",
  "third_party_disabled",
  "not_opted_in",
  "no_keys",
  "queue_full",
  "too_large",
  "rate_limited",
  "internal",
  "not_member",
  "not_supported",
];

/** Errors after which repeating the very same request later may succeed. */
export const RETRYABLE_ERROR_CODES: ReadonlySet<string> = new Set(["rate_limited", "internal"]);

/** WebSocket close codes used by the gateway (docs/protocol.md, "Close codes"). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  unsupportedData: 1003,
  tooBig: 1009,
  badHandshake: 4000,
  unauthorized: 4001,
  unsupportedVersion: 4002,
  handshakeTimeout: 4003,
  replaced: 4004,
  idle: 4008,
  protocolViolation: 4009,
} as const;

/** Close codes after which reconnecting with the same settings cannot succeed. */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([CloseCode.unauthorized, CloseCode.unsupportedVersion]);

export class ProtocolError extends Error {
  readonly code: ErrorCode | LocalErrorCode;
  /** Dotted path of the offending field, for bad_frame raised by the codec. */
  readonly field?: string;
  readonly retryAfterMs?: number;
  constructor(code: ErrorCode | LocalErrorCode, message: string, opts: { field?: string; retryAfterMs?: number } = {}) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    if (opts.field !== undefined) this.field = opts.field;
    if (opts.retryAfterMs !== undefined) this.retryAfterMs = opts.retryAfterMs;
  }
  get retryable(): boolean {
    return RETRYABLE_ERROR_CODES.has(this.code);
  }
}

// ---------------------------------------------------------------------------
// Frame types

export interface Avatar {
  url: string;
  mimetype: string;
  size: number;
  /** SHA-256 of the bytes served at url, 32 bytes. */
  sha256: Uint8Array;
}

/** The keys the directory hands out for `user` (deviceId: always 1 in version 1, one device per account). */
export interface PreKeyBundle extends PreKeyBundleData {
  user: string;
}

export interface Payload {
  /** libsignal CiphertextMessageType: 2 = Whisper (SignalMessage), 3 = PreKey (PreKeySignalMessage). */
  type: number;
  /** CiphertextMessage.serialize() */
  body: Uint8Array;
}

export interface Limits {
  maxFrameBytes: number;
  maxBodyBytes: number;
  maxOneTimeKeysPerPublish: number;
  maxOneTimeKeysStored: number;
  /** Sent by gateways with the groups feature; absent from older ones. */
  maxGroupMembers?: number;
}

/** One member of a group room. */
export interface GroupMember {
  user: string;
  admin: boolean;
}

/** A group room as the gateway holds it (§3.3): sent whole with every change. */
export interface GroupState {
  room: string;
  /** Increases by one with every change; the later state has the higher rev. */
  rev: number;
  name: string;
  /** Absent: no topic. */
  topic?: string;
  /** Absent: no picture. Public like profile pictures (§6.1), not encrypted. */
  picture?: Avatar;
  creator: string;
  /** When the group was created (ms since epoch). */
  created: number;
  /** The current members in the order they joined; empty once the last one has left. */
  members: GroupMember[];
}

/** A member group.create could not add, and why (the code the same group.add would get). */
export interface GroupRefusal {
  user: string;
  code: ErrorCode;
}

export type GroupChange = "created" | "added" | "removed" | "left" | "name" | "topic" | "picture" | "admin";
export const GROUP_CHANGES: readonly GroupChange[] = ["created", "added", "removed", "left", "name", "topic", "picture", "admin"];

// Connection-level
export interface HelloFrame {
  t: "hello";
  provider: string;
  secret: string;
  version: number;
  /** connectionId of this provider's previous connection, which the gateway then closes (4004). */
  resume?: string;
  /** Optional features this client implements (e.g. "groups"); absent: none. */
  features?: string[];
}
export interface WelcomeFrame {
  t: "welcome";
  version: number;
  connectionId: string;
  provider: string;
  homeProvider: string;
  /** Domain under which the gateway names rooms (dm room URIs). */
  roomDomain: string;
  serverTime: number;
  pingIntervalMs: number;
  idleTimeoutMs: number;
  limits: Limits;
  /** The features in force on this connection: those of hello.features the gateway has. Absent from older gateways. */
  features?: string[];
}
export interface PingFrame {
  t: "ping";
  nonce: number;
}
export interface PongFrame {
  t: "pong";
  nonce: number;
}

// Requests (carry rid, answered by ok or error)
export interface LoginFrame {
  t: "login";
  rid: number;
  user: string;
}
export interface LogoutFrame {
  t: "logout";
  rid: number;
  user: string;
}
export interface EnlistFrame {
  t: "enlist";
  rid: number;
  user: string;
  displayName: string;
  /** The user's Third-Party Chats setting; a new account without it starts with the setting on. */
  thirdPartyChats?: boolean;
}
export interface UnenlistFrame {
  t: "unenlist";
  rid: number;
  user: string;
}
export interface AccountUpsertFrame {
  t: "account.upsert";
  rid: number;
  user: string;
  displayName: string;
  avatar?: Avatar;
}
export interface SettingsSetFrame {
  t: "settings.set";
  rid: number;
  user: string;
  thirdPartyChats: boolean;
}
export interface ProfileGetFrame {
  t: "profile.get";
  rid: number;
  user: string;
}
/** `user`'s keys for the directory (deviceId: always 1 in version 1, one device per account). */
export interface KeysPublishFrame extends PublishedKeys {
  t: "keys.publish";
  rid: number;
  user: string;
}
export interface KeysFetchFrame {
  t: "keys.fetch";
  rid: number;
  /** The logged-in user who will start the session (consumes a one-time key). */
  from: string;
  user: string;
}
export interface KeysCountFrame {
  t: "keys.count";
  rid: number;
  user: string;
}
export interface SendFrame {
  t: "send";
  rid: number;
  from: string;
  to: string;
  room: string;
  /** 16 bytes chosen by the sender; (from, to, id) is the idempotency key. */
  id: Uint8Array;
  payload: Payload;
}

// Group requests (feature "groups"): `by` is the logged-in member acting.
export interface GroupCreateFrame {
  t: "group.create";
  rid: number;
  by: string;
  /** 16 bytes chosen by the creator: (by, id) names the group, so a retry creates nothing new. */
  id: Uint8Array;
  name: string;
  topic?: string;
  picture?: Avatar;
  /** Members besides the creator. */
  members: string[];
}
export interface GroupAddFrame {
  t: "group.add";
  rid: number;
  by: string;
  room: string;
  user: string;
}
export interface GroupRemoveFrame {
  t: "group.remove";
  rid: number;
  by: string;
  room: string;
  user: string;
}
export interface GroupLeaveFrame {
  t: "group.leave";
  rid: number;
  by: string;
  room: string;
}
export interface GroupUpdateFrame {
  t: "group.update";
  rid: number;
  by: string;
  room: string;
  name?: string;
  /** "" removes the topic. */
  topic?: string;
  picture?: Avatar;
  /** true removes the picture (not together with picture). */
  removePicture?: boolean;
}
export interface GroupAdminFrame {
  t: "group.admin";
  rid: number;
  by: string;
  room: string;
  user: string;
  admin: boolean;
}
export interface GroupGetFrame {
  t: "group.get";
  rid: number;
  by: string;
  room: string;
}
export interface GroupListFrame {
  t: "group.list";
  rid: number;
  user: string;
}

// Notices from the client (no rid, no answer unless rejected)
export interface AckFrame {
  t: "ack";
  user: string;
  seq: number;
}
export interface TypingFrame {
  t: "typing";
  from: string;
  to: string;
  room: string;
  state: "on" | "off";
}

// Answers
/**
 * `ok` carries request-specific fields (docs/protocol.md lists them per request);
 * the codec validates every field it knows and keeps them all optional here.
 */
export interface OkFrame {
  t: "ok";
  rid: number;
  /** login: frames waiting in the user's queue. */
  queued?: number;
  /** enlist, account.upsert: whether the account was new. */
  created?: boolean;
  /** send: server timestamp (ms since epoch) of acceptance. */
  ts?: number;
  /** send: true when this answer repeats the one given to an earlier identical send. */
  duplicate?: boolean;
  /** keys.count, keys.publish: one-time prekeys left. */
  remaining?: number;
  /** keys.fetch */
  bundle?: PreKeyBundle;
  /** profile.get */
  profile?: Profile;
  /** group.*: the group's state after the request. */
  group?: GroupState;
  /** group.list: the groups the user is a member of. */
  groups?: GroupState[];
  /** group.create: members that could not be added. */
  refused?: GroupRefusal[];
}
export interface ErrorFrame {
  t: "error";
  /** Absent when the offending frame was not a request (or its rid could not be read). */
  rid?: number;
  code: ErrorCode;
  message: string;
  retryAfterMs?: number;
}

export interface Profile {
  user: string;
  exists: boolean;
  /** true for accounts of the home provider (WhatsApp users). */
  home?: boolean;
  displayName?: string;
  avatar?: Avatar;
  /** Home accounts only: the Third-Party Chats setting. */
  thirdPartyChats?: boolean;
}

// Queued events (carry seq; acknowledged with ack by the queue owner)
export interface DeliverFrame {
  t: "deliver";
  seq: number;
  from: string;
  /** Queue owner. */
  to: string;
  room: string;
  id: Uint8Array;
  ts: number;
  payload: Payload;
}
export interface DeliveredFrame {
  t: "delivered";
  seq: number;
  /** Queue owner: the sender of the delivered message. */
  user: string;
  to: string;
  room: string;
  id: Uint8Array;
  /** When the recipient acknowledged it (ms since epoch). */
  ts: number;
}
export interface ProfileFrame {
  t: "profile";
  seq: number;
  /** Queue owner. */
  user: string;
  /** The user whose profile changed. */
  subject: string;
  displayName: string;
  avatar?: Avatar;
  thirdPartyChats?: boolean;
  ts: number;
}
/** A home user tried to reach the queue owner, a third-party user with Third-Party Chats off. */
export interface RefusedFrame {
  t: "refused";
  seq: number;
  /** Queue owner: the third-party user who was not reached. */
  user: string;
  /** The home user who tried. */
  from: string;
  room: string;
  /** When the attempt was refused. */
  ts: number;
}

/** A group the queue owner is (or was, until this change) a member of changed. */
export interface GroupEventFrame {
  t: "group";
  seq: number;
  /** Queue owner. */
  user: string;
  room: string;
  change: GroupChange;
  /** Who made the change (for "left", the member who left). */
  by: string;
  /** For added, removed, left and admin: the member concerned. */
  subject?: string;
  /** The group after the change. A member removed or gone sees itself absent from it. */
  group: GroupState;
  ts: number;
}

// Live pushes from the gateway (not stored, not acknowledged)
export interface KeysLowFrame {
  t: "keys.low";
  user: string;
  remaining: number;
}
export interface SessionEndedFrame {
  t: "session.ended";
  user: string;
  reason: "replaced";
}
// typing is relayed with the same shape as sent.

export type RequestFrame =
  | LoginFrame
  | LogoutFrame
  | EnlistFrame
  | UnenlistFrame
  | AccountUpsertFrame
  | SettingsSetFrame
  | ProfileGetFrame
  | KeysPublishFrame
  | KeysFetchFrame
  | KeysCountFrame
  | SendFrame
  | GroupCreateFrame
  | GroupAddFrame
  | GroupRemoveFrame
  | GroupLeaveFrame
  | GroupUpdateFrame
  | GroupAdminFrame
  | GroupGetFrame
  | GroupListFrame;
export type QueuedFrame = DeliverFrame | DeliveredFrame | ProfileFrame | RefusedFrame | GroupEventFrame;
export type Frame =
  HelloFrame | WelcomeFrame | PingFrame | PongFrame | RequestFrame | AckFrame | TypingFrame | OkFrame | ErrorFrame | QueuedFrame | KeysLowFrame | SessionEndedFrame;
export type FrameType = Frame["t"];
export type FrameOf<T extends FrameType> = Extract<Frame, { t: T }>;
/** A request as the caller builds it; the client assigns rid. */
export type RequestBody<F extends RequestFrame = RequestFrame> = F extends RequestFrame ? Omit<F, "rid"> : never;

export const REQUEST_TYPES: ReadonlySet<string> = new Set([
  "login",
  "logout",
  "enlist",
  "unenlist",
  "account.upsert",
  "settings.set",
  "profile.get",
  "keys.publish",
  "keys.fetch",
  "keys.count",
  "send",
  "group.create",
  "group.add",
  "group.remove",
  "group.leave",
  "group.update",
  "group.admin",
  "group.get",
  "group.list",
]);
/** Requests of the groups feature. */
export const GROUP_REQUEST_TYPES: ReadonlySet<string> = new Set([...REQUEST_TYPES].filter((t) => t.startsWith("group.")));
export const QUEUED_TYPES: ReadonlySet<string> = new Set(["deliver", "delivered", "profile", "refused", "group"]);

export function isRequest(frame: Frame): frame is RequestFrame {
  return REQUEST_TYPES.has(frame.t);
}
export function isQueued(frame: Frame): frame is QueuedFrame {
  return QUEUED_TYPES.has(frame.t);
}
/** The user whose queue a queued event belongs to (the user that must ack it). */
export function queueOwner(frame: QueuedFrame): string {
  return frame.t === "deliver" ? frame.to : frame.user;
}

// ---------------------------------------------------------------------------
// Identities

const DOMAIN_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]{1,5})?$/;
// Local ids are compared byte for byte; whitespace and control characters are excluded so that
// ids survive logs, config files and line-oriented tooling unambiguously.
// eslint-disable-next-line no-control-regex -- a local id may contain no control character
const LOCAL_ID_RE = /^[^\u0000-\u0020\u007f-\u009f]+$/u;
const E164_RE = /^\+[1-9][0-9]{1,14}$/;
const MAX_URI_BYTES = 512;
const MAX_LOCAL_ID_BYTES = 255;

export interface ParsedUri {
  kind: "u" | "r";
  domain: string;
  id: string;
}

/** Parses `mimi://<domain>/u/<id>` or `mimi://<domain>/r/<id>`; undefined when malformed. */
export function parseMimiUri(uri: string): ParsedUri | undefined {
  if (Buffer.byteLength(uri, "utf8") > MAX_URI_BYTES || !uri.startsWith("mimi://")) return undefined;
  const rest = uri.slice("mimi://".length);
  const slash = rest.indexOf("/");
  if (slash <= 0) return undefined;
  const domain = rest.slice(0, slash);
  const kind = rest.slice(slash + 1, slash + 3);
  const id = rest.slice(slash + 3);
  if (!DOMAIN_RE.test(domain) || (kind !== "u/" && kind !== "r/")) return undefined;
  if (id.length === 0 || Buffer.byteLength(id, "utf8") > MAX_LOCAL_ID_BYTES || !LOCAL_ID_RE.test(id)) return undefined;
  return { kind: kind === "u/" ? "u" : "r", domain, id };
}

export function isValidProviderDomain(domain: string): boolean {
  return DOMAIN_RE.test(domain);
}

export function userUri(domain: string, localId: string): string {
  const uri = `mimi://${domain}/u/${localId}`;
  if (parseMimiUri(uri)?.kind !== "u") throw new ProtocolError("bad_frame", `not a valid user URI: ${uri}`);
  return uri;
}

/** Domain of a user URI (the provider that owns the user); throws on a malformed URI. */
export function userDomain(uri: string): string {
  const parsed = parseMimiUri(uri);
  if (parsed?.kind !== "u") throw new ProtocolError("bad_frame", `not a valid user URI: ${uri}`);
  return parsed.domain;
}

export function isE164(localId: string): boolean {
  return E164_RE.test(localId);
}

/**
 * Room URI of the 1:1 chat between two users: "dm-" + the first 32 hex digits of
 * SHA-256 over the two user URIs sorted by their UTF-8 bytes and joined by "\n",
 * under the gateway's room domain. Both sides compute it without coordination.
 */
/** Whether a room URI names a group room (§3.3) rather than a 1:1 chat. */
export function isGroupRoom(room: string): boolean {
  return parseMimiUri(room)?.id.startsWith(GROUP_ROOM_PREFIX) === true;
}

/**
 * Room URI of the group that `creator` creates with the 16-byte `id`: "g-" + the first 32 hex
 * digits of SHA-256 over the creator's URI, "\n" and the id. A retried group.create names the
 * same room, and the creator knows it before the answer comes.
 */
export function groupRoomUri(creator: string, id: Uint8Array, roomDomain: string): string {
  const digest = createHash("sha256")
    .update(Buffer.concat([Buffer.from(creator, "utf8"), Buffer.from("\n"), Buffer.from(id)]))
    .digest("hex");
  return `mimi://${roomDomain}/r/${GROUP_ROOM_PREFIX}${digest.slice(0, 32)}`;
}

export function dmRoomUri(a: string, b: string, roomDomain: string): string {
  const [first, second] = [Buffer.from(a, "utf8"), Buffer.from(b, "utf8")].sort(Buffer.compare);
  const digest = createHash("sha256")
    .update(Buffer.concat([first!, Buffer.from("\n"), second!]))
    .digest("hex");
  return `mimi://${roomDomain}/r/dm-${digest.slice(0, 32)}`;
}

// ---------------------------------------------------------------------------
// Schema

type FieldSpec =
  | { kind: "text"; max: number; optional?: boolean; check?: (v: string) => string | undefined }
  | { kind: "uint"; max?: number; min?: number; optional?: boolean }
  | { kind: "bool"; optional?: boolean }
  | { kind: "bytes"; min: number; max: number; optional?: boolean }
  | { kind: "enum"; values: readonly string[]; optional?: boolean }
  | { kind: "map"; fields: Schema; optional?: boolean }
  | { kind: "array"; of: FieldSpec; max: number; optional?: boolean };
type Schema = Record<string, FieldSpec>;

const opt = <S extends FieldSpec>(spec: S): S => ({ ...spec, optional: true });

const userField: FieldSpec = {
  kind: "text",
  max: MAX_URI_BYTES,
  check: (v) => (parseMimiUri(v)?.kind === "u" ? undefined : "is not a user URI mimi://<domain>/u/<id>"),
};
const roomField: FieldSpec = {
  kind: "text",
  max: MAX_URI_BYTES,
  check: (v) => (parseMimiUri(v)?.kind === "r" ? undefined : "is not a room URI mimi://<domain>/r/<id>"),
};
const ridField: FieldSpec = { kind: "uint" };
const seqField: FieldSpec = { kind: "uint", min: 1 };
const tsField: FieldSpec = { kind: "uint" };
const msgIdField: FieldSpec = { kind: "bytes", min: 16, max: 16 };
const ecPublicKey: FieldSpec = { kind: "bytes", min: 33, max: 33 };
const signature: FieldSpec = { kind: "bytes", min: 64, max: 64 };
const keyId: FieldSpec = { kind: "uint", max: 0xffffff };
const displayName: FieldSpec = { kind: "text", max: 256 };
/** The codec bounds bodies by the frame size; the gateway applies maxBodyBytes (too_large). */
const payloadField: FieldSpec = {
  kind: "map",
  fields: {
    type: { kind: "uint", max: 255 },
    body: { kind: "bytes", min: 1, max: 16 * 1024 * 1024 },
  },
};
const avatarField: FieldSpec = {
  kind: "map",
  fields: {
    url: {
      kind: "text",
      max: 2048,
      check: (v) => (/^https?:\/\/[^\s]+$/.test(v) ? undefined : "is not an http(s) URL"),
    },
    mimetype: { kind: "text", max: 255, check: (v) => (/^[\w.+-]+\/[\w.+-]+$/.test(v) ? undefined : "is not a media type") },
    size: { kind: "uint" },
    sha256: { kind: "bytes", min: 32, max: 32 },
  },
};
const signedPreKeyField: FieldSpec = { kind: "map", fields: { id: keyId, publicKey: ecPublicKey, signature } };
// libsignal's serialized Kyber1024 public key is 1569 bytes; allow room for other KEMs without interpreting.
const kyberPreKeyField: FieldSpec = {
  kind: "map",
  fields: { id: keyId, publicKey: { kind: "bytes", min: 1, max: 4096 }, signature },
};
const oneTimePreKeyField: FieldSpec = { kind: "map", fields: { id: keyId, publicKey: ecPublicKey } };
const limitsField: FieldSpec = {
  kind: "map",
  fields: {
    maxFrameBytes: { kind: "uint" },
    maxBodyBytes: { kind: "uint" },
    maxOneTimeKeysPerPublish: { kind: "uint" },
    maxOneTimeKeysStored: { kind: "uint" },
    maxGroupMembers: opt({ kind: "uint" }),
  },
};
const featuresField: FieldSpec = { kind: "array", of: { kind: "text", max: 64 }, max: 32 };
const groupNameField: FieldSpec = { kind: "text", max: 256, check: (v) => (v.trim() === "" ? "must not be empty" : undefined) };
const groupTopicField: FieldSpec = { kind: "text", max: 1024 };
const groupStateField: FieldSpec = {
  kind: "map",
  fields: {
    room: roomField,
    rev: { kind: "uint", min: 1 },
    name: groupNameField,
    topic: opt(groupTopicField),
    picture: opt(avatarField),
    creator: userField,
    created: tsField,
    members: { kind: "array", of: { kind: "map", fields: { user: userField, admin: { kind: "bool" } } }, max: 4096 },
  },
};
const profileField: FieldSpec = {
  kind: "map",
  fields: {
    user: userField,
    exists: { kind: "bool" },
    home: opt({ kind: "bool" }),
    displayName: opt(displayName),
    avatar: opt(avatarField),
    thirdPartyChats: opt({ kind: "bool" }),
  },
};
/** What a published key set and a bundle handed out of it have in common. */
const publishedKeyFields: Schema = {
  registrationId: { kind: "uint", max: 0x3fff },
  deviceId: { kind: "uint", min: 1, max: 1 },
  identityKey: ecPublicKey,
  signedPreKey: signedPreKeyField,
  kyberPreKey: kyberPreKeyField,
};
const bundleField: FieldSpec = {
  kind: "map",
  fields: { user: userField, ...publishedKeyFields, oneTimePreKey: opt(oneTimePreKeyField) },
};

const SCHEMAS: Record<FrameType, Schema> = {
  hello: {
    provider: {
      kind: "text",
      max: 253,
      check: (v) => (isValidProviderDomain(v) ? undefined : "is not a provider domain"),
    },
    secret: { kind: "text", max: 1024 },
    version: { kind: "uint" },
    resume: opt({ kind: "text", max: 64 }),
    features: opt(featuresField),
  },
  welcome: {
    version: { kind: "uint" },
    connectionId: { kind: "text", max: 64 },
    provider: { kind: "text", max: 253 },
    homeProvider: { kind: "text", max: 253 },
    roomDomain: { kind: "text", max: 253 },
    serverTime: tsField,
    pingIntervalMs: { kind: "uint" },
    idleTimeoutMs: { kind: "uint" },
    limits: limitsField,
    features: opt(featuresField),
  },
  ping: { nonce: { kind: "uint" } },
  pong: { nonce: { kind: "uint" } },
  login: { rid: ridField, user: userField },
  logout: { rid: ridField, user: userField },
  enlist: { rid: ridField, user: userField, displayName, thirdPartyChats: opt({ kind: "bool" }) },
  unenlist: { rid: ridField, user: userField },
  "account.upsert": { rid: ridField, user: userField, displayName, avatar: opt(avatarField) },
  "settings.set": { rid: ridField, user: userField, thirdPartyChats: { kind: "bool" } },
  "profile.get": { rid: ridField, user: userField },
  "keys.publish": {
    rid: ridField,
    user: userField,
    ...publishedKeyFields,
    oneTimePreKeys: { kind: "array", of: oneTimePreKeyField, max: DEFAULT_LIMITS.maxOneTimeKeysStored },
  },
  "keys.fetch": { rid: ridField, from: userField, user: userField },
  "keys.count": { rid: ridField, user: userField },
  send: { rid: ridField, from: userField, to: userField, room: roomField, id: msgIdField, payload: payloadField },
  "group.create": {
    rid: ridField,
    by: userField,
    id: msgIdField,
    name: groupNameField,
    topic: opt(groupTopicField),
    picture: opt(avatarField),
    members: { kind: "array", of: userField, max: 4096 },
  },
  "group.add": { rid: ridField, by: userField, room: roomField, user: userField },
  "group.remove": { rid: ridField, by: userField, room: roomField, user: userField },
  "group.leave": { rid: ridField, by: userField, room: roomField },
  "group.update": {
    rid: ridField,
    by: userField,
    room: roomField,
    name: opt(groupNameField),
    topic: opt(groupTopicField),
    picture: opt(avatarField),
    removePicture: opt({ kind: "bool" }),
  },
  "group.admin": { rid: ridField, by: userField, room: roomField, user: userField, admin: { kind: "bool" } },
  "group.get": { rid: ridField, by: userField, room: roomField },
  "group.list": { rid: ridField, user: userField },
  ack: { user: userField, seq: seqField },
  typing: { from: userField, to: userField, room: roomField, state: { kind: "enum", values: ["on", "off"] } },
  ok: {
    rid: ridField,
    queued: opt({ kind: "uint" }),
    created: opt({ kind: "bool" }),
    ts: opt(tsField),
    duplicate: opt({ kind: "bool" }),
    remaining: opt({ kind: "uint" }),
    bundle: opt(bundleField),
    profile: opt(profileField),
    group: opt(groupStateField),
    groups: opt({ kind: "array", of: groupStateField, max: 100_000 }),
    refused: opt({
      kind: "array",
      of: { kind: "map", fields: { user: userField, code: { kind: "text", max: 64 } } },
      max: 4096,
    }),
  },
  error: {
    rid: opt(ridField),
    // Unknown codes from a newer gateway are kept as text; clients treat them as non-retryable.
    code: { kind: "text", max: 64 },
    message: { kind: "text", max: 1024 },
    retryAfterMs: opt({ kind: "uint" }),
  },
  deliver: {
    seq: seqField,
    from: userField,
    to: userField,
    room: roomField,
    id: msgIdField,
    ts: tsField,
    payload: payloadField,
  },
  delivered: { seq: seqField, user: userField, to: userField, room: roomField, id: msgIdField, ts: tsField },
  profile: {
    seq: seqField,
    user: userField,
    subject: userField,
    displayName,
    avatar: opt(avatarField),
    thirdPartyChats: opt({ kind: "bool" }),
    ts: tsField,
  },
  refused: { seq: seqField, user: userField, from: userField, room: roomField, ts: tsField },
  group: {
    seq: seqField,
    user: userField,
    room: roomField,
    change: { kind: "enum", values: GROUP_CHANGES },
    by: userField,
    subject: opt(userField),
    group: groupStateField,
    ts: tsField,
  },
  "keys.low": { user: userField, remaining: { kind: "uint" } },
  "session.ended": { user: userField, reason: { kind: "enum", values: ["replaced"] } },
};

function isPlainMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array) && !(v instanceof Map);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  if (v instanceof Uint8Array) return `byte string of ${v.length} bytes`;
  if (Array.isArray(v)) return "array";
  if (v instanceof Map) return "map with non-text keys";
  if (typeof v === "bigint") return "integer beyond 2^53-1";
  if (typeof v === "number" && !Number.isInteger(v)) return "float";
  if (typeof v === "number" && v < 0) return "negative integer";
  return typeof v === "object" ? ((v as object).constructor?.name ?? "object") : typeof v;
}

function fail(path: string, what: string): never {
  throw new ProtocolError("bad_frame", `${path} ${what}`, { field: path });
}

function checkField(spec: FieldSpec, value: unknown, path: string): unknown {
  switch (spec.kind) {
    case "text": {
      if (typeof value !== "string") fail(path, `must be a text string, got ${describe(value)}`);
      if (Buffer.byteLength(value, "utf8") > spec.max) fail(path, `is longer than ${spec.max} bytes`);
      const problem = spec.check?.(value);
      if (problem) fail(path, problem);
      return value;
    }
    case "uint": {
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) fail(path, `must be an unsigned integer, got ${describe(value)}`);
      if (spec.min !== undefined && value < spec.min) fail(path, `must be at least ${spec.min}`);
      if (spec.max !== undefined && value > spec.max) fail(path, `must be at most ${spec.max}`);
      return value;
    }
    case "bool":
      if (typeof value !== "boolean") fail(path, `must be a boolean, got ${describe(value)}`);
      return value;
    case "bytes": {
      if (!(value instanceof Uint8Array)) fail(path, `must be a byte string, got ${describe(value)}`);
      if (value.length < spec.min || value.length > spec.max)
        fail(path, spec.min === spec.max ? `must be exactly ${spec.min} bytes, got ${value.length}` : `must be ${spec.min}..${spec.max} bytes, got ${value.length}`);
      // Normalise Buffers (a Uint8Array subclass) so encoded output never depends on the caller's type.
      return Object.getPrototypeOf(value) === Uint8Array.prototype ? value : new Uint8Array(value);
    }
    case "enum":
      if (typeof value !== "string" || !spec.values.includes(value)) fail(path, `must be one of ${spec.values.map((v) => JSON.stringify(v)).join(", ")}`);
      return value;
    case "map":
      if (!isPlainMap(value)) fail(path, `must be a map with text keys, got ${describe(value)}`);
      return checkMap(spec.fields, value, path);
    case "array": {
      if (!Array.isArray(value)) fail(path, `must be an array, got ${describe(value)}`);
      if (value.length > spec.max) fail(path, `has more than ${spec.max} elements`);
      return value.map((item, i) => checkField(spec.of, item, `${path}[${i}]`));
    }
  }
}

function checkMap(schema: Schema, value: Record<string, unknown>, path: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(schema)) {
    const v = value[name];
    const fieldPath = `${path}.${name}`;
    if (v === undefined) {
      if (!spec.optional) fail(fieldPath, "is missing");
      continue;
    }
    out[name] = checkField(spec, v, fieldPath);
  }
  return out;
}

/**
 * Checks a decoded value against the schema of its frame type and returns a copy
 * holding only the known fields (unknown ones are dropped: forward compatibility).
 */
export function validateFrame(value: unknown): Frame {
  if (!isPlainMap(value)) fail("frame", `must be a CBOR map with text keys, got ${describe(value)}`);
  const t = value["t"];
  if (typeof t !== "string") fail("t", "is missing or not a text string");
  const schema = (SCHEMAS as Record<string, Schema | undefined>)[t];
  if (!schema || !Object.hasOwn(SCHEMAS, t)) fail("t", `names an unknown frame type ${JSON.stringify(t.slice(0, 64))}`);
  return { t, ...checkMap(schema, value, t) } as unknown as Frame;
}

// ---------------------------------------------------------------------------
// Codec

const ENCODE_OPTIONS = { cde: true, rejectUndefined: true } as const;
// CDE decoding enforces what the spec requires of every sender: definite lengths,
// shortest-form integers and lengths, map keys in bytewise order with no duplicates.
const DECODE_OPTIONS = { cde: true, rejectStreaming: true, ignoreGlobalTags: true, maxDepth: 16 } as const;

export interface CodecOptions {
  /** Reject (bad_frame / too_large) encodings longer than this many bytes. */
  maxFrameBytes?: number;
}

/** Validates the frame and encodes it as deterministic CBOR. */
export function encodeFrame(frame: Frame, opts: CodecOptions = {}): Uint8Array {
  const clean = validateFrame(frame);
  const bytes = encodeDeterministic(clean, ENCODE_OPTIONS);
  if (opts.maxFrameBytes !== undefined && bytes.length > opts.maxFrameBytes)
    throw new ProtocolError("too_large", `${frame.t} frame is ${bytes.length} bytes, limit ${opts.maxFrameBytes}`);
  return bytes;
}

/** Decodes and validates one frame; any problem is a ProtocolError with code bad_frame. */
export function decodeFrame(bytes: Uint8Array, opts: CodecOptions = {}): Frame {
  if (opts.maxFrameBytes !== undefined && bytes.length > opts.maxFrameBytes) throw new ProtocolError("too_large", `frame is ${bytes.length} bytes, limit ${opts.maxFrameBytes}`);
  let value: unknown;
  try {
    value = cborDecode(bytes, DECODE_OPTIONS);
  } catch (err) {
    throw new ProtocolError("bad_frame", `frame is not one deterministically encoded CBOR item: ${(err as Error).message}`, {
      field: "frame",
    });
  }
  return validateFrame(value);
}

/**
 * Best-effort recovery of the rid of a frame that failed validation, so the error
 * answer can still name the request it belongs to.
 */
export function peekRid(bytes: Uint8Array): number | undefined {
  try {
    const value = cborDecode(bytes, { ignoreGlobalTags: true, maxDepth: 16 });
    if (isPlainMap(value) && typeof value["rid"] === "number" && Number.isSafeInteger(value["rid"]) && value["rid"] >= 0) return value["rid"];
  } catch {
    // not CBOR at all: no rid to recover
  }
  return undefined;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
}
