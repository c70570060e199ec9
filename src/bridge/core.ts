import { createHash } from "node:crypto";
import { MESSAGE_STATUS_EVENT_TYPE, MessageStatusInfo, MessageStatusReason, messageStatusContent } from "../convert/message-status";
import { mediaFailureNotice, notSentText, overLimitReason } from "../convert/media";
import { matrixToRemote, remoteToMatrix } from "../convert/message-content";
import { normalizePhone } from "../convert/phone";
import { asReply, editContent, reactionContent, redactedEventId, relationOf } from "../convert/relations";
import { getLogger } from "../logging";
import {
  ChatRef,
  ConnectionState,
  DeliveryReceipt,
  LocalMedia,
  MediaError,
  NetworkConnector,
  NetworkError,
  NetworkEventHandler,
  RemoteChange,
  RemoteContent,
  RemoteMessage,
  RemoteProfile,
  RemoteReadReceipt,
  RemoteTyping,
} from "../network/connector";
import { BridgeMetrics } from "../metrics/metrics";
import { BridgeStore, InboundItem, InboundKind, MatrixUserRow, MessageRow, OutboundItem, PortalRow } from "../store";
import { unbridgeableEvent, unappliedExpiry } from "../convert/unbridgeable";
import { InboxManager } from "./inbox";
import { KeyedQueue } from "../util/keyed-queue";
import { LinkHealth, LinkSnapshot } from "./link-health";
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
  /** Whether com.beeper.message_send_status events are posted at all (config bridge.message_status_events; default true). */
  messageStatusEvents?: boolean;
  /** How long a "sent" status waits for the delivery receipt (config bridge.sent_status_delay_ms); 0: at once. */
  sentStatusDelayMs?: number;
  /** Downloads of a queued file the homeserver may fail before the file is given up (config bridge.media_download_attempts; default 10). */
  mediaDownloadAttempts?: number;
}

/** A Matrix event the bridge will not send on: `reason` for the status event, the message for the user. */
export class EventRefusal extends Error {
  constructor(
    readonly reason: MessageStatusReason,
    message: string,
  ) {
    super(message);
    this.name = "EventRefusal";
  }
}

/**
 * What the durable outbound queue holds per Matrix event (JSON). Targets are Matrix event ids,
 * resolved to network ids only when sent: a target queued just before is mapped by then.
 */
type QueuedPayload =
  | { kind?: "message"; content: ReturnType<typeof matrixToRemote>; ts: number; replyTo?: string }
  | { kind: "edit"; target: string; content: RemoteContent; ts: number }
  | { kind: "reaction"; target: string; key: string; ts: number }
  | { kind: "redaction"; target: string; ts: number };

/** A queued event's file, fetched from the homeserver at most once for all its send attempts. */
interface QueuedMedia {
  local?: LocalMedia;
  /** Downloads the homeserver failed (an outage is waited out in the download, and not counted). */
  failedDownloads?: number;
}

/** How a notice names each kind of queued event. */
const EVENT_NOUN: Record<NonNullable<QueuedPayload["kind"]>, string> = { message: "message", edit: "edit", reaction: "reaction", redaction: "deletion" };

/** Typing "on" is repeated this often while the Matrix user types (the protocol lets it expire after about 15 s). */
const TYPING_REPEAT_MS = 10_000;
/** ...but never longer than this, should the homeserver never say the user stopped. */
const TYPING_MAX_MS = 120_000;
/** How long a ghost shows as typing after one notice (docs/protocol.md §10). */
const REMOTE_TYPING_TIMEOUT_MS = 15_000;
/** Messages named in one read receipt at most (the connector splits them as its network needs). */
const MAX_READ_BATCH = 1024;

