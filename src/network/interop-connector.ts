import { createHash, createHmac, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileNameFor, overLimitReason, settledMimetype, waveformFromPeaks } from "../convert/media";
import { getLogger } from "../logging";
import { audioPeaks, FfmpegError, probeMedia, transcodeToOggOpus } from "../media/ffmpeg";
import { isOggOpus, probedFacts, settleMediaKind } from "../media/probe";
import { InteropClient } from "../protocol/client";
import { EndpointError, SecureEndpoint } from "../protocol/endpoint";
import { dmRoomUri, FEATURE_GROUPS, GroupEventFrame, GroupState, isGroupRoom, parseMimiUri, Profile, ProtocolError, TypingFrame, userUri } from "../protocol/frames";
import { computeMessageId, decodeMimi, encodeMimi, MimiError, MimiMessage } from "../protocol/mimi";
import { sha256File } from "../protocol/media-crypto";
import { MAX_READ_IDS, Payload } from "../protocol/payload";
import { deriveStoreKey, EncryptedRecordStore } from "../protocol/signal";
import { normalizePhone } from "../convert/phone";
import {
  ChatCapabilities,
  ChatRef,
  ConnectionState,
  GroupInfo,
  GroupMember,
  IdentifierCheck,
  LocalMedia,
  MediaError,
  MediaLimits,
  NetworkConnector,
  NetworkError,
  NetworkEventHandler,
  OutboundChange,
  OutboundMessage,
  RemoteContent,
  RemoteMedia,
  RemoteProfile,
  SendResult,
} from "./connector";
import type { InteropConnectorOptions, InteropConnectorStore, InteropNetworkConfig, InteropUserSettings } from "./interop-settings";
import { fetchBlob } from "./media-fetch";
import { MediaHost } from "./media-host";
import { blobRefOf, changeToMimi, mediaToMimi, MimiEvent, mimiIdOf, mimiToRemoteEvent, remoteContentToMimi } from "./mimi-content";

const log = getLogger("network");

/** What the gateway's refusals mean to a Matrix user. */
const REFUSALS: Record<string, string> = {
  third_party_disabled: "this WhatsApp user has turned Third-Party Chats off, so they cannot receive messages from other apps",
  unknown_user: "this WhatsApp account does not exist (any more)",
  too_large: "the message is too large for the network",
  forbidden: "the network refused the message",
  bad_frame: "the network could not read the message (a bridge bug; please report it)",
};

/** Why the gateway would not add someone to a group (docs/protocol.md §3.3.3), for the Matrix user. */
const GROUP_REFUSALS: Record<string, string> = {
  unknown_user: "has no WhatsApp account",
  third_party_disabled: "has Third-Party Chats turned off",
  not_opted_in: "does not accept Third-Party Chats",
  not_supported: "is on a network that does not support groups",
};

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** The gateway keeps undelivered messages this long (docs/protocol.md §9.5); no receipt can come later. */
const GATEWAY_RETENTION_MS = 30 * 24 * 3600 * 1000;

/**
 * What a WhatsApp 1:1 chat supports, in one table (as mautrix-whatsapp's capabilities.go):
 * one reaction per person per message, edits only for a while (configurable), any message
 * deleted by its sender. Media of any type is taken: the connector probes each file and
 * converts what WhatsApp would not play (voice notes become Ogg/Opus).
 */
function whatsappDmCapabilities(maxMediaSize: number, editWindowSeconds: number): ChatCapabilities {
  const any: MediaLimits = { mimetypes: ["*/*"], maxSize: maxMediaSize };
  return {
    text: { maxLength: 64 * 1024 },
    media: { image: any, video: any, voice: any, audio: any, file: any },
    replies: true,
    ...(editWindowSeconds > 0 ? { edits: { maxAgeMs: editWindowSeconds * 1000 } } : {}),
    deletes: { maxAgeMs: 0 },
    reactions: { maxPerUser: 1 },
    readReceipts: true,
    typing: true,
    deliveryReceipts: true,
  };
}

/**
 * A WhatsApp group as bridged here: like a 1:1 chat (read receipts and typing go to every other
 * member), except that delivery receipts are not shown (one would come per member).
 */
function whatsappGroupCapabilities(dm: ChatCapabilities): ChatCapabilities {
  return { ...dm, deliveryReceipts: false };
}

/**
 * The connector for our interop gateway (docs/protocol.md): one authenticated provider
 * connection, a Signal session per Matrix user and contact, MIMI content inside.
 */
