/**
 * Pure conversions between Matrix message text (`body` / `formatted_body`) and MIMI
 * "text/markdown;variant=GFM-MIMI" (draft-ietf-mimi-content §7.1.1: GFM 0.29 with only the
 * tables, task-list, strikethrough and "No HTML" extensions; no autolink extension).
 *
 * Wire convention: an emote is a markdown message whose text starts with "/me " (the network
 * has no emote message type), so a non-emote text starting with "/me " is sent as "\/me ".
 */
import MarkdownIt, { type Env } from "markdown-it";
import { ElementType, parseDocument } from "htmlparser2";
import type { ChildNode, Element, Text } from "domhandler";

/** The parts of a Matrix `m.room.message` content this module reads. */
export interface MatrixTextContent {
  msgtype?: string;
  body: string;
  format?: string;
  formatted_body?: string;
}

/** The text parts of a Matrix `m.room.message` content this module produces. */
export interface MatrixText {
  msgtype: "m.text" | "m.emote";
  body: string;
  format?: "org.matrix.custom.html";
  formatted_body?: string;
}

export interface MatrixToMarkdownOptions {
  /**
   * Markdown to emit for a Matrix user mention (a matrix.to / matrix: user link), inserted verbatim,
   * e.g. `[@Alice](mimi://…)`. Return undefined (or omit the hook) to emit the escaped display text.
   */
  mentionToMarkdown?: (userId: string, displayText: string) => string | undefined;
}

export interface MarkdownToMatrixOptions {
  /**
   * Rewrites a link or image target before it is checked against the schemes Matrix allows,
   * e.g. a network mention URI → `https://matrix.to/#/@ghost:server`. Return undefined to keep it.
   */
  rewriteLink?: (href: string) => string | undefined;
}

const HTML_FORMAT = "org.matrix.custom.html";
const EMOTE_PREFIX = "/me ";
// The Matrix spec limits formatted_body nesting to 100 levels; deeper content is kept as text.
const MAX_DEPTH = 100;

// ---------------------------------------------------------------------------------------------
// Escaping plain text so GFM-MIMI shows it literally
// ---------------------------------------------------------------------------------------------

const ASCII_PUNCT = /[!-/:-@[-`{-~]/;
const WORD_CHAR = /^[\p{L}\p{N}]/u;
const ESCAPABLE = /[\\`*~[\]<&]|_+/g;
const ENTITY_LIKE = /&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{0,31});/y;
const EMAIL_AUTOLINK = /<[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*>/y;
const URL_IN_TEXT = /\b(?:https?|ftp):\/\/[^\s<>]+/gi;
const URL_TRAILING_PUNCT = "?!.,:;*_~'\"";

function charBefore(text: string, index: number): string {
  if (index <= 0) return "";
  const unit = text.charCodeAt(index - 1);
  return unit >= 0xdc00 && unit <= 0xdfff && index >= 2 ? text.slice(index - 2, index) : text.charAt(index - 1);
}

function charAtPoint(text: string, index: number): string {
  const point = text.codePointAt(index);
  return point === undefined ? "" : String.fromCodePoint(point);
}

function startsAt(re: RegExp, text: string, index: number): boolean {
  re.lastIndex = index;
  return re.test(text);
}

/** Escapes text[start, end) for inline markdown; neighbours outside the range still decide context. */
function escapeRange(text: string, start: number, end: number): string {
  return text.slice(start, end).replace(ESCAPABLE, (match: string, offset: number) => {
    const at = start + offset;
    switch (match[0]) {
      case "\\": {
        // A backslash is literal unless it precedes punctuation; at the text's end or before a space (which may
        // move outside a delimiter) the next character is unknown, so it is escaped there too.
        const next = text.charAt(at + 1);
        return next === "" || /\s/.test(next) || ASCII_PUNCT.test(next) ? "\\\\" : "\\";
      }
      case "<": {
        // Only "<" that could open a tag, comment or autolink needs escaping ("<3" stays readable); at the
        // text's end the next character is unknown.
        const next = text.charAt(at + 1);
        return next === "" || /[A-Za-z/!?]/.test(next) || startsAt(EMAIL_AUTOLINK, text, at) ? "&lt;" : "<";
      }
      case "&":
        return at + 1 === text.length || startsAt(ENTITY_LIKE, text, at) ? "\\&" : "&";
      case "_": {
        // Underscores between letters/digits can never open or close emphasis (snake_case stays readable).
        const intraword = WORD_CHAR.test(charBefore(text, at)) && WORD_CHAR.test(charAtPoint(text, at + match.length));
        return intraword ? match : "\\_".repeat(match.length);
      }
      default:
        return "\\" + match;
    }
  });
}

function trimUrl(url: string): string {
  let end = url.length;
  let open = 0;
  let close = 0;
  for (const c of url) {
    if (c === "(") open++;
    else if (c === ")") close++;
  }
  for (;;) {
    const last = url.charAt(end - 1);
    if (URL_TRAILING_PUNCT.includes(last) && end > 0) end--;
    else if (last === ")" && close > open) {
      end--;
      close--;
    } else break;
  }
  return url.slice(0, end);
}

/** Escapes one line of text; URLs escaping would mangle are sent as `<url>` autolinks instead. */
function escapeInline(text: string): string {
  let out = "";
  let last = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    const start = match.index;
    const url = trimUrl(match[0]);
    const end = start + url.length;
    out += escapeRange(text, last, start);
    const escaped = escapeRange(text, start, end);
    out += escaped === url ? url : AUTOLINKABLE.test(url) ? `<${url}>` : escaped;
    last = end;
  }
  return out + escapeRange(text, last, text.length);
}

