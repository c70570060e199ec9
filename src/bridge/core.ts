import { matrixToRemote, remoteToMatrix } from "../convert/message-content";
import { normalizePhone } from "../convert/phone";
import { getLogger } from "../logging";
import {
  ChatRef,
  ConnectionState,
  NetworkConnector,
  NetworkError,
  NetworkEventHandler,
  RemoteContent,
  RemoteMessage,
  RemoteProfile,
} from "../network/connector";
import { BridgeStore, OutboundItem, PortalRow } from "../store";
import { KeyedQueue } from "./keyed-queue";
import { LinkHealth, LinkSnapshot } from "./link-health";
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
  private readonly networkLink = new LinkHealth("network gateway", log, "messages for it wait in the outbound queue, the gateway keeps those for Matrix");

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
      const content = remoteToMatrix(message.content);
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

  async onProfile(profile: RemoteProfile): Promise<void> {
    const ghost = this.store.ghosts.get(profile.userId);
    // Ghosts nobody has met yet get their profile when they are first needed.
    if (!ghost?.registered) return;
    await this.matrix.ensureGhost(profile.userId, profile);
  }

  onConnectionState(state: ConnectionState): void {
    this.connection = state;
    if (this.stopping) return;
    // Reconnect attempts flip between connecting and disconnected: one outage, logged once by the link.
    if (state.state === "connected") this.networkLink.up();
    else if (state.state === "disconnected") this.networkLink.down(state.reason);
  }

  /** The links the bridge depends on and its queues, for /health and the metrics. */
  health(): { homeserver?: LinkSnapshot; network: LinkSnapshot; outboundQueue: number } {
    const homeserver = this.matrix.health?.();
    return { ...(homeserver ? { homeserver } : {}), network: this.networkLink.snapshot(), outboundQueue: this.store.outbound.depth() };
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
      const orphan = await this.orphanDm(ghost, receiver);
      const roomId = orphan ?? (await this.matrix.createDm(ghost, receiver, null));
      this.store.portals.setRoom(portal.id, roomId);
      log.info(orphan ? "reused the portal room created before a restart" : "created portal room", { portal: portal.id, roomId });
      return { ...portal, roomId };
    });
  }

  /**
   * A DM of the ghost with the receiver that no portal maps: the room a run that died between
   * creating it and recording it left behind. Reusing it keeps the chat to one room.
   */
  private async orphanDm(ghost: string, receiver: string): Promise<string | null> {
    for (const roomId of await this.matrix.joinedRooms(ghost)) {
      if (this.store.portals.byRoom(roomId)) continue;
      const members = await this.matrix.members(ghost, roomId);
      if (members.length === 2 && members.includes(receiver)) return roomId;
    }
    return null;
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
    const refusal = "unbridgeable" in content ? content.reason : this.overLimit(content);
    if (refusal) {
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      await this.matrix.notice(this.portalGhost(portal), event.room_id, `Your message was not sent: ${refusal}.`, `notice.${event.event_id}`, event.event_id);
      return;
    }
    const payload: QueuedPayload = { content, ts: event.origin_server_ts };
    if (this.store.outbound.enqueue(portal.id, event.event_id, event.sender, payload)) void this.drainOutbound(portal.id);
  }

  /** Why the network would refuse this content for its size, or null. */
  private overLimit(content: RemoteContent): string | null {
    if (content.type !== "text") return null;
    const bytes = Buffer.byteLength(content.markdown, "utf8");
    const max = this.network.capabilities.maxTextLength;
    return bytes > max ? `it is too long for the network (${bytes} bytes of text, at most ${max})` : null;
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
    let delay = this.opts.retryDelayMs ?? 1000;
    if (this.networkLink.isDown) this.networkLink.noteHeld();
    for (;;) {
      try {
        this.store.outbound.recordAttempt(item.seq);
        await this.network.ensureUser(portal.receiver, null);
        const result = await this.network.sendMessage(portal.receiver, chat, { txnId: item.eventId, content: payload.content, timestamp: payload.ts });
        this.store.transaction(() => {
          this.store.messages.insert({ portalId, remoteId: result.remoteId, part: 0, eventId: item.eventId, sender: portal.receiver, timestamp: result.timestamp });
          this.store.outbound.remove(item.seq);
        });
        log.debug("bridged message to the network", { portal: portalId, eventId: item.eventId, remoteId: result.remoteId });
        return;
      } catch (err) {
        if (err instanceof NetworkError && !err.retryable) {
          this.store.outbound.remove(item.seq);
          log.warn("the network refused a message", { portal: portalId, code: err.code });
          if (portal.roomId) await this.matrix.notice(this.portalGhost(portal), portal.roomId, `Your message was not delivered: ${err.message}`, `fail.${item.eventId}`, item.eventId).catch(() => undefined);
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
    // Stable transaction ids: a replayed invite (after a crash) does not repeat the notices.
    const txn = (what: string) => `invite.${what}.${ghostMxid}`;
    const reject = async (reason: string) => {
      await this.matrix.join(ghostMxid, roomId);
      await this.matrix.notice(ghostMxid, roomId, reason, txn("refused"));
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
          txn("elsewhere"),
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