/** Logins of known users in flight at once after a start. */
const KNOWN_USER_LOGINS_AT_ONCE = 32;

export class InteropConnector implements NetworkConnector {
  readonly networkName = "WhatsApp";
  private readonly capabilities: ChatCapabilities;
  private readonly groupCapabilities: ChatCapabilities;
  private readonly client: InteropClient;
  private readonly endpoint: SecureEndpoint;
  private readonly storeKey: Uint8Array;
  private readonly mediaHost: MediaHost;
  /** Temporary plaintext files of media in transit (downloads, conversions). */
  private readonly mediaTemp: string;
  private readonly ready = new Map<string, Promise<void>>();
  private handler?: NetworkEventHandler;
  private state: ConnectionState = { state: "connecting" };
  /** The `network` section of the config. */
  private readonly config: InteropNetworkConfig;
  private readonly store: InteropConnectorStore;
  private readonly users: InteropUserSettings;

  constructor(options: InteropConnectorOptions) {
    const { network: config, editWindowSeconds, store } = options;
    this.config = config;
    this.store = store;
    this.users = options.users;
    this.capabilities = whatsappDmCapabilities(config.media.max_size, editWindowSeconds);
    this.groupCapabilities = whatsappGroupCapabilities(this.capabilities);
    const secret = process.env.BRIDGE_STORE_KEY ?? config.store_key;
    if (!secret) throw new Error("network.store_key (or BRIDGE_STORE_KEY) is needed to encrypt keys at rest");
    this.storeKey = deriveStoreKey(secret);
    this.client = new InteropClient({
      url: config.gateway_url,
      provider: config.provider_domain,
      secret: config.provider_secret,
      features: [FEATURE_GROUPS],
      logger: getLogger("gateway-client"),
    });
    this.endpoint = new SecureEndpoint({
      client: this.client,
      openRecords: (uri) => new EncryptedRecordStore(this.store.signalRecords(uri), this.storeKey),
      onPayload: (ev) => this.onPayload(ev),
      onDelivered: (ev) => this.onDelivered(ev),
      onIdentityChange: (local, peer) => {
        const receiver = this.matrixUserOf(local);
        const remote = this.remoteUserOf(peer);
        if (receiver && remote) void this.handler?.onIdentityChange?.(receiver, remote);
      },
      logger: getLogger("e2ee"),
    });
    const media = config.media;
    this.mediaTemp = path.join(media.directory, "tmp");
    this.mediaHost = new MediaHost({
      dir: path.join(media.directory, "blobs"),
      index: store.hostedMedia,
      publicUrl: media.public_url,
      lifetimeMs: media.expiry_days * 24 * 60 * 60 * 1000,
      logger: getLogger("media-host"),
    });
  }

  private uriOfMatrixUser(mxid: string): string {
    return userUri(this.config.provider_domain, mxid);
  }

  private uriOfRemote(remoteUserId: string): string {
    return userUri(this.config.home_domain, remoteUserId);
  }

  private matrixUserOf(uri: string): string | null {
    const parsed = parseMimiUri(uri);
    return parsed?.kind === "u" && parsed.domain === this.config.provider_domain ? parsed.id : null;
  }

  private remoteUserOf(uri: string): string | null {
    const parsed = parseMimiUri(uri);
    return parsed?.kind === "u" && parsed.domain === this.config.home_domain ? parsed.id : null;
  }

  async start(handler: NetworkEventHandler): Promise<void> {
    this.handler = handler;
    this.client.on("state", (state: "connecting" | "connected" | "disconnected", info: { reason?: string; retryInMs?: number }) => {
      this.state = state === "disconnected" ? { state, reason: info.reason ?? "connection lost", retryInMs: info.retryInMs } : { state };
      handler.onConnectionState(this.state);
    });
    this.client.on("typing", (frame: TypingFrame) => this.onTypingFrame(frame));
    this.client.onProfile(async (frame) => {
      const remote = this.remoteUserOf(frame.subject);
      if (remote) await handler.onProfile(this.toRemoteProfile(remote, frame));
    });
    this.client.onGroup((frame) => this.onGroupFrame(frame));
    this.client.onRefused(async (frame) => {
      const receiver = this.matrixUserOf(frame.user);
      const remote = this.remoteUserOf(frame.from);
      if (receiver && remote) await handler.onRefused?.(receiver, remote, frame.ts);
    });
    const pruned = this.store.sentFrames.prune(GATEWAY_RETENTION_MS);
    if (pruned > 0) log.info("forgot sends no delivery receipt can come for any more", { count: pruned });
    // Leftovers of transfers a previous run did not finish.
    fs.rmSync(this.mediaTemp, { recursive: true, force: true });
    fs.mkdirSync(this.mediaTemp, { recursive: true, mode: 0o700 });
    const media = this.config.media;
    await this.mediaHost.listen(media.bind_hostname, media.port);
    this.mediaHost.startSweeping();
    await this.client.connect();
    // Users known from earlier runs log in again, so messages queued for them flow at once: in
    // the background, a few at a time (with 10,000 users, all at once would hold every request
    // in memory and keep the bridge from answering); a user with something to do logs in at once.
    const known = this.users.knownUsers();
    let next = 0;
    const logInNext = async (): Promise<void> => {
      while (next < known.length) {
        const user = known[next++];
        await this.ensureUser(user, null).catch((err: Error) => log.warn("could not log a user in", { user, error: err.message }));
      }
    };
    for (let i = 0; i < Math.min(KNOWN_USER_LOGINS_AT_ONCE, known.length); i++) void logInNext();
  }

