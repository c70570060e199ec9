import { matrixToRemote, remoteToMatrix } from "../convert/message-content";
import { normalizePhone } from "../convert/phone";
import { getLogger } from "../logging";
import {
  ChatRef,
  ConnectionState,
  NetworkConnector,
  NetworkError,
  NetworkEventHandler,
  RemoteMessage,
  RemoteProfile,
} from "../network/connector";
import { BridgeMetrics } from "../metrics/metrics";
import { BridgeStore, MatrixUserRow, OutboundItem, PortalRow } from "../store";
import { unbridgeableEvent, unappliedExpiry } from "../convert/unbridgeable";
import { InboxManager } from "./inbox";
import { KeyedQueue } from "./keyed-queue";
import { MatrixEvent, MatrixPort } from "./matrix-port";
import { offNotice, refusedNotice } from "./opt-in";
import { Permissions } from "./permissions";

const log = getLogger("core");

/** What kind of refusal a BridgeUserError is (the provisioning API maps it to an HTTP status). */
export type RefusalKind = "invalid" | "not_found" | "forbidden" | "conflict" | "unavailable";

/** A user-facing refusal (bot replies, provisioning errors). */
export class BridgeUserError extends Error {
  constructor(
    message: string,
    readonly kind: RefusalKind = "invalid",
  ) {
    super(message);
    this.name = "BridgeUserError";
  }
}

export interface CoreOptions {
  /** Whether a new Matrix user starts with Third-Party Chats on. */
  thirdPartyDefault: boolean;
  /** Who may use the bridge (config bridge.permissions). */
  permissions: Permissions;
  metrics?: BridgeMetrics;
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
  readonly metrics: BridgeMetrics;
  readonly inbox: InboxManager;
  readonly permissions: Permissions;

  constructor(
    readonly store: BridgeStore,
    private readonly matrix: MatrixPort,
    readonly network: NetworkConnector,
    private readonly opts: CoreOptions,
  ) {
    this.metrics = opts.metrics ?? new BridgeMetrics();
    this.inbox = new InboxManager(store, matrix);
    this.permissions = opts.permissions;
  }

  /** Resumes every outbound queue left non-empty by the previous run. */
  async start(): Promise<void> {
    // Users whose permission was withdrawn in the config become unreachable until they may use the bridge again.
    for (const user of this.store.users.all()) {
      if (this.permissions.mayUse(user.mxid) || !user.thirdPartyEnabled) continue;
      this.store.users.setThirdPartyEnabled(user.mxid, false);
      void this.network.setThirdPartyChats(user.mxid, false).catch((err: Error) => log.warn("could not turn a withdrawn user off on the network", { user: user.mxid, error: err.message }));
      log.info("user no longer permitted: Third-Party Chats turned off", { user: user.mxid });
    }
    for (const portalId of this.store.outbound.portalsWithPending()) this.drainOutbound(portalId);
  }

  /** Chats with network → Matrix work in progress (for metrics). */
  inboundChatsBusy(): number {
    return this.inboundQueue.size;
  }

  /** Creates the user's row on first contact; refuses users the config does not permit (nothing is created for them). */
  admitUser(mxid: string): MatrixUserRow {
    if (!this.permissions.mayUse(mxid)) throw new BridgeUserError("you are not allowed to use this bridge; ask its administrator if you think you should be", "forbidden");
    return this.store.users.getOrCreate(mxid, { thirdPartyEnabled: this.opts.thirdPartyDefault });
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
      let content = remoteToMatrix(message.content);
      if (message.content.type === "unsupported") {
        // The description reads as the rest of a sentence whose subject is the sender.
        const name = this.store.ghosts.get(message.sender)?.displayName ?? message.sender;
        content = { msgtype: "m.notice", body: `${name} ${message.content.description}` };
        this.metrics.dropped("to_matrix", message.content.what);
      } else {
        this.metrics.bridged("to_matrix", message.content.type);
      }
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
    const was = this.connection.state;
    this.connection = state;
    if (state.state !== was) log.info(`network connection ${state.state}`, state.state === "disconnected" ? { reason: state.reason } : {});
  }

