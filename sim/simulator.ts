/**
 * The simulated WhatsApp: connects to the gateway as the home provider, owns a set of WhatsApp
 * accounts with their Signal state (SimStore), and turns control-API calls into protocol
 * traffic and protocol traffic into inbox entries. It uses only what docs/protocol.md
 * specifies, through InteropClient and SecureEndpoint.
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { kindOfMimetype } from "../src/convert/media.js";
import { MediaError, type MediaKind, type RemoteMedia } from "../src/network/connector.js";
import { probeMedia } from "../src/media/ffmpeg.js";
import { probedFacts } from "../src/media/probe.js";
import { fetchBlob } from "../src/network/media-fetch.js";
import { MediaHost } from "../src/network/media-host.js";
import { blobRefOf, mediaToMimi, mimiToRemoteContent } from "../src/network/mimi-content.js";
import { sha256File } from "../src/protocol/media-crypto.js";
import { getLogger, type Logger } from "../src/logging.js";
import { InteropClient } from "../src/protocol/client.js";
import { EndpointError, SecureEndpoint, type DeliveredEvent, type PayloadEvent, type UndecryptableEvent } from "../src/protocol/endpoint.js";
import {
  FEATURE_GROUPS,
  ProtocolError,
  isE164,
  isGroupRoom,
  parseMimiUri,
  userUri,
  type Avatar,
  type GroupEventFrame,
  type GroupState,
  type ProfileFrame,
  type TypingFrame,
} from "../src/protocol/frames.js";
import {
  MIMI_DISPOSITION,
  MIMI_MESSAGE_ID_LENGTH,
  MIMI_SALT_LENGTH,
  MimiError,
  computeMessageId,
  decodeMimi,
  encodeMimi,
  newDelete,
  newEdit,
  newReaction,
  newTextMessage,
  newUnreaction,
  type MimiMessage,
} from "../src/protocol/mimi.js";
import { MAX_READ_IDS, STICKER_CONTENT_TYPE, WA_KIND_STICKER, waMediaOf, withWaKind, type Payload } from "../src/protocol/payload.js";
import { describeMimi } from "./inbox-entry.js";
import { stickerImage } from "./sticker.js";
import type { InboxEntry, SimStore, SimUser } from "./store.js";

/** A refusal of the control API: HTTP status, a stable code and a message for people. */
export class SimError extends Error {
  override readonly name = "SimError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface SimulatorOptions {
  gatewayUrl: string;
  /** The home provider's domain. */
  provider: string;
  secret: string;
  store: SimStore;
  /** Base URL of this process's HTTP server; avatars are served under <base>/media/<sha256>. */
  mediaBaseUrl: string;
  /** Provider domains under which Matrix user ids are looked for (see resolvePeer). */
  matrixProviders: string[];
  logger?: Logger;
  /** How long a send waits for the gateway before the API answers 504 (default 30 s). */
  sendTimeoutMs?: number;
}

export interface UserView {
  phone: string;
  uri: string;
  name: string;
  thirdPartyChats: boolean;
  avatar?: { url: string; mimetype: string; size: number; sha256: string };
}

export interface AvatarInput {
  mimetype: string;
  base64: string;
}

const MATRIX_ID_RE = /^@[^:\s]+:\S+$/;
const MAX_AVATAR_BYTES = 5 * 1024 * 1024;
/** Largest attachment a simulated user sends or accepts. */
const MAX_MEDIA_BYTES = 512 * 1024 * 1024;
const MEDIA_LIFETIME_MS = 30 * 24 * 60 * 60 * 1000;
const MEDIA_KINDS: readonly MediaKind[] = ["image", "video", "voice", "audio", "file"];
const MAX_WAIT_MS = 60_000;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Where a message goes: one peer (its 1:1 chat), or a group room and so all its other members. */
type Target = { kind: "peer"; uri: string } | { kind: "group"; room: string };

/** A send to a group: accepted for some members, perhaps refused for others. */
export interface SendOutcome {
  ts: number;
  /** Group sends only: members the gateway refused, with its code. */
  failed?: Array<{ to: string; error: string }>;
}

/** A group as the API shows it: members by phone number or Matrix id. */
export interface GroupView {
  room: string;
  name: string;
  topic?: string;
  /** The group's picture, as its members fetch it. */
  picture?: { url: string; mimetype: string; size: number; sha256: string };
  rev: number;
  creator: string;
  members: Array<{ id: string; uri: string; admin: boolean }>;
}

export class Simulator {
  readonly client: InteropClient;
  readonly endpoint: SecureEndpoint;
  /** The encrypted blobs of media our users send, served by the control API's HTTP server. */
  readonly mediaHost: MediaHost;
  private readonly store: SimStore;
  private readonly log: Logger;
  private readonly waiters = new Map<string, Set<() => void>>();

  constructor(private readonly opts: SimulatorOptions) {
    this.store = opts.store;
    this.log = opts.logger ?? getLogger("sim");
    this.client = new InteropClient({
      url: opts.gatewayUrl,
      provider: opts.provider,
      secret: opts.secret,
      logger: getLogger("sim-client"),
      features: [FEATURE_GROUPS],
    });
    this.endpoint = new SecureEndpoint({
      client: this.client,
      openRecords: (uri) => this.store.recordStore(uri),
      onPayload: (ev) => this.onPayload(ev),
      onDelivered: (ev) => this.onDelivered(ev),
      onUndecryptable: (ev) => this.onUndecryptable(ev),
      onIdentityChange: (local, peer) => this.record(this.phoneOf(local), null, { kind: "identity_changed", ...this.fromFields(peer), ts: Date.now() }),
      logger: getLogger("sim-endpoint"),
    });
    this.mediaHost = new MediaHost({
      dir: path.join(this.store.mediaDir, "blobs"),
      index: this.store.blobs,
      publicUrl: opts.mediaBaseUrl,
      lifetimeMs: MEDIA_LIFETIME_MS,
      logger: getLogger("sim-media"),
    });
    this.client.on("typing", (frame) => this.onTyping(frame));
    this.client.onProfile((frame) => this.onProfile(frame));
    this.client.onGroup((frame) => this.onGroup(frame));
  }