  async stop(): Promise<void> {
    await this.client.close();
    await this.mediaHost.close();
  }

  connectionState(): ConnectionState {
    return this.state;
  }

  ensureUser(matrixUserId: string, displayName: string | null): Promise<void> {
    let pending = this.ready.get(matrixUserId);
    if (!pending) {
      // Enlisted with the stored setting in the same step, so a user who is off is never reachable.
      const thirdPartyChats = this.users.thirdPartyChats(matrixUserId);
      pending = this.endpoint.addUser(this.uriOfMatrixUser(matrixUserId), { displayName: displayName ?? matrixUserId, thirdPartyChats });
      this.ready.set(matrixUserId, pending);
      pending.catch(() => this.ready.delete(matrixUserId));
    }
    return pending;
  }

  async setThirdPartyChats(matrixUserId: string, on: boolean): Promise<void> {
    await this.ensureUser(matrixUserId, null);
    try {
      await this.client.setSettings(this.uriOfMatrixUser(matrixUserId), { thirdPartyChats: on });
    } catch (err) {
      const e = err as { code?: string; message: string; retryable?: boolean };
      throw new NetworkError(e.code ?? "internal", `the network did not take the setting: ${e.message}`, e.retryable ?? false);
    }
  }

  /** Unenlists the user (the gateway deletes its account, keys and queue) and deletes its keys, sessions and send records here. */
  async removeUser(matrixUserId: string): Promise<void> {
    this.ready.delete(matrixUserId);
    const uri = this.uriOfMatrixUser(matrixUserId);
    await this.endpoint.removeUser(uri, { unenlist: true });
    this.store.sentFrames.deleteSender(uri);
  }

  private toRemoteProfile(remoteUserId: string, p: { displayName?: string; avatar?: Profile["avatar"] }): RemoteProfile {
    const avatar = p.avatar;
    return {
      userId: remoteUserId,
      displayName: p.displayName ?? null,
      avatar: avatar
        ? {
            id: hex(avatar.sha256),
            mimetype: avatar.mimetype,
            fetch: () => fetchAvatar(avatar, this.config.media.max_size),
          }
        : null,
    };
  }

  async getProfile(remoteUserId: string): Promise<RemoteProfile | null> {
    const profile = await this.client.getProfile(this.uriOfRemote(remoteUserId));
    if (!profile.exists) return null;
    return this.toRemoteProfile(remoteUserId, profile);
  }

  async resolveIdentifier(_matrixUserId: string, identifier: string): Promise<RemoteProfile | null> {
    return this.getProfile(identifier);
  }

  getCapabilities(chat: ChatRef): ChatCapabilities {
    return chat.kind === "group" ? this.groupCapabilities : this.capabilities;
  }

  /** A group's state in the connector's terms: members of other providers are left out. */
  private groupInfoOf(state: GroupState): GroupInfo {
    const members: GroupMember[] = [];
    for (const m of state.members) {
      const remote = this.remoteUserOf(m.user);
      const local = remote ? null : this.matrixUserOf(m.user);
      if (remote) members.push({ id: remote, matrix: false, admin: m.admin });
      else if (local) members.push({ id: local, matrix: true, admin: m.admin });
    }
    const picture = state.picture;
    return {
      rev: state.rev,
      name: state.name,
      ...(state.topic ? { topic: state.topic } : {}),
      ...(picture
        ? { picture: { id: hex(picture.sha256), mimetype: picture.mimetype, ref: JSON.stringify({ url: picture.url, size: picture.size, sha256: hex(picture.sha256) }) } }
        : {}),
      members,
    };
  }

