/**
 * Matrix → network, back half: drains each portal's durable outbound queue in order, sends each
 * event to the network, records what it became in the transaction that takes it off the queue,
 * and tells the sender (sent, pending while the network is away, or why it failed).
 */
import { notSentText } from "../convert/media";
import { matrixToRemote } from "../convert/message-content";
import { getLogger } from "../logging";
import { ChatCapabilities, ChatRef, LocalMedia, maxMediaSize, MediaError, NetworkError, RemoteContent } from "../network/connector";
import { MessageRow, OutboundItem, PortalRow } from "../store";
import { PipelineContext } from "./context";
import { BridgeFailure, EventNoun, FAILURES } from "./failure";
import { MatrixEvent } from "./matrix-port";
import { PortalQueueRunner } from "./portal-queue-runner";
import { StatusTarget } from "./status";

const log = getLogger("outbound");

/**
 * What the durable outbound queue holds per Matrix event (JSON). Targets are Matrix event ids,
 * resolved to network ids only when sent: a target queued just before is mapped by then.
 */
export type QueuedPayload =
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
const EVENT_NOUN: Record<NonNullable<QueuedPayload["kind"]>, EventNoun> = { message: "message", edit: "edit", reaction: "reaction", redaction: "deletion" };

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

export interface SenderOptions {
  /** Downloads of a queued file the homeserver may fail before the file is given up (config bridge.media_download_attempts; default 10). */
  mediaDownloadAttempts?: number;
  /** Whether the network is known to be unreachable now (its link is down). */
  networkDown(): boolean;
  /** Called when an event starts waiting for a network that is down (counts "held" on the link). */
  onHeld(): void;
}

export class OutboundSender {
  private readonly runner: PortalQueueRunner<OutboundItem>;
  /** Files of queued events being sent, by queue row, kept across retries. */
  private readonly media = new Map<number, QueuedMedia>();

  constructor(
    private readonly ctx: PipelineContext,
    private readonly opts: SenderOptions,
  ) {
    this.runner = new PortalQueueRunner(
      ctx.store.outbound,
      {
        handle: (item) => this.sendOne(item),
        abandoned: (portalId) => !ctx.store.portals.get(portalId),
        onRetry: (item, err, attempts, inMs) => {
          log.debug("send failed, will retry", { portal: item.portalId, attempts, error: (err as Error).message, inMs });
          void this.showWaiting(item);
        },
      },
      ctx.retry,
      ctx.stopping,
    );
  }

  /** Queues the event (marked processed in the same transaction) and starts sending; false if it was queued before. */
  enqueue(portal: PortalRow, event: MatrixEvent, payload: QueuedPayload): boolean {
    if (!this.ctx.store.outbound.enqueue(portal.id, event.event_id, event.sender, payload)) return false;
    void this.runner.kick(portal.id);
    return true;
  }

  /** Resumes every outbound queue left non-empty by the previous run. */
  resume(): void {
    this.runner.resume();
  }

  /** The network went away: everything waiting for it shows as pending, once each. */
  networkWentDown(): void {
    for (const item of this.ctx.store.outbound.all()) void this.showWaiting(item);
  }

  /** Shows an event as waiting for the network (once per event, however long and often it is retried). */
  private async showWaiting(item: OutboundItem): Promise<void> {
    const portal = this.ctx.store.portals.get(item.portalId);
    if (!portal?.roomId) return;
    await this.ctx.status.reportOnce(this.targetOf(portal, item.eventId), FAILURES.waiting_for_network(this.ctx.network.networkName));
  }

  private targetOf(portal: PortalRow, eventId: string): StatusTarget {
    return { roomId: portal.roomId!, eventId, asMxid: this.ctx.portals.ghostOf(portal) };
  }

