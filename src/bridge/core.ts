import { mediaFailureNotice, notSentText, overLimitReason } from "../convert/media";
import { matrixToRemote, remoteToMatrix } from "../convert/message-content";
import { normalizePhone } from "../convert/phone";
import { getLogger } from "../logging";
import {
  ChatRef,
  ConnectionState,
  LocalMedia,
  MediaError,
  NetworkConnector,
  NetworkError,
  NetworkEventHandler,
  RemoteContent,
  RemoteMessage,
  RemoteProfile,
} from "../network/connector";
import { BridgeStore, OutboundItem, PortalRow } from "../store";
import { KeyedQueue } from "./keyed-queue";
import { MatrixEvent, MatrixPort } from "./matrix-port";

const log = getLogger("core");

/** A user-facing refusal (bot replies, provisioning errors). */
export class BridgeUserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BridgeUserError";
  }
}

export interface CoreOptions {
  /** Whether a new Matrix user starts with Third-Party Chats on. */
  thirdPartyDefault: boolean;
  /** Delay before retrying a send the network could not take (ms); doubles up to maxRetryDelayMs. */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
}

interface QueuedPayload {
  content: ReturnType<typeof matrixToRemote>;
  ts: number;
}

/**
 * The bridge core: portals, conversion and the durable queues. It talks to Matrix through
 * MatrixPort and to the network through NetworkConnector, and knows neither's wire format.
 */
export class BridgeCore implements NetworkEventHandler {
  private readonly inboundQueue = new KeyedQueue();
  private readonly outboundQueue = new KeyedQueue();
  private readonly portalLocks = new KeyedQueue();
  private stopping = false;
  private connection: ConnectionState = { state: "connecting" };

  constructor(
    readonly store: BridgeStore,
    private readonly matrix: MatrixPort,
    readonly network: NetworkConnector,
    private readonly opts: CoreOptions,
  ) {}

  /** Resumes every outbound queue left non-empty by the previous run. */
  async start(): Promise<void> {
    for (const portalId of this.store.outbound.portalsWithPending()) this.drainOutbound(portalId);
  }

  stop(): void {
    this.stopping = true;
  }

  connectionState(): ConnectionState {
    return this.connection;
  }

  // ---- network → Matrix ------------------------------------------------------------------

  async onMessage(receiver: string, message: RemoteMessage): Promise<void> {
    if (this.store.outbound.inboundSeen(receiver, message.id)) return;
    const portal = await this.ensurePortal(receiver, message.chat);
    await this.inboundQueue.run(`portal:${portal.id}`, async () => {
      if (this.store.outbound.inboundSeen(receiver, message.id)) return;
      const ghost = await this.ghostFor(message.sender);
      const content = message.content.type === "media" ? await this.mediaToMatrix(receiver, ghost, message.content) : remoteToMatrix(message.content);
      const eventId = await this.matrix.send(ghost, portal.roomId!, content, {
        txnId: `in.${portal.id}.${message.id}`,
        ts: message.timestamp,
      });
      this.store.transaction(() => {
        this.store.messages.insert({ portalId: portal.id, remoteId: message.id, part: 0, eventId, sender: message.sender, timestamp: message.timestamp });
        this.store.outbound.markInboundSeen(receiver, message.id);
      });
      log.debug("bridged message to Matrix", { portal: portal.id, remoteId: message.id, eventId });
    });
  }

  /**
   * Received media → the content of its Matrix event: the file fetched from the network and
   * uploaded as the ghost, or, if that cannot be done, a notice naming the file and why.
   * Only a homeserver that is down (a retryable Matrix-side failure) makes it throw, so the
   * message is delivered again later.
   */
  private async mediaToMatrix(receiver: string, ghost: string, content: Extract<RemoteContent, { type: "media" }>): Promise<Record<string, unknown>> {
    const max = this.network.capabilities.maxMediaSize;
    const media = content.media;
    if (media.size !== undefined && media.size > max) return mediaFailureNotice(media, overLimitReason(media.size, max));
    if (content.source.from !== "network" || !this.network.downloadMedia) return mediaFailureNotice(media, "the network did not provide the file");
    let file: LocalMedia;
    try {
      file = await this.network.downloadMedia(receiver, content.source.ref, max);
    } catch (err) {
      if (!(err instanceof MediaError)) throw err;
      log.warn("could not fetch received media", { code: err.code, kind: media.kind });
      return mediaFailureNotice(media, err.reason);
    }
    try {
      return await this.matrix.mediaMessage(ghost, file, media, content.caption);
    } catch (err) {
      if (!(err instanceof MediaError) || err.retryable) throw err;
      log.warn("could not upload received media", { code: err.code, kind: media.kind });
      return mediaFailureNotice(media, err.reason);
    } finally {
      await file.release();
    }
  }