  private groupChat(room: string, state?: GroupState): ChatRef {
    const participants = state ? state.members.map((m) => this.remoteUserOf(m.user)).filter((u): u is string => u !== null) : [];
    return { id: room, kind: "group", participants };
  }

  private async onGroupFrame(frame: GroupEventFrame): Promise<void> {
    const receiver = this.matrixUserOf(frame.user);
    if (!receiver || !this.handler?.onGroupChange) return;
    const who = (uri: string | undefined) => (uri ? (this.remoteUserOf(uri) ?? this.matrixUserOf(uri) ?? undefined) : undefined);
    const by = who(frame.by);
    const subject = who(frame.subject);
    await this.handler.onGroupChange(receiver, {
      // Every member's copy of a change carries the same state and rev.
      id: `group.${frame.group.rev}`,
      chat: this.groupChat(frame.room, frame.group),
      change: frame.change,
      ...(by ? { by } : {}),
      ...(subject ? { subject } : {}),
      group: this.groupInfoOf(frame.group),
      timestamp: frame.ts,
    });
  }

  async getGroup(matrixUserId: string, chatId: string): Promise<GroupInfo | null> {
    await this.ensureUser(matrixUserId, null);
    try {
      return this.groupInfoOf(await this.client.getGroup(this.uriOfMatrixUser(matrixUserId), chatId));
    } catch (err) {
      if (err instanceof ProtocolError && (err.code === "not_member" || err.code === "unknown_room")) return null;
      throw err;
    }
  }

  async createGroup(matrixUserId: string, name: string, members: string[]): Promise<{ chat: ChatRef; group: GroupInfo; refused: { id: string; reason: string }[] }> {
    await this.ensureUser(matrixUserId, null);
    try {
      const created = await this.client.createGroup({ by: this.uriOfMatrixUser(matrixUserId), name, members: members.map((m) => this.uriOfRemote(m)) });
      const refused = created.refused.map((r) => ({ id: this.remoteUserOf(r.user) ?? r.user, reason: GROUP_REFUSALS[r.code] ?? r.code }));
      return { chat: this.groupChat(created.group.room, created.group), group: this.groupInfoOf(created.group), refused };
    } catch (err) {
      if (err instanceof ProtocolError) throw new NetworkError(err.code, `the network did not create the group: ${err.message}`, err.retryable);
      throw err;
    }
  }

  async addToGroup(matrixUserId: string, chatId: string, member: { id: string; matrix: boolean }): Promise<void> {
    await this.ensureUser(matrixUserId, null);
    if (member.matrix) await this.ensureUser(member.id, null);
    try {
      await this.client.addGroupMember(this.uriOfMatrixUser(matrixUserId), chatId, member.matrix ? this.uriOfMatrixUser(member.id) : this.uriOfRemote(member.id));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      throw new NetworkError(err.code, this.groupRefusal(err, member), err.retryable);
    }
  }

  async fetchGroupPicture(ref: string): Promise<Buffer> {
    const { url, size, sha256 } = JSON.parse(ref) as { url: string; size: number; sha256: string };
    return fetchAvatar({ url, size, sha256: new Uint8Array(Buffer.from(sha256, "hex")), mimetype: "" }, this.config.media.max_size);
  }

  async removeFromGroup(matrixUserId: string, chatId: string, member: { id: string; matrix: boolean }): Promise<void> {
    await this.ensureUser(matrixUserId, null);
    try {
      await this.client.removeGroupMember(this.uriOfMatrixUser(matrixUserId), chatId, member.matrix ? this.uriOfMatrixUser(member.id) : this.uriOfRemote(member.id));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      throw new NetworkError(err.code, err.code === "forbidden" ? "only the group's admins may remove members" : this.groupRefusal(err), err.retryable);
    }
  }

  async updateGroup(matrixUserId: string, chatId: string, update: { name?: string; topic?: string }): Promise<void> {
    await this.ensureUser(matrixUserId, null);
    try {
      await this.client.updateGroup(this.uriOfMatrixUser(matrixUserId), chatId, update);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      throw new NetworkError(err.code, this.groupRefusal(err), err.retryable);
    }
  }