  /** Connects and brings every stored user online again (login, keys). */
  async start(): Promise<void> {
    this.mediaHost.startSweeping();
    await this.client.connect();
    for (const user of this.store.allUsers()) {
      try {
        await this.bringOnline(user);
      } catch (err) {
        this.log.warn("could not bring a user online", { phone: user.phone, error: (err as Error).message });
      }
    }
  }

  async stop(): Promise<void> {
    for (const wake of [...this.waiters.values()].flatMap((s) => [...s])) wake();
    await this.mediaHost.close();
    await this.client.close();
  }

  get connectionState(): string {
    return this.client.connectionState;
  }

  private uriOf(phone: string): string {
    return userUri(this.opts.provider, phone);
  }

  private phoneOf(uri: string): string {
    return parseMimiUri(uri)!.id;
  }

  /** An account the gateway forgot (a fresh gateway database) is made again from ours. */
  private async bringOnline(user: SimUser): Promise<void> {
    const uri = this.uriOf(user.phone);
    try {
      await this.endpoint.addUser(uri, { home: true });
    } catch (err) {
      if (!(err instanceof EndpointError && err.code === "unknown_user")) throw err;
      this.log.info("gateway has no account for a stored user; creating it again", { phone: user.phone });
      await this.client.upsertAccount(this.accountOf(user.phone, user.name, user.avatarSha256));
      await this.client.setSettings(uri, { thirdPartyChats: user.thirdPartyChats });
      await this.endpoint.addUser(uri, { home: true });
    }
  }

  // ------------------------------------------------------------------ users

  normalizePhone(raw: unknown): string {
    if (typeof raw !== "string") throw new SimError(400, "bad_request", "phone must be a string like +4915123456789");
    const phone = /^[0-9]+$/.test(raw) ? `+${raw}` : raw;
    if (!isE164(phone)) throw new SimError(400, "bad_request", `${JSON.stringify(raw)} is not an E.164 phone number like +4915123456789`);
    return phone;
  }

  requireUser(rawPhone: string): SimUser {
    const phone = this.normalizePhone(rawPhone);
    const user = this.store.getUser(phone);
    if (!user) throw new SimError(404, "not_found", `no simulated user ${phone} (create it with POST /users)`);
    return user;
  }

  users(): UserView[] {
    return this.store.allUsers().map((u) => this.view(u));
  }

  view(user: SimUser): UserView {
    const v: UserView = { phone: user.phone, uri: this.uriOf(user.phone), name: user.name, thirdPartyChats: user.thirdPartyChats };
    const avatar = user.avatarSha256 ? this.store.getMedia(user.avatarSha256) : undefined;
    if (avatar) v.avatar = { url: this.mediaUrl(avatar.sha256), mimetype: avatar.mimetype, size: avatar.size, sha256: avatar.sha256 };
    return v;
  }

  /** A stored media file (avatars), for the HTTP server to serve. */
  mediaFile(sha256: string): { file: string; mimetype: string; size: number } | undefined {
    return this.store.getMedia(sha256);
  }

  private mediaUrl(sha256: string): string {
    return `${this.opts.mediaBaseUrl}/media/${sha256}`;
  }

  private accountOf(phone: string, name: string, avatarSha256: string | null): { user: string; displayName: string; avatar?: Avatar } {
    const account: { user: string; displayName: string; avatar?: Avatar } = { user: this.uriOf(phone), displayName: name };
    const media = avatarSha256 ? this.store.getMedia(avatarSha256) : undefined;
    if (media) account.avatar = { url: this.mediaUrl(media.sha256), mimetype: media.mimetype, size: media.size, sha256: new Uint8Array(Buffer.from(media.sha256, "hex")) };
    return account;
  }

  private saveAvatar(input: unknown): string {
    if (typeof input !== "object" || input === null) throw new SimError(400, "bad_request", "avatar must be {mimetype, base64}");
    const { mimetype, base64 } = input as Partial<AvatarInput>;
    if (typeof mimetype !== "string" || !/^image\/[\w.+-]+$/.test(mimetype)) throw new SimError(400, "bad_request", "avatar.mimetype must be an image type such as image/png");
    if (typeof base64 !== "string" || !/^[A-Za-z0-9+/=\s]+$/.test(base64)) throw new SimError(400, "bad_request", "avatar.base64 must be base64");
    const bytes = Buffer.from(base64, "base64");
    if (bytes.length === 0 || bytes.length > MAX_AVATAR_BYTES) throw new SimError(400, "bad_request", `avatar must be 1..${MAX_AVATAR_BYTES} bytes`);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    this.store.putMedia(bytes, mimetype, sha256);
    return sha256;
  }

  private checkName(name: unknown): string {
    if (typeof name !== "string" || name.trim() === "" || Buffer.byteLength(name, "utf8") > 256)
      throw new SimError(400, "bad_request", "name must be a non-empty string of at most 256 bytes");
    return name;
  }