  /** A WhatsApp user was turned away because the receiver has the chats off: tell the receiver once per contact. */
  async onRefused(receiver: string, remoteUserId: string, timestamp: number): Promise<void> {
    this.metrics.dropped("to_matrix", "third_party_chats_off");
    const user = this.store.users.get(receiver);
    if (!user) return;
    const attempts = this.store.users.recordRefused(receiver, remoteUserId, timestamp);
    log.info("a WhatsApp user was refused because Third-Party Chats are off", { user: receiver, attempts });
    if (attempts > 1) return;
    const first = this.store.users.markExplained(receiver);
    const name = this.store.ghosts.get(remoteUserId)?.displayName ?? remoteUserId;
    await this.tellUser(receiver, refusedNotice(name === remoteUserId ? remoteUserId : `${name} (${remoteUserId})`, first), `refused.${remoteUserId}.${timestamp}`);
  }

  onDropped(receiver: string, what: string): void {
    this.metrics.dropped("to_matrix", what);
    log.debug("dropped something third-party chats do not carry", { user: receiver, what });
  }

  /** A notice in the user's DM with the bot, which the bot opens if there is none yet. */
  async tellUser(mxid: string, markdown: string, txnId: string): Promise<void> {
    let roomId = this.store.users.get(mxid)?.managementRoomId;
    if (!roomId) {
      roomId = await this.matrix.createDm(this.matrix.botMxid, mxid, null);
      this.store.users.setManagementRoom(mxid, roomId);
      log.info("opened a management room for a user", { user: mxid, room: roomId });
    }
    await this.matrix.botNotice(roomId, markdown, txnId);
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
      await this.listInInbox({ ...portal, roomId });
      return { ...portal, roomId };
    });
  }

  /** A Space problem must not stop a chat from working: it is logged, and `inbox dedicated` repairs it. */
  private async listInInbox(portal: PortalRow & { roomId: string }): Promise<void> {
    await this.inbox.portalAdded(portal).catch((err: Error) => log.warn("could not add a portal to the user's space", { portal: portal.id, error: err.message }));
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
    if (await this.refuseWhileOff(portal, event)) return;
    const content = matrixToRemote(event.content);
    if ("unbridgeable" in content) {
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      this.metrics.dropped("to_network", "unsupported_message");
      await this.matrix.notice(this.portalGhost(portal), event.room_id, `Your message was not sent: ${content.reason}.`, `notice.${event.event_id}`);
      return;
    }
    const payload: QueuedPayload = { content, ts: event.origin_server_ts };
    if (this.store.outbound.enqueue(portal.id, event.event_id, event.sender, payload)) {
      void this.drainOutbound(portal.id);
      const expiry = unappliedExpiry(event.content);
      if (expiry) {
        this.metrics.dropped("to_network", "message_expiry");
        await this.matrix.notice(this.portalGhost(portal), event.room_id, expiry, `expiry.${event.event_id}`);
      }
    }
  }

  /**
   * Nothing the user writes while not permitted or with Third-Party Chats off is sent, now or
   * later: it is marked handled (never queued) and the user is told why. Returns true if refused.
   */
  private async refuseWhileOff(portal: PortalRow, event: MatrixEvent): Promise<boolean> {
    const permitted = this.permissions.mayUse(portal.receiver);
    if (permitted && this.store.users.get(portal.receiver)?.thirdPartyEnabled) return false;
    if (!this.store.outbound.markProcessed(event.event_id)) return true;
    this.metrics.dropped("to_network", permitted ? "third_party_chats_off" : "not_permitted");
    const text = permitted ? offNotice(this.matrix.botMxid) : "Not sent: you are no longer allowed to use this bridge.";
    await this.matrix.notice(this.portalGhost(portal), event.room_id, text, `off.${event.event_id}`);
    return true;
  }

  /**
   * Any other event of the portal's user in a portal: what a user would expect to reach the other
   * side but the network cannot carry (stickers, polls, room name changes, timers, ...) gets a
   * notice saying so. Returns false when the room is not a portal.
   */
  async onMatrixEvent(event: MatrixEvent): Promise<boolean> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    if (event.sender !== portal.receiver) return true;
    const refusal = unbridgeableEvent(event);
    if (!refusal) return true;
    if (!this.store.outbound.markProcessed(event.event_id)) return true;
    this.metrics.dropped("to_network", refusal.kind);
    log.debug("not bridged: the network cannot carry it", { portal: portal.id, type: event.type, kind: refusal.kind });
    await this.matrix.notice(this.portalGhost(portal), event.room_id, refusal.notice, `unbridgeable.${event.event_id}`);
    return true;
  }

  portalGhost(portal: PortalRow): string {
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
    if (!this.store.users.get(portal.receiver)?.thirdPartyEnabled || !this.permissions.mayUse(portal.receiver)) {
      // Turned off while this waited for the network: it is not delivered later.
      this.store.outbound.remove(item.seq);
      this.metrics.dropped("to_network", "third_party_chats_off");
      if (portal.roomId) {
        const text = "Not delivered: you turned Third-Party Chats off before the network took this message, so it will not be sent.";
        await this.matrix.reportFailure(this.portalGhost(portal), portal.roomId, item.eventId, text).catch(() => undefined);
      }
      return;
    }
    const chat: ChatRef = { id: portal.remoteChatId, kind: portal.kind, participants: this.store.portals.participants(portal.id) };
    let delay = this.opts.retryDelayMs ?? 1000;
    for (;;) {
      const attemptStarted = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - attemptStarted) / 1e9;
      try {
        this.store.outbound.recordAttempt(item.seq);
        await this.network.ensureUser(portal.receiver, null);
        const result = await this.network.sendMessage(portal.receiver, chat, { txnId: item.eventId, content: payload.content, timestamp: payload.ts });
        this.metrics.networkSendSeconds.observe({ outcome: "accepted" }, seconds());
        this.metrics.bridged("to_network", payload.content.type);
        this.store.transaction(() => {
          this.store.messages.insert({ portalId, remoteId: result.remoteId, part: 0, eventId: item.eventId, sender: portal.receiver, timestamp: result.timestamp });
          this.store.outbound.remove(item.seq);
        });
        log.debug("bridged message to the network", { portal: portalId, eventId: item.eventId, remoteId: result.remoteId });
        return;
      } catch (err) {
        if (err instanceof NetworkError && !err.retryable) {
          this.metrics.networkSendSeconds.observe({ outcome: "refused" }, seconds());
          this.metrics.failed("to_network", err.code);
          this.store.outbound.remove(item.seq);
          log.warn("the network refused a message", { portal: portalId, code: err.code });
          if (portal.roomId) await this.matrix.reportFailure(this.portalGhost(portal), portal.roomId, item.eventId, `Your message was not delivered: ${err.message}.`).catch(() => undefined);
          return;
        }
        this.metrics.networkSendSeconds.observe({ outcome: "retry" }, seconds());
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
    const reject = async (reason: string) => {
      await this.matrix.join(ghostMxid, roomId);
      await this.matrix.notice(ghostMxid, roomId, reason);
      await this.matrix.leave(ghostMxid, roomId, reason);
    };
    if (!this.permissions.mayUse(inviter)) {
      log.info("refused a chat from a user who may not use the bridge", { user: inviter });
      return reject("Sorry, you are not allowed to use this bridge, so this chat cannot reach WhatsApp. Ask the bridge's administrator if you think you should be.");
    }
    this.admitUser(inviter);
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
      await this.listInInbox({ ...portal, roomId });
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
    await this.inbox.portalRemoved(portal).catch((err: Error) => log.warn("could not remove a portal from the user's space", { portal: portal.id, error: err.message }));
    this.store.portals.delete(portal.id);
    log.info("portal closed because its user left", { portal: portal.id, roomId });
    await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
  }

  /**
   * A Matrix user talked to the bridge: remember them and make them known on the network (with
   * their setting: while off, WhatsApp users are refused with a reason). Returns whether this
   * is the user's first contact (they get the one-time explanation).
   */
  async welcomeUser(userId: string): Promise<{ firstContact: boolean; enabled: boolean }> {
    const user = this.admitUser(userId);
    await this.network.ensureUser(userId, null);
    return { firstContact: this.store.users.markExplained(userId), enabled: user.thirdPartyEnabled };
  }

  /** `start <phone>`: finds the WhatsApp user and returns the portal room (creating it and inviting the user). */
  async startChat(userId: string, phoneInput: string): Promise<{ roomId: string; name: string; created: boolean }> {
    const phone = normalizePhone(phoneInput);
    if (!phone) throw new BridgeUserError(`"${phoneInput}" is not a phone number; use the international format, e.g. +4915123456789`);
    const user = this.admitUser(userId);
    if (!user.thirdPartyEnabled) throw new BridgeUserError("your Third-Party Chats are off; say `enable` first", "conflict");
    await this.network.ensureUser(userId, null);
    const profile = await this.network.resolveIdentifier(userId, phone);
    if (!profile) throw new BridgeUserError(`${phone} is not on WhatsApp or does not accept Third-Party Chats`, "not_found");
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
