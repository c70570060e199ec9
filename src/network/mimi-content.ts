import {
  MIMI_CONTENT_TYPE_MARKDOWN,
  MIMI_CONTENT_TYPE_PLAIN,
  MIMI_DISPOSITION,
  MIMI_MESSAGE_ID_LENGTH,
  MimiMessage,
  MimiNestedPart,
  newDelete,
  newEdit,
  newReaction,
  newTextMessage,
  newUnreaction,
} from "../protocol/mimi";
import { isSticker } from "../protocol/payload";
import { MessageChange, RemoteContent } from "./connector";

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** The first renderable text part of a MIMI body (multipart "chooseOne" picks the first we can show). */
function textOf(part: MimiNestedPart): string | null {
  if (part.cardinality === "single" && (part.contentType === MIMI_CONTENT_TYPE_MARKDOWN || part.contentType.startsWith("text/"))) {
    return utf8.decode(part.content);
  }
  if (part.cardinality === "multi") {
    for (const p of part.parts) {
      const text = textOf(p);
      if (text !== null) return text;
    }
  }
  return null;
}

/** A decoded MIMI message → the core's network-neutral content. */
export function mimiToRemoteContent(message: MimiMessage): RemoteContent {
  if (isSticker(message)) {
    return { type: "unsupported", what: "sticker", description: "sent a sticker. Third-party chats don't support stickers, so it can't be shown here." };
  }
  const body = message.body;
  if (body.disposition === MIMI_DISPOSITION.render || body.disposition === MIMI_DISPOSITION.unspecified) {
    const text = textOf(body);
    if (text !== null) {
      const markdown = body.cardinality === "single" && body.contentType === MIMI_CONTENT_TYPE_PLAIN ? escapeMarkdown(text) : text;
      return { type: "text", markdown };
    }
  }
  return {
    type: "unsupported",
    what: `mimi:${body.cardinality}:${body.disposition}`,
    description: "sent a message of a kind this bridge cannot show yet.",
  };
}

function escapeMarkdown(text: string): string {
  return text.replace(/([\\`*_{}[\]()#+\-.!|~<>])/g, "\\$1");
}

/** The core's content → a MIMI message from `sender` in `room`, optionally replying to the message `inReplyTo` (a network id). */
export function remoteContentToMimi(content: RemoteContent, sender: string, room: string, inReplyTo?: string): MimiMessage {
  if (content.type !== "text") throw new Error(`cannot send ${content.type} content`);
  const replyId = inReplyTo === undefined ? null : mimiIdOf(inReplyTo);
  return newTextMessage({ sender, room, markdown: content.markdown, inReplyTo: replyId });
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const MIMI_ID_HEX = new RegExp(`^[0-9a-f]{${MIMI_MESSAGE_ID_LENGTH * 2}}$`);

/** The MIMI message id behind a network id, or null for ids that name no MIMI message (e.g. a disappearing-timer notice). */
export function mimiIdOf(remoteId: string): Uint8Array | null {
  return MIMI_ID_HEX.test(remoteId) ? new Uint8Array(Buffer.from(remoteId, "hex")) : null;
}

/** What a received MIMI message is: a message (maybe a reply) or a change to an earlier one. */
export type MimiEvent = { kind: "message"; content: RemoteContent; replyTo?: string } | { kind: "change"; change: MessageChange };

/**
 * Classifies a decoded MIMI message as the draft's examples use the fields: a reaction has
 * disposition reaction and inReplyTo = its target; withdrawing one ("unlike") is a null
 * reaction part that replaces it; an edit or delete replaces the original (delete: null body).
 */
export function mimiToRemoteEvent(message: MimiMessage): MimiEvent {
  const body = message.body;
  if (body.disposition === MIMI_DISPOSITION.reaction && message.inReplyTo) {
    const target = hex(message.inReplyTo);
    if (body.cardinality === "null" && message.replaces) return { kind: "change", change: { type: "unreaction", target, reaction: hex(message.replaces) } };
    const emoji = textOf(body);
    if (emoji !== null && emoji !== "") return { kind: "change", change: { type: "reaction", target, emoji } };
  }
  if (message.replaces && body.disposition !== MIMI_DISPOSITION.reaction) {
    const target = hex(message.replaces);
    const replyTo = message.inReplyTo ? { replyTo: hex(message.inReplyTo) } : {};
    if (body.cardinality === "null") return { kind: "change", change: { type: "delete", target, ...replyTo } };
    return { kind: "change", change: { type: "edit", target, content: mimiToRemoteContent(message), ...replyTo } };
  }
  const content = mimiToRemoteContent(message);
  return message.inReplyTo ? { kind: "message", content, replyTo: hex(message.inReplyTo) } : { kind: "message", content };
}

function replyIdOf(remoteId: string | undefined): Uint8Array | null {
  return remoteId === undefined ? null : mimiIdOf(remoteId);
}

/** A change the Matrix user made → a MIMI message from `sender` in `room`; throws when a target names no MIMI message. */
export function changeToMimi(change: MessageChange, sender: string, room: string): MimiMessage {
  const target = mimiIdOf(change.target);
  if (!target) throw new Error("the target is not a MIMI message");
  switch (change.type) {
    case "edit":
      if (change.content.type !== "text") throw new Error(`cannot edit into ${change.content.type} content`);
      return newEdit({ sender, room, replaces: target, markdown: change.content.markdown, inReplyTo: replyIdOf(change.replyTo) });
    case "delete":
      return newDelete({ sender, room, replaces: target, inReplyTo: replyIdOf(change.replyTo) });
    case "reaction":
      return newReaction({ sender, room, target, emoji: change.emoji });
    case "unreaction": {
      const reaction = mimiIdOf(change.reaction);
      if (!reaction) throw new Error("the reaction is not a MIMI message");
      return newUnreaction({ sender, room, reaction, target });
    }
  }
}