  /**
   * Creates the WhatsApp account, or replaces its profile (an absent avatar removes it), and
   * logs it in. A new user has Third-Party Chats on unless thirdPartyChats: false is given.
   */
  async createUser(body: { phone?: unknown; name?: unknown; avatar?: unknown; thirdPartyChats?: unknown }): Promise<UserView & { created: boolean }> {
    const phone = this.normalizePhone(body.phone);
    const name = this.checkName(body.name);
    if (body.thirdPartyChats !== undefined && typeof body.thirdPartyChats !== "boolean") throw new SimError(400, "bad_request", "thirdPartyChats must be a boolean");
    const avatarSha256 = body.avatar === undefined || body.avatar === null ? null : this.saveAvatar(body.avatar);
    const isNew = this.store.getUser(phone) === undefined;
    const { created } = await this.client.upsertAccount(this.accountOf(phone, name, avatarSha256));
    this.store.saveUser(phone, name, avatarSha256);
    const uri = this.uriOf(phone);
    // Simulated users exist to chat with third parties, so they opt in unless told otherwise
    // (WhatsApp's own default, and the gateway's, is off).
    const thirdPartyChats = typeof body.thirdPartyChats === "boolean" ? body.thirdPartyChats : isNew ? true : undefined;
    if (thirdPartyChats !== undefined) {
      await this.client.setSettings(uri, { thirdPartyChats });
      this.store.setThirdPartyChats(phone, thirdPartyChats);
    }
    await this.endpoint.addUser(uri, { home: true });
    this.log.info("user ready", { phone, created });
    return { ...this.view(this.store.getUser(phone)!), created };
  }

  /** Changes name and/or avatar (null removes it); the gateway pushes the profile to chat peers. */
  async updateUser(rawPhone: string, body: { name?: unknown; avatar?: unknown }): Promise<UserView> {
    const user = this.requireUser(rawPhone);
    const name = body.name === undefined ? user.name : this.checkName(body.name);
    const avatarSha256 = body.avatar === undefined ? user.avatarSha256 : body.avatar === null ? null : this.saveAvatar(body.avatar);
    await this.client.upsertAccount(this.accountOf(user.phone, name, avatarSha256));
    this.store.saveUser(user.phone, name, avatarSha256);
    return this.view(this.store.getUser(user.phone)!);
  }

  async setSettings(rawPhone: string, body: { thirdPartyChats?: unknown }): Promise<UserView> {
    const user = this.requireUser(rawPhone);
    if (typeof body.thirdPartyChats !== "boolean") throw new SimError(400, "bad_request", "thirdPartyChats must be a boolean");
    await this.client.setSettings(this.uriOf(user.phone), { thirdPartyChats: body.thirdPartyChats });
    this.store.setThirdPartyChats(user.phone, body.thirdPartyChats);
    return this.view(this.store.getUser(user.phone)!);
  }

  // ------------------------------------------------------------------ peers

  /**
   * The user URI for a `to` given as a mimi URI, an E.164 number (another simulated user) or a
   * Matrix user id. A Matrix user's URI carries the bridge's provider domain, which the protocol
   * gives no way to discover: it is the --matrix-provider domain when there is exactly one; with
   * several (or none, then the id's server name and "matrix." + server name are tried) the first
   * one whose profile.get says the user exists. Peers seen in traffic are remembered.
   */
  async resolvePeer(to: unknown): Promise<string> {
    if (typeof to !== "string" || to === "") throw new SimError(400, "bad_request", "to must be a Matrix user id, a mimi user URI or a phone number");
    if (to.startsWith("mimi://")) {
      if (parseMimiUri(to)?.kind !== "u") throw new SimError(400, "bad_request", `${to} is not a mimi user URI`);
      return to;
    }
    if (isE164(to)) return this.uriOf(to);
    if (!MATRIX_ID_RE.test(to)) throw new SimError(400, "bad_request", `${JSON.stringify(to)} is neither a Matrix user id, a mimi user URI nor a phone number`);
    const known = this.store.peerUri(to);
    if (known) return known;
    if (this.opts.matrixProviders.length === 1) {
      const uri = userUri(this.opts.matrixProviders[0]!, to);
      this.store.rememberPeer(to, uri);
      return uri;
    }
    const server = to.slice(to.indexOf(":") + 1);
    const domains = this.opts.matrixProviders.length > 0 ? this.opts.matrixProviders : [server, `matrix.${server}`];
    for (const domain of domains) {
      let uri: string;
      try {
        uri = userUri(domain, to);
      } catch {
        continue;
      }
      const profile = await this.client.getProfile(uri);
      if (profile.exists) {
        this.store.rememberPeer(to, uri);
        return uri;
      }
    }
    throw new SimError(404, "unknown_user", `${to} is not known under ${domains.join(" or ")}; start the simulator with --matrix-provider <the bridge's provider domain>`);
  }

  /** How an inbox entry names a peer: the phone number, the Matrix user id, or else the URI. */
  private peerLabel(uri: string): string {
    const parsed = parseMimiUri(uri);
    if (!parsed) return uri;
    if (parsed.domain === this.opts.provider && isE164(parsed.id)) return parsed.id;
    if (MATRIX_ID_RE.test(parsed.id)) return parsed.id;
    return uri;
  }

  /** `from` is the sender's URI; `fromId` the same peer as people write it (phone number or Matrix id). */
  private fromFields(uri: string): { from: string; fromId: string } {
    return { from: uri, fromId: this.peerLabel(uri) };
  }

  private learnPeer(uri: string): void {
    const parsed = parseMimiUri(uri);
    if (parsed && parsed.domain !== this.opts.provider && MATRIX_ID_RE.test(parsed.id) && this.store.peerUri(parsed.id) !== uri) this.store.rememberPeer(parsed.id, uri);
  }

  // ------------------------------------------------------------------ sending

  /** A `to` that is a group's room URI names the group; anything else a peer (resolvePeer). */
  async resolveTarget(to: unknown): Promise<Target> {
    if (typeof to === "string" && to.startsWith("mimi://") && parseMimiUri(to)?.kind === "r") {
      if (!isGroupRoom(to)) throw new SimError(400, "bad_request", `${to} is not a group room; name a 1:1 chat by the peer`);
      return { kind: "group", room: to };
    }
    return { kind: "peer", uri: await this.resolvePeer(to) };
  }

  private async roomOf(from: string, target: Target): Promise<string> {
    return target.kind === "group" ? target.room : this.client.dmRoom(from, target.uri);
  }

  /** The other members of a group, as the gateway has them now (refused for a non-member). */
  private async otherMembers(from: string, room: string): Promise<string[]> {
    const group = await this.client.getGroup(from, room);
    return group.members.map((m) => m.user).filter((u) => u !== from);
  }

