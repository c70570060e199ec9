/**
 * Matrix event relations the bridge reads and writes (pure): replies (`m.in_reply_to`), edits
 * (`m.replace` with `m.new_content`), reactions (`m.annotation`) and redactions.
 */

/** The relation a message or reaction declares, as the bridge uses it; null when it has none it knows. */
export type MatrixRelation =
  | { type: "reply"; eventId: string }
  /** newContent null: an `m.replace` without `m.new_content`, which the spec says to ignore. */
  | { type: "edit"; eventId: string; newContent: Record<string, unknown> | null }
  | { type: "annotation"; eventId: string; key: string };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

export function relationOf(content: Record<string, unknown>): MatrixRelation | null {
  const rel = content["m.relates_to"];
  if (!isObject(rel)) return null;
  if (rel.rel_type === "m.replace" && typeof rel.event_id === "string") {
    const newContent = content["m.new_content"];
    return { type: "edit", eventId: rel.event_id, newContent: isObject(newContent) ? newContent : null };
  }
  if (rel.rel_type === "m.annotation" && typeof rel.event_id === "string" && typeof rel.key === "string") {
    return { type: "annotation", eventId: rel.event_id, key: rel.key };
  }
  const inReplyTo = rel["m.in_reply_to"];
  // A thread message's in_reply_to is only a fallback for clients without threads, not a reply.
  if (isObject(inReplyTo) && typeof inReplyTo.event_id === "string" && !(rel.rel_type === "m.thread" && rel.is_falling_back === true)) {
    return { type: "reply", eventId: inReplyTo.event_id };
  }
  return null;
}

/** The event a redaction removes: in `content.redacts` from room version 11 on, at the top level before. */
export function redactedEventId(event: { content: Record<string, unknown>; redacts?: unknown }): string | null {
  if (typeof event.content.redacts === "string") return event.content.redacts;
  return typeof event.redacts === "string" ? event.redacts : null;
}

/** A copy of message content that replies to `eventId`, without fallback text (spec v1.13). */
export function asReply(content: Record<string, unknown>, eventId: string): Record<string, unknown> {
  return { ...content, "m.relates_to": { "m.in_reply_to": { event_id: eventId } } };
}

/** An edit of `eventId` to `newContent`, with the "* " fallback the spec shows for clients without edits. */
export function editContent(eventId: string, newContent: Record<string, unknown>): Record<string, unknown> {
  const { "m.relates_to": _ignored, ...replacement } = newContent;
  const fallback: Record<string, unknown> = { ...replacement };
  if (typeof replacement.body === "string") fallback.body = `* ${replacement.body}`;
  if (typeof replacement.formatted_body === "string") fallback.formatted_body = `* ${replacement.formatted_body}`;
  return { ...fallback, "m.new_content": replacement, "m.relates_to": { rel_type: "m.replace", event_id: eventId } };
}

/** `m.reaction` content: `key` (an emoji) on `eventId`. */
export function reactionContent(eventId: string, key: string): Record<string, unknown> {
  return { "m.relates_to": { rel_type: "m.annotation", event_id: eventId, key } };
}
