import { fileNameFor, kindOfMimetype, WAVEFORM_MAX_VALUE } from "../convert/media";
import { plaintextSize } from "../protocol/media-crypto";
import {
  MIMI_CONTENT_TYPE_MARKDOWN,
  MIMI_CONTENT_TYPE_PLAIN,
  MIMI_DISPOSITION,
  MIMI_ENC_AES_128_GCM,
  MIMI_HASH_SHA256,
  MIMI_MESSAGE_ID_LENGTH,
  MimiExternalPart,
  MimiMessage,
  MimiNestedPart,
  newAttachment,
  newDelete,
  newEdit,
  newReaction,
  newTextMessage,
  newUnreaction,
} from "../protocol/mimi";
import { isSticker, WA_KIND_VOICE, waKindOf, waMediaOf, withWaKind, withWaMedia } from "../protocol/payload";
import { MediaKind, MessageChange, RemoteContent, RemoteMedia } from "./connector";
import type { BlobRef } from "./media-fetch";
import type { HostedBlob } from "./media-host";

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
  const media = mediaOf(message);
  if (media) return media;
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

/** The media part and caption of an attachment message (docs/mimi.md: external part, or processAll [external, caption]). */
function attachmentParts(body: MimiNestedPart): { external: MimiExternalPart; caption?: string } | null {
  if (body.cardinality === "external") return { external: body };
  if (body.cardinality !== "multi" || body.partSemantics !== "processAll") return null;
  const external = body.parts.find((p): p is MimiExternalPart => p.cardinality === "external");
  if (!external) return null;
  const captionPart = body.parts.find((p) => p.cardinality === "single" && textOf(p) !== null);
  const caption = captionPart ? (textOf(captionPart) ?? undefined) : undefined;
  return caption ? { external, caption } : { external };
}

/**
 * How a receiver tells media kinds apart (docs/protocol.md §17.2): "x-wa-kind" voice marks a
 * voice note; the attachment disposition marks a document whatever its type; otherwise the
 * content type's top level decides.
 */
function kindOf(message: MimiMessage, external: MimiExternalPart): MediaKind {
  const byType = kindOfMimetype(external.contentType);
  if (waKindOf(message) === WA_KIND_VOICE && byType === "audio") return "voice";
  if (external.disposition === MIMI_DISPOSITION.attachment) return "file";
  return byType;
}

/** A message carrying an external part → media content whose bytes the connector fetches with `ref`. */
function mediaOf(message: MimiMessage): RemoteContent | null {
  const parts = attachmentParts(message.body);
  if (!parts) return null;
  const { external } = parts;
  const kind = kindOf(message, external);
  const filename = fileNameFor(kind, external.contentType, external.filename);
  if (
    external.encAlg !== MIMI_ENC_AES_128_GCM ||
    external.hashAlg !== MIMI_HASH_SHA256 ||
    external.key.length !== 16 ||
    external.nonce.length !== 12 ||
    external.contentHash.length !== 32
  ) {
    return {
      type: "unsupported",
      what: "media:unencrypted",
      description: `sent ${filename}, which this bridge cannot open: it is not encrypted with AES-128-GCM and hashed with SHA-256 as the protocol requires.`,
    };
  }
  const info = waMediaOf(message);
  const media: RemoteMedia = { kind, mimetype: external.contentType, filename, size: plaintextSize(external.size) };
  if ((kind === "image" || kind === "video") && info.width && info.height) {
    media.width = info.width;
    media.height = info.height;
  }
  if (kind !== "image" && kind !== "file" && info.durationMs) media.durationMs = info.durationMs;
  if (kind === "voice" && info.waveform) media.waveform = [...info.waveform].map((v) => Math.round((v / 255) * WAVEFORM_MAX_VALUE));
  const ref: BlobRefJson = {
    url: external.url,
    expires: external.expires,
    size: external.size,
    sha256: Buffer.from(external.contentHash).toString("hex"),
    key: Buffer.from(external.key).toString("hex"),
    nonce: Buffer.from(external.nonce).toString("hex"),
  };
  const content: RemoteContent = { type: "media", media, source: { from: "network", ref: JSON.stringify(ref) } };
  if (parts.caption !== undefined) content.caption = parts.caption;
  return content;
}

/** How a media `ref` is written: the external part's transport fields, binary ones in hex. */
interface BlobRefJson {
  url: string;
  expires: number;
  size: number;
  sha256: string;
  key: string;
  nonce: string;
}

/** A `ref` made by mimiToRemoteContent → what media-fetch needs. */
export function blobRefOf(ref: string): BlobRef {
  const j = JSON.parse(ref) as BlobRefJson;
  return {
    url: j.url,
    expires: j.expires,
    size: j.size,
    sha256: new Uint8Array(Buffer.from(j.sha256, "hex")),
    key: new Uint8Array(Buffer.from(j.key, "hex")),
    nonce: new Uint8Array(Buffer.from(j.nonce, "hex")),
  };
}

/**
 * Media hosted as `blob` → a MIMI attachment from `sender` in `room`: documents with the
 * attachment disposition, everything else inline; voice notes marked with "x-wa-kind" voice;
 * dimensions, duration and waveform in "x-wa-media".
 */
export function mediaToMimi(media: RemoteMedia, caption: string | undefined, blob: HostedBlob, sender: string, room: string): MimiMessage {
  let message = newAttachment({
    sender,
    room,
    disposition: media.kind === "file" ? MIMI_DISPOSITION.attachment : MIMI_DISPOSITION.inline,
    external: {
      contentType: media.mimetype,
      url: blob.url,
      expires: blob.expires,
      size: blob.size,
      encAlg: MIMI_ENC_AES_128_GCM,
      key: blob.key,
      nonce: blob.nonce,
      hashAlg: MIMI_HASH_SHA256,
      contentHash: blob.sha256,
      filename: media.filename,
    },
    ...(caption?.trim() ? { caption } : {}),
  });
  if (media.kind === "voice") message = withWaKind(message, WA_KIND_VOICE);
  return withWaMedia(message, {
    width: media.kind === "image" || media.kind === "video" ? media.width : undefined,
    height: media.kind === "image" || media.kind === "video" ? media.height : undefined,
    durationMs: media.kind === "image" || media.kind === "file" ? undefined : media.durationMs,
    waveform:
      media.kind === "voice" && media.waveform?.length
        ? new Uint8Array(media.waveform.map((v) => Math.round((Math.min(WAVEFORM_MAX_VALUE, Math.max(0, v)) / WAVEFORM_MAX_VALUE) * 255)))
        : undefined,
  });
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