  private async sendPayload(user: SimUser, target: Target, payload: Payload, ids: { wireId: Uint8Array; mimiId: Uint8Array | null }, kind: string): Promise<SendOutcome> {
    const from = this.uriOf(user.phone);
    const timeout = { timeoutMs: this.opts.sendTimeoutMs ?? 30_000 };
    if (target.kind === "group") {
      const members = await this.otherMembers(from, target.room);
      // Recorded first: the delivery receipts can arrive right behind the gateway's oks.
      for (const peer of members) this.store.recordSent(user.phone, peer, hex(ids.wireId), ids.mimiId && hex(ids.mimiId), kind);
      const result = await this.endpoint.sendToGroup(from, target.room, members, payload, ids.wireId, timeout);
      if (result.sent.length === 0 && result.failed.length > 0) throw result.failed[0]!.error;
      const outcome: SendOutcome = { ts: Math.max(0, ...result.sent.map((s) => s.ts)) || Date.now() };
      if (result.failed.length > 0) outcome.failed = result.failed.map((f) => ({ to: this.peerLabel(f.to), error: f.error.code }));
      return outcome;
    }
    const peer = target.uri;
    const room = await this.client.dmRoom(from, peer);
    this.store.recordSent(user.phone, peer, hex(ids.wireId), ids.mimiId && hex(ids.mimiId), kind);
    const { ts } = await this.endpoint.send(from, peer, room, payload, ids.wireId, timeout);
    this.store.addContact(user.phone, peer);
    return { ts };
  }

  /** Builds a MIMI message for the chat with `to`, sends it as `kind`, answers its MIMI id. */
  private async sendMimi(
    rawPhone: string,
    to: unknown,
    label: string,
    build: (sender: string, room: string) => MimiMessage,
    kind: "content" | "status" = "content",
  ): Promise<{ id: string } & SendOutcome> {
    const user = this.requireUser(rawPhone);
    const target = await this.resolveTarget(to);
    const from = this.uriOf(user.phone);
    const room = await this.roomOf(from, target);
    let mimi: Uint8Array;
    try {
      mimi = encodeMimi(build(from, room));
    } catch (err) {
      if (err instanceof MimiError) throw new SimError(400, "bad_request", err.message);
      throw err;
    }
    const mimiId = computeMessageId(from, room, mimi);
    // The transport id follows from the MIMI id (which starts with the hash algorithm byte).
    const wireId = mimiId.subarray(1, 17);
    const outcome = await this.sendPayload(user, target, { kind, mimi }, { wireId, mimiId }, label);
    return { id: hex(mimiId), ...outcome };
  }

  sendText(rawPhone: string, body: { to?: unknown; text?: unknown; inReplyTo?: unknown; expiresInSeconds?: unknown }): Promise<{ id: string } & SendOutcome> {
    const text = requireText(body.text, "text");
    const inReplyTo = body.inReplyTo === undefined || body.inReplyTo === null ? null : messageIdParam(body.inReplyTo, "inReplyTo");
    const expires = body.expiresInSeconds === undefined || body.expiresInSeconds === null ? null : { relative: true, time: uint32Param(body.expiresInSeconds, "expiresInSeconds") };
    return this.sendMimi(rawPhone, body.to, "text", (sender, room) => newTextMessage({ sender, room, markdown: text, inReplyTo, expires }));
  }

  /** A reaction, or with `reaction` (the id of an earlier reaction) instead of `emoji`, its withdrawal. */
  sendReaction(rawPhone: string, body: { to?: unknown; target?: unknown; emoji?: unknown; reaction?: unknown }): Promise<{ id: string } & SendOutcome> {
    const target = messageIdParam(body.target, "target");
    if (body.reaction !== undefined) {
      if (body.emoji !== undefined) throw new SimError(400, "bad_request", "give either emoji (react) or reaction (withdraw), not both");
      const reaction = messageIdParam(body.reaction, "reaction");
      return this.sendMimi(rawPhone, body.to, "unreaction", (sender, room) => newUnreaction({ sender, room, reaction, target }));
    }
    const emoji = requireText(body.emoji, "emoji");
    return this.sendMimi(rawPhone, body.to, "reaction", (sender, room) => newReaction({ sender, room, target, emoji }));
  }

  sendEdit(rawPhone: string, body: { to?: unknown; target?: unknown; text?: unknown }): Promise<{ id: string } & SendOutcome> {
    const replaces = messageIdParam(body.target, "target");
    const text = requireText(body.text, "text");
    return this.sendMimi(rawPhone, body.to, "edit", (sender, room) => newEdit({ sender, room, replaces, markdown: text }));
  }

  sendDeletion(rawPhone: string, body: { to?: unknown; target?: unknown }): Promise<{ id: string } & SendOutcome> {
    const replaces = messageIdParam(body.target, "target");
    return this.sendMimi(rawPhone, body.to, "delete", (sender, room) => newDelete({ sender, room, replaces }));
  }

  sendSticker(rawPhone: string, body: { to?: unknown }): Promise<{ id: string } & SendOutcome> {
    const image = stickerImage(randomBytes(2).readUInt16BE());
    return this.sendMimi(rawPhone, body.to, "sticker", (sender, room) =>
      withWaKind(
        {
          salt: new Uint8Array(randomBytes(MIMI_SALT_LENGTH)),
          replaces: null,
          topicId: new Uint8Array(0),
          expires: null,
          inReplyTo: null,
          extensions: { senderUri: sender, roomUri: room, unknown: [] },
          body: {
            disposition: MIMI_DISPOSITION.render,
            language: "",
            cardinality: "single",
            contentType: STICKER_CONTENT_TYPE,
            content: new Uint8Array(image.bytes),
          },
        },
        WA_KIND_STICKER,
      ),
    );
  }

