/**
 * Network → Matrix: what the connector delivers is committed to the portal's durable inbound
 * queue and acknowledged; the queue then shows it on Matrix (messages, media, edits, deletions,
 * reactions, read and delivery receipts) in order, per chat.
 */
import { createHash } from "node:crypto";
import { mediaFailureNotice, overLimitReason } from "../convert/media";
import { remoteToMatrix } from "../convert/message-content";
import { asReply, editContent, reactionContent } from "../convert/relations";
import { getLogger } from "../logging";
import {
  ChatRef,
  DeliveryReceipt,
  LocalMedia,
  MediaError,
  maxMediaSize,
  RemoteChange,
  RemoteContent,
  RemoteGroupChange,
  RemoteMessage,
  RemoteProfile,
  RemoteReadReceipt,
  RemoteTyping,
} from "../network/connector";
import { InboundItem, InboundKind, MessageRow, PortalRow } from "../store";
import { PipelineContext } from "./context";
import { refusedNotice } from "./opt-in";
import { PortalQueueRunner } from "./portal-queue-runner";

const log = getLogger("inbound");

/** How long a ghost shows as typing after one notice (docs/protocol.md §10). */
const REMOTE_TYPING_TIMEOUT_MS = 15_000;

export class InboundPipeline {
  private readonly runner: PortalQueueRunner<InboundItem>;

  constructor(private readonly ctx: PipelineContext) {
    this.runner = new PortalQueueRunner(
      ctx.store.inbound,
      {
        handle: (item) => this.bridgeInbound(item),
        // Closed meanwhile (its user left or was forgotten): what was waiting moved or went with it.
        abandoned: (portalId) => !ctx.store.portals.get(portalId),
        // Only Matrix-side trouble (the homeserver down or refusing) gets here: the event waits, the chat behind it too.
        onRetry: (item, err, attempts, inMs) =>
          log.warn("could not bridge to Matrix, will retry", { portal: item.portalId, kind: item.kind, attempts, error: (err as Error).message, inMs }),
      },
      ctx.retry,
      ctx.stopping,
    );
  }

  /** Network events acknowledged before a stop or crash and not yet on Matrix. */
  resume(): void {
    this.runner.resume();
  }

  drain(portalId: number): void {
    void this.runner.kick(portalId);
  }

  /** Chats with network → Matrix work in progress (for metrics). */
  get busy(): number {
    return this.runner.busy;
  }

  /**
   * A message from the network: committed to the portal's durable inbound queue and answered,
   * so the network acknowledges it and moves on while the portal sends to Matrix on its own.
   */
  async onMessage(receiver: string, message: RemoteMessage): Promise<void> {
    if (this.ctx.store.inbound.inboundSeen(receiver, message.id)) return;
    const portal = await this.ctx.portals.ensurePortal(receiver, message.chat);
    this.queue(portal, receiver, message.id, "message", message);
  }

  /**
   * Queues an event in a portal. A group's events come once per Matrix member's account: only
   * the first copy is queued (the store records it in the same transaction), the rest are dropped.
   */
  private queue(portal: PortalRow, receiver: string, remoteId: string, kind: InboundKind, payload: unknown): void {
    const inbound = this.ctx.store.inbound;
    if (portal.kind === "group") {
      if (!inbound.enqueueGroup(portal.id, receiver, remoteId, kind, payload)) log.debug("dropped another member's copy of a group event", { portal: portal.id, kind });
    } else {
      inbound.enqueue(portal.id, receiver, remoteId, kind, payload);
    }
    this.drain(portal.id);
  }

  /** Queues an event behind the messages of a chat that has a room; false when it has none (nothing of it was shown). */
  private queueInChat(receiver: string, chat: ChatRef, remoteId: string, kind: InboundKind, payload: unknown): boolean {
    const { portals } = this.ctx.store;
    const portal = chat.kind === "group" ? portals.byGroup(chat.id) : portals.byChat(chat.id, receiver);
    if (!portal?.roomId) return false;
    this.queue(portal, receiver, remoteId, kind, payload);
    return true;
  }

  /**
   * A group changed (members, name, topic, admins). A member's copy makes sure the group has its
   * room with the member in it; the change is queued behind the group's messages, once for all
   * members' copies. A copy for a user who was removed or left only reaches a group that has a room.
   */
  async onGroupChange(receiver: string, change: RemoteGroupChange): Promise<void> {
    const member = change.group.members.some((m) => m.matrix && m.id === receiver);
    if (member) {
      if (!this.ctx.access.optedIn(receiver)) return;
      const portal = await this.ctx.portals.ensurePortal(receiver, change.chat, change.group);
      this.queue(portal, receiver, change.id, "group", change);
    } else if (!this.queueInChat(receiver, change.chat, change.id, "group", change)) {
      log.debug("a group change for a user not in it, of a group without a room", { change: change.change });
    }
  }

