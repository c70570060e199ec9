/**
 * Matrix → network, front half: a Matrix event in a portal is checked once against the chat's
 * capabilities and the user's opt-in, then either refused (reported through status.ts) or
 * committed to the portal's durable outbound queue, which outbound-sender.ts drains. Typing and
 * read receipts, which are live and never queued, go to the network from here too.
 */
import { notSentText, overLimitReason } from "../convert/media";
import { matrixToRemote } from "../convert/message-content";
import { redactedEventId, relationOf } from "../convert/relations";
import { unappliedExpiry, unbridgeableEvent } from "../convert/unbridgeable";
import { getLogger } from "../logging";
import { ChatCapabilities, ChatRef, mimetypeAccepted, RemoteContent } from "../network/connector";
import { PortalRow } from "../store";
import { KeyedQueue } from "../util/keyed-queue";
import { PipelineContext } from "./context";
import { BridgeFailure, EventNoun, FAILURES } from "./failure";
import { MatrixEvent } from "./matrix-port";
import { offNotice } from "./opt-in";
import { OutboundSender, QueuedPayload } from "./outbound-sender";

const log = getLogger("outbound");

/** Typing "on" is repeated this often while the Matrix user types (the protocol lets it expire after about 15 s). */
const TYPING_REPEAT_MS = 10_000;
/** ...but never longer than this, should the homeserver never say the user stopped. */
const TYPING_MAX_MS = 120_000;
/** Messages named in one read receipt at most (the connector splits them as its network needs). */
const MAX_READ_BATCH = 1024;

export class OutboundPipeline {
  /** Who is typing now (`<portal>|<user>`: a DM's user, a group's member), with the timer that repeats "on". */
  private readonly typingTimers = new Map<string, NodeJS.Timeout>();
  /** Read receipts of a portal go out one at a time, so the read marker only moves forward. */
  private readonly receiptQueue = new KeyedQueue();

  constructor(
    private readonly ctx: PipelineContext,
    readonly sender: OutboundSender,
  ) {}

  /** A message event in some room; returns false when the room is not a portal. */
  async onMatrixMessage(event: MatrixEvent): Promise<boolean> {
    const portal = this.ctx.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    await this.acceptMessage(portal, event);
    return true;
  }

  /** Checks a message (or edit) once against the chat's capabilities and queues it, or refuses it. */
  async acceptMessage(portal: PortalRow, event: MatrixEvent): Promise<void> {
    if (!this.ctx.portals.isMember(portal, event.sender)) {
      log.debug("ignoring a message from someone who is not the portal's user", { portal: portal.id, sender: event.sender });
      return;
    }
    const relation = relationOf(event.content);
    if (relation?.type === "edit" && !relation.newContent) {
      log.debug("ignoring an edit without m.new_content", { portal: portal.id });
      return;
    }
    if (await this.refuseWhileOff(portal, event)) return;
    const noun: EventNoun = relation?.type === "edit" ? "edit" : "message";
    const content = matrixToRemote(relation?.type === "edit" ? relation.newContent! : event.content);
    if ("unbridgeable" in content) return this.refuse(portal, event, FAILURES.unsupported_content(noun, content.reason), "unsupported_message");
    const caps = this.ctx.network.getCapabilities(this.ctx.portals.chatOf(portal));
    const refusal = this.contentRefusal(caps, content, noun) ?? (relation?.type === "edit" && !caps.edits ? this.unsupported(noun) : null);
    if (refusal) return this.refuse(portal, event, refusal.failure, refusal.metric);
    const payload: QueuedPayload =
      relation?.type === "edit"
        ? { kind: "edit", target: relation.eventId, content, ts: event.origin_server_ts }
        : { content, ts: event.origin_server_ts, ...(relation?.type === "reply" ? { replyTo: relation.eventId } : {}) };
    if (!this.sender.enqueue(portal, event, payload)) return;
    const expiry = unappliedExpiry(event.content);
    if (expiry) {
      // Not a refusal: the message goes, only its disappearing timer does not; said once, aside.
      this.ctx.metrics.dropped("to_network", "message_expiry");
      await this.ctx.matrix.notice(this.ctx.portals.ghostOf(portal), event.room_id, expiry, `expiry.${event.event_id}`);
    }
  }