  /** A group request's refusal in the Matrix user's words (`member`: the one being added). */
  private groupRefusal(err: ProtocolError, member?: { id: string; matrix: boolean }): string {
    if (err.code === "forbidden") return member ? "only the group's admins may add members" : "only the group's admins may change it";
    if (err.code === "not_member") return "you are not a member of this group";
    // Adding a user of another app: it is a WhatsApp member of the group whose setting is off (docs/protocol.md §3.3.3).
    if (member?.matrix && err.code === "third_party_disabled")
      return `a ${this.networkName} member of the group has Third-Party Chats turned off, so no one from another app can join it`;
    if (member && GROUP_REFUSALS[err.code]) return `${member.id} ${GROUP_REFUSALS[err.code]}`;
    return err.message;
  }

  async leaveGroup(matrixUserId: string, chatId: string): Promise<void> {
    await this.ensureUser(matrixUserId, null);
    try {
      await this.client.leaveGroup(this.uriOfMatrixUser(matrixUserId), chatId);
    } catch (err) {
      if (err instanceof ProtocolError && err.code === "unknown_room") return;
      if (err instanceof ProtocolError) throw new NetworkError(err.code, `the network did not let you leave the group: ${err.message}`, err.retryable);
      throw err;
    }
  }

  validateIdentifier(input: string): IdentifierCheck {
    const phone = normalizePhone(input);
    return phone ? { ok: true, identifier: phone } : { ok: false, reason: `"${input}" is not a phone number; use the international format, e.g. +4915123456789` };
  }

  dmChat(matrixUserId: string, remoteUserId: string): ChatRef {
    return {
      id: dmRoomUri(this.uriOfMatrixUser(matrixUserId), this.uriOfRemote(remoteUserId), this.config.home_domain),
      kind: "dm",
      participants: [remoteUserId],
    };
  }

  /** The other side of a 1:1 chat. */
  private dmPeer(chat: ChatRef): string {
    if (chat.kind !== "dm" || chat.participants.length !== 1) throw new NetworkError("unsupported", "not a 1:1 chat", false);
    return this.uriOfRemote(chat.participants[0]);
  }

  /**
   * Who else in a group gets what a Matrix user sends there, as the gateway lists them now: its
   * members apart from the sender and the group's other Matrix users of this bridge (they share
   * the room, and see the Matrix event itself).
   */
  private async groupRecipients(from: string, chatId: string): Promise<string[]> {
    const group = await this.client.getGroup(from, chatId);
    return group.members.map((m) => m.user).filter((u) => u !== from && this.matrixUserOf(u) === null);
  }

  async sendMessage(matrixUserId: string, chat: ChatRef, message: OutboundMessage): Promise<SendResult> {
    const from = this.uriOfMatrixUser(matrixUserId);
    let mimi: MimiMessage;
    if (message.content.type === "media") {
      mimi = await this.hostMedia(message.content, message, from, chat.id);
      // A media reply keeps its target like a text reply does.
      if (message.replyTo) mimi.inReplyTo = mimiIdOf(message.replyTo);
    } else {
      mimi = remoteContentToMimi(message.content, from, chat.id, message.replyTo);
    }
    return this.sendMimi(matrixUserId, chat, message.txnId, mimi);
  }

  async sendChange(matrixUserId: string, chat: ChatRef, change: OutboundChange): Promise<SendResult> {
    let mimi: MimiMessage;
    try {
      mimi = changeToMimi(change.change, this.uriOfMatrixUser(matrixUserId), chat.id);
    } catch (err) {
      throw new NetworkError("unsupported", `this message cannot be changed on WhatsApp (${(err as Error).message})`, false);
    }
    return this.sendMimi(matrixUserId, chat, change.txnId, mimi);
  }

  /** Sends one MIMI message as a content payload; the same txnId always gives the same bytes, message id and transport id. */
  private async sendMimi(matrixUserId: string, chat: ChatRef, txnId: string, mimi: MimiMessage): Promise<SendResult> {
    const from = this.uriOfMatrixUser(matrixUserId);
    // A retry after a crash must produce the very same message (same MIMI id), so the salt is
    // derived from the event id under a secret instead of drawn at random.
    mimi.salt = new Uint8Array(createHmac("sha256", this.storeKey).update(`salt:${txnId}`).digest().subarray(0, 16));
    const bytes = encodeMimi(mimi);
    const messageId = computeMessageId(from, chat.id, bytes);
    const frameId = new Uint8Array(createHash("sha256").update(`frame:${txnId}`).digest().subarray(0, 16));
    if (chat.kind === "group") return { remoteId: hex(messageId), timestamp: await this.sendToGroup(matrixUserId, chat, bytes, frameId) };
    const to = this.dmPeer(chat);
    // Recorded first: the delivery receipt can come right behind the gateway's answer.
    this.store.sentFrames.put(hex(frameId), from, txnId);
    try {
      await this.ensureUser(matrixUserId, null);
      const { ts } = await this.endpoint.send(from, to, chat.id, { kind: "content", mimi: bytes }, frameId);
      return { remoteId: hex(messageId), timestamp: ts };
    } catch (err) {
      if (err instanceof EndpointError) {
        if (!err.retryable) this.store.sentFrames.delete(hex(frameId));
        throw new NetworkError(err.code, REFUSALS[err.code] ?? err.message, err.retryable);
      }
      throw err;
    }
  }

