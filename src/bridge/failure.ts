/**
 * The one failure model of the bridge (after mautrix-go bridgev2 messagestatus.go and
 * errors.go): everything that drops, refuses or holds back something a Matrix user sent is a
 * BridgeFailure, made by one of the predeclared FAILURES below, and status.ts `report()` turns it
 * into what the user sees: a `com.beeper.message_send_status` event and, when `notice` is set, a
 * notice in the room.
 */
import type { MessageStatus, MessageStatusReason } from "../convert/message-status";

/** What kind of refusal a BridgeUserError is (the provisioning API maps it to an HTTP status). */
export type RefusalKind = "invalid" | "not_found" | "forbidden" | "conflict" | "unavailable";

/** A user-facing refusal of a command (bot replies, provisioning errors); no Matrix event is involved. */
export class BridgeUserError extends Error {
  constructor(
    message: string,
    readonly kind: RefusalKind = "invalid",
  ) {
    super(message);
    this.name = "BridgeUserError";
  }
}

/** What went wrong with an event, for metrics, logs and the tests (one per predeclared failure in FAILURES). */
export type FailureKind =
  | "unsupported_content"
  | "too_long"
  | "media_refused"
  | "media_failed"
  | "third_party_chats_off"
  | "not_permitted"
  | "withdrawn_while_queued"
  | "unbridgeable_event"
  | "target_not_bridged"
  | "not_sender"
  | "feature_unsupported"
  | "too_old"
  | "network_refused"
  | "not_handled"
  | "undecryptable"
  | "unencrypted_room"
  | "waiting_for_network";

export interface FailureSpec {
  kind: FailureKind;
  status: MessageStatus;
  reason: MessageStatusReason;
  /** What the status event says, in the user's words (completes "not sent: …"). */
  message: string;
  /** The full notice the user reads in the room; absent: no notice (the status event only). */
  notice?: string;
  /** Whether the notice answers the event it is about (shown as a reply to it). */
  quote?: boolean;
  /** Whether trying again later may help (the bridge itself retries those). */
  retriable?: boolean;
  /** Whether it is certain that nothing reached the other side. */
  certain?: boolean;
}

/** A status-carrying error: thrown inside the pipelines, reported once by status.ts `report()`. */
export class BridgeFailure extends Error {
  readonly kind: FailureKind;
  readonly status: MessageStatus;
  readonly reason: MessageStatusReason;
  readonly notice?: string;
  readonly quote: boolean;
  readonly retriable: boolean;
  readonly certain: boolean;

  constructor(spec: FailureSpec) {
    super(spec.message);
    this.name = "BridgeFailure";
    this.kind = spec.kind;
    this.status = spec.status;
    this.reason = spec.reason;
    if (spec.notice !== undefined) this.notice = spec.notice;
    this.quote = spec.quote ?? false;
    this.retriable = spec.retriable ?? false;
    this.certain = spec.certain ?? true;
  }

  /** Whether the user gets a notice besides the status event. */
  get notify(): boolean {
    return this.notice !== undefined;
  }
}

/** "message", "edit", "reaction", "deletion" (and in a group's room "invitation", "removal", "room change"): how a notice names the event. */
export type EventNoun = "message" | "edit" | "reaction" | "deletion" | "invitation" | "removal" | "room change";

const refused = (kind: FailureKind, reason: MessageStatusReason, noun: EventNoun, why: string): BridgeFailure =>
  new BridgeFailure({ kind, status: "FAIL_PERMANENT", reason, message: why, notice: `Your ${noun} was not sent: ${why}.`, quote: true });

/**
 * Every way something a Matrix user sent can fail to go through, each with what the user is told.
 * The notice texts are the ones users have always read; only the status event is common to all.
 */
