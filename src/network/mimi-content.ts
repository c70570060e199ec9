import {
  MIMI_CONTENT_TYPE_MARKDOWN,
  MIMI_CONTENT_TYPE_PLAIN,
  MIMI_DISPOSITION,
  MimiMessage,
  MimiNestedPart,
  newTextMessage,
} from "../protocol/mimi";
import { isSticker } from "../protocol/payload";
import { RemoteContent } from "./connector";

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

/** The core's content → a MIMI message from `sender` in `room`. */
export function remoteContentToMimi(content: RemoteContent, sender: string, room: string): MimiMessage {
  if (content.type !== "text") throw new Error(`cannot send ${content.type} content`);
  return newTextMessage({ sender, room, markdown: content.markdown });
}
