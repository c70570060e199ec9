import { RemoteContent } from "../network/connector";
import { markdownToMatrix, matrixToMarkdown, stripReplyFallback } from "./formatting";
import { isMatrixMediaMsgtype, matrixMediaToRemote, mediaFailureNotice, type Unbridgeable } from "./media";

export type { Unbridgeable };

const TEXT_MSGTYPES = new Set(["m.text", "m.emote", "m.notice"]);

/** Matrix `m.room.message` content → network content (pure). */
export function matrixToRemote(content: Record<string, unknown>): RemoteContent | Unbridgeable {
  const msgtype = content.msgtype;
  if (typeof msgtype !== "string") return { unbridgeable: true, reason: "the message has no msgtype" };
  if (isMatrixMediaMsgtype(msgtype)) return matrixMediaToRemote(content);
  if (typeof content.body !== "string") return { unbridgeable: true, reason: "the message has no text body" };
  if (!TEXT_MSGTYPES.has(msgtype)) {
    return { unbridgeable: true, reason: `messages of type ${msgtype} are not supported yet` };
  }
  const isReply = typeof (content["m.relates_to"] as { "m.in_reply_to"?: unknown } | undefined)?.["m.in_reply_to"] === "object";
  const body = isReply ? stripReplyFallback(content.body) : content.body;
  const format = typeof content.format === "string" ? content.format : undefined;
  const formatted = typeof content.formatted_body === "string" ? content.formatted_body : undefined;
  const markdown = matrixToMarkdown({ msgtype: msgtype === "m.emote" ? "m.emote" : "m.text", body, format, formatted_body: formatted });
  return { type: "text", markdown };
}

/** Network content → Matrix `m.room.message` content (pure). */
export function remoteToMatrix(content: RemoteContent): Record<string, unknown> {
  switch (content.type) {
    case "text":
      return { ...markdownToMatrix(content.markdown) };
    case "unsupported":
      return { msgtype: "m.notice", body: content.description };
    case "media":
      // Media needs its bytes uploaded first (the core does that); without them only a notice can be shown.
      return mediaFailureNotice(content.media, "it was not downloaded");
  }
}