export const FAILURES = {
  /** Matrix content the network has no form for (an unknown msgtype, an encrypted attachment, …). */
  unsupported_content: (noun: EventNoun, why: string) => refused("unsupported_content", "com.beeper.unsupported_event", noun, why),
  /** Text over the chat's limit. */
  too_long: (noun: EventNoun, why: string) => refused("too_long", "com.beeper.unsupported_event", noun, why),
  /** A file the chat does not take (over its size limit, or a kind or type it refuses); `notice` names the file. */
  media_refused: (why: string, notice: string) =>
    new BridgeFailure({ kind: "media_refused", status: "FAIL_PERMANENT", reason: "com.beeper.unsupported_event", message: why, notice, quote: true }),
  /** Media the bridge could not prepare or the network could not take (download, probe, conversion). */
  media_failed: (why: string, notice: string) =>
    new BridgeFailure({ kind: "media_failed", status: "FAIL_PERMANENT", reason: "m.foreign_network_error", message: why, notice, quote: true }),
  /** Written while the user had Third-Party Chats off: never sent, now or later. */
  third_party_chats_off: (notice: string) =>
    new BridgeFailure({ kind: "third_party_chats_off", status: "FAIL_PERMANENT", reason: "m.no_permission", message: "your Third-Party Chats are off", notice }),
  /** Written by a user the config no longer permits. */
  not_permitted: () =>
    new BridgeFailure({
      kind: "not_permitted",
      status: "FAIL_PERMANENT",
      reason: "m.no_permission",
      message: "you are no longer allowed to use this bridge",
      notice: "Not sent: you are no longer allowed to use this bridge.",
    }),
  /** Turned off (or permission withdrawn) while it waited for the network: not delivered later. */
  withdrawn_while_queued: (noun: EventNoun, why: string) => refused("withdrawn_while_queued", "m.no_permission", noun, why),
  /** A Matrix event of a kind the network cannot carry at all (stickers, polls, room changes, …). */
  unbridgeable_event: (notice: string, why: string) =>
    new BridgeFailure({ kind: "unbridgeable_event", status: "FAIL_PERMANENT", reason: "com.beeper.unsupported_event", message: why, notice }),
  /** An edit, reaction or deletion whose target never reached the network. */
  target_not_bridged: (noun: EventNoun, why: string) => refused("target_not_bridged", "m.event_not_handled", noun, why),
  /** A change only the target's sender may make. */
  not_sender: (noun: EventNoun, why: string) => refused("not_sender", "m.no_permission", noun, why),
  /** A change the chat does not support (edits, reactions, deletions). */
  feature_unsupported: (noun: EventNoun, why: string) => refused("feature_unsupported", "com.beeper.unsupported_event", noun, why),
  /** A change made after the chat's window for it. */
  too_old: (noun: EventNoun, why: string) => refused("too_old", "m.event_too_old", noun, why),
  /** The network said no for good. */
  network_refused: (noun: EventNoun, why: string) =>
    new BridgeFailure({
      kind: "network_refused",
      status: "FAIL_PERMANENT",
      reason: "m.foreign_network_error",
      message: why,
      notice: `Your ${noun} was not delivered: ${why}.`,
      quote: true,
    }),
  /** The bridge could not handle the Matrix event even after retrying it; whether any of it went out is not known. */
  not_handled: () =>
    new BridgeFailure({
      kind: "not_handled",
      status: "FAIL_PERMANENT",
      reason: "m.event_not_handled",
      message: "the bridge could not handle it after several tries",
      notice: "Your message may not have been bridged: the bridge could not handle it after several tries.",
      quote: true,
      certain: false,
    }),
  /** An encrypted event the bridge could not decrypt (its room key never reached the bridge's device, …); `why` is the library's reason. */
  undecryptable: (why: string) =>
    new BridgeFailure({
      kind: "undecryptable",
      status: "FAIL_PERMANENT",
      reason: "m.event_not_handled",
      message: `the bridge could not decrypt it (${why})`,
      notice: `Your message was not sent: the bridge could not decrypt it (${why}). Please send it again.`,
      quote: true,
    }),
  /** A message in an unencrypted portal while the bridge requires encryption (encryption.require). */
  unencrypted_room: () =>
    new BridgeFailure({
      kind: "unencrypted_room",
      status: "FAIL_PERMANENT",
      reason: "m.no_permission",
      message: "this bridge only bridges encrypted rooms",
      notice: "Your message was not sent: this bridge only bridges encrypted rooms. Turn on encryption in this room's settings and send it again.",
      quote: true,
    }),
  /**
   * Waiting for the network, which is unreachable: shown once while it waits (no notice), then
   * replaced by the sent or delivered status when it goes through.
   */
  waiting_for_network: (networkName: string) =>
    new BridgeFailure({
      kind: "waiting_for_network",
      status: "PENDING",
      reason: "m.bridge_unavailable",
      message: `${networkName} is not reachable right now; it will be sent when it is`,
      retriable: true,
      certain: true,
    }),
} as const satisfies Record<FailureKind, (...args: never[]) => BridgeFailure>;

/** The kinds of failure, listed (the test that checks both outputs of each walks this list). */
export const FAILURE_KINDS = Object.keys(FAILURES) as FailureKind[];