  private async bridgeInbound(item: InboundItem): Promise<void> {
    const { store, access } = this.ctx;
    const portal = store.portals.get(item.portalId);
    switch (item.kind) {
      case "message": {
        if (!portal || store.inbound.inboundSeen(item.receiver, item.remoteId)) return store.inbound.remove(item.seq);
        const message = JSON.parse(item.payload) as RemoteMessage;
        if (!access.optedIn(item.receiver)) {
          // Turned off while it waited: nothing reaches the user while off; they learn who tried, as for a refusal.
          this.finish(item);
          log.info("dropped a waiting message: the user turned Third-Party Chats off", { portal: item.portalId });
          await this.onRefused(item.receiver, message.sender, message.timestamp).catch((err: Error) => {
            log.warn("could not tell a user about a dropped message", { error: err.message });
          });
          return;
        }
        // A portal reopened for messages that waited when its user left gets its room here.
        const open = portal.roomId ? portal : await this.ctx.portals.ensurePortal(item.receiver, message.chat);
        return this.bridgeMessage(open, item, message);
      }
      case "change":
        if (!portal?.roomId || store.inbound.inboundSeen(item.receiver, item.remoteId)) return store.inbound.remove(item.seq);
        if (!access.optedIn(item.receiver)) return this.finish(item);
        return this.bridgeChange(portal, item, JSON.parse(item.payload) as RemoteChange);
      case "group": {
        if (!portal?.roomId) return store.inbound.remove(item.seq);
        const change = JSON.parse(item.payload) as RemoteGroupChange;
        await this.ctx.portals.applyGroupState(portal as PortalRow & { roomId: string }, change.group, change);
        return this.finish(item);
      }
      case "read":
      case "delivered":
        // Receipts are not remembered once shown: a repeat shows the same thing again (the same transaction id).
        if (portal?.roomId && access.optedIn(item.receiver)) {
          if (item.kind === "read") await this.bridgeReadReceipt(portal, item.receiver, JSON.parse(item.payload) as RemoteReadReceipt);
          else await this.bridgeDelivered(portal, JSON.parse(item.payload) as DeliveryReceipt);
        }
        return store.inbound.remove(item.seq);
    }
  }

  /** Records the event as bridged and takes it off the queue, with whatever else `effect` stores, in one transaction. */
  private finish(item: InboundItem, effect?: () => void): void {
    const store = this.ctx.store;
    store.transaction(() => {
      effect?.();
      store.inbound.markInboundSeen(item.receiver, item.remoteId);
      store.inbound.remove(item.seq);
    });
  }

  private async bridgeMessage(portal: PortalRow, item: InboundItem, message: RemoteMessage): Promise<void> {
    const { store, matrix, metrics } = this.ctx;
    const ghost = await this.ctx.portals.ghostFor(message.sender);
    if (portal.kind === "group") await this.ctx.portals.ensureInGroupRoom(portal as PortalRow & { roomId: string }, message.sender);
    let content: Record<string, unknown>;
    if (message.content.type === "unsupported") {
      // The description reads as the rest of a sentence whose subject is the sender.
      const name = store.ghosts.get(message.sender)?.displayName ?? message.sender;
      content = { msgtype: "m.notice", body: `${name} ${message.content.description}` };
      metrics.dropped("to_matrix", message.content.what);
    } else if (message.content.type === "media") {
      content = await this.mediaToMatrix(item.receiver, message.chat, ghost, portal.roomId!, message.content, portal.kind);
    } else {
      content = remoteToMatrix(message.content);
      metrics.bridged("to_matrix", message.content.type, portal.kind);
    }
    // A reply to a message this room never showed stays a plain message.
    const replied = message.replyTo === undefined ? undefined : store.messages.byRemoteId(portal.id, message.replyTo);
    if (replied) content = asReply(content, replied.eventId);
    const eventId = await matrix.send(ghost, portal.roomId!, content, { txnId: `in.${portal.id}.${message.id}`, ts: message.timestamp });
    this.finish(item, () =>
      store.messages.insert({ portalId: portal.id, remoteId: message.id, part: 0, eventId, sender: message.sender, timestamp: message.timestamp, replyTo: replied?.remoteId }),
    );
    log.debug("bridged message to Matrix", { portal: portal.id, remoteId: message.id, eventId });
  }

