/** Matrix ephemeral events the appservice receives (push_ephemeral), read into plain values (pure). */

export interface ReadReceipt {
  eventId: string;
  userId: string;
  ts: number | null;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The public read receipts (`m.read`) in `m.receipt` content: { "$event": { "m.read": { "@user": { ts } } } }.
 * Private receipts (`m.read.private`) are never bridged; a homeserver should not even push them.
 */
export function readReceiptsOf(content: Record<string, unknown>): ReadReceipt[] {
  const receipts: ReadReceipt[] = [];
  for (const [eventId, byType] of Object.entries(content)) {
    if (!isObject(byType)) continue;
    const read = byType["m.read"];
    if (!isObject(read)) continue;
    for (const [userId, info] of Object.entries(read)) {
      const ts = isObject(info) && typeof info.ts === "number" ? info.ts : null;
      receipts.push({ eventId, userId, ts });
    }
  }
  return receipts;
}

/** The users typing now, from `m.typing` content ({ user_ids: [...] }). */
export function typingUsersOf(content: Record<string, unknown>): string[] {
  const ids = content.user_ids;
  return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === "string") : [];
}