  async onProfile(profile: RemoteProfile): Promise<void> {
    const ghost = this.store.ghosts.get(profile.userId);
    // Ghosts nobody has met yet get their profile when they are first needed.
    if (!ghost?.registered) return;
    await this.matrix.ensureGhost(profile.userId, profile);
  }

  onConnectionState(state: ConnectionState): void {
    const was = this.connection.state;
    this.connection = state;
    if (state.state !== was) log.info(`network connection ${state.state}`, state.state === "disconnected" ? { reason: state.reason } : {});
  }

  async onIdentityChange(receiver: string, remoteUserId: string): Promise<void> {
    const chat = this.network.dmChat(receiver, remoteUserId);
    const portal = this.store.portals.byChat(chat.id, receiver);
    if (!portal?.roomId) return;
    const ghost = this.matrix.ghostMxid(remoteUserId);
    await this.matrix.notice(
      ghost,
      portal.roomId,
      `The security code of ${remoteUserId} changed, probably because they reinstalled WhatsApp or changed phones. Messages stay end-to-end encrypted.`,
    );
  }

  /** Finds or creates the portal (and its room) for a chat as seen by one Matrix user. */
  async ensurePortal(receiver: string, chat: ChatRef): Promise<PortalRow & { roomId: string }> {
    return this.portalLocks.run(`${chat.id}|${receiver}`, async () => {
      const portal = this.store.portals.getOrCreate(chat.id, receiver, chat.kind, chat.participants);
      if (portal.roomId) return portal as PortalRow & { roomId: string };
      if (chat.kind !== "dm") throw new BridgeUserError("group chats are not supported yet");
      await this.network.ensureUser(receiver, null);
      const ghost = await this.ghostFor(chat.participants[0]);
      const roomId = await this.matrix.createDm(ghost, receiver, null);
      this.store.portals.setRoom(portal.id, roomId);
      log.info("created portal room", { portal: portal.id, roomId });
      return { ...portal, roomId };
    });
  }

  private async ghostFor(remoteUserId: string): Promise<string> {
    const known = this.store.ghosts.get(remoteUserId);
    if (known?.registered && known.displayName) return known.mxid;
    const profile = await this.network.getProfile(remoteUserId).catch((err: Error) => {
      log.warn("could not fetch a remote profile", { remoteUserId, error: err.message });
      return null;
    });
    return this.matrix.ensureGhost(remoteUserId, profile);
  }

  // ---- Matrix → network ------------------------------------------------------------------