  /**
   * Received media → the content of its Matrix event: the file fetched from the network and
   * uploaded as the ghost, or, if that cannot be done, a notice naming the file and why.
   * Only a homeserver that is down (a retryable Matrix-side failure) makes it throw, so the
   * message is delivered again later.
   */
  private async mediaToMatrix(
    receiver: string,
    chat: ChatRef,
    ghost: string,
    roomId: string,
    content: Extract<RemoteContent, { type: "media" }>,
    kind: PortalRow["kind"],
  ): Promise<Record<string, unknown>> {
    const { network, matrix, metrics } = this.ctx;
    const caps = network.getCapabilities(chat);
    const max = caps.media[content.media.kind]?.maxSize ?? maxMediaSize(caps);
    const media = content.media;
    const failed = (code: string, reason: string) => {
      metrics.failed("to_matrix", code);
      return mediaFailureNotice(media, reason);
    };
    if (media.size !== undefined && media.size > max) return failed("too_large", overLimitReason(media.size, max));
    if (content.source.from !== "network") return failed("no_file", "the network did not provide the file");
    let file: LocalMedia;
    try {
      file = await network.downloadMedia(receiver, content.source.ref, max);
    } catch (err) {
      if (!(err instanceof MediaError)) throw err;
      log.warn("could not fetch received media", { code: err.code, kind: media.kind });
      return failed(err.code, err.reason);
    }
    try {
      const message = await matrix.mediaMessage(ghost, roomId, file, media, content.caption);
      metrics.bridged("to_matrix", "media", kind);
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
    const ghost = this.ctx.store.ghosts.get(profile.userId);
    // Ghosts nobody has met yet get their profile when they are first needed.
    if (!ghost?.registered) return;
    await this.ctx.matrix.ensureGhost(profile.userId, profile);
  }

  /** A remote user was turned away because the receiver has the chats off: tell the receiver once per contact. */
  async onRefused(receiver: string, remoteUserId: string, timestamp: number): Promise<void> {
    const { store, metrics, network } = this.ctx;
    metrics.dropped("to_matrix", "third_party_chats_off");
    const user = store.users.get(receiver);
    if (!user) return;
    const attempts = store.users.recordRefused(receiver, remoteUserId, timestamp);
    log.info("a remote user was refused because Third-Party Chats are off", { user: receiver, attempts });
    if (attempts > 1) return;
    const first = store.users.markExplained(receiver);
    const name = store.ghosts.get(remoteUserId)?.displayName ?? remoteUserId;
    const who = name === remoteUserId ? remoteUserId : `${name} (${remoteUserId})`;
    await this.ctx.status.tellUser(receiver, refusedNotice(who, first, network.networkName), `refused.${remoteUserId}.${timestamp}`);
  }

  onDropped(receiver: string, what: string): void {
    this.ctx.metrics.dropped("to_matrix", what);
    log.debug("dropped something third-party chats do not carry", { user: receiver, what });
  }

  async onIdentityChange(receiver: string, remoteUserId: string): Promise<void> {
    const { store, matrix, network } = this.ctx;
    const chat = network.dmChat(receiver, remoteUserId);
    const portal = store.portals.byChat(chat.id, receiver);
    if (!portal?.roomId) return;
    await matrix.notice(
      matrix.ghostMxid(remoteUserId),
      portal.roomId,
      `The security code of ${remoteUserId} changed, probably because they reinstalled ${network.networkName} or changed phones. Messages stay end-to-end encrypted.`,
    );
  }

  /** An edit, deletion or reaction from the network: queued behind the chat's messages, durably. */
  async onChange(receiver: string, event: RemoteChange): Promise<void> {
    if (this.ctx.store.inbound.inboundSeen(receiver, event.id)) return;
    // Without a room the user never saw the message it changes.
    if (!this.queueInChat(receiver, event.chat, event.id, "change", event)) log.debug("dropping a change in a chat without a room", { type: event.change.type });
  }

  private async bridgeChange(portal: PortalRow, item: InboundItem, event: RemoteChange): Promise<void> {
    const { store, matrix, network } = this.ctx;
    const roomId = portal.roomId!;
    const change = event.change;
    const target = store.messages.byRemoteId(portal.id, change.target);
    if (!target) {
      log.info("dropping a change of a message this room never showed", { portal: portal.id, type: change.type });
      return this.finish(item);
    }
    const ghost = await this.ctx.portals.ghostFor(event.sender);
    const txnId = `in.${portal.id}.${event.id}`;
    const on = network.networkName;
    switch (change.type) {
      case "edit":
      case "delete": {
        if (target.sender !== event.sender) {
          log.warn("dropping a change of someone else's message", { portal: portal.id, type: change.type });
          return this.finish(item);
        }
        if (change.type === "edit") {
          await matrix.send(ghost, roomId, editContent(target.eventId, remoteToMatrix(change.content)), { txnId, ts: event.timestamp });
          this.finish(item);
        } else {
          await matrix.redact(ghost, roomId, target.eventId, { txnId, reason: `Deleted on ${on}` });
          this.finish(item, () => store.messages.delete(portal.id, target.remoteId));
        }
        log.debug("bridged a change to Matrix", { portal: portal.id, type: change.type });
        return;
      }
      case "reaction": {
        const previous = store.reactions.get(portal.id, target.remoteId, event.sender);
        if (previous?.emoji === change.emoji) {
          // The same reaction again: Matrix already shows it (and refuses a duplicate annotation).
          return this.finish(item, () => store.reactions.put({ ...previous, remoteId: event.id, timestamp: event.timestamp }));
        }
        // One reaction per person where the network says so: the new one replaces the old.
        if (previous) await matrix.redact(ghost, roomId, previous.eventId, { txnId: `${txnId}.replaces`, reason: `Reaction changed on ${on}` });
        const eventId = await matrix.send(ghost, roomId, reactionContent(target.eventId, change.emoji), { txnId, ts: event.timestamp, type: "m.reaction" });
        return this.finish(item, () =>
          store.reactions.put({
            portalId: portal.id,
            targetRemoteId: target.remoteId,
            sender: event.sender,
            emoji: change.emoji,
            eventId,
            remoteId: event.id,
            timestamp: event.timestamp,
          }),
        );
      }
      case "unreaction": {
        const current = store.reactions.get(portal.id, target.remoteId, event.sender);
        // A withdrawal of a reaction that was already replaced changes nothing.
        if (current?.remoteId !== change.reaction) return this.finish(item);
        await matrix.redact(ghost, roomId, current.eventId, { txnId, reason: `Reaction removed on ${on}` });
        return this.finish(item, () => store.reactions.delete(portal.id, target.remoteId, event.sender));
      }
    }
  }

  /** The remote user read messages the Matrix user sent: queued behind the chat's messages, so the ids are mapped by then. */
  async onReadReceipt(receiver: string, receipt: RemoteReadReceipt): Promise<void> {
    // A redelivered receipt is the same receipt: queued once while it waits.
    const key = createHash("sha256").update(receipt.sender).update("\n").update(receipt.messageIds.join("\n")).digest("hex").slice(0, 32);
    this.queueInChat(receiver, receipt.chat, `read.${key}`, "read", receipt);
  }

  /** The ghost's read receipt moves to the newest of the messages read (in a DM, of the Matrix user's; in a group, of anyone's). */
  private async bridgeReadReceipt(portal: PortalRow, receiver: string, receipt: RemoteReadReceipt): Promise<void> {
    let newest: MessageRow | undefined;
    for (const id of receipt.messageIds) {
      const row = this.ctx.store.messages.byRemoteId(portal.id, id);
      if (row && (portal.kind === "group" || row.sender === receiver) && (!newest || row.timestamp > newest.timestamp)) newest = row;
    }
    if (!newest) return;
    // A receipt is not worth a stuck queue: Matrix trouble is logged, not retried.
    await this.ctx.matrix
      .sendReadReceipt(this.ctx.matrix.ghostMxid(receipt.sender), portal.roomId!, newest.eventId)
      .catch((err: Error) => log.warn("could not bridge a read receipt", { portal: portal.id, error: err.message }));
  }

  onTyping(receiver: string, typing: RemoteTyping): void {
    // In a group each Matrix member's account gets the notice: showing it again changes nothing.
    const portal = typing.chat.kind === "group" ? this.ctx.store.portals.byGroup(typing.chat.id) : this.ctx.store.portals.byChat(typing.chat.id, receiver);
    if (!portal?.roomId) return;
    this.ctx.matrix
      .setTyping(this.ctx.matrix.ghostMxid(typing.sender), portal.roomId, typing.typing, REMOTE_TYPING_TIMEOUT_MS)
      .catch((err: Error) => log.debug("could not bridge typing", { portal: portal.id, error: err.message }));
  }

  /** Something the Matrix user sent reached the other side: a delivered status on their event. */
  async onDelivered(receiver: string, receipt: DeliveryReceipt): Promise<void> {
    // Queued, not posted here: the network's next events for this user need not wait for the homeserver.
    this.queueInChat(receiver, receipt.chat, `delivered.${receipt.txnId}`, "delivered", receipt);
  }

  private async bridgeDelivered(portal: PortalRow, receipt: DeliveryReceipt): Promise<void> {
    await this.ctx.status.delivered(portal.roomId!, receipt.txnId, this.ctx.matrix.ghostMxid(receipt.recipient));
  }
}