  /** Sends one queued event; throws to have it retried (the runner counts and waits), reports and drops it when it cannot go. */
  private async sendOne(item: OutboundItem): Promise<void> {
    const { store, access, metrics, network, portals } = this.ctx;
    const portal = store.portals.get(item.portalId);
    if (!portal) return store.outbound.remove(item.seq);
    const payload = JSON.parse(item.payload) as QueuedPayload;
    const noun = EVENT_NOUN[payload.kind ?? "message"];
    if (!access.optedIn(item.sender)) {
      // Turned off (or permission withdrawn) while this waited for the network: it is not delivered later.
      const permitted = access.mayUse(item.sender);
      metrics.dropped("to_network", permitted ? "third_party_chats_off" : "not_permitted");
      const why = permitted ? "you turned Third-Party Chats off before the network took it" : "you are no longer allowed to use this bridge";
      return this.giveUp(portal, item, FAILURES.withdrawn_while_queued(noun, why));
    }
    if (this.opts.networkDown()) {
      this.opts.onHeld();
      await this.showWaiting(item);
    }
    const chat = portals.chatOf(portal);
    const caps = network.getCapabilities(chat);
    // Media is fetched from the homeserver at most once for all attempts, and deleted after.
    let media = this.media.get(item.seq);
    if (!media) this.media.set(item.seq, (media = {}));
    const attemptStarted = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - attemptStarted) / 1e9;
    try {
      await network.ensureUser(item.sender, null);
      const sent = await this.sendQueued(portal, chat, caps, item, payload, media);
      await this.releaseMedia(item.seq);
      if (sent) {
        metrics.networkSendSeconds.observe({ outcome: "accepted" }, seconds());
        metrics.matrixToNetworkSeconds.observe((Date.now() - item.createdAt) / 1000);
        metrics.bridged("to_network", payload.kind === undefined || payload.kind === "message" ? (payload.content as RemoteContent).type : payload.kind, portal.kind);
      }
      if (sent && portal.roomId) await this.ctx.status.sent(this.targetOf(portal, item.eventId), caps.deliveryReceipts);
    } catch (err) {
      const failure = this.failureOf(err, payload, noun);
      if (!failure) {
        metrics.networkSendSeconds.observe({ outcome: "retry" }, seconds());
        throw err;
      }
      if (err instanceof NetworkError) {
        metrics.networkSendSeconds.observe({ outcome: "refused" }, seconds());
        metrics.failed("to_network", err.code);
      } else if (err instanceof MediaError) {
        metrics.failed("to_network", err.code);
      } else {
        // Nothing reached the network: it cannot take this event (too old, not allowed, not supported).
        metrics.dropped("to_network", failure.reason);
      }
      log.warn(`the ${noun} was not sent`, { portal: portal.id, kind: failure.kind, code: err instanceof NetworkError || err instanceof MediaError ? err.code : failure.reason });
      await this.releaseMedia(item.seq);
      return this.giveUp(portal, item, failure);
    }
  }

  /** The failure to report for an error that retrying cannot fix, or null when it is worth another try. */
  private failureOf(err: unknown, payload: QueuedPayload, noun: EventNoun): BridgeFailure | null {
    if (err instanceof BridgeFailure) return err.retriable ? null : err;
    const isMedia = (payload.kind === undefined || payload.kind === "message") && !("unbridgeable" in payload.content) && payload.content.type === "media";
    if (err instanceof MediaError && !err.retryable && isMedia)
      return FAILURES.media_failed(err.reason, notSentText((payload.content as Extract<RemoteContent, { type: "media" }>).media, err.reason));
    if (err instanceof NetworkError && !err.retryable) return FAILURES.network_refused(noun, err.message);
    return null;
  }

  /** Takes the event off the queue and tells its sender why it did not go. */
  private async giveUp(portal: PortalRow, item: OutboundItem, failure: BridgeFailure): Promise<void> {
    this.ctx.store.outbound.remove(item.seq);
    if (portal.roomId) await this.ctx.status.report(this.targetOf(portal, item.eventId), failure);
  }

  private async releaseMedia(seq: number): Promise<void> {
    const media = this.media.get(seq);
    this.media.delete(seq);
    await media?.local?.release();
  }

  /**
   * Queued media still on the homeserver → a local file the connector can send. A file the
   * homeserver keeps failing to give is given up after mediaDownloadAttempts, so that it
   * cannot hold the chat's queue for ever.
   */
  private async withLocalMedia(content: RemoteContent, caps: ChatCapabilities, media: QueuedMedia): Promise<RemoteContent> {
    if (content.type !== "media" || content.source.from !== "matrix") return content;
    const max = caps.media[content.media.kind]?.maxSize ?? maxMediaSize(caps);
    media.local ??= await this.ctx.matrix.downloadMedia(content.source.mxc, max, content.source.encryption).catch((err: unknown) => {
      if (!(err instanceof MediaError) || !err.retryable) throw err;
      media.failedDownloads = (media.failedDownloads ?? 0) + 1;
      const attempts = this.opts.mediaDownloadAttempts ?? 10;
      if (media.failedDownloads < attempts) throw err;
      throw new MediaError(err.code, `${err.reason} after ${attempts} attempt${attempts === 1 ? "" : "s"}`);
    });
    return { ...content, source: { from: "file", path: media.local.path, size: media.local.size } };
  }

  /**
   * Sends one queued event to the network and updates the maps in the same transaction that
   * takes it off the queue. Returns false when there was nothing to send (a redaction of an
   * event that was never bridged). Throws a BridgeFailure when the target or the chat's
   * capabilities forbid it (what depends on the target is known only now).
   */
  private async sendQueued(portal: PortalRow, chat: ChatRef, caps: ChatCapabilities, item: OutboundItem, payload: QueuedPayload, media: QueuedMedia): Promise<boolean> {
    const { store, network, matrix } = this.ctx;
    const on = network.networkName;
    // The Matrix user who sent it: a DM's user, or one of a group's members.
    const user = item.sender;
    const txnId = item.eventId;
    switch (payload.kind) {
      case undefined:
      case "message": {
        if ("unbridgeable" in payload.content) {
          store.outbound.remove(item.seq);
          return false;
        }
        const replied = payload.replyTo && caps.replies ? this.bridgedMessage(portal, payload.replyTo) : undefined;
        const content = await this.withLocalMedia(payload.content, caps, media);
        const result = await network.sendMessage(user, chat, { txnId, content, timestamp: payload.ts, ...(replied ? { replyTo: replied.remoteId } : {}) });
        store.transaction(() => {
          store.messages.insert({ portalId: portal.id, remoteId: result.remoteId, part: 0, eventId: txnId, sender: user, timestamp: result.timestamp, replyTo: replied?.remoteId });
          store.outbound.remove(item.seq);
        });
        log.debug("bridged message to the network", { portal: portal.id, eventId: txnId, remoteId: result.remoteId });
        return true;
      }
      case "edit": {
        const original = this.bridgedMessage(portal, payload.target);
        if (!original) throw FAILURES.target_not_bridged("edit", "the message it edits was never bridged");
        if (original.sender !== user) throw FAILURES.not_sender("edit", "only the sender can edit a message");
        if (!caps.edits) throw FAILURES.feature_unsupported("edit", `${on} does not support editing messages here`);
        if (caps.edits.maxAgeMs > 0 && payload.ts - original.timestamp > caps.edits.maxAgeMs) {
          throw FAILURES.too_old("edit", `${on} allows editing a message only within ${describeDuration(caps.edits.maxAgeMs)} of sending it`);
        }
        const edit = { type: "edit" as const, target: original.remoteId, content: payload.content, ...(original.replyTo ? { replyTo: original.replyTo } : {}) };
        await network.sendChange(user, chat, { txnId, change: edit, timestamp: payload.ts });
        store.outbound.remove(item.seq);
        return true;
      }
      case "reaction": {
        const target = this.bridgedMessage(portal, payload.target);
        if (!target) throw FAILURES.target_not_bridged("reaction", "the message it reacts to was never bridged");
        if (!caps.reactions) throw FAILURES.feature_unsupported("reaction", `${on} does not support reactions here`);
        const previous = store.reactions.get(portal.id, target.remoteId, user);
        const result = await network.sendChange(user, chat, { txnId, change: { type: "reaction", target: target.remoteId, emoji: payload.key }, timestamp: payload.ts });
        store.transaction(() => {
          store.reactions.put({
            portalId: portal.id,
            targetRemoteId: target.remoteId,
            sender: user,
            emoji: payload.key,
            eventId: txnId,
            remoteId: result.remoteId,
            timestamp: result.timestamp,
          });
          store.outbound.remove(item.seq);
        });
        // The network replaced the earlier reaction; Matrix would show both.
        if (previous && previous.eventId !== txnId && caps.reactions.maxPerUser === 1 && portal.roomId) {
          await matrix
            .redact(this.ctx.portals.ghostOf(portal), portal.roomId, previous.eventId, { txnId: `replaced.${previous.eventId}`, reason: `${on} keeps one reaction per person` })
            .catch((err: Error) => log.warn("could not remove a replaced reaction", { portal: portal.id, error: err.message }));
        }
        return true;
      }
      case "redaction": {
        const reaction = store.reactions.byEventId(payload.target);
        if (reaction && reaction.portalId === portal.id) {
          if (reaction.sender !== user) throw FAILURES.not_sender("deletion", `only its sender can remove a reaction on ${on}, so it was removed here only`);
          if (!caps.reactions) throw FAILURES.feature_unsupported("deletion", `${on} does not support removing reactions here`);
          await network.sendChange(user, chat, { txnId, change: { type: "unreaction", target: reaction.targetRemoteId, reaction: reaction.remoteId }, timestamp: payload.ts });
          store.transaction(() => {
            store.reactions.delete(portal.id, reaction.targetRemoteId, user);
            store.outbound.remove(item.seq);
          });
          return true;
        }
        const message = this.bridgedMessage(portal, payload.target);
        if (!message) {
          store.outbound.remove(item.seq);
          return false;
        }
        if (message.sender !== user) throw FAILURES.not_sender("deletion", `${on} lets only the sender delete a message for everyone, so it was deleted here only`);
        if (!caps.deletes) throw FAILURES.feature_unsupported("deletion", `${on} does not support deleting messages here, so it was deleted here only`);
        if (caps.deletes.maxAgeMs > 0 && payload.ts - message.timestamp > caps.deletes.maxAgeMs) {
          throw FAILURES.too_old(
            "deletion",
            `${on} allows deleting a message for everyone only within ${describeDuration(caps.deletes.maxAgeMs)} of sending it, so it was deleted here only`,
          );
        }
        const deletion = { type: "delete" as const, target: message.remoteId, ...(message.replyTo ? { replyTo: message.replyTo } : {}) };
        await network.sendChange(user, chat, { txnId, change: deletion, timestamp: payload.ts });
        store.transaction(() => {
          store.messages.delete(portal.id, message.remoteId);
          store.outbound.remove(item.seq);
        });
        return true;
      }
    }
  }

  /** The bridged message behind a Matrix event id in this portal, if any. */
  private bridgedMessage(portal: PortalRow, eventId: string): MessageRow | undefined {
    const row = this.ctx.store.messages.byEventId(eventId);
    return row && row.portalId === portal.id ? row : undefined;
  }

  /** Chats with Matrix → network work in progress. */
  get busy(): number {
    return this.runner.busy;
  }

  /** Files of events that were being sent are deleted (they are fetched again after a restart). */
  async stop(): Promise<void> {
    for (const seq of [...this.media.keys()]) await this.releaseMedia(seq);
  }
}