  /**
   * One MIMI message to every other member of a group (docs/protocol.md §3.3.5), to the members
   * the gateway lists now. A copy refused for good (a member who left meanwhile) is dropped; one
   * that may go later makes the whole send fail retryably, and the retry (same frame id) resends
   * only the copies the gateway does not have. Returns the send's timestamp.
   */
  private async sendToGroup(matrixUserId: string, chat: ChatRef, mimi: Uint8Array, frameId: Uint8Array): Promise<number> {
    const from = this.uriOfMatrixUser(matrixUserId);
    try {
      await this.ensureUser(matrixUserId, null);
      const result = await this.endpoint.sendToGroup(from, chat.id, await this.groupRecipients(from, chat.id), { kind: "content", mimi }, frameId);
      const retry = result.failed.find((f) => f.error.retryable);
      if (retry) throw retry.error;
      for (const f of result.failed) log.info("a group member's copy was refused", { room: chat.id, code: f.error.code });
      if (result.sent.length === 0 && result.failed.length > 0) throw result.failed[0]!.error;
      return result.sent.length > 0 ? Math.min(...result.sent.map((s) => s.ts)) : Date.now();
    } catch (err) {
      if (err instanceof EndpointError) throw new NetworkError(err.code, REFUSALS[err.code] ?? err.message, err.retryable);
      if (err instanceof ProtocolError) throw new NetworkError(err.code, err.code === "not_member" ? "you are not a member of this group" : err.message, err.retryable);
      throw err;
    }
  }

  async sendReadReceipt(matrixUserId: string, chat: ChatRef, messageIds: string[]): Promise<void> {
    const from = this.uriOfMatrixUser(matrixUserId);
    // Ids that name no MIMI message (notices the bridge made up) cannot be read on the other side.
    const ids = messageIds.map(mimiIdOf).filter((id): id is Uint8Array => id !== null);
    try {
      await this.ensureUser(matrixUserId, null);
      for (let i = 0; i < ids.length; i += MAX_READ_IDS) {
        const batch = ids.slice(i, i + MAX_READ_IDS);
        // The same receipt sent again is the same frame, which the gateway delivers once.
        const frameId = createHash("sha256").update("read:").update(from);
        for (const id of batch) frameId.update(id);
        const id = new Uint8Array(frameId.digest().subarray(0, 16));
        if (chat.kind === "group") {
          // A `read` goes to every other member (docs/protocol.md §3.3.5); a member gone meanwhile is skipped.
          const result = await this.endpoint.sendToGroup(from, chat.id, await this.groupRecipients(from, chat.id), { kind: "read", ids: batch }, id);
          const retry = result.failed.find((f) => f.error.retryable);
          if (retry) throw retry.error;
        } else {
          await this.endpoint.send(from, this.dmPeer(chat), chat.id, { kind: "read", ids: batch }, id);
        }
      }
    } catch (err) {
      if (err instanceof EndpointError) throw new NetworkError(err.code, REFUSALS[err.code] ?? err.message, err.retryable);
      if (err instanceof ProtocolError) throw new NetworkError(err.code, err.message, err.retryable);
      throw err;
    }
  }

  /** Secret-derived bytes for `label` of one message, so a retried send rebuilds the same blob and message. */
  private derive(label: string, txnId: string, plaintextSha256: string, length: number): Buffer {
    return createHmac("sha256", this.storeKey).update(`${label}:${txnId}:${plaintextSha256}`).digest().subarray(0, length);
  }