  /** Why the chat would not take this content (too long, a kind or type it refuses, too large), or null. */
  private contentRefusal(caps: ChatCapabilities, content: RemoteContent, noun: EventNoun): { failure: BridgeFailure; metric: string } | null {
    const network = this.ctx.network.networkName;
    if (content.type === "text") {
      const bytes = Buffer.byteLength(content.markdown, "utf8");
      const max = caps.text.maxLength;
      if (bytes > max) return { failure: FAILURES.too_long(noun, `it is too long for the network (${bytes} bytes of text, at most ${max})`), metric: "too_long" };
      return null;
    }
    if (content.type !== "media") return null;
    const media = content.media;
    const limits = caps.media[media.kind];
    const refused = (why: string, metric: string) => ({ failure: FAILURES.media_refused(why, notSentText(media, why)), metric });
    if (!limits) return refused(`${network} does not take this kind of file here`, "unsupported_media");
    if (!mimetypeAccepted(media.mimetype, limits.mimetypes)) return refused(`${network} does not take files of type ${media.mimetype} here`, "unsupported_media");
    // Refused before anything is downloaded.
    if (media.size !== undefined && media.size > limits.maxSize) return refused(overLimitReason(media.size, limits.maxSize), "too_large");
    return null;
  }

  private unsupported(noun: EventNoun): { failure: BridgeFailure; metric: string } {
    const network = this.ctx.network.networkName;
    const what = noun === "edit" ? "editing messages" : noun === "reaction" ? "reactions" : "deleting messages";
    return { failure: FAILURES.feature_unsupported(noun, `${network} does not support ${what} here`), metric: "com.beeper.unsupported_event" };
  }

  /** Marks the event handled (never queued) and reports the failure; a redelivered event is not reported twice. */
  private async refuse(portal: PortalRow, event: MatrixEvent, failure: BridgeFailure, metric: string): Promise<void> {
    if (!this.ctx.store.outbound.markProcessed(event.event_id)) return;
    this.ctx.metrics.dropped("to_network", metric);
    log.debug("refused a Matrix event", { portal: portal.id, kind: failure.kind });
    await this.ctx.status.report({ roomId: event.room_id, eventId: event.event_id, asMxid: this.ctx.portals.ghostOf(portal) }, failure);
  }

  /**
   * Nothing the user writes while not permitted or with Third-Party Chats off is sent, now or
   * later: it is marked handled (never queued) and the user is told why. Returns true if refused.
   */
  private async refuseWhileOff(portal: PortalRow, event: MatrixEvent): Promise<boolean> {
    const { access, matrix, network } = this.ctx;
    if (access.optedIn(event.sender)) return false;
    const permitted = access.mayUse(event.sender);
    const failure = permitted ? FAILURES.third_party_chats_off(offNotice(matrix.botMxid, network.networkName)) : FAILURES.not_permitted();
    await this.refuse(portal, event, failure, permitted ? "third_party_chats_off" : "not_permitted");
    return true;
  }

  /**
   * Any other event of the portal's user in a portal: what a user would expect to reach the other
   * side but the network cannot carry (stickers, polls, room name changes, timers, ...) gets a
   * notice saying so. Returns false when the room is not a portal.
   */
  async onMatrixEvent(event: MatrixEvent): Promise<boolean> {
    const portal = this.ctx.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    if (!this.ctx.portals.isMember(portal, event.sender)) return true;
    const refusal = unbridgeableEvent(event);
    if (!refusal) return true;
    log.debug("not bridged: the network cannot carry it", { portal: portal.id, type: event.type, kind: refusal.kind });
    await this.refuse(portal, event, FAILURES.unbridgeable_event(refusal.notice, refusal.notice), refusal.kind);
    return true;
  }

  /** An m.reaction; returns false when the room is not a portal. */
  async onMatrixReaction(event: MatrixEvent): Promise<boolean> {
    const portal = this.ctx.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    const relation = relationOf(event.content);
    if (this.ctx.portals.isMember(portal, event.sender) && relation?.type === "annotation") {
      if (await this.refuseWhileOff(portal, event)) return true;
      const caps = this.ctx.network.getCapabilities(this.ctx.portals.chatOf(portal));
      if (!caps.reactions) {
        const { failure, metric } = this.unsupported("reaction");
        await this.refuse(portal, event, failure, metric);
        return true;
      }
      this.sender.enqueue(portal, event, { kind: "reaction", target: relation.eventId, key: relation.key, ts: event.origin_server_ts });
    }
    return true;
  }