/** "15 minutes", "1 hour", "30 seconds": a limit as a notice states it. */
export function describeDuration(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  for (const [size, name] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${name}${ms / size === 1 ? "" : "s"}`;
  }
  return `${Math.round(ms / 1000)} seconds`;
}

/**
 * The bridge core: portals, conversion and the durable queues. It talks to Matrix through
 * MatrixPort and to the network through NetworkConnector, and knows neither's wire format.
 */
export class BridgeCore implements NetworkEventHandler {
  private readonly inboundQueue = new KeyedQueue();
  private readonly outboundQueue = new KeyedQueue();
  private readonly portalLocks = new KeyedQueue();
  private readonly receiptQueue = new KeyedQueue();
  /** Portals with an inbound run queued that has not started yet. */
  private readonly inboundScheduled = new Set<number>();
  /** Portals whose user is typing now, with the timer that repeats "on". */
  private readonly typingTimers = new Map<number, NodeJS.Timeout>();
  /** "Sent" statuses being posted, so a delivery receipt right behind cannot overtake its own "sent". */
  private readonly sentStatuses = new Map<string, Promise<void>>();
  /** "Sent" statuses waiting a moment for the delivery receipt (see postSentStatus). */
  private readonly heldSentStatuses = new Map<string, { timer: NodeJS.Timeout; post: () => Promise<void> }>();
  private stopping = false;
  private connection: ConnectionState = { state: "connecting" };
  private readonly networkLink = new LinkHealth("network gateway", log, "messages for it wait in the outbound queue, the gateway keeps those for Matrix");
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
    // Network events acknowledged before a stop or crash and not yet on Matrix.
    for (const portalId of this.store.inbound.portalsWithPending()) void this.drainInbound(portalId);
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
    // Held "sent" statuses go out now rather than never.
    for (const { timer, post } of this.heldSentStatuses.values()) {
      clearTimeout(timer);
      void post();
    }
    this.heldSentStatuses.clear();
    for (const timer of this.typingTimers.values()) clearInterval(timer);
    this.typingTimers.clear();
  }

  connectionState(): ConnectionState {
    return this.connection;
  }

  // ---- network → Matrix ------------------------------------------------------------------

  /**
   * A message from the network: committed to the portal's durable inbound queue and answered,
   * so the network acknowledges it and moves on while the portal sends to Matrix on its own.
   */
  async onMessage(receiver: string, message: RemoteMessage): Promise<void> {
    if (this.store.inbound.inboundSeen(receiver, message.id)) return;
    const portal = await this.ensurePortal(receiver, message.chat);
    this.queueInbound(portal.id, receiver, message.id, "message", message);
  }

  private queueInbound(portalId: number, receiver: string, remoteId: string, kind: InboundKind, payload: unknown): void {
    this.store.inbound.enqueue(portalId, receiver, remoteId, kind, payload);
    void this.drainInbound(portalId);
  }

  /** Queues an event behind the messages of a chat that has a room; false when it has none (nothing of it was shown). */
  private queueInChat(receiver: string, chat: ChatRef, remoteId: string, kind: InboundKind, payload: unknown): boolean {
    const portal = this.store.portals.byChat(chat.id, receiver);
    if (!portal?.roomId) return false;
    this.queueInbound(portal.id, receiver, remoteId, kind, payload);
    return true;
  }

  /** Runs the portal's inbound queue unless a run is already waiting to start (it will see the new event). */
  private drainInbound(portalId: number): Promise<void> {
    if (this.inboundScheduled.has(portalId)) return Promise.resolve();
    this.inboundScheduled.add(portalId);
    return this.inboundQueue.run(`portal:${portalId}`, async () => {
      this.inboundScheduled.delete(portalId);
      let delay = this.opts.retryDelayMs ?? 1000;
      while (!this.stopping) {
        const item = this.store.inbound.next(portalId);
        if (!item) return;
        try {
          await this.bridgeInbound(item);
          delay = this.opts.retryDelayMs ?? 1000;
        } catch (err) {
          // Closed meanwhile (its user left or was forgotten): what was waiting moved or went with it.
          if (this.stopping || !this.store.portals.get(portalId)) return;
          // Failures only: counting every attempt would add a write per message to the hot path.
          this.store.inbound.recordAttempt(item.seq);
          // Only Matrix-side trouble (the homeserver down or refusing) gets here: the event waits, the chat behind it too.
          log.warn("could not bridge to Matrix, will retry", { portal: portalId, kind: item.kind, attempts: item.attempts + 1, error: (err as Error).message, inMs: delay });
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, this.opts.maxRetryDelayMs ?? 30_000);
        }
      }
    });
  }

  private async bridgeInbound(item: InboundItem): Promise<void> {
    const portal = this.store.portals.get(item.portalId);
    switch (item.kind) {
      case "message": {
        if (!portal || this.store.inbound.inboundSeen(item.receiver, item.remoteId)) return this.store.inbound.remove(item.seq);
        const message = JSON.parse(item.payload) as RemoteMessage;
        if (!this.optedIn(item.receiver)) {
          // Turned off while it waited: nothing reaches the user while off; they learn who tried, as for a refusal.
          this.finishInbound(item);
          log.info("dropped a waiting message: the user turned Third-Party Chats off", { portal: item.portalId });
          await this.onRefused(item.receiver, message.sender, message.timestamp).catch((err: Error) => {
            log.warn("could not tell a user about a dropped message", { error: err.message });
          });
          return;
        }
        // A portal reopened for messages that waited when its user left gets its room here.
        const open = portal.roomId ? portal : await this.ensurePortal(item.receiver, message.chat);
        return this.bridgeMessage(open, item, message);
      }
      case "change":
        if (!portal?.roomId || this.store.inbound.inboundSeen(item.receiver, item.remoteId)) return this.store.inbound.remove(item.seq);
        if (!this.optedIn(item.receiver)) return this.finishInbound(item);
        return this.bridgeChange(portal, item, JSON.parse(item.payload) as RemoteChange);
      case "read":
      case "delivered":
        // Receipts are not remembered once shown: a repeat shows the same thing again (the same transaction id).
        if (portal?.roomId && this.optedIn(item.receiver)) {
          if (item.kind === "read") await this.bridgeReadReceipt(portal, item.receiver, JSON.parse(item.payload) as RemoteReadReceipt);
          else await this.bridgeDelivered(portal, JSON.parse(item.payload) as DeliveryReceipt);
        }
        return this.store.inbound.remove(item.seq);
    }
  }

  /** Records the event as bridged and takes it off the queue, with whatever else `effect` stores, in one transaction. */
  private finishInbound(item: InboundItem, effect?: () => void): void {
    this.store.transaction(() => {
      effect?.();
      this.store.inbound.markInboundSeen(item.receiver, item.remoteId);
      this.store.inbound.remove(item.seq);
    });
  }

  private async bridgeMessage(portal: PortalRow, item: InboundItem, message: RemoteMessage): Promise<void> {
    const receiver = item.receiver;
    const ghost = await this.ghostFor(message.sender);
    let content: Record<string, unknown>;
    if (message.content.type === "unsupported") {
      // The description reads as the rest of a sentence whose subject is the sender.
      const name = this.store.ghosts.get(message.sender)?.displayName ?? message.sender;
      content = { msgtype: "m.notice", body: `${name} ${message.content.description}` };
      this.metrics.dropped("to_matrix", message.content.what);
    } else if (message.content.type === "media") {
      content = await this.mediaToMatrix(receiver, ghost, message.content);
    } else {
      content = remoteToMatrix(message.content);
      this.metrics.bridged("to_matrix", message.content.type);
    }
    // A reply to a message this room never showed stays a plain message.
    const replied = message.replyTo === undefined ? undefined : this.store.messages.byRemoteId(portal.id, message.replyTo);
    if (replied) content = asReply(content, replied.eventId);
    const eventId = await this.matrix.send(ghost, portal.roomId!, content, {
      txnId: `in.${portal.id}.${message.id}`,
      ts: message.timestamp,
    });
    this.finishInbound(item, () =>
      this.store.messages.insert({ portalId: portal.id, remoteId: message.id, part: 0, eventId, sender: message.sender, timestamp: message.timestamp, replyTo: replied?.remoteId }),
    );
    log.debug("bridged message to Matrix", { portal: portal.id, remoteId: message.id, eventId });
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
    const failed = (code: string, reason: string) => {
      this.metrics.failed("to_matrix", code);
      return mediaFailureNotice(media, reason);
    };
    if (media.size !== undefined && media.size > max) return failed("too_large", overLimitReason(media.size, max));
    if (content.source.from !== "network" || !this.network.downloadMedia) return failed("no_file", "the network did not provide the file");
    let file: LocalMedia;
    try {
      file = await this.network.downloadMedia(receiver, content.source.ref, max);
    } catch (err) {
      if (!(err instanceof MediaError)) throw err;
      log.warn("could not fetch received media", { code: err.code, kind: media.kind });
      return failed(err.code, err.reason);
    }
    try {
      const message = await this.matrix.mediaMessage(ghost, file, media, content.caption);
      this.metrics.bridged("to_matrix", "media");
      return message;
    } catch (err) {
      if (!(err instanceof MediaError) || err.retryable) throw err;
      log.warn("could not upload received media", { code: err.code, kind: media.kind });
      return failed(err.code, err.reason);
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
    this.connection = state;
    if (this.stopping) return;
    // Reconnect attempts flip between connecting and disconnected: one outage, logged once by the link.
    if (state.state === "connected") this.networkLink.up();
    else if (state.state === "disconnected") this.networkLink.down(state.reason);
  }

  /** The links the bridge depends on and its queues, for /health and the metrics. */
  health(): { homeserver?: LinkSnapshot; network: LinkSnapshot; outboundQueue: number; inboundQueue: number } {
    const homeserver = this.matrix.health?.();
    return { ...(homeserver ? { homeserver } : {}), network: this.networkLink.snapshot(), outboundQueue: this.store.outbound.depth(), inboundQueue: this.store.inbound.depth() };
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

  /** An edit, deletion or reaction from the network: queued behind the chat's messages, durably. */
  async onChange(receiver: string, event: RemoteChange): Promise<void> {
    if (this.store.inbound.inboundSeen(receiver, event.id)) return;
    // Without a room the user never saw the message it changes.
    if (!this.queueInChat(receiver, event.chat, event.id, "change", event)) log.debug("dropping a change in a chat without a room", { type: event.change.type });
  }

  private async bridgeChange(portal: PortalRow, item: InboundItem, event: RemoteChange): Promise<void> {
    const roomId = portal.roomId!;
    const change = event.change;
    const target = this.store.messages.byRemoteId(portal.id, change.target);
    if (!target) {
      log.info("dropping a change of a message this room never showed", { portal: portal.id, type: change.type });
      return this.finishInbound(item);
    }
    const ghost = await this.ghostFor(event.sender);
    const txnId = `in.${portal.id}.${event.id}`;
    switch (change.type) {
      case "edit":
      case "delete": {
        if (target.sender !== event.sender) {
          log.warn("dropping a change of someone else's message", { portal: portal.id, type: change.type });
          return this.finishInbound(item);
        }
        if (change.type === "edit") {
          await this.matrix.send(ghost, roomId, editContent(target.eventId, remoteToMatrix(change.content)), { txnId, ts: event.timestamp });
          this.finishInbound(item);
        } else {
          await this.matrix.redact(ghost, roomId, target.eventId, { txnId, reason: "Deleted on WhatsApp" });
          this.finishInbound(item, () => this.store.messages.delete(portal.id, target.remoteId));
        }
        log.debug("bridged a change to Matrix", { portal: portal.id, type: change.type });
        return;
      }
      case "reaction": {
        const previous = this.store.reactions.get(portal.id, target.remoteId, event.sender);
        if (previous?.emoji === change.emoji) {
          // The same reaction again: Matrix already shows it (and refuses a duplicate annotation).
          return this.finishInbound(item, () => this.store.reactions.put({ ...previous, remoteId: event.id, timestamp: event.timestamp }));
        }
        // One reaction per person, as on WhatsApp: the new one replaces the old.
        if (previous) await this.matrix.redact(ghost, roomId, previous.eventId, { txnId: `${txnId}.replaces`, reason: "Reaction changed on WhatsApp" });
        const eventId = await this.matrix.send(ghost, roomId, reactionContent(target.eventId, change.emoji), { txnId, ts: event.timestamp, type: "m.reaction" });
        return this.finishInbound(item, () =>
          this.store.reactions.put({ portalId: portal.id, targetRemoteId: target.remoteId, sender: event.sender, emoji: change.emoji, eventId, remoteId: event.id, timestamp: event.timestamp }),
        );
      }
      case "unreaction": {
        const current = this.store.reactions.get(portal.id, target.remoteId, event.sender);
        // A withdrawal of a reaction that was already replaced changes nothing.
        if (current?.remoteId !== change.reaction) return this.finishInbound(item);
        await this.matrix.redact(ghost, roomId, current.eventId, { txnId, reason: "Reaction removed on WhatsApp" });
        return this.finishInbound(item, () => this.store.reactions.delete(portal.id, target.remoteId, event.sender));
      }
    }
  }

  /** The remote user read messages the Matrix user sent: queued behind the chat's messages, so the ids are mapped by then. */
  async onReadReceipt(receiver: string, receipt: RemoteReadReceipt): Promise<void> {
    // A redelivered receipt is the same receipt: queued once while it waits.
    const key = createHash("sha256").update(receipt.sender).update("\n").update(receipt.messageIds.join("\n")).digest("hex").slice(0, 32);
    this.queueInChat(receiver, receipt.chat, `read.${key}`, "read", receipt);
  }

  /** The ghost's read receipt moves to the newest of the messages read. */
  private async bridgeReadReceipt(portal: PortalRow, receiver: string, receipt: RemoteReadReceipt): Promise<void> {
    let newest: MessageRow | undefined;
    for (const id of receipt.messageIds) {
      const row = this.store.messages.byRemoteId(portal.id, id);
      if (row && row.sender === receiver && (!newest || row.timestamp > newest.timestamp)) newest = row;
    }
    if (!newest) return;
    // A receipt is not worth a stuck queue: Matrix trouble is logged, not retried.
    await this.matrix
      .sendReadReceipt(this.matrix.ghostMxid(receipt.sender), portal.roomId!, newest.eventId)
      .catch((err: Error) => log.warn("could not bridge a read receipt", { portal: portal.id, error: err.message }));
  }

  onTyping(receiver: string, typing: RemoteTyping): void {
    const portal = this.store.portals.byChat(typing.chat.id, receiver);
    if (!portal?.roomId) return;
    this.matrix
      .setTyping(this.matrix.ghostMxid(typing.sender), portal.roomId, typing.typing, REMOTE_TYPING_TIMEOUT_MS)
      .catch((err: Error) => log.debug("could not bridge typing", { portal: portal.id, error: err.message }));
  }

  /** Something the Matrix user sent reached the other side: a delivered status on their event. */
  async onDelivered(receiver: string, receipt: DeliveryReceipt): Promise<void> {
    // Queued, not posted here: the network's next events for this user need not wait for the homeserver.
    this.queueInChat(receiver, receipt.chat, `delivered.${receipt.txnId}`, "delivered", receipt);
  }

  private async bridgeDelivered(portal: PortalRow, receipt: DeliveryReceipt): Promise<void> {
    const held = this.heldSentStatuses.get(receipt.txnId);
    if (held) {
      // Delivered before the "sent" status went out: one status event says both.
      clearTimeout(held.timer);
      this.heldSentStatuses.delete(receipt.txnId);
    }
    await this.sentStatuses.get(receipt.txnId);
    await this.postStatus(portal.roomId!, this.matrix.ghostMxid(receipt.recipient), "delivered", {
      eventId: receipt.txnId,
      status: "SUCCESS",
      deliveredTo: [this.matrix.ghostMxid(receipt.recipient)],
    });
  }

  /** Posts a com.beeper.message_send_status event; never fails (a status is not worth a retry loop). */
  private async postStatus(roomId: string, asMxid: string, stage: string, info: MessageStatusInfo): Promise<void> {
    // Turned off by the admin (bridge.message_status_events): failures are still explained by a notice.
    if (this.opts.messageStatusEvents === false) return;
    try {
      await this.matrix.send(asMxid, roomId, messageStatusContent(info), { txnId: `status.${stage}.${info.eventId}`, type: MESSAGE_STATUS_EVENT_TYPE });
    } catch (err) {
      log.warn("could not post a message status", { stage, error: (err as Error).message });
    }
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
      await this.listInInbox({ ...portal, roomId });
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
    const relation = relationOf(event.content);
    if (relation?.type === "edit" && !relation.newContent) {
      log.debug("ignoring an edit without m.new_content", { portal: portal.id });
      return;
    }
    if (await this.refuseWhileOff(portal, event)) return;
    const content = matrixToRemote(relation?.type === "edit" ? relation.newContent! : event.content);
    if ("unbridgeable" in content) {
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      this.metrics.dropped("to_network", "unsupported_message");
      const noun = relation?.type === "edit" ? "edit" : "message";
      await this.matrix.notice(this.portalGhost(portal), event.room_id, `Your ${noun} was not sent: ${content.reason}.`, `notice.${event.event_id}`, event.event_id);
      return;
    }
    const tooLong = this.overLimit(content);
    if (tooLong) {
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      this.metrics.dropped("to_network", "too_long");
      const noun = relation?.type === "edit" ? "edit" : "message";
      await this.matrix.notice(this.portalGhost(portal), event.room_id, `Your ${noun} was not sent: ${tooLong}.`, `notice.${event.event_id}`, event.event_id);
      return;
    }
    const max = this.network.capabilities.maxMediaSize;
    if (content.type === "media" && content.media.size !== undefined && content.media.size > max) {
      // Refused before anything is downloaded.
      if (!this.store.outbound.markProcessed(event.event_id)) return;
      this.metrics.dropped("to_network", "too_large");
      await this.matrix.notice(this.portalGhost(portal), event.room_id, notSentText(content.media, overLimitReason(content.media.size, max)), `notice.${event.event_id}`, event.event_id);
      return;
    }
    const payload: QueuedPayload =
      relation?.type === "edit"
        ? { kind: "edit", target: relation.eventId, content, ts: event.origin_server_ts }
        : { content, ts: event.origin_server_ts, ...(relation?.type === "reply" ? { replyTo: relation.eventId } : {}) };
    if (!this.enqueue(portal, event, payload)) return;
    const expiry = unappliedExpiry(event.content);
    if (expiry) {
      this.metrics.dropped("to_network", "message_expiry");
      await this.matrix.notice(this.portalGhost(portal), event.room_id, expiry, `expiry.${event.event_id}`);
    }
  }

  /** Why the network would refuse this content for its size, or null. */
  private overLimit(content: RemoteContent): string | null {
    if (content.type !== "text") return null;
    const bytes = Buffer.byteLength(content.markdown, "utf8");
    const max = this.network.capabilities.maxTextLength;
    return bytes > max ? `it is too long for the network (${bytes} bytes of text, at most ${max})` : null;
  }

  /** Queues the event and starts sending; false if it was queued before. */
  private enqueue(portal: PortalRow, event: MatrixEvent, payload: QueuedPayload): boolean {
    if (!this.store.outbound.enqueue(portal.id, event.event_id, event.sender, payload)) return false;
    void this.drainOutbound(portal.id);
    return true;
  }

  /** Whether the user may use the bridge and has Third-Party Chats on: only then does anything of theirs reach the network. */
  private optedIn(mxid: string): boolean {
    return this.permissions.mayUse(mxid) && this.store.users.get(mxid)?.thirdPartyEnabled === true;
  }

  /**
   * Nothing the user writes while not permitted or with Third-Party Chats off is sent, now or
   * later: it is marked handled (never queued) and the user is told why. Returns true if refused.
   */
  private async refuseWhileOff(portal: PortalRow, event: MatrixEvent): Promise<boolean> {
    if (this.optedIn(portal.receiver)) return false;
    const permitted = this.permissions.mayUse(portal.receiver);
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

  /** An m.reaction; returns false when the room is not a portal. */
  async onMatrixReaction(event: MatrixEvent): Promise<boolean> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    const relation = relationOf(event.content);
    if (event.sender === portal.receiver && relation?.type === "annotation") {
      if (await this.refuseWhileOff(portal, event)) return true;
      this.enqueue(portal, event, { kind: "reaction", target: relation.eventId, key: relation.key, ts: event.origin_server_ts });
    }
    return true;
  }

  /** An m.room.redaction (of a message or a reaction); returns false when the room is not a portal. */
  async onMatrixRedaction(event: MatrixEvent): Promise<boolean> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    const target = redactedEventId(event);
    if (event.sender === portal.receiver && target) {
      if (await this.refuseWhileOff(portal, event)) return true;
      this.enqueue(portal, event, { kind: "redaction", target, ts: event.origin_server_ts });
    }
    return true;
  }

  /**
   * The portal's user read the room up to `eventId`: every message from the other side up to
   * it that was not reported yet is reported read. A receipt on an event that is no bridged
   * message (a notice, a reaction) counts up to the receipt's time.
   */
  async onMatrixReadReceipt(roomId: string, userId: string, eventId: string, ts: number | null): Promise<void> {
    const portal = this.store.portals.byRoom(roomId);
    if (!portal || userId !== portal.receiver || !this.network.capabilities.readReceipts || !this.network.sendReadReceipt || !this.optedIn(userId)) return;
    const send = this.network.sendReadReceipt.bind(this.network);
    await this.receiptQueue.run(`portal:${portal.id}`, async () => {
      const read = this.store.messages.byEventId(eventId);
      const upTo = read && read.portalId === portal.id ? read.timestamp : (ts ?? Date.now());
      const unread = this.store.messages.receivedBetween(portal.id, portal.receiver, this.store.readMarkers.get(portal.id), upTo, MAX_READ_BATCH);
      if (unread.length === 0) return;
      try {
        await send(portal.receiver, this.chatOf(portal), unread.map((m) => m.remoteId));
        this.store.readMarkers.advance(portal.id, unread[unread.length - 1].timestamp);
      } catch (err) {
        // The next receipt reports these again.
        log.warn("could not send a read receipt", { portal: portal.id, error: (err as Error).message });
      }
    });
  }

  /** The users typing in a room changed: tell the network when the portal's user starts or stops. */
  onMatrixTyping(roomId: string, userIds: string[]): void {
    const portal = this.store.portals.byRoom(roomId);
    if (!portal || !this.network.capabilities.typing || !this.network.sendTyping) return;
    const sendTyping = this.network.sendTyping.bind(this.network);
    // A user with Third-Party Chats off shows as not typing (and one who turns it off stops showing).
    const typing = userIds.includes(portal.receiver) && this.optedIn(portal.receiver);
    const timer = this.typingTimers.get(portal.id);
    if (typing === (timer !== undefined)) return;
    const chat = this.chatOf(portal);
    if (!typing) {
      clearInterval(timer);
      this.typingTimers.delete(portal.id);
      sendTyping(portal.receiver, chat, false);
      return;
    }
    const started = Date.now();
    sendTyping(portal.receiver, chat, true);
    const repeat = setInterval(() => {
      if (Date.now() - started < TYPING_MAX_MS) {
        sendTyping(portal.receiver, chat, true);
        return;
      }
      clearInterval(repeat);
      this.typingTimers.delete(portal.id);
      sendTyping(portal.receiver, chat, false);
    }, TYPING_REPEAT_MS);
    repeat.unref();
    this.typingTimers.set(portal.id, repeat);
  }

  private chatOf(portal: PortalRow): ChatRef {
    return { id: portal.remoteChatId, kind: portal.kind, participants: this.store.portals.participants(portal.id) };
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
    if (!this.optedIn(portal.receiver)) {
      // Turned off (or permission withdrawn) while this waited for the network: it is not delivered later.
      this.store.outbound.remove(item.seq);
      const permitted = this.permissions.mayUse(portal.receiver);
      this.metrics.dropped("to_network", permitted ? "third_party_chats_off" : "not_permitted");
      const why = permitted ? "you turned Third-Party Chats off before the network took it" : "you are no longer allowed to use this bridge";
      if (portal.roomId) await this.reportFailure(portal, portal.roomId, item.eventId, EVENT_NOUN[payload.kind ?? "message"], new EventRefusal("m.no_permission", why));
      return;
    }
    const chat = this.chatOf(portal);
    // Media is fetched from the homeserver at most once for all attempts, and deleted after.
    const media: QueuedMedia = {};
    try {
      await this.sendWithRetries(portal, chat, item, payload, media);
    } finally {
      await media.local?.release();
    }
  }

  /**
   * Queued media still on the homeserver → a local file the connector can send. A file the
   * homeserver keeps failing to give is given up after mediaDownloadAttempts, so that it
   * cannot hold the chat's queue for ever.
   */
  private async withLocalMedia(content: RemoteContent, media: QueuedMedia): Promise<RemoteContent> {
    if (content.type !== "media" || content.source.from !== "matrix") return content;
    media.local ??= await this.matrix.downloadMedia(content.source.mxc, this.network.capabilities.maxMediaSize).catch((err: unknown) => {
      if (!(err instanceof MediaError) || !err.retryable) throw err;
      media.failedDownloads = (media.failedDownloads ?? 0) + 1;
      const attempts = this.opts.mediaDownloadAttempts ?? 10;
      if (media.failedDownloads < attempts) throw err;
      throw new MediaError(err.code, `${err.reason} after ${attempts} attempt${attempts === 1 ? "" : "s"}`);
    });
    return { ...content, source: { from: "file", path: media.local.path, size: media.local.size } };
  }

  private async sendWithRetries(portal: PortalRow, chat: ChatRef, item: OutboundItem, payload: QueuedPayload, media: QueuedMedia): Promise<void> {
    const portalId = portal.id;
    let delay = this.opts.retryDelayMs ?? 1000;
    if (this.networkLink.isDown) this.networkLink.noteHeld();
    for (;;) {
      const attemptStarted = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - attemptStarted) / 1e9;
      try {
        this.store.outbound.recordAttempt(item.seq);
        await this.network.ensureUser(portal.receiver, null);
        const sent = await this.sendQueued(portal, chat, item, payload, media);
        if (sent) {
          this.metrics.networkSendSeconds.observe({ outcome: "accepted" }, seconds());
          this.metrics.matrixToNetworkSeconds.observe((Date.now() - item.createdAt) / 1000);
          this.metrics.bridged("to_network", payload.kind === undefined || payload.kind === "message" ? (payload.content as RemoteContent).type : payload.kind);
        }
        if (sent && portal.roomId) await this.postSentStatus(portal, portal.roomId, item.eventId);
        return;
      } catch (err) {
        const isMessage = payload.kind === undefined || payload.kind === "message";
        if (err instanceof MediaError && !err.retryable && isMessage && !("unbridgeable" in payload.content) && payload.content.type === "media") {
          this.metrics.failed("to_network", err.code);
          this.store.outbound.remove(item.seq);
          log.warn("media could not be sent", { portal: portalId, code: err.code });
          if (portal.roomId) await this.matrix.notice(this.portalGhost(portal), portal.roomId, notSentText(payload.content.media, err.reason), `fail.${item.eventId}`, item.eventId).catch(() => undefined);
          return;
        }
        const refused = err instanceof EventRefusal || (err instanceof NetworkError && !err.retryable);
        if (refused) {
          if (err instanceof EventRefusal) {
            // Nothing reached the network: it cannot take this event (too old, not allowed, not supported).
            this.metrics.dropped("to_network", err.reason);
          } else {
            this.metrics.networkSendSeconds.observe({ outcome: "refused" }, seconds());
            this.metrics.failed("to_network", err.code);
          }
          this.store.outbound.remove(item.seq);
          const noun = EVENT_NOUN[payload.kind ?? "message"];
          log.warn(`the ${noun} was not sent`, { portal: portalId, code: err instanceof NetworkError ? err.code : err.reason });
          if (portal.roomId) await this.reportFailure(portal, portal.roomId, item.eventId, noun, err);
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

  /**
   * Sends one queued event to the network and updates the maps in the same transaction that
   * takes it off the queue. Returns false when there was nothing to send (a redaction of an
   * event that was never bridged). Throws EventRefusal when a capability check fails.
   */
  private async sendQueued(portal: PortalRow, chat: ChatRef, item: OutboundItem, payload: QueuedPayload, media: QueuedMedia): Promise<boolean> {
    const caps = this.network.capabilities;
    const user = portal.receiver;
    const txnId = item.eventId;
    switch (payload.kind) {
      case undefined:
      case "message": {
        if ("unbridgeable" in payload.content) {
          this.store.outbound.remove(item.seq);
          return false;
        }
        const replied = payload.replyTo && caps.replies ? this.bridgedMessage(portal, payload.replyTo) : undefined;
        const content = await this.withLocalMedia(payload.content, media);
        const result = await this.network.sendMessage(user, chat, { txnId, content, timestamp: payload.ts, ...(replied ? { replyTo: replied.remoteId } : {}) });
        this.store.transaction(() => {
          this.store.messages.insert({ portalId: portal.id, remoteId: result.remoteId, part: 0, eventId: txnId, sender: user, timestamp: result.timestamp, replyTo: replied?.remoteId });
          this.store.outbound.remove(item.seq);
        });
        log.debug("bridged message to the network", { portal: portal.id, eventId: txnId, remoteId: result.remoteId });
        return true;
      }
      case "edit": {
        const original = this.bridgedMessage(portal, payload.target);
        if (!original) throw new EventRefusal("m.event_not_handled", "the message it edits was never bridged");
        if (original.sender !== user) throw new EventRefusal("m.no_permission", "only the sender can edit a message");
        if (!caps.edits || !this.network.sendChange) throw new EventRefusal("com.beeper.unsupported_event", "WhatsApp does not support editing messages here");
        if (caps.edits.maxAgeMs > 0 && payload.ts - original.timestamp > caps.edits.maxAgeMs) {
          throw new EventRefusal("m.event_too_old", `WhatsApp allows editing a message only within ${describeDuration(caps.edits.maxAgeMs)} of sending it`);
        }
        const edit = { type: "edit" as const, target: original.remoteId, content: payload.content, ...(original.replyTo ? { replyTo: original.replyTo } : {}) };
        await this.network.sendChange(user, chat, { txnId, change: edit, timestamp: payload.ts });
        this.store.outbound.remove(item.seq);
        return true;
      }
      case "reaction": {
        const target = this.bridgedMessage(portal, payload.target);
        if (!target) throw new EventRefusal("m.event_not_handled", "the message it reacts to was never bridged");
        if (!caps.reactions || !this.network.sendChange) throw new EventRefusal("com.beeper.unsupported_event", "WhatsApp does not support reactions here");
        const previous = this.store.reactions.get(portal.id, target.remoteId, user);
        const result = await this.network.sendChange(user, chat, { txnId, change: { type: "reaction", target: target.remoteId, emoji: payload.key }, timestamp: payload.ts });
        this.store.transaction(() => {
          this.store.reactions.put({ portalId: portal.id, targetRemoteId: target.remoteId, sender: user, emoji: payload.key, eventId: txnId, remoteId: result.remoteId, timestamp: result.timestamp });
          this.store.outbound.remove(item.seq);
        });
        // The network replaced the earlier reaction; Matrix would show both.
        if (previous && previous.eventId !== txnId && caps.reactions.maxPerUser === 1 && portal.roomId) {
          await this.matrix
            .redact(this.portalGhost(portal), portal.roomId, previous.eventId, { txnId: `replaced.${previous.eventId}`, reason: "WhatsApp keeps one reaction per person" })
            .catch((err: Error) => log.warn("could not remove a replaced reaction", { portal: portal.id, error: err.message }));
        }
        return true;
      }
      case "redaction": {
        const reaction = this.store.reactions.byEventId(payload.target);
        if (reaction && reaction.portalId === portal.id) {
          if (reaction.sender !== user) throw new EventRefusal("m.no_permission", "only its sender can remove a reaction on WhatsApp, so it was removed here only");
          if (!caps.reactions || !this.network.sendChange) throw new EventRefusal("com.beeper.unsupported_event", "WhatsApp does not support removing reactions here");
          await this.network.sendChange(user, chat, {
            txnId,
            change: { type: "unreaction", target: reaction.targetRemoteId, reaction: reaction.remoteId },
            timestamp: payload.ts,
          });
          this.store.transaction(() => {
            this.store.reactions.delete(portal.id, reaction.targetRemoteId, user);
            this.store.outbound.remove(item.seq);
          });
          return true;
        }
        const message = this.bridgedMessage(portal, payload.target);
        if (!message) {
          this.store.outbound.remove(item.seq);
          return false;
        }
        if (message.sender !== user) throw new EventRefusal("m.no_permission", "WhatsApp lets only the sender delete a message for everyone, so it was deleted here only");
        if (!caps.deletes || !this.network.sendChange) throw new EventRefusal("com.beeper.unsupported_event", "WhatsApp does not support deleting messages here, so it was deleted here only");
        if (caps.deletes.maxAgeMs > 0 && payload.ts - message.timestamp > caps.deletes.maxAgeMs) {
          throw new EventRefusal("m.event_too_old", `WhatsApp allows deleting a message for everyone only within ${describeDuration(caps.deletes.maxAgeMs)} of sending it, so it was deleted here only`);
        }
        const deletion = { type: "delete" as const, target: message.remoteId, ...(message.replyTo ? { replyTo: message.replyTo } : {}) };
        await this.network.sendChange(user, chat, { txnId, change: deletion, timestamp: payload.ts });
        this.store.transaction(() => {
          this.store.messages.delete(portal.id, message.remoteId);
          this.store.outbound.remove(item.seq);
        });
        return true;
      }
    }
  }

  /** The bridged message behind a Matrix event id in this portal, if any. */
  private bridgedMessage(portal: PortalRow, eventId: string): MessageRow | undefined {
    const row = this.store.messages.byEventId(eventId);
    return row && row.portalId === portal.id ? row : undefined;
  }

  /**
   * The "sent" status of a message the network took. With delivery receipts it waits up to
   * sentStatusDelayMs for the receipt, so that one status event says "delivered" instead of
   * two: each is a room event the homeserver stores and sends to every client.
   */
  private async postSentStatus(portal: PortalRow, roomId: string, eventId: string): Promise<void> {
    const post = async () => {
      const posting = this.postStatus(roomId, this.portalGhost(portal), "sent", {
        eventId,
        status: "SUCCESS",
        // Empty, not absent: delivery receipts will follow.
        ...(this.network.capabilities.deliveryReceipts ? { deliveredTo: [] } : {}),
      });
      this.sentStatuses.set(eventId, posting);
      try {
        await posting;
      } finally {
        this.sentStatuses.delete(eventId);
      }
    };
    if (this.opts.messageStatusEvents === false) return;
    const delay = this.opts.sentStatusDelayMs ?? 0;
    if (delay <= 0 || !this.network.capabilities.deliveryReceipts) return post();
    const timer = setTimeout(() => {
      this.heldSentStatuses.delete(eventId);
      void post();
    }, delay);
    this.heldSentStatuses.set(eventId, { timer, post });
  }

  /** One place turns a refusal into what the user sees: a failed status on their event and a notice saying why. */
  private async reportFailure(portal: PortalRow, roomId: string, eventId: string, noun: string, err: EventRefusal | NetworkError): Promise<void> {
    const ghost = this.portalGhost(portal);
    const reason: MessageStatusReason = err instanceof EventRefusal ? err.reason : "m.foreign_network_error";
    await this.postStatus(roomId, ghost, "failed", { eventId, status: "FAIL_PERMANENT", reason, message: err.message });
    const verb = err instanceof EventRefusal ? "sent" : "delivered";
    // The notice answers the failed event, so the user sees which one it was.
    const notice = asReply({ msgtype: "m.notice", body: `Your ${noun} was not ${verb}: ${err.message}.` }, eventId);
    await this.matrix.send(ghost, roomId, notice, { txnId: `fail.${eventId}` }).catch((e: Error) => log.warn("could not post a failure notice", { error: e.message }));
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
    // Stable transaction ids: a replayed invite (after a crash) does not repeat the notices.
    const txn = (what: string) => `invite.${what}.${ghostMxid}`;
    const reject = async (reason: string) => {
      await this.matrix.join(ghostMxid, roomId);
      await this.matrix.notice(ghostMxid, roomId, reason, txn("refused"));
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
          txn("elsewhere"),
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
    // Messages already acknowledged to the network and not yet shown go to a fresh room, as
    // they would have had they come a moment later: moved in the transaction that closes the portal.
    const { reopened, waiting } = this.store.transaction(() => {
      const waiting = this.store.inbound.messagesOf(portal.id);
      const participants = this.store.portals.participants(portal.id);
      this.store.portals.delete(portal.id);
      if (waiting.length === 0) return { reopened: undefined, waiting: 0 };
      const fresh = this.store.portals.getOrCreate(portal.remoteChatId, portal.receiver, portal.kind, participants);
      this.store.inbound.requeue(waiting, fresh.id);
      return { reopened: fresh, waiting: waiting.length };
    });
    log.info("portal closed because its user left", { portal: portal.id, roomId, waiting });
    await this.matrix.leave(ghost, roomId, "the chat was closed").catch(() => undefined);
    if (reopened) void this.drainInbound(reopened.id);
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
