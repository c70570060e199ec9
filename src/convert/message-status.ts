/**
 * `com.beeper.message_send_status` content, as mautrix bridges send it (mautrix-go
 * event/beeper.go, bridgev2/messagestatus.go): a reference to the user's event and what
 * became of it. Clients that know it (Beeper) show sent/delivered/failed marks.
 */
export const MESSAGE_STATUS_EVENT_TYPE = "com.beeper.message_send_status";

export type MessageStatus = "SUCCESS" | "PENDING" | "FAIL_RETRIABLE" | "FAIL_PERMANENT";

/** Why an event failed (mautrix's MessageStatusReason values). */
export type MessageStatusReason =
  "m.event_not_handled" | "com.beeper.unsupported_event" | "m.event_too_old" | "m.foreign_network_error" | "m.no_permission" | "m.bridge_unavailable";

export interface MessageStatusInfo {
  /** The Matrix event the status is about. */
  eventId: string;
  status: MessageStatus;
  reason?: MessageStatusReason;
  /** Shown to the user; says what went wrong in their words. */
  message?: string;
  /**
   * Who the event was delivered to. Present (even empty) on a success means delivery receipts
   * will follow; absent means the client should not expect any.
   */
  deliveredTo?: string[];
}

export function messageStatusContent(info: MessageStatusInfo): Record<string, unknown> {
  const content: Record<string, unknown> = {
    "m.relates_to": { rel_type: "m.reference", event_id: info.eventId },
    status: info.status,
  };
  if (info.reason) content.reason = info.reason;
  if (info.message) content.message = info.message;
  if (info.deliveredTo) content.delivered_to_users = info.deliveredTo;
  return content;
}