  /**
   * An m.room.redaction (of a message or a reaction); returns false when the room is not a portal.
   * Whether the chat allows it depends on what it removes, which is known once the queue reaches
   * it (the target may be queued just before), so outbound-sender.ts checks it then.
   */
  async onMatrixRedaction(event: MatrixEvent): Promise<boolean> {
    const portal = this.ctx.store.portals.byRoom(event.room_id);
    if (!portal) return false;
    const target = redactedEventId(event);
    if (this.ctx.portals.isMember(portal, event.sender) && target) {
      if (await this.refuseWhileOff(portal, event)) return true;
      this.sender.enqueue(portal, event, { kind: "redaction", target, ts: event.origin_server_ts });
    }
    return true;
  }

  /**
   * The portal's user read the room up to `eventId`: every message from the other side up to
   * it that was not reported yet is reported read. A receipt on an event that is no bridged
   * message (a notice, a reaction) counts up to the receipt's time.
   */
  async onMatrixReadReceipt(roomId: string, userId: string, eventId: string, ts: number | null): Promise<void> {
    const { store, network, access, portals } = this.ctx;
    const portal = store.portals.byRoom(roomId);
    if (!portal || !portals.isMember(portal, userId) || !access.optedIn(userId)) return;
    const chat = portals.chatOf(portal);
    if (!network.getCapabilities(chat).readReceipts) return;
    // A DM has one read marker; a group one per Matrix member.
    const member = portal.kind === "group" ? userId : undefined;
    await this.receiptQueue.run(`portal:${portal.id}|${userId}`, async () => {
      const read = store.messages.byEventId(eventId);
      const upTo = read && read.portalId === portal.id ? read.timestamp : (ts ?? Date.now());
      const unread = store.messages.receivedBetween(portal.id, userId, store.readMarkers.get(portal.id, member), upTo, MAX_READ_BATCH);
      if (unread.length === 0) return;
      try {
        await network.sendReadReceipt(
          userId,
          chat,
          unread.map((m) => m.remoteId),
        );
        store.readMarkers.advance(portal.id, unread[unread.length - 1].timestamp, member);
      } catch (err) {
        // The next receipt reports these again.
        log.warn("could not send a read receipt", { portal: portal.id, error: (err as Error).message });
      }
    });
  }

  /** The users typing in a room changed: tell the network when the portal's user (a group's Matrix member) starts or stops. */
  onMatrixTyping(roomId: string, userIds: string[]): void {
    const { store, network, portals } = this.ctx;
    const portal = store.portals.byRoom(roomId);
    if (!portal?.roomId) return;
    const chat = portals.chatOf(portal);
    if (!network.getCapabilities(chat).typing) return;
    const users = portal.kind === "group" ? store.portals.members(portal.id) : portal.receiver ? [portal.receiver] : [];
    for (const user of users) this.typingOf(portal.id, chat, user, userIds.includes(user));
  }

  /** One user's typing in one portal: "on" repeated while it lasts, "off" once when it stops. */
  private typingOf(portalId: number, chat: ChatRef, user: string, typingNow: boolean): void {
    const { network, access } = this.ctx;
    // A user with Third-Party Chats off shows as not typing (and one who turns it off stops showing).
    const typing = typingNow && access.optedIn(user);
    const key = `${portalId}|${user}`;
    const timer = this.typingTimers.get(key);
    if (typing === (timer !== undefined)) return;
    const send = (on: boolean) => network.sendTyping(user, chat, on);
    if (!typing) {
      clearInterval(timer);
      this.typingTimers.delete(key);
      send(false);
      return;
    }
    const started = Date.now();
    send(true);
    const repeat = setInterval(() => {
      if (Date.now() - started < TYPING_MAX_MS) {
        send(true);
        return;
      }
      clearInterval(repeat);
      this.typingTimers.delete(key);
      send(false);
    }, TYPING_REPEAT_MS);
    repeat.unref();
    this.typingTimers.set(key, repeat);
  }

  stop(): void {
    for (const timer of this.typingTimers.values()) clearInterval(timer);
    this.typingTimers.clear();
  }
}