  /** A message event in some room; returns false when the room is not a portal. */
  async onMatrixMessage(event: MatrixEvent): Promise<boolean> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    await this.acceptMatrixMessage(portal, event);
    return true;
  }

  private async acceptMatrixMessage(portal: PortalRow, event: MatrixEvent): Promise<void> {
    if (event.sender !== portal.receiver) {
      log.debug("ignoring a message from someone who is not the portal's user", { portal: portal.id, sender: event.sender });
      return;
    }
    const content = matrixToRemote(event.content);
    if ("unbridgeable" in content) {
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      await this.matrix.notice(this.portalGhost(portal), event.room_id, `Your message was not sent: ${content.reason}.`, `notice.${event.event_id}`);
      return;
    }
    const max = this.network.capabilities.maxMediaSize;
    if (content.type === "media" && content.media.size !== undefined && content.media.size > max) {
      // Refused before anything is downloaded.
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      await this.matrix.notice(this.portalGhost(portal), event.room_id, notSentText(content.media, overLimitReason(content.media.size, max)), `notice.${event.event_id}`);
      return;
    }
    const payload: QueuedPayload = { content, ts: event.origin_server_ts };
    if (this.store.outbound.enqueue(portal.id, event.event_id, event.sender, payload)) void this.drainOutbound(portal.id);
  }

  private portalGhost(portal: PortalRow): string {
    return this.matrix.ghostMxid(this.store.portals.participants(portal.id)[0]);
  }

  private drainOutbound(portalId: number): Promise<void> {
    return this.outboundQueue.run(`portal:${portalId}`, async () => {
      for (const item of this.store.outbound.pending(portalId)) {
        if (this.stopping) return;
        await this.sendOne(portalId, item);
      }
    });
  }

  private async sendOne(portalId: number, item: OutboundItem): Promise<void> {
    const portal = this.store.portals.get(portalId);
    if (!portal) return this.store.outbound.remove(item.seq);
    const payload = JSON.parse(item.payload) as QueuedPayload;
    if ("unbridgeable" in payload.content) return this.store.outbound.remove(item.seq);
    const chat: ChatRef = { id: portal.remoteChatId, kind: portal.kind, participants: this.store.portals.participants(portal.id) };
    // Media is fetched from the homeserver at most once for all attempts, and deleted after.
    const media: { local?: LocalMedia } = {};
    try {
      await this.sendWithRetries(portal, chat, item, payload as { content: RemoteContent; ts: number }, media);
    } finally {
      await media.local?.release();
    }
  }

  /** Queued media still on the homeserver → a local file the connector can send. */
  private async withLocalMedia(content: RemoteContent, media: { local?: LocalMedia }): Promise<RemoteContent> {
    if (content.type !== "media" || content.source.from !== "matrix") return content;
    media.local ??= await this.matrix.downloadMedia(content.source.mxc, this.network.capabilities.maxMediaSize);
    return { ...content, source: { from: "file", path: media.local.path, size: media.local.size } };
  }

  private async sendWithRetries(portal: PortalRow, chat: ChatRef, item: OutboundItem, payload: { content: RemoteContent; ts: number }, media: { local?: LocalMedia }): Promise<void> {
    const portalId = portal.id;
    let delay = this.opts.retryDelayMs ?? 1000;
    for (;;) {
      try {
        this.store.outbound.recordAttempt(item.seq);
        await this.network.ensureUser(portal.receiver, null);
        const content = await this.withLocalMedia(payload.content, media);
        const result = await this.network.sendMessage(portal.receiver, chat, { txnId: item.eventId, content, timestamp: payload.ts });
        this.store.transaction(() => {
          this.store.messages.insert({ portalId, remoteId: result.remoteId, part: 0, eventId: item.eventId, sender: portal.receiver, timestamp: result.timestamp });
          this.store.outbound.remove(item.seq);
        });
        log.debug("bridged message to the network", { portal: portalId, eventId: item.eventId, remoteId: result.remoteId });
        return;
      } catch (err) {
        if (err instanceof MediaError && !err.retryable && payload.content.type === "media") {
          this.store.outbound.remove(item.seq);
          log.warn("media could not be sent", { portal: portalId, code: err.code });
          if (portal.roomId) await this.matrix.notice(this.portalGhost(portal), portal.roomId, notSentText(payload.content.media, err.reason), `fail.${item.eventId}`).catch(() => undefined);
          return;
        }
        if (err instanceof NetworkError && !err.retryable) {
          this.store.outbound.remove(item.seq);
          log.warn("the network refused a message", { portal: portalId, code: err.code });
          if (portal.roomId) await this.matrix.notice(this.portalGhost(portal), portal.roomId, `Your message was not delivered: ${err.message}`, `fail.${item.eventId}`).catch(() => undefined);
          return;
        }
        if (this.stopping) return;
        log.debug("send failed, will retry", { portal: portalId, error: (err as Error).message, inMs: delay });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, this.opts.maxRetryDelayMs ?? 30_000);
      }
    }
  }

  // ---- Matrix-side chat creation ---------------------------------------------------------

  /**
   * A Matrix user invited a ghost to a room ("Start chat" in Element). The room becomes the
   * portal unless the chat already has one: then what was said here is forwarded there and the
   * ghost points the user to it and leaves, so there is only ever one room per chat.
   */
  async onGhostInvited(roomId: string, inviter: string, ghostMxid: string, isDirect: boolean): Promise<void> {
    const remoteId = this.matrix.remoteIdOfGhost(ghostMxid);
    if (!remoteId) return;
    this.store.users.getOrCreate(inviter, { thirdPartyEnabled: this.opts.thirdPartyDefault });
    const reject = async (reason: string) => {
      await this.matrix.join(ghostMxid, roomId);
      await this.matrix.notice(ghostMxid, roomId, reason);
      await this.matrix.leave(ghostMxid, roomId, reason);
    };
    if (!isDirect) return reject("Only direct chats can be bridged for now; start a direct chat with this contact instead.");
    await this.network.ensureUser(inviter, null);
    const profile = await this.network.getProfile(remoteId);
    if (!profile) return reject(`${remoteId} is not reachable through Third-Party Chats.`);
    const chat = this.network.dmChat(inviter, remoteId);
    await this.portalLocks.run(`${chat.id}|${inviter}`, async () => {
      await this.matrix.ensureGhost(remoteId, profile);
      await this.matrix.join(ghostMxid, roomId);
      const existing = this.store.portals.byChat(chat.id, inviter);
      if (existing?.roomId && existing.roomId !== roomId) {
        const forwarded = await this.adoptEarlyMessages(roomId, existing, ghostMxid);
        await this.matrix.notice(
          ghostMxid,
          roomId,
          `You already have a chat with ${profile.displayName ?? remoteId}: ${this.matrix.roomLink(existing.roomId)} — please continue there.` +
            (forwarded ? ` ${forwarded} message(s) sent here were delivered there.` : ""),
        );
        await this.matrix.leave(ghostMxid, roomId, "this chat already has a room");
        return;
      }
      const portal = this.store.portals.getOrCreate(chat.id, inviter, "dm", chat.participants);
      this.store.portals.setRoom(portal.id, roomId);
      log.info("adopted a user-created room as portal", { portal: portal.id, roomId });
      await this.adoptEarlyMessages(roomId, portal, ghostMxid);
    });
  }

  /** Bridges messages the user sent in a room before the ghost joined it (the homeserver did not push those to us). */
  private async adoptEarlyMessages(roomId: string, portal: PortalRow, ghostMxid: string): Promise<number> {
    const events = await this.matrix.recentEvents(ghostMxid, roomId, 50);
    let count = 0;
    for (const event of events) {
      if (event.type !== "m.room.message" || event.sender !== portal.receiver) continue;
      if (this.store.outbound.wasProcessed(event.event_id)) continue;
      await this.acceptMatrixMessage(portal, event);
      count++;
    }
    return count;
  }

  /**
   * The portal's user left its room: the portal is closed (the ghost leaves, the mapping is
   * deleted). A later message from the remote side opens a fresh room and invites them again.
   */
  async onUserLeft(roomId: string, userId: string): Promise<void> {
    const portal = this.store.portals.byRoom(roomId);
    if (!portal || portal.receiver !== userId) return;
    const ghost = this.portalGhost(portal);
    this.store.portals.delete(portal.id);
    log.info("portal closed because its user left", { portal: portal.id, roomId });
    await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
  }

  /** A Matrix user talked to the bridge: remember them and make them reachable on the network. */
  async welcomeUser(userId: string): Promise<void> {
    this.store.users.getOrCreate(userId, { thirdPartyEnabled: this.opts.thirdPartyDefault });
    await this.network.ensureUser(userId, null);
  }

  /** `start <phone>`: finds the WhatsApp user and returns the portal room (creating it and inviting the user). */
  async startChat(userId: string, phoneInput: string): Promise<{ roomId: string; name: string; created: boolean }> {
    const phone = normalizePhone(phoneInput);
    if (!phone) throw new BridgeUserError(`"${phoneInput}" is not a phone number; use the international format, e.g. +4915123456789`);
    this.store.users.getOrCreate(userId, { thirdPartyEnabled: this.opts.thirdPartyDefault });
    await this.network.ensureUser(userId, null);
    const profile = await this.network.resolveIdentifier(userId, phone);
    if (!profile) throw new BridgeUserError(`${phone} is not on WhatsApp or does not accept Third-Party Chats`);
    const chat = this.network.dmChat(userId, profile.userId);
    const existed = this.store.portals.byChat(chat.id, userId)?.roomId;
    await this.matrix.ensureGhost(profile.userId, profile);
    const portal = await this.ensurePortal(userId, chat);
    return { roomId: portal.roomId, name: profile.displayName ?? phone, created: !existed };
  }

  /** The user's chats, for `list`. */
  listChats(userId: string): { roomId: string; remoteUserId: string; name: string }[] {
    return this.store.portals
      .forReceiver(userId)
      .filter((p) => p.roomId)
      .map((p) => {
        const remoteUserId = this.store.portals.participants(p.id)[0];
        return { roomId: p.roomId!, remoteUserId, name: this.store.ghosts.get(remoteUserId)?.displayName ?? remoteUserId };
      });
  }
}