/** Neutralises what would start a block (heading, list, quote, rule, table, indented code) at a line start. */
function escapeLineStart(line: string): string {
  if (/^[ \t]*$/.test(line)) return line;
  const first = line.charCodeAt(0);
  // Markdown strips leading whitespace (or makes it code); an entity keeps the indentation as text.
  if (/\s/.test(line.charAt(0))) return `&#${first};` + line.slice(1);
  switch (line.charAt(0)) {
    case "#":
      if (/^#{1,6}(?:[ \t]|$)/.test(line)) return "\\" + line;
      break;
    case ">":
      return "\\" + line;
    case "+":
    case "-":
    case "*":
      if (line.length === 1 || line.charAt(1) === " " || line.charAt(1) === "\t") return "\\" + line;
      break;
    case "=":
      if (/^=+[ \t]*$/.test(line)) return "\\" + line;
      break;
  }
  // Setext underlines, thematic breaks and table delimiter rows.
  if (/^[-|: \t]+$/.test(line) && line.includes("-")) return "\\" + line;
  const ordered = /^\d{1,9}(?=[.)](?:[ \t]|$))/.exec(line);
  if (ordered) return ordered[0] + "\\" + line.slice(ordered[0].length);
  return line;
}

/**
 * Escapes plain text so GFM-MIMI renders exactly it. Newlines stay newlines (rendered as line
 * breaks); only runs of blank lines and trailing spaces are not preserved by Markdown.
 */
export function escapeMarkdown(text: string): string {
  return text
    .replace(/\r\n?/g, "\n")
    .split("\n")
    .map((line) => escapeLineStart(escapeInline(line)))
    .join("\n");
}

// ---------------------------------------------------------------------------------------------
// Reply fallbacks
// ---------------------------------------------------------------------------------------------

/**
 * Removes a Matrix rich-reply fallback from a plain `body`: leading "> " lines followed by a blank
 * line. Call it only for events that are replies; other bodies are returned unchanged if no fallback.
 */
export function stripReplyFallback(body: string): string {
  const lines = body.split("\n");
  let i = 0;
  while (i < lines.length && (lines[i]!.startsWith("> ") || lines[i] === ">")) i++;
  if (i === 0 || i >= lines.length || lines[i]!.trim() !== "") return body;
  return lines.slice(i + 1).join("\n");
}

// ---------------------------------------------------------------------------------------------
// Matrix HTML → GFM-MIMI
// ---------------------------------------------------------------------------------------------

type InlineKind = "strong" | "em" | "del" | "code";

const FORMAT_KIND: Record<string, InlineKind | undefined> = {
  b: "strong",
  strong: "strong",
  i: "em",
  em: "em",
  del: "del",
  s: "del",
  strike: "del",
  code: "code",
  tt: "code",
  kbd: "code",
  samp: "code",
};
// "_" for emphasis: runs of different characters never merge, so "**" and "_" nest without ambiguity.
const MARKER: Record<Exclude<InlineKind, "code">, string> = { strong: "**", em: "_", del: "~~" };

// Not rendered by browsers (or, for mx-reply, a fallback Matrix clients strip).
const DROPPED = new Set(["mx-reply", "script", "style", "template", "head", "title"]);
// Blocks with their own markdown syntax.
const BLOCK_SYNTAX = new Set(["blockquote", "ul", "ol", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table"]);
// Blocks without markdown syntax: their content becomes separate paragraphs.
const BLOCK_CONTAINER = new Set([
  "p",
  "div",
  "section",
  "article",
  "header",
  "footer",
  "main",
  "nav",
  "aside",
  "figure",
  "figcaption",
  "address",
  "center",
  "dl",
  "dt",
  "dd",
  "details",
  "summary",
  "li",
  "caption",
  "form",
  "fieldset",
  "legend",
  "html",
  "body",
  "thead",
  "tbody",
  "tfoot",
  "tr",
  "td",
  "th",
]);

const LINK_SCHEMES = /^(?:https?|ftp|mailto|magnet):/i;
// eslint-disable-next-line no-control-regex -- an autolink ends at the first control character or space
const AUTOLINKABLE = /^[A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\x00-\x20\x7f]*$/;
const EMAIL = /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

interface HtmlContext {
  readonly options: MatrixToMarkdownOptions;
  readonly active: ReadonlySet<InlineKind | "link">;
  readonly depth: number;
}

function isElement(node: ChildNode): node is Element {
  return "attribs" in node;
}

function isBlockElement(name: string): boolean {
  return BLOCK_SYNTAX.has(name) || BLOCK_CONTAINER.has(name);
}

function deeper(ctx: HtmlContext, add?: InlineKind | "link"): HtmlContext {
  if (!add) return { ...ctx, depth: ctx.depth + 1 };
  return { ...ctx, depth: ctx.depth + 1, active: new Set([...ctx.active, add]) };
}

/** Text content, without recursion (input nesting is unbounded); each `<br>` becomes the `br` string. */
function textOf(nodes: readonly ChildNode[], br: string): string {
  const stack = [...nodes].reverse();
  let out = "";
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node.type === ElementType.Text) out += node.data;
    else if (isElement(node)) {
      if (DROPPED.has(node.name)) continue;
      if (node.name === "br") out += br;
      else if (node.name === "img") out += node.attribs.alt ?? "";
      else for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]!);
    }
  }
  return out;
}