  /**
   * The user reinstalls WhatsApp: a brand-new Signal identity and keys replace the old ones, so
   * every peer sees an identity change with the next message.
   */
  async reinstall(rawPhone: string): Promise<{ reinstalled: true }> {
    const user = this.requireUser(rawPhone);
    const uri = this.uriOf(user.phone);
    await this.endpoint.removeUser(uri);
    await this.endpoint.addUser(uri, { home: true });
    this.log.info("simulated user reinstalled (new identity)", { phone: user.phone });
    return { reinstalled: true };
  }

  private get mediaTemp(): string {
    const dir = path.join(this.store.mediaDir, "tmp");
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /**
   * Sends a photo, video, voice note, audio file or document: the file (a path on this machine,
   * or base64) is encrypted, hosted under /media/v1/ and announced in a MIMI attachment.
   * Dimensions and duration are probed with ffprobe unless given.
   */
  async sendMedia(
    rawPhone: string,
    body: {
      to?: unknown;
      file?: unknown;
      base64?: unknown;
      mimetype?: unknown;
      filename?: unknown;
      kind?: unknown;
      caption?: unknown;
      width?: unknown;
      height?: unknown;
      durationMs?: unknown;
      waveform?: unknown;
    },
  ): Promise<{ id: string; ts: number; url: string; size: number; sha256: string }> {
    this.requireUser(rawPhone);
    if (typeof body.mimetype !== "string" || !/^[\w.+-]+\/[\w.+-]+(\s*;.*)?$/.test(body.mimetype))
      throw new SimError(400, "bad_request", "mimetype must be a content type such as image/jpeg");
    const mimetype = body.mimetype;
    if (body.kind !== undefined && !MEDIA_KINDS.includes(body.kind as MediaKind)) throw new SimError(400, "bad_request", `kind must be one of ${MEDIA_KINDS.join(", ")}`);
    const kind = (body.kind as MediaKind | undefined) ?? kindOfMimetype(mimetype);
    if (body.caption !== undefined && typeof body.caption !== "string") throw new SimError(400, "bad_request", "caption must be a string");
    if (body.filename !== undefined && typeof body.filename !== "string") throw new SimError(400, "bad_request", "filename must be a string");
    let file: string;
    let temporary: string | undefined;
    if (typeof body.file === "string" && body.base64 === undefined) {
      if (!path.isAbsolute(body.file)) throw new SimError(400, "bad_request", "file must be an absolute path on the simulator's machine");
      const stat = await fs.promises.stat(body.file).catch(() => null);
      if (!stat?.isFile()) throw new SimError(400, "bad_request", `${body.file} is not a readable file`);
      if (stat.size > MAX_MEDIA_BYTES) throw new SimError(413, "too_large", `the file is over ${MAX_MEDIA_BYTES} bytes`);
      file = body.file;
    } else if (typeof body.base64 === "string" && body.file === undefined) {
      const bytes = Buffer.from(body.base64, "base64");
      if (bytes.length === 0) throw new SimError(400, "bad_request", "base64 is empty");
      temporary = path.join(this.mediaTemp, `out-${randomBytes(8).toString("hex")}`);
      await fs.promises.writeFile(temporary, bytes);
      file = temporary;
    } else {
      throw new SimError(400, "bad_request", "give the bytes as either file (an absolute path) or base64");
    }
    try {
      const filename = (body.filename as string | undefined) ?? (typeof body.file === "string" ? path.basename(body.file) : "");
      const media: RemoteMedia = { kind, mimetype, filename };
      const given = {
        width: optionalPositive(body.width, "width"),
        height: optionalPositive(body.height, "height"),
        durationMs: optionalPositive(body.durationMs, "durationMs"),
      };
      const probed = given.width === undefined && given.durationMs === undefined ? probedFacts(kind, await probeMedia(file).catch(() => null)) : {};
      Object.assign(media, probed, Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)));
      if (body.waveform !== undefined) {
        if (!Array.isArray(body.waveform) || body.waveform.length === 0 || body.waveform.length > 100 || !body.waveform.every((v) => Number.isInteger(v) && v >= 0 && v <= 255))
          throw new SimError(400, "bad_request", "waveform must be 1..100 integers 0..255");
        media.waveform = body.waveform.map((v: number) => Math.round((v / 255) * 1024));
      }
      const sha256 = (await sha256File(file)).toString("hex");
      const blob = await this.mediaHost.host(file, { expiresAt: Date.now() + MEDIA_LIFETIME_MS });
      const caption = body.caption as string | undefined;
      const sent = await this.sendMimi(rawPhone, body.to, kind === "voice" ? "voice" : "media", (sender, room) => mediaToMimi(media, caption, blob, sender, room));
      return { ...sent, url: blob.url, size: blob.size, sha256 };
    } finally {
      if (temporary) await fs.promises.rm(temporary, { force: true });
    }
  }

  async sendRead(rawPhone: string, body: { to?: unknown; ids?: unknown }): Promise<SendOutcome> {
    const user = this.requireUser(rawPhone);
    if (!Array.isArray(body.ids) || body.ids.length === 0 || body.ids.length > MAX_READ_IDS)
      throw new SimError(400, "bad_request", `ids must be a list of 1..${MAX_READ_IDS} MIMI message ids (hex)`);
    const ids = body.ids.map((id, i) => messageIdParam(id, `ids[${i}]`));
    const target = await this.resolveTarget(body.to);
    return this.sendPayload(user, target, { kind: "read", ids }, { wireId: new Uint8Array(randomBytes(16)), mimiId: null }, "read");
  }

  async sendDisappearing(rawPhone: string, body: { to?: unknown; seconds?: unknown }): Promise<SendOutcome> {
    const user = this.requireUser(rawPhone);
    const seconds = uint32Param(body.seconds, "seconds", true);
    const target = await this.resolveTarget(body.to);
    return this.sendPayload(user, target, { kind: "disappearing", seconds }, { wireId: new Uint8Array(randomBytes(16)), mimiId: null }, "disappearing");
  }

  /** Live only, like on the wire: nothing is sent while the gateway connection is down. */
  async sendTyping(rawPhone: string, body: { to?: unknown; state?: unknown }): Promise<{ sent: true }> {
    const user = this.requireUser(rawPhone);
    if (body.state !== "on" && body.state !== "off") throw new SimError(400, "bad_request", 'state must be "on" or "off"');
    const target = await this.resolveTarget(body.to);
    const from = this.uriOf(user.phone);
    if (target.kind === "group") {
      // One live frame per other member, like the messages.
      const members = await this.otherMembers(from, target.room);
      for (const to of members)
        if (!this.client.typing({ from, to, room: target.room, state: body.state }))
          throw new SimError(503, "not_connected", "not connected to the gateway; typing notifications are not queued");
      return { sent: true };
    }
    if (!this.client.typing({ from, to: target.uri, state: body.state }))
      throw new SimError(503, "not_connected", "not connected to the gateway; typing notifications are not queued");
    this.store.addContact(user.phone, target.uri);
    return { sent: true };
  }

  /** A status update to every third-party user this user has chatted with (one status payload each). */
  async sendStatus(
    rawPhone: string,
    body: { text?: unknown },
  ): Promise<{ sent: Array<{ to: string; id: string; ts: number }>; failed: Array<{ to: string; error: string; message: string }> }> {
    const user = this.requireUser(rawPhone);
    const text = requireText(body.text, "text");
    const sent: Array<{ to: string; id: string; ts: number }> = [];
    const failed: Array<{ to: string; error: string; message: string }> = [];
    for (const peer of this.store.contacts(user.phone)) {
      if (parseMimiUri(peer)?.domain === this.opts.provider) continue;
      try {
        const result = await this.sendMimi(user.phone, peer, "status", (sender, room) => newTextMessage({ sender, room, markdown: text }), "status");
        sent.push({ to: peer, ...result });
      } catch (err) {
        const e = err as { code?: string; message: string };
        failed.push({ to: peer, error: e.code ?? "internal", message: e.message });
      }
    }
    return { sent, failed };
  }

  // ------------------------------------------------------------------ receiving

  inbox(rawPhone: string, after: number): InboxEntry[] {
    const user = this.requireUser(rawPhone);
    return this.store.inbox(user.phone, after);
  }

  /** Answers as soon as the user has entries after `after`, or with [] after timeoutMs. */
  async waitInbox(rawPhone: string, after: number, timeoutMs: number): Promise<InboxEntry[]> {
    const user = this.requireUser(rawPhone);
    const now = this.store.inbox(user.phone, after);
    if (now.length > 0 || timeoutMs <= 0) return now;
    await new Promise<void>((resolve) => {
      let set = this.waiters.get(user.phone);
      if (!set) {
        set = new Set();
        this.waiters.set(user.phone, set);
      }
      const waiters = set;
      const wake = () => {
        clearTimeout(timer);
        waiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.min(timeoutMs, MAX_WAIT_MS));
      waiters.add(wake);
    });
    return this.store.inbox(user.phone, after);
  }

  private record(phone: string, source: string | null, entry: { kind: string; from: string } & Record<string, unknown>): void {
    if (this.store.appendInbox(phone, source, entry) === undefined) return;
    for (const wake of [...(this.waiters.get(phone) ?? [])]) wake();
  }

  private async onPayload(ev: PayloadEvent): Promise<void> {
    const phone = this.phoneOf(ev.to);
    const base = { ...this.fromFields(ev.from), ...(await this.roomFields(ev.to, ev.room)), wireId: hex(ev.id), ts: ev.ts };
    const source = `deliver:${ev.from}:${hex(ev.id)}`;
    this.learnPeer(ev.from);
    switch (ev.payload.kind) {
      case "content": {
        const message = decodeMimi(ev.payload.mimi);
        const id = hex(computeMessageId(ev.from, ev.room, ev.payload.mimi));
        this.store.addContact(phone, ev.from);
        const entry = describeMimi(message);
        // A repeat of an event already in the inbox is not downloaded again.
        if (entry.kind === "media" && !this.store.hasInboxSource(phone, source)) Object.assign(entry, await this.receiveMedia(message));
        this.record(phone, source, { ...base, id, ...entry });
        return;
      }
      case "read":
        this.record(phone, source, { ...base, kind: "read", ids: ev.payload.ids.map(hex) });
        return;
      case "disappearing":
        this.record(phone, source, { ...base, kind: "disappearing", seconds: ev.payload.seconds });
        return;
      case "status":
        // Third-party chats do not carry status updates (docs/protocol.md §16.2).
        this.log.info("dropped a status update", { phone });
        return;
    }
  }

  /** Downloads, verifies and decrypts a received attachment; what arrived, or why not, for the inbox. */
  private async receiveMedia(message: MimiMessage): Promise<Record<string, unknown>> {
    const content = mimiToRemoteContent(message);
    if (content.type !== "media") return { error: content.type === "unsupported" ? content.description : "not an attachment" };
    const info = waMediaOf(message);
    const described: Record<string, unknown> = {
      mediaKind: content.media.kind,
      ...(info.width ? { width: info.width, height: info.height } : {}),
      ...(info.durationMs ? { durationMs: info.durationMs } : {}),
      ...(info.waveform ? { waveform: [...info.waveform] } : {}),
    };
    if (content.source.from !== "network") return { ...described, error: "no media reference" };
    try {
      const fetched = await fetchBlob(blobRefOf(content.source.ref), { maxBytes: MAX_MEDIA_BYTES, allowedHosts: ["*"], tempDir: this.mediaTemp });
      const sha256 = (await sha256File(fetched.path)).toString("hex");
      this.store.adoptMediaFile(fetched.path, content.media.mimetype, sha256, fetched.size);
      return { ...described, size: fetched.size, sha256, mediaUrl: this.mediaUrl(sha256) };
    } catch (err) {
      const reason = err instanceof MediaError ? `${err.code}: ${err.reason}` : (err as Error).message;
      this.log.warn("could not receive media", { error: reason });
      return { ...described, error: reason };
    }
  }

  private async onDelivered(ev: DeliveredEvent): Promise<void> {
    const phone = this.phoneOf(ev.user);
    const sent = this.store.sentMessage(phone, ev.to, hex(ev.id));
    this.record(phone, `delivered:${ev.to}:${hex(ev.id)}`, {
      kind: "delivered",
      ...this.fromFields(ev.to),
      ...(await this.roomFields(ev.user, ev.room)),
      ...(sent?.mimiId ? { id: sent.mimiId } : {}),
      ...(sent ? { of: sent.kind } : {}),
      wireId: hex(ev.id),
      ts: ev.ts,
    });
  }

  private onUndecryptable(ev: UndecryptableEvent): void {
    this.record(this.phoneOf(ev.to), `undecryptable:${ev.from}:${hex(ev.id)}`, {
      kind: "undecryptable",
      ...this.fromFields(ev.from),
      wireId: hex(ev.id),
      ts: ev.ts,
      reason: `${ev.reason.stage}: ${ev.reason.code}`,
    });
  }

  private onTyping(frame: TypingFrame): void {
    const owner = parseMimiUri(frame.to);
    if (owner?.domain !== this.opts.provider || !this.store.getUser(owner.id)) return;
    this.record(owner.id, null, { kind: "typing", ...this.fromFields(frame.from), ...this.cachedRoomFields(frame.room), state: frame.state, ts: Date.now() });
  }

  // ------------------------------------------------------------------ groups

  /** Latest known state of each group (by rev), from group events and answers. */
  private readonly groups = new Map<string, GroupState>();

  private remember(group: GroupState): GroupState {
    const known = this.groups.get(group.room);
    if (!known || known.rev < group.rev) this.groups.set(group.room, group);
    return this.groups.get(group.room)!;
  }

  /** For inbox entries: the group room and its name; nothing for a 1:1 chat. */
  private async roomFields(user: string, room: string): Promise<{ room?: string; group?: string }> {
    if (!isGroupRoom(room)) return {};
    if (!this.groups.has(room)) {
      try {
        this.remember(await this.client.getGroup(user, room));
      } catch (err) {
        this.log.debug("could not look the group up", { error: (err as Error).message });
      }
    }
    return this.cachedRoomFields(room);
  }

  private cachedRoomFields(room: string): { room?: string; group?: string } {
    if (!isGroupRoom(room)) return {};
    const name = this.groups.get(room)?.name;
    return name === undefined ? { room } : { room, group: name };
  }

  groupView(group: GroupState): GroupView {
    const view: GroupView = {
      room: group.room,
      name: group.name,
      rev: group.rev,
      creator: this.peerLabel(group.creator),
      members: group.members.map((m) => ({ id: this.peerLabel(m.user), uri: m.user, admin: m.admin })),
    };
    if (group.topic !== undefined) view.topic = group.topic;
    if (group.picture)
      view.picture = { url: group.picture.url, mimetype: group.picture.mimetype, size: group.picture.size, sha256: Buffer.from(group.picture.sha256).toString("hex") };
    return view;
  }

  private groupParam(v: unknown): string {
    if (typeof v !== "string" || !isGroupRoom(v) || parseMimiUri(v)?.kind !== "r") throw new SimError(400, "bad_request", "group must be a group's room URI (mimi://…/r/g-…)");
    return v;
  }

  private async groupMember(v: unknown): Promise<string> {
    if (typeof v !== "string") throw new SimError(400, "bad_request", "member must be a phone number, a Matrix user id or a mimi user URI");
    return isE164(v) || /^[0-9]+$/.test(v) ? this.uriOf(this.normalizePhone(v)) : this.resolvePeer(v);
  }

  /** Creates a group with this user as its admin; members the gateway refused are listed with its code. */
  async createGroup(
    rawPhone: string,
    body: { name?: unknown; members?: unknown; topic?: unknown },
  ): Promise<GroupView & { refused: Array<{ id: string; uri: string; error: string }> }> {
    const user = this.requireUser(rawPhone);
    const name = this.checkName(body.name);
    if (body.topic !== undefined && typeof body.topic !== "string") throw new SimError(400, "bad_request", "topic must be a string");
    const raw = body.members ?? [];
    if (!Array.isArray(raw)) throw new SimError(400, "bad_request", "members must be a list of phone numbers or Matrix user ids");
    const members: string[] = [];
    for (const m of raw) members.push(await this.groupMember(m));
    const created = await this.client.createGroup({
      by: this.uriOf(user.phone),
      name,
      members,
      ...(typeof body.topic === "string" && body.topic !== "" ? { topic: body.topic } : {}),
    });
    const group = this.remember(created.group);
    this.log.info("group created", { phone: user.phone, members: group.members.length, refused: created.refused.length });
    return { ...this.groupView(group), refused: created.refused.map((r) => ({ id: this.peerLabel(r.user), uri: r.user, error: r.code })) };
  }

  async listGroups(rawPhone: string): Promise<GroupView[]> {
    const user = this.requireUser(rawPhone);
    const groups = await this.client.listGroups(this.uriOf(user.phone));
    return groups.map((g) => this.groupView(this.remember(g)));
  }

  async showGroup(rawPhone: string, rawRoom: string): Promise<GroupView> {
    const user = this.requireUser(rawPhone);
    return this.groupView(this.remember(await this.client.getGroup(this.uriOf(user.phone), this.groupParam(rawRoom))));
  }

  async addGroupMember(rawPhone: string, rawRoom: string, body: { member?: unknown }): Promise<GroupView> {
    const user = this.requireUser(rawPhone);
    const member = await this.groupMember(body.member);
    return this.groupView(this.remember(await this.client.addGroupMember(this.uriOf(user.phone), this.groupParam(rawRoom), member)));
  }

  async removeGroupMember(rawPhone: string, rawRoom: string, rawMember: string): Promise<GroupView> {
    const user = this.requireUser(rawPhone);
    const member = await this.groupMember(rawMember);
    return this.groupView(this.remember(await this.client.removeGroupMember(this.uriOf(user.phone), this.groupParam(rawRoom), member)));
  }

  async leaveGroup(rawPhone: string, rawRoom: string): Promise<{ left: string }> {
    const user = this.requireUser(rawPhone);
    const room = this.groupParam(rawRoom);
    await this.client.leaveGroup(this.uriOf(user.phone), room);
    return { left: room };
  }

  /** Name, topic ("" removes it) and/or picture ({mimetype, base64}, like an avatar; null removes it). */
  async updateGroup(rawPhone: string, rawRoom: string, body: { name?: unknown; topic?: unknown; picture?: unknown }): Promise<GroupView> {
    const user = this.requireUser(rawPhone);
    const update: { name?: string; topic?: string; picture?: Avatar | null } = {};
    if (body.picture === null) update.picture = null;
    else if (body.picture !== undefined) {
      const sha256 = this.saveAvatar(body.picture);
      const media = this.store.getMedia(sha256)!;
      update.picture = { url: this.mediaUrl(sha256), mimetype: media.mimetype, size: media.size, sha256: new Uint8Array(Buffer.from(sha256, "hex")) };
    }
    if (body.name !== undefined) update.name = this.checkName(body.name);
    if (body.topic !== undefined) {
      if (typeof body.topic !== "string") throw new SimError(400, "bad_request", "topic must be a string");
      update.topic = body.topic;
    }
    if (update.name === undefined && update.topic === undefined && update.picture === undefined) throw new SimError(400, "bad_request", "give name, topic and/or picture");
    return this.groupView(this.remember(await this.client.updateGroup(this.uriOf(user.phone), this.groupParam(rawRoom), update)));
  }

  async setGroupAdmin(rawPhone: string, rawRoom: string, body: { member?: unknown; admin?: unknown }): Promise<GroupView> {
    const user = this.requireUser(rawPhone);
    if (typeof body.admin !== "boolean") throw new SimError(400, "bad_request", "admin must be a boolean");
    const member = await this.groupMember(body.member);
    return this.groupView(this.remember(await this.client.setGroupAdmin(this.uriOf(user.phone), this.groupParam(rawRoom), member, body.admin)));
  }

  private async onGroup(frame: GroupEventFrame): Promise<void> {
    this.remember(frame.group);
    this.record(this.phoneOf(frame.user), `group:${frame.seq}`, {
      kind: "group",
      change: frame.change,
      ...this.fromFields(frame.by),
      room: frame.room,
      group: frame.group.name,
      ...(frame.subject ? { subject: frame.subject, subjectId: this.peerLabel(frame.subject) } : {}),
      ...(frame.change === "topic" ? { topic: frame.group.topic ?? "" } : {}),
      ...(frame.change === "admin" && frame.subject ? { admin: frame.group.members.find((m) => m.user === frame.subject)?.admin ?? false } : {}),
      members: frame.group.members.map((m) => this.peerLabel(m.user)),
      rev: frame.group.rev,
      ts: frame.ts,
    });
  }

  private async onProfile(frame: ProfileFrame): Promise<void> {
    const phone = this.phoneOf(frame.user);
    this.record(phone, `profile:${frame.seq}`, {
      kind: "profile",
      ...this.fromFields(frame.subject),
      displayName: frame.displayName,
      ...(frame.avatar ? { avatar: { url: frame.avatar.url, mimetype: frame.avatar.mimetype, size: frame.avatar.size, sha256: hex(frame.avatar.sha256) } } : {}),
      ...(frame.thirdPartyChats !== undefined ? { thirdPartyChats: frame.thirdPartyChats } : {}),
      ts: frame.ts,
    });
  }
}

