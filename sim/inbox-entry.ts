/**
 * What a received MIMI message means to a WhatsApp user, as the fields of an inbox entry
 * (docs/simulator.md lists them): the kind of message and its readable parts.
 */
import { MIMI_CONTENT_TYPE_MARKDOWN, MIMI_DISPOSITION, type MimiMessage, type MimiNestedPart } from "../src/protocol/mimi.js";
import { isSticker, waKindOf } from "../src/protocol/payload.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const utf8 = new TextDecoder("utf-8", { fatal: false });

function textOf(part: MimiNestedPart): string | undefined {
  if (part.cardinality === "single" && /^text\//i.test(part.contentType)) return utf8.decode(part.content);
  if (part.cardinality === "multi") {
    for (const p of part.parts) {
      const text = textOf(p);
      if (text !== undefined) return text;
    }
  }
  return undefined;
}

function externalOf(part: MimiNestedPart): Extract<MimiNestedPart, { cardinality: "external" }> | undefined {
  if (part.cardinality === "external") return part;
  if (part.cardinality === "multi") {
    for (const p of part.parts) {
      const found = externalOf(p);
      if (found) return found;
    }
  }
  return undefined;
}

export function describeMimi(message: MimiMessage): { kind: string } & Record<string, unknown> {
  const body = message.body;
  const common: Record<string, unknown> = {};
  if (message.inReplyTo) common.inReplyTo = hex(message.inReplyTo);
  if (message.expires) common.expires = { relative: message.expires.relative, seconds: message.expires.time };

  if (isSticker(message)) {
    const size = body.cardinality === "single" ? body.content.length : body.cardinality === "external" ? body.size : 0;
    return { kind: "sticker", contentType: body.cardinality === "single" || body.cardinality === "external" ? body.contentType : "", size };
  }
  if (body.disposition === MIMI_DISPOSITION.reaction) {
    if (body.cardinality === "null" && message.replaces && message.inReplyTo) return { kind: "unreaction", target: hex(message.inReplyTo), reaction: hex(message.replaces) };
    const emoji = textOf(body);
    if (emoji !== undefined && message.inReplyTo) return { kind: "reaction", target: hex(message.inReplyTo), emoji };
  }
  if (message.replaces) {
    if (body.cardinality === "null") return { ...common, kind: "delete", target: hex(message.replaces) };
    const text = textOf(body);
    if (text !== undefined) return { ...common, kind: "edit", target: hex(message.replaces), text };
  }
  const external = externalOf(body);
  if (external) {
    const caption = body.cardinality === "multi" ? textOf(body) : undefined;
    return {
      ...common,
      kind: "media",
      contentType: external.contentType,
      url: external.url,
      encryptedSize: external.size,
      filename: external.filename,
      description: external.description,
      encrypted: external.encAlg !== 0,
      ...(caption !== undefined ? { caption } : {}),
    };
  }
  const text = textOf(body);
  if (text !== undefined) {
    const markdown = body.cardinality === "single" && body.contentType === MIMI_CONTENT_TYPE_MARKDOWN;
    return { ...common, kind: "text", text, format: markdown ? "markdown" : "plain" };
  }
  const waKind = waKindOf(message);
  return { ...common, kind: "unknown", ...(waKind ? { waKind } : {}) };
}