function hasBlockDescendant(node: Element): boolean {
  const stack: ChildNode[] = [...node.children];
  while (stack.length > 0) {
    const child = stack.pop()!;
    if (!isElement(child) || DROPPED.has(child.name)) continue;
    if (isBlockElement(child.name)) return true;
    for (const grandchild of child.children) stack.push(grandchild);
  }
  return false;
}

/** HTML collapses whitespace runs (outside pre) to one space. */
function collapse(text: string): string {
  return text.replace(/[ \t\n\r\f]+/g, " ");
}

function trimSpaces(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && text.charCodeAt(start) === 32) start++;
  while (end > start && text.charCodeAt(end - 1) === 32) end--;
  return text.slice(start, end);
}

// Emitted emphasis delimiters are bracketed by these (lone low surrogates, which cannot occur in
// well-formed input) until resolveDelimiters has checked their flanking.
const OPEN_MARK = "\udffe";
const CLOSE_MARK = "\udfff";
const STRICT_PUNCT = /^[!-/:-@[-`{-~\p{P}]/u; // GFM 0.29 punctuation
const BROAD_PUNCT = /^[!-/:-@[-`{-~\p{P}\p{S}]/u; // CommonMark 0.31 (markdown-it) also counts symbols
const WHITESPACE = /^\s/u;

/** Replaces lone surrogates, which MIMI text (UTF-8) cannot carry, with U+FFFD. */
function wellFormed(text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

/**
 * Appends inline markdown, merging collapsible spaces and keeping "!" from turning a link into an image.
 * Fragments are kept in an array with a short tail for the boundary checks: testing the end of a
 * growing string would flatten it on every append (quadratic for many siblings).
 */
class InlineBuffer {
  private readonly parts: string[] = [];
  private tail = "";

  private endsWith(suffix: string): boolean {
    return this.tail.endsWith(suffix);
  }

  /** Removes the last `count` (< 8) characters. */
  private dropEnd(count: number): void {
    while (count > 0 && this.parts.length > 0) {
      const last = this.parts.pop()!;
      if (last.length > count) this.parts.push(last.slice(0, last.length - count));
      count -= Math.min(count, last.length);
    }
    this.refreshTail();
  }

  private push(markdown: string): void {
    this.parts.push(markdown);
    this.tail = markdown.length >= 8 ? markdown.slice(-8) : (this.tail + markdown).slice(-8);
  }

  private refreshTail(): void {
    let tail = "";
    for (let i = this.parts.length - 1; i >= 0 && tail.length < 8; i--) tail = this.parts[i] + tail;
    this.tail = tail.slice(-8);
  }

  append(markdown: string): void {
    if (markdown === "") return;
    // Only merges with a space already written: leading spaces of a fragment may belong outside a delimiter.
    if (markdown.charCodeAt(0) === 32 && (this.endsWith(" ") || this.endsWith("\n"))) {
      markdown = markdown.replace(/^ +/, "");
      if (markdown === "") return;
    }
    if (markdown.startsWith("[") && this.endsWith("!")) {
      this.dropEnd(1);
      this.push("\\!");
    }
    // A span closing right where a same-kind span opens becomes one span; adjacent runs would merge anyway.
    for (const marker of ["**", "_", "~~"]) {
      while (this.endsWith(marker + CLOSE_MARK) && markdown.startsWith(OPEN_MARK + marker)) {
        this.dropEnd(marker.length + 1);
        markdown = markdown.slice(marker.length + 1);
      }
    }
    if (markdown !== "") this.push(markdown);
  }

  toString(): string {
    return this.parts.join("");
  }
}

function leadingSpace(text: string): number {
  let i = 0;
  while (i < text.length && /\s/.test(text.charAt(i))) i++;
  return i;
}

function trailingSpace(text: string, from: number): number {
  let i = text.length;
  while (i > from && /\s/.test(text.charAt(i - 1))) i--;
  return i;
}

/** Emphasis and link text cannot span a blank line. */
function joinBlankLines(text: string): string {
  return text.replace(/\n[ \t]*(?:\n[ \t]*)+/g, "\n");
}

/** Wraps inline markdown in delimiters; edge whitespace moves outside, where CommonMark flanking rules need it. */
function wrapInline(inner: string, open: string, close: string): string {
  const start = leadingSpace(inner);
  const end = trailingSpace(inner, start);
  if (start === end) return inner;
  return inner.slice(0, start) + open + joinBlankLines(inner.slice(start, end)) + close + inner.slice(end);
}

function wrapEmphasis(inner: string, marker: string): string {
  return wrapInline(inner, OPEN_MARK + marker, marker + CLOSE_MARK);
}

function isWordChar(c: string): boolean {
  return c !== "" && !WHITESPACE.test(c) && !STRICT_PUNCT.test(c);
}

/**
 * Removes the delimiter marks. Where an emitted delimiter would not be left-/right-flanking (punctuation
 * inside, a letter outside, e.g. **"x"**s), the outside letter becomes a character reference, which
 * renders the same but counts as punctuation.
 */
function resolveDelimiters(marked: string): string {
  if (!marked.includes(OPEN_MARK) && !marked.includes(CLOSE_MARK)) return marked;
  let text = "";
  const opens: number[] = [];
  const closes: number[] = [];
  for (const part of marked.split(/([\udffe\udfff])/)) {
    if (part === OPEN_MARK) opens.push(text.length);
    else if (part === CLOSE_MARK) closes.push(text.length);
    else text += part;
  }
  const runAround = (at: number, d: string): [number, number] => {
    let start = at;
    let end = at;
    while (start > 0 && text.charAt(start - 1) === d) start--;
    while (end < text.length && text.charAt(end) === d) end++;
    return [start, end];
  };
  // An encoded letter is punctuation to its other neighbour too, so repeat until nothing changes.
  const encode = new Set<number>();
  const before = (start: number): string => {
    const c = charBefore(text, start);
    return encode.has(start - c.length) ? ";" : c;
  };
  const after = (end: number): string => (encode.has(end) ? "&" : charAtPoint(text, end));
  for (let size = -1; size !== encode.size;) {
    size = encode.size;
    for (const at of opens) {
      const d = text.charAt(at);
      const [start, end] = runAround(at, d);
      const prev = before(start);
      // "_" never opens after a letter; "*"/"~" do not open after a letter when punctuation follows.
      if (isWordChar(prev) && (d === "_" || BROAD_PUNCT.test(after(end)))) encode.add(start - prev.length);
    }
    for (const at of closes) {
      const d = text.charAt(at - 1);
      const [start, end] = runAround(at - 1, d);
      if (isWordChar(after(end)) && (d === "_" || BROAD_PUNCT.test(before(start)))) encode.add(end);
    }
  }
  // An intraword "_" left unescaped stops being intraword once its neighbour is encoded.
  const ours = new Set<number>([...opens, ...closes.map((at) => at - 1)]);
  const escapeUnderscore = new Set<number>();
  const rawUnderscores = (from: number, step: 1 | -1) => {
    for (let i = from; text.charAt(i) === "_" && !ours.has(i) && text.charAt(i - 1) !== "\\"; i += step) {
      escapeUnderscore.add(i);
    }
  };
  for (const at of encode) {
    rawUnderscores(at - 1, -1);
    rawUnderscores(at + (text.codePointAt(at)! > 0xffff ? 2 : 1), 1);
  }
  let out = "";
  let last = 0;
  for (const at of [...encode, ...escapeUnderscore].sort((a, b) => a - b)) {
    if (escapeUnderscore.has(at)) {
      out += text.slice(last, at) + "\\_";
      last = at + 1;
      continue;
    }
    const point = text.codePointAt(at)!;
    // An unpaired (literal) backslash before the letter would otherwise escape the "&".
    let run = 0;
    while (text.charAt(at - 1 - run) === "\\") run++;
    const backslash = run % 2 === 1 ? "\\" : "";
    out += text.slice(last, at) + backslash + `&#${point};`;
    last = at + (point > 0xffff ? 2 : 1);
  }
  return out + text.slice(last);
}

function codeSpan(raw: string): string {
  const text = raw.replace(/\r\n?|\n/g, " ");
  if (text === "") return "";
  let longest = 0;
  let run = 0;
  for (const c of text) {
    run = c === "`" ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  const fence = "`".repeat(longest + 1);
  // CommonMark strips one space from each side when both are present, and a backtick edge would merge with the fence.
  const pad = text.startsWith("`") || text.endsWith("`") || (text.startsWith(" ") && text.endsWith(" ") && text.trim() !== "") ? " " : "";
  return fence + pad + text + pad + fence;
}

function linkDestination(href: string): string {
  return (
    href
      .replace(/[\\()<>&]/g, "\\$&")
      // eslint-disable-next-line no-control-regex -- control characters and spaces are what gets percent-encoded
      .replace(/[\x00-\x20\x7f]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0"))
  );
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The Matrix user a matrix.to or matrix: URI points at, if it is a user link. */
function mentionedUser(href: string): string | undefined {
  const matrixTo = /^https:\/\/matrix\.to\/#\/([^/?]+)/i.exec(href);
  if (matrixTo) {
    const id = safeDecode(matrixTo[1]!);
    return /^@[^:]+:./.test(id) ? id : undefined;
  }
  const matrixUri = /^matrix:(?:\/\/[^/]*\/)?u\/([^/?#]+)/i.exec(href);
  if (matrixUri) {
    const id = "@" + safeDecode(matrixUri[1]!);
    return /^@[^:]+:./.test(id) ? id : undefined;
  }
  return undefined;
}

function hrefOf(el: Element): string {
  return (el.attribs.href ?? "").trim();
}

function renderLink(el: Element, ctx: HtmlContext): string {
  const href = hrefOf(el);
  const user = mentionedUser(href);
  if (user !== undefined) {
    const display = trimSpaces(collapse(textOf(el.children, " ")));
    const custom = ctx.options.mentionToMarkdown?.(user, display);
    return custom === undefined ? escapeInline(display) : wellFormed(custom);
  }
  if (isTransparent(el, ctx)) return renderInlineNodes(el.children, deeper(ctx));
  const text = trimSpaces(collapse(textOf(el.children, " ")));
  if ((text === href || text === "") && AUTOLINKABLE.test(href)) return `<${href}>`;
  if (/^mailto:/i.test(href) && text === href.slice(7) && EMAIL.test(text)) return `<${text}>`;
  let inner = renderInlineNodes(el.children, deeper(ctx, "link"));
  // A "]:" in a code span would make "[text…]: …" at a paragraph start a link reference definition.
  if (/^(?:[^\]\\]|\\.)*\]:/s.test(inner)) inner = escapeInline(text);
  const dest = `](${linkDestination(href)})`;
  const wrapped = wrapInline(inner, "[", dest);
  return wrapped === inner ? `[${escapeInline(href)}${dest}` : wrapped;
}

function renderInlineElement(el: Element, ctx: HtmlContext): string {
  const name = el.name;
  switch (name) {
    case "br":
      return "\n";
    case "hr":
      return "\n";
    case "a":
      return renderLink(el, ctx);
    case "img":
      return escapeInline(collapse(el.attribs.alt ?? el.attribs.title ?? ""));
    case "pre":
      return "\n" + escapeMarkdown(textOf(el.children, "\n")) + "\n";
  }
  // A block inside inline formatting: keep its content on its own line(s).
  if (isBlockElement(name)) return "\n" + renderInlineNodes(el.children, deeper(ctx)) + "\n";
  return renderInlineNodes(el.children, deeper(ctx));
}

/** Elements that add nothing inline: unknown tags, a format already active, a nested link or one with a scheme we do not carry. */
function isTransparent(el: Element, ctx: HtmlContext): boolean {
  const name = el.name;
  if (name === "a") {
    const href = hrefOf(el);
    return mentionedUser(href) === undefined && (ctx.active.has("link") || !LINK_SCHEMES.test(href));
  }
  if (name === "br" || name === "img" || isBlockElement(name)) return false;
  const kind = FORMAT_KIND[name];
  return kind === undefined || (kind !== "code" && ctx.active.has(kind));
}

/** Inlines transparent wrappers (without recursion) so that what they contain can merge with its neighbours. */
function flattenInline(nodes: readonly ChildNode[], ctx: HtmlContext): Array<Text | Element> {
  const out: Array<Text | Element> = [];
  const stack = [...nodes].reverse();
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (node.type === ElementType.Text) out.push(node);
    else if (isElement(node) && !DROPPED.has(node.name)) {
      if (!isTransparent(node, ctx)) out.push(node);
      else for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]!);
    }
  }
  return out;
}

/** Renders a run of inline nodes; adjacent same-format siblings and code spans (even across empty elements) merge. */
function renderInlineNodes(nodes: readonly ChildNode[], ctx: HtmlContext): string {
  if (ctx.depth > MAX_DEPTH) return escapeInline(collapse(textOf(nodes, " ")));
  const buffer = new InlineBuffer();
  let code: string | undefined;
  const flushCode = () => {
    if (code !== undefined) buffer.append(codeSpan(code));
    code = undefined;
  };
  const flat = flattenInline(nodes, ctx);
  for (let i = 0; i < flat.length; i++) {
    const node = flat[i]!;
    let markdown: string;
    if (node.type === ElementType.Text) markdown = escapeInline(collapse(node.data));
    else {
      const kind = FORMAT_KIND[node.name];
      if (kind === "code") {
        code = (code ?? "") + textOf(node.children, " ");
        continue;
      }
      if (kind === undefined) markdown = renderInlineElement(node, ctx);
      else {
        // <b>a</b><b>b</b> is one bold span; rendering the contents together also lets inner code spans merge.
        const group: ChildNode[] = [...node.children];
        for (let next = flat[i + 1]; next !== undefined && isElement(next) && FORMAT_KIND[next.name] === kind; next = flat[i + 1]) {
          for (const child of next.children) group.push(child);
          i++;
        }
        markdown = wrapEmphasis(renderInlineNodes(group, deeper(ctx, kind)), MARKER[kind]);
      }
    }
    if (markdown === "") continue;
    flushCode();
    buffer.append(markdown);
  }
  flushCode();
  return buffer.toString();
}

/** Trims each line, escapes block starts and keeps at most one blank line (a paragraph break). */
function finishParagraph(markdown: string): string {
  const out: string[] = [];
  let blank = false;
  for (const raw of markdown.split("\n")) {
    const line = trimSpaces(raw);
    if (line === "") {
      blank = out.length > 0;
      continue;
    }
    if (blank) out.push("");
    blank = false;
    out.push(escapeLineStart(line));
  }
  return out.join("\n");
}

interface Block {
  kind: "paragraph" | "list" | "other";
  markdown: string;
  /** For lists: "ul" or "ol" plus the marker used, so adjacent lists do not merge. */
  listMarker?: string;
  /** For lists: whether it may interrupt a paragraph (bullet, or ordered starting at 1). */
  interrupts?: boolean;
}

/** Collects the blocks of a flow of HTML nodes; transparent containers write into the same flow. */
class BlockWriter {
  readonly blocks: Block[] = [];
  private inline = new InlineBuffer();
  private pending: ChildNode[] = [];

  constructor(private readonly ctx: HtmlContext) {}

  visit(nodes: readonly ChildNode[], depth: number): void {
    for (const node of nodes) {
      if (!isElement(node)) {
        this.pending.push(node);
        continue;
      }
      const name = node.name;
      if (DROPPED.has(name)) continue;
      if (depth > MAX_DEPTH) {
        this.pending.push(node);
      } else if (BLOCK_SYNTAX.has(name)) {
        this.flushParagraph();
        this.block(node, depth);
      } else if (BLOCK_CONTAINER.has(name)) {
        this.flushParagraph();
        this.visit(node.children, depth + 1);
        this.flushParagraph();
      } else if (FORMAT_KIND[name] === undefined && name !== "a" && hasBlockDescendant(node)) {
        // A span/font/unknown wrapper around blocks adds nothing; its children continue our inline run.
        this.visit(node.children, depth + 1);
      } else {
        this.pending.push(node);
      }
    }
  }

  finish(): Block[] {
    this.flushParagraph();
    return this.blocks;
  }

  private flushInline(): void {
    if (this.pending.length === 0) return;
    this.inline.append(renderInlineNodes(this.pending, this.ctx));
    this.pending = [];
  }

  private flushParagraph(): void {
    this.flushInline();
    const markdown = finishParagraph(this.inline.toString());
    this.inline = new InlineBuffer();
    if (markdown !== "") this.blocks.push({ kind: "paragraph", markdown });
  }

  private block(el: Element, depth: number): void {
    const ctx: HtmlContext = { ...this.ctx, depth: depth + 1 };
    const name = el.name;
    if (name === "ul" || name === "ol") {
      this.list(el, ctx);
      return;
    }
    let markdown: string;
    if (name === "blockquote") markdown = quote(el, ctx);
    else if (name === "pre") markdown = codeBlock(el);
    // "___" cannot combine with a "-" or "*" bullet into a rule the way "- ---" does.
    else if (name === "hr") markdown = "___";
    else if (name === "table") markdown = table(el, ctx);
    else markdown = heading(el, ctx, Number(name.charAt(1)));
    if (markdown !== "") this.blocks.push({ kind: "other", markdown });
  }

  private list(el: Element, ctx: HtmlContext): void {
    const ordered = el.name === "ol";
    const previous = this.blocks[this.blocks.length - 1];
    const variants = ordered ? ["ol.", "ol)"] : ["ul-", "ul*"];
    // Two adjacent lists with the same marker would merge into one; alternate the marker instead.
    const marker = previous?.listMarker === variants[0] ? variants[1]! : variants[0]!;
    const start = ordered ? listStart(el.attribs.start) : 1;
    const markdown = listMarkdown(el, ctx, marker.charAt(2), ordered, start);
    if (markdown !== "") this.blocks.push({ kind: "list", markdown, listMarker: marker, interrupts: !ordered || start === 1 });
  }
}

function renderBlocks(nodes: readonly ChildNode[], ctx: HtmlContext): Block[] {
  const writer = new BlockWriter(ctx);
  writer.visit(nodes, ctx.depth);
  return writer.finish();
}

function joinBlocks(blocks: readonly Block[]): string {
  return blocks.map((b) => b.markdown).join("\n\n");
}

function quote(el: Element, ctx: HtmlContext): string {
  const inner = joinBlocks(renderBlocks(el.children, ctx));
  if (inner === "") return "";
  return inner
    .split("\n")
    .map((line) => (line === "" ? ">" : "> " + line))
    .join("\n");
}

function listStart(attr: string | undefined): number {
  const n = Number.parseInt(attr ?? "", 10);
  // CommonMark list numbers have at most 9 digits.
  return Number.isFinite(n) && n >= 0 && n <= 999_999_999 ? n : 1;
}

function listMarkdown(el: Element, ctx: HtmlContext, marker: string, ordered: boolean, start: number): string {
  const items: ChildNode[][] = [];
  for (const child of el.children) {
    if (isElement(child) && child.name === "li") items.push(child.children);
    else if (isElement(child) ? !DROPPED.has(child.name) : child.type === ElementType.Text && child.data.trim() !== "") {
      items.push([child]);
    }
  }
  // Empty items are dropped: "- - -" (an empty nested item) would be a rule, and they cannot interrupt a paragraph.
  const rendered = items.map((children) => renderBlocks(children, ctx)).filter((blocks) => blocks.length > 0);
  return rendered
    .map((blocks, index) => {
      const bullet = ordered ? `${start + index}${marker} ` : `${marker} `;
      const indent = " ".repeat(bullet.length);
      // Tight items: a nested list that can interrupt the item's paragraph follows on the next line.
      const content = blocks.map((b, i) => (i === 0 ? "" : b.kind === "list" && b.interrupts ? "\n" : "\n\n") + b.markdown).join("");
      return content
        .split("\n")
        .map((line, i) => (i === 0 ? bullet + line : line === "" ? "" : indent + line))
        .join("\n");
    })
    .join("\n");
}

function heading(el: Element, ctx: HtmlContext, level: number): string {
  const inner = renderInlineNodes(el.children, ctx);
  let text = trimSpaces(inner.split("\n").map(trimSpaces).join(" "));
  if (text === "") return "";
  // A trailing "#" run after a space would be read as the optional closing sequence.
  let k = text.length;
  while (k > 0 && text.charAt(k - 1) === "#") k--;
  if (k < text.length && (k === 0 || text.charAt(k - 1) === " " || text.charAt(k - 1) === "\t")) {
    text = text.slice(0, k) + "\\" + text.slice(k);
  }
  return "#".repeat(level) + " " + text;
}

function codeBlock(pre: Element): string {
  const code = pre.children.find((c): c is Element => isElement(c) && c.name === "code");
  const classes = `${code?.attribs.class ?? ""} ${pre.attribs.class ?? ""}`;
  const language = (/(?:^|\s)language-(\S+)/.exec(classes)?.[1] ?? "").replace(/[^A-Za-z0-9_+#.-]/g, "");
  const text = textOf(pre.children, "\n").replace(/\r\n?/g, "\n");
  let longest = 0;
  let run = 0;
  for (const c of text) {
    run = c === "`" ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  const fence = "`".repeat(Math.max(3, longest + 1));
  const body = text === "" || text.endsWith("\n") ? text : text + "\n";
  return `${fence}${language}\n${body}${fence}`;
}

function table(el: Element, ctx: HtmlContext): string {
  const rows: Element[] = [];
  let caption = "";
  const stack: ChildNode[] = [...el.children].reverse();
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (!isElement(node)) continue;
    if (node.name === "tr") rows.push(node);
    else if (node.name === "caption") caption = finishParagraph(renderInlineNodes(node.children, ctx));
    else if (node.name === "thead" || node.name === "tbody" || node.name === "tfoot") {
      for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]!);
    }
  }
  const cells = rows.map((row) =>
    row.children
      .filter((c): c is Element => isElement(c) && (c.name === "td" || c.name === "th"))
      .map((cell) => {
        const inner = renderInlineNodes(cell.children, ctx);
        // Pipes split cells before inline parsing, even inside code spans, so every one is escaped.
        return trimSpaces(inner.split("\n").map(trimSpaces).join(" ")).replace(/\|/g, "\\|");
      }),
  );
  const columns = cells.reduce((max, r) => Math.max(max, r.length), 0);
  if (columns === 0) return caption;
  const line = (r: string[]) => "| " + Array.from({ length: columns }, (_, i) => r[i] ?? "").join(" | ") + " |";
  const lines = [line(cells[0]!), "|" + " --- |".repeat(columns), ...cells.slice(1).map(line)];
  return (caption === "" ? "" : caption + "\n\n") + lines.join("\n");
}

function htmlToMarkdown(html: string, options: MatrixToMarkdownOptions): string {
  const document = parseDocument(wellFormed(html));
  return resolveDelimiters(joinBlocks(renderBlocks(document.children, { options, active: new Set(), depth: 0 })));
}

/**
 * Matrix message content → GFM-MIMI markdown. Uses `formatted_body` when it is Matrix HTML (dropping
 * `<mx-reply>` fallbacks), otherwise escapes `body`; callers strip plain reply fallbacks with
 * {@link stripReplyFallback}. Emotes get the "/me " prefix.
 */
export function matrixToMarkdown(content: MatrixTextContent, options: MatrixToMarkdownOptions = {}): string {
  const body = typeof content.body === "string" ? content.body : "";
  let markdown = "";
  if (content.format === HTML_FORMAT && typeof content.formatted_body === "string") {
    markdown = htmlToMarkdown(content.formatted_body, options);
  }
  // Formatted bodies that render to nothing (e.g. only a reply fallback or an image) fall back to body.
  if (markdown === "") markdown = escapeMarkdown(wellFormed(body));
  if (content.msgtype === "m.emote") return EMOTE_PREFIX + markdown;
  return markdown.startsWith(EMOTE_PREFIX) ? "\\" + markdown : markdown;
}

// ---------------------------------------------------------------------------------------------
// GFM-MIMI → Matrix
// ---------------------------------------------------------------------------------------------

interface RenderEnv extends Env {
  rewriteLink?: MarkdownToMatrixOptions["rewriteLink"];
  openLinks: boolean[];
}

// GFM-MIMI: raw HTML is text ("No HTML"), no autolink extension (so no linkify), tables + strikethrough.
// Newlines are line breaks, as in every chat client (and GFM lets renderers choose that).
const parser = new MarkdownIt("commonmark", {
  html: false,
  linkify: false,
  breaks: true,
  xhtmlOut: false,
  typographer: false,
}).enable(["table", "strikethrough"]);
// Every target is parsed as a link; the renderer decides whether Matrix may carry it.
parser.validateLink = () => true;

const escapeHtml = parser.utils.escapeHtml;

function linkTarget(href: string | number | null, env: Env | undefined): string {
  const target = String(href ?? "");
  return (env as RenderEnv | undefined)?.rewriteLink?.(target) ?? target;
}

function openLinks(env: Env | undefined): boolean[] {
  return (env as RenderEnv | undefined)?.openLinks ?? [];
}

const rules = parser.renderer.rules;
rules.s_open = () => "<del>";
rules.s_close = () => "</del>";
rules.softbreak = () => "<br>";
rules.hardbreak = () => "<br>";
rules.link_open = (tokens, idx, _options, env) => {
  const target = linkTarget(tokens[idx]!.attrGet("href"), env);
  // Matrix only allows these schemes in formatted_body links; other links keep just their text.
  const allowed = LINK_SCHEMES.test(target);
  openLinks(env).push(allowed);
  return allowed ? `<a href="${escapeHtml(target)}">` : "";
};
rules.link_close = (_tokens, _idx, _options, env) => (openLinks(env).pop() ? "</a>" : "");
rules.image = (tokens, idx, options, env, self) => {
  const token = tokens[idx]!;
  const target = linkTarget(token.attrGet("src"), env);
  const alt = self.renderInlineAsText(token.children ?? [], options, env);
  // Matrix <img> may only show mxc:// media; any other image becomes a link to it.
  if (/^mxc:\/\//i.test(target)) return `<img src="${escapeHtml(target)}" alt="${escapeHtml(alt)}">`;
  if (LINK_SCHEMES.test(target)) return `<a href="${escapeHtml(target)}">${escapeHtml(alt || target)}</a>`;
  return escapeHtml(alt);
};
// Column alignment is a style attribute, which Matrix does not allow on table cells.
rules.th_open = () => "<th>";
rules.td_open = () => "<td>";

function trimTrailingNewlines(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === 10) end--;
  return text.slice(0, end);
}

function decodeBasicEntities(html: string): string {
  return html.replace(/&(lt|gt|quot|amp);/g, (_m, name: string) => (name === "lt" ? "<" : name === "gt" ? ">" : name === "quot" ? '"' : "&"));
}

/**
 * GFM-MIMI markdown → Matrix text content. "/me " makes an emote. Only formatting that survives as
 * Matrix HTML adds `format`/`formatted_body`; `body` is then the markdown source.
 */
export function markdownToMatrix(markdown: string, options: MarkdownToMatrixOptions = {}): MatrixText {
  const source = typeof markdown === "string" ? markdown : "";
  const emote = source.startsWith(EMOTE_PREFIX);
  const text = emote ? source.slice(EMOTE_PREFIX.length) : source;
  const msgtype = emote ? "m.emote" : "m.text";

  const env: RenderEnv = { rewriteLink: options.rewriteLink, openLinks: [] };
  const tokens = parser.parse(text, env);
  // markdown-it stops nesting blocks at maxNesting and drops what is deeper: a message nested that
  // deep (quotes or lists inside each other ~20 times) goes as the text it was typed, never shortened.
  const limit = parser.options.maxNesting - 1;
  if (tokens.some((token) => token.level >= limit)) return { msgtype, body: text };
  let html = parser.renderer.render(tokens, parser.options, env);

  if (!/<(?!\/?p>|br>)/.test(html)) {
    // Only paragraphs and line breaks: the plain text says it all.
    const plain = trimTrailingNewlines(
      decodeBasicEntities(
        html
          .replace(/<br>/g, "\n")
          .replace(/<\/p>\n*/g, "\n\n")
          .replace(/<p>/g, ""),
      ),
    );
    // Markdown that renders to nothing (e.g. only a link reference definition) is kept as typed.
    return { msgtype, body: plain === "" ? text : plain };
  }

  const single = tokens.length === 3 && tokens[0]!.type === "paragraph_open" && tokens[2]!.type === "paragraph_close";
  if (single && html.startsWith("<p>") && html.endsWith("</p>\n")) html = html.slice(3, -5);
  html = trimTrailingNewlines(html);
  return { msgtype, body: text, format: HTML_FORMAT, formatted_body: html };
}