function requireText(v: unknown, field: string): string {
  if (typeof v !== "string" || v === "") throw new SimError(400, "bad_request", `${field} must be a non-empty string`);
  return v;
}

function optionalPositive(v: unknown, field: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) throw new SimError(400, "bad_request", `${field} must be a positive whole number`);
  return v;
}

function messageIdParam(v: unknown, field: string): Uint8Array {
  if (typeof v !== "string" || !new RegExp(`^[0-9a-fA-F]{${MIMI_MESSAGE_ID_LENGTH * 2}}$`).test(v))
    throw new SimError(400, "bad_request", `${field} must be a MIMI message id: ${MIMI_MESSAGE_ID_LENGTH * 2} hex digits`);
  return new Uint8Array(Buffer.from(v, "hex"));
}

function uint32Param(v: unknown, field: string, zeroAllowed = false): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < (zeroAllowed ? 0 : 1) || v > 0xffffffff)
    throw new SimError(400, "bad_request", `${field} must be a whole number of seconds${zeroAllowed ? " (0 = off)" : ""}`);
  return v;
}

/** HTTP status for an error from the gateway or the encryption layer. */
export function httpStatusOf(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof SimError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof EndpointError || err instanceof ProtocolError) {
    const status = GATEWAY_CODE_STATUS[err.code] ?? 502;
    return { status, code: err.code, message: err.message };
  }
  return { status: 500, code: "internal", message: err instanceof Error ? err.message : String(err) };
}

const GATEWAY_CODE_STATUS: Record<string, number> = {
  third_party_disabled: 409,
  not_opted_in: 409,
  no_keys: 409,
  not_logged_in: 409,
  not_member: 403,
  not_supported: 501,
  unknown_user: 404,
  forbidden: 403,
  bad_frame: 400,
  bad_argument: 400,
  bad_payload: 400,
  unknown_room: 400,
  too_large: 413,
  rate_limited: 429,
  queue_full: 503,
  closed: 503,
  timeout: 504,
};