  /**
   * Matrix media (a local plaintext file) → a hosted encrypted blob and the MIMI message naming
   * it. The probe settles what the file is and measures it; voice notes become Ogg/Opus.
   */
  private async hostMedia(content: Extract<RemoteContent, { type: "media" }>, message: OutboundMessage, from: string, room: string) {
    const source = content.source;
    if (source.from !== "file") throw new Error("media must be downloaded before it is sent");
    const converted: string[] = [];
    try {
      const { media, file } = await this.describeOutgoing(content.media, source.path, converted);
      const size = (await fs.promises.stat(file)).size;
      const limit = this.capabilities.media[media.kind]?.maxSize ?? 0;
      if (size > limit) throw new MediaError("too_large", overLimitReason(size, limit));
      const digest = (await sha256File(file)).toString("hex");
      const blob = await this.mediaHost.host(file, {
        token: this.derive("media-token", message.txnId, digest, 32).toString("base64url"),
        blobKey: { key: new Uint8Array(this.derive("media-key", message.txnId, digest, 16)), nonce: new Uint8Array(this.derive("media-nonce", message.txnId, digest, 12)) },
        expiresAt: message.timestamp + this.config.media.expiry_days * 24 * 60 * 60 * 1000,
      });
      log.debug("hosted outgoing media", { kind: media.kind, size: blob.size });
      return mediaToMimi(media, content.caption, blob, from, room);
    } finally {
      for (const f of converted) await fs.promises.rm(f, { force: true });
    }
  }

  private async describeOutgoing(claimed: RemoteMedia, file: string, temporary: string[]): Promise<{ media: RemoteMedia; file: string }> {
    try {
      let probe = await probeMedia(file);
      const kind = settleMediaKind(claimed.kind, probe);
      if (kind !== claimed.kind) log.debug("media kind settled by probing", { claimed: claimed.kind, kind });
      let media: RemoteMedia = { kind, mimetype: settledMimetype(claimed.kind, kind, claimed.mimetype), filename: claimed.filename };
      if (kind === "voice") {
        if (!isOggOpus(probe)) {
          const converted = path.join(this.mediaTemp, `voice-${randomBytes(8).toString("hex")}.ogg`);
          temporary.push(converted);
          await transcodeToOggOpus(file, converted);
          file = converted;
          probe = await probeMedia(file);
        }
        media = { ...media, mimetype: "audio/ogg; codecs=opus", filename: fileNameFor("voice", "audio/ogg", claimed.filename.replace(/\.[A-Za-z0-9]{1,5}$/, "")) };
        media.waveform = claimed.waveform?.length ? claimed.waveform : waveformFromPeaks(await audioPeaks(file));
      }
      return { media: { ...media, ...probedFacts(kind, probe) }, file };
    } catch (err) {
      if (err instanceof FfmpegError) {
        log.warn("could not examine outgoing media", { error: err.message });
        throw new MediaError("probe_failed", "the bridge could not examine or convert the file");
      }
      throw err;
    }
  }

  sendTyping(matrixUserId: string, chat: ChatRef, typing: boolean): boolean {
    const from = this.uriOfMatrixUser(matrixUserId);
    const state = typing ? "on" : "off";
    if (chat.kind === "group") {
      if (this.state.state !== "connected") return false;
      // One live notice per other member (docs/protocol.md §3.3.5), to the members the gateway lists now.
      void this.groupRecipients(from, chat.id)
        .then((members) => {
          for (const to of members) this.client.typing({ from, to, room: chat.id, state });
        })
        .catch((err: Error) => log.debug("could not send typing to a group", { room: chat.id, error: err.message }));
      return true;
    }
    return this.client.typing({ from, to: this.dmPeer(chat), room: chat.id, state });
  }

  private onTypingFrame(frame: TypingFrame): void {
    const receiver = this.matrixUserOf(frame.to);
    const sender = this.remoteUserOf(frame.from);
    if (!receiver || !sender || !this.handler?.onTyping) return;
    try {
      this.handler.onTyping(receiver, { chat: { id: frame.room, kind: isGroupRoom(frame.room) ? "group" : "dm", participants: [sender] }, sender, typing: frame.state === "on" });
    } catch (err) {
      // Typing is live and worth nothing later: never let it disturb the connection's frame handling.
      log.warn("failed to handle typing", { error: (err as Error).message });
    }
  }

