/**
 * What the sender of a Matrix event is told about it: the `com.beeper.message_send_status`
 * events (sent, delivered, pending, failed) and the failure notices, and the bot's notices in a
 * user's management room. `report()` is the one way a BridgeFailure reaches the user.
 */
import { MESSAGE_STATUS_EVENT_TYPE, MessageStatusInfo, messageStatusContent } from "../convert/message-status";
import { getLogger } from "../logging";
import { BridgeStore } from "../store";
import { BridgeFailure } from "./failure";
import { MatrixPort } from "./matrix-port";

const log = getLogger("status");

export interface StatusOptions {
  /** Whether com.beeper.message_send_status events are posted at all (config bridge.message_status_events; default false). */
  messageStatusEvents?: boolean;
  /** How long a "sent" status waits for the delivery receipt (config bridge.sent_status_delay_ms); 0: at once. */
  sentStatusDelayMs?: number;
}

/** The Matrix event a status is about, the room it is in and who speaks for the bridge there. */
export interface StatusTarget {
  roomId: string;
  eventId: string;
  /** The ghost (or bot) that posts the status and the notice. */
  asMxid: string;
}

export class StatusReporter {
  /** "Sent" statuses being posted, so a delivery receipt right behind cannot overtake its own "sent". */
  private readonly sentStatuses = new Map<string, Promise<void>>();
  /** "Sent" statuses waiting a moment for the delivery receipt (see sent()). */
  private readonly heldSentStatuses = new Map<string, { timer: NodeJS.Timeout; post: () => Promise<void> }>();
  /** Events shown as pending: each is shown so once while it waits, not once per retry. */
  private readonly shownPending = new Set<string>();

  constructor(
    private readonly matrix: MatrixPort,
    private readonly store: BridgeStore,
    private readonly opts: StatusOptions,
  ) {}

  private get enabled(): boolean {
    return this.opts.messageStatusEvents === true;
  }

  /**
   * The one place a failure reaches the user: its status event (when enabled) and its notice
   * (when it has one, whether status events are on or off). Never throws: a status is not worth a stuck queue.
   */
  async report(target: StatusTarget, failure: BridgeFailure): Promise<void> {
    if (failure.status !== "PENDING") this.shownPending.delete(target.eventId);
    await this.post(target.roomId, target.asMxid, failure.status === "PENDING" ? "pending" : "failed", {
      eventId: target.eventId,
      status: failure.status,
      reason: failure.reason,
      message: failure.message,
    });
    if (failure.notice === undefined) return;
    await this.matrix
      .notice(target.asMxid, target.roomId, failure.notice, `fail.${target.eventId}`, failure.quote ? target.eventId : undefined)
      .catch((err: Error) => log.warn("could not post a failure notice", { kind: failure.kind, error: err.message }));
  }

  /** Reports a waiting state (PENDING / FAIL_RETRIABLE) once per event, however often it is retried. */
  async reportOnce(target: StatusTarget, failure: BridgeFailure): Promise<void> {
    if (this.shownPending.has(target.eventId)) return;
    this.shownPending.add(target.eventId);
    await this.report(target, failure);
  }

  /**
   * The "sent" status of an event the network took. With delivery receipts it waits up to
   * sentStatusDelayMs for the receipt, so that one status event says "delivered" instead of
   * two: each is a room event the homeserver stores and sends to every client.
   */
  async sent(target: StatusTarget, deliveryReceipts: boolean): Promise<void> {
    this.shownPending.delete(target.eventId);
    const post = async () => {
      // Empty, not absent: delivery receipts will follow.
      const posting = this.post(target.roomId, target.asMxid, "sent", { eventId: target.eventId, status: "SUCCESS", ...(deliveryReceipts ? { deliveredTo: [] } : {}) });
      this.sentStatuses.set(target.eventId, posting);
      try {
        await posting;
      } finally {
        this.sentStatuses.delete(target.eventId);
      }
    };
    if (!this.enabled) return;
    const delay = this.opts.sentStatusDelayMs ?? 0;
    if (delay <= 0 || !deliveryReceipts) return post();
    const timer = setTimeout(() => {
      this.heldSentStatuses.delete(target.eventId);
      void post();
    }, delay);
    this.heldSentStatuses.set(target.eventId, { timer, post });
  }

  /** The other side has the event: a delivered status (it replaces a "sent" still held back). */
  async delivered(roomId: string, eventId: string, recipientMxid: string): Promise<void> {
    const held = this.heldSentStatuses.get(eventId);
    if (held) {
      // Delivered before the "sent" status went out: one status event says both.
      clearTimeout(held.timer);
      this.heldSentStatuses.delete(eventId);
    }
    await this.sentStatuses.get(eventId);
    await this.post(roomId, recipientMxid, "delivered", { eventId, status: "SUCCESS", deliveredTo: [recipientMxid] });
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

  /** Held "sent" statuses go out now rather than never. */
  flush(): void {
    for (const { timer, post } of this.heldSentStatuses.values()) {
      clearTimeout(timer);
      void post();
    }
    this.heldSentStatuses.clear();
  }

  /** Posts a com.beeper.message_send_status event; never fails (a status is not worth a retry loop). */
  private async post(roomId: string, asMxid: string, stage: string, info: MessageStatusInfo): Promise<void> {
    // Turned off by the admin (bridge.message_status_events): failures are still explained by a notice.
    if (!this.enabled) return;
    try {
      await this.matrix.send(asMxid, roomId, messageStatusContent(info), { txnId: `status.${stage}.${info.eventId}`, type: MESSAGE_STATUS_EVENT_TYPE });
    } catch (err) {
      log.warn("could not post a message status", { stage, error: (err as Error).message });
    }
  }
}
