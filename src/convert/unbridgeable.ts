/**
 * What a Matrix user does in a portal that third-party chats cannot carry, and what they are
 * told about it (pure, unit-tested). Ordinary messages go through message-content.ts; this is
 * every other event a user would expect to reach the other side.
 */

export interface Refusal {
  /** Metrics label. */
  kind: string;
  /** The notice the user gets in the portal. */
  notice: string;
}

interface EventLike {
  type: string;
  state_key?: string;
  content: Record<string, unknown>;
}

const POLL_START = new Set(["m.poll.start", "org.matrix.msc3381.poll.start"]);
const POLL_OTHER = new Set(["m.poll.response", "org.matrix.msc3381.poll.response", "m.poll.end", "org.matrix.msc3381.poll.end"]);
const CALL_MEMBER = new Set(["m.call.member", "org.matrix.msc3401.call.member"]);
const BEACON_INFO = new Set(["m.beacon_info", "org.matrix.msc3672.beacon_info"]);

const NOT_ON_WHATSAPP = "so the WhatsApp user doesn't see it";

/** The refusal for an event the network cannot carry, or null for events that need no notice. */
export function unbridgeableEvent(event: EventLike): Refusal | null {
  const { type, content } = event;
  const isState = typeof event.state_key === "string";
  if (type === "m.sticker") {
    return { kind: "sticker", notice: "Your sticker was not sent: third-party chats don't support stickers." };
  }
  if (POLL_START.has(type)) return { kind: "poll", notice: "Your poll was not sent: third-party chats don't support polls." };
  if (POLL_OTHER.has(type)) return { kind: "poll", notice: "Your poll vote was not sent: third-party chats don't support polls." };
  if (type === "m.call.invite") {
    return { kind: "call", notice: "Your call did not go through: third-party chats don't support calls, only messages." };
  }
  if (CALL_MEMBER.has(type) && isState && Object.keys(content).length > 0) {
    return { kind: "call", notice: "The call was not shared with WhatsApp: third-party chats don't support calls, only messages." };
  }
  if (BEACON_INFO.has(type) && isState && content.live === true) {
    return { kind: "live_location", notice: "Your live location was not shared: third-party chats don't support locations." };
  }
  if (type === "m.room.encrypted") {
    return {
      kind: "encrypted",
      notice:
        "Your message was not sent: this room is end-to-end encrypted on Matrix, and the bridge cannot read it to pass it on. Start a new chat with this contact without encryption (the bridge encrypts messages on the way to WhatsApp).",
    };
  }
  if (!isState || event.state_key !== "") {
    return null;
  }
  switch (type) {
    case "m.room.encryption":
      return {
        kind: "encryption",
        notice:
          "Encryption was turned on in this room, but the bridge cannot read encrypted messages: nothing written here reaches WhatsApp any more. Start a new chat with this contact without encryption (the bridge encrypts messages on the way to WhatsApp).",
      };
    case "m.room.name":
      return { kind: "room_name", notice: `The room name stays on Matrix: third-party chats have no chat names, ${NOT_ON_WHATSAPP}.` };
    case "m.room.topic":
      return { kind: "room_topic", notice: `The room topic stays on Matrix: third-party chats have no chat topics, ${NOT_ON_WHATSAPP}.` };
    case "m.room.avatar":
      return { kind: "room_avatar", notice: `The room picture stays on Matrix: third-party chats have no chat pictures, ${NOT_ON_WHATSAPP}.` };
    case "com.beeper.disappearing_timer":
      if (!(typeof content.timer === "number" && content.timer > 0)) return null;
      return {
        kind: "disappearing_timer",
        notice: "The disappearing-messages timer is not applied: third-party chats don't support disappearing messages, so messages in this chat will not disappear on WhatsApp.",
      };
    case "m.room.retention":
      if (typeof content.max_lifetime !== "number") return null;
      return {
        kind: "retention",
        notice: "The message retention policy is not applied on WhatsApp: third-party chats don't support it, so the WhatsApp user keeps the messages of this chat.",
      };
    default:
      return null;
  }
}

/**
 * Matrix ways of making one message expire, none of which the network can honour:
 * `com.beeper.disappearing_timer` (what Beeper clients and mautrix bridges put on messages),
 * `m.self_destruct` (MSC2228) and its earlier unstable forms `org.matrix.self_destruct` and
 * `org.matrix.self_destruct_after`. Returns the notice for a message that carries one, else null.
 */
export function unappliedExpiry(content: Record<string, unknown>): string | null {
  const timer = content["com.beeper.disappearing_timer"] as { timer?: unknown } | undefined;
  const expiring =
    (typeof timer === "object" && timer !== null && typeof timer.timer === "number" && timer.timer > 0) ||
    ["m.self_destruct", "org.matrix.self_destruct", "org.matrix.self_destruct_after"].some((key) => typeof content[key] === "number" && (content[key] as number) > 0);
  if (!expiring) return null;
  return "Sent, but it will not disappear: third-party chats don't support disappearing messages, so the WhatsApp user keeps this message.";
}