  private async onDelivered(ev: { user: string; to: string; room: string; id: Uint8Array; ts: number }): Promise<void> {
    const frameId = hex(ev.id);
    const sent = this.store.sentFrames.get(frameId);
    const receiver = this.matrixUserOf(ev.user);
    const recipient = this.remoteUserOf(ev.to);
    if (!sent || !receiver || !recipient) {
      // Read receipts and sends of an earlier version are not recorded; nothing to show for them.
      log.debug("delivery receipt for a send the bridge does not track", { frame: frameId });
      return;
    }
    try {
      await this.handler?.onDelivered?.(receiver, {
        chat: { id: ev.room, kind: "dm", participants: [recipient] },
        txnId: sent.txnId,
        recipient,
        timestamp: ev.ts,
      });
    } catch (err) {
      // A status event is not worth holding up the user's queue of incoming messages.
      log.warn("could not show a delivery receipt", { error: (err as Error).message });
    }
    this.store.sentFrames.delete(frameId);
  }

  async downloadMedia(_receiver: string, ref: string, maxBytes: number): Promise<LocalMedia> {
    let blobRef;
    try {
      blobRef = blobRefOf(ref);
    } catch {
      throw new MediaError("bad_ref", "the message's media reference is unreadable");
    }
    const fetched = await fetchBlob(blobRef, { maxBytes, allowedHosts: this.config.media.allowed_hosts, tempDir: this.mediaTemp });
    return { path: fetched.path, size: fetched.size, release: () => fs.promises.rm(fetched.path, { force: true }) };
  }

  private async onPayload(ev: { to: string; from: string; room: string; id: Uint8Array; ts: number; payload: Payload }): Promise<void> {
    const receiver = this.matrixUserOf(ev.to);
    const sender = this.remoteUserOf(ev.from);
    const group = isGroupRoom(ev.room);
    if (group && receiver && this.matrixUserOf(ev.from)) {
      // Another Matrix user of this bridge wrote to a group: the room shows their Matrix event itself.
      log.debug("dropping a group copy of a Matrix user's own message", { room: ev.room });
      return;
    }
    if (!receiver || !sender || !this.handler) {
      log.warn("dropping a message between unexpected parties", { from: ev.from, to: ev.to });
      return;
    }
    const chat: ChatRef = { id: ev.room, kind: group ? "group" : "dm", participants: [sender] };
    const payload = ev.payload;
    switch (payload.kind) {
      case "content": {
        let event: MimiEvent;
        let id: string;
        try {
          const mimi = decodeMimi(payload.mimi);
          event = mimiToRemoteEvent(mimi);
          id = hex(computeMessageId(ev.from, ev.room, payload.mimi));
        } catch (err) {
          if (!(err instanceof MimiError)) throw err;
          log.warn("undecodable MIMI content", { from: ev.from, error: err.message });
          const content: RemoteContent = { type: "unsupported", what: "invalid", description: "sent a message this bridge could not read." };
          event = { kind: "message", content };
          id = hex(ev.id);
        }
        if (event.kind === "change") {
          if (this.handler.onChange) await this.handler.onChange(receiver, { id, chat, sender, timestamp: ev.ts, change: event.change });
          return;
        }
        await this.handler.onMessage(receiver, { id, chat, sender, timestamp: ev.ts, content: event.content, ...(event.replyTo ? { replyTo: event.replyTo } : {}) });
        return;
      }
      case "status":
        // Third-party chats do not carry status updates: drop without a trace in any room.
        log.debug("dropped a status update", { from: ev.from });
        this.handler.onDropped?.(receiver, "status_update");
        return;
      case "disappearing":
        await this.handler.onMessage(receiver, {
          id: `disappearing.${hex(ev.id)}`,
          chat,
          sender,
          timestamp: ev.ts,
          content: {
            type: "unsupported",
            what: "disappearing",
            description:
              payload.seconds > 0
                ? "turned on disappearing messages. Third-party chats don't support them: messages here will not disappear."
                : "turned off disappearing messages.",
          },
        });
        return;
      case "read":
        await this.handler.onReadReceipt?.(receiver, { chat, sender, messageIds: payload.ids.map(hex), timestamp: ev.ts });
        return;
    }
  }
}

async function fetchAvatar(avatar: NonNullable<Profile["avatar"]>, maxSize: number): Promise<Buffer> {
  if (avatar.size > maxSize) throw new Error(`avatar of ${avatar.size} bytes is over the limit`);
  const res = await fetch(avatar.url, { signal: AbortSignal.timeout(30_000) });
  if (!res.ok) throw new Error(`avatar download failed: HTTP ${res.status}`);
  const data = Buffer.from(await res.arrayBuffer());
  if (data.length > maxSize) throw new Error("avatar over the size limit");
  if (!createHash("sha256").update(data).digest().equals(Buffer.from(avatar.sha256))) throw new Error("avatar hash mismatch");
  return data;
}
