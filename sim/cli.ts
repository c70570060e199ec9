#!/usr/bin/env node
/**
 * A thin command-line client of the simulator's control API (docs/simulator.md):
 *
 *   node dist/sim/cli.js [--api http://127.0.0.1:29600] user add +4915… --name Ana
 *   node dist/sim/cli.js send +4915… @alice:localhost "hi *there*"
 *   node dist/sim/cli.js inbox +4915… --follow
 *
 * Output is for people; --json prints the API's answer instead. An error is one line on
 * stderr and exit status 1.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

const USAGE = `usage: node dist/sim/cli.js [--api URL] COMMAND ...   (URL default: $SIM_API or http://127.0.0.1:29600)
  health
  user add PHONE --name NAME [--avatar FILE] [--third-party on|off]
  user update PHONE [--name NAME] [--avatar FILE | --no-avatar]
  user list
  user show PHONE
  settings PHONE --third-party on|off
  send PHONE TO TEXT [--reply-to MSGID] [--expires SECONDS]
  react PHONE TO MSGID EMOJI
  unreact PHONE TO MSGID REACTIONID
  edit PHONE TO MSGID TEXT
  delete PHONE TO MSGID
  read PHONE TO MSGID...
  typing PHONE TO on|off
  status PHONE TEXT
  sticker PHONE TO
  media PHONE TO FILE [--caption TEXT] [--kind image|video|voice|audio|file] [--mimetype TYPE]
  disappearing PHONE TO SECONDS        (0 = off)
  inbox PHONE [--after N] [--follow]
  group create OWNER NAME [--member M]... [--topic TEXT]   (prints the group's room URI last)
  group add OWNER GROUP MEMBER
  group remove OWNER GROUP MEMBER
  group leave PHONE GROUP
  group rename OWNER GROUP NAME
  group topic OWNER GROUP TEXT           ("" removes it)
  group picture OWNER GROUP FILE|--none
  group admin OWNER GROUP MEMBER on|off
  group show PHONE GROUP
  group list PHONE
TO is a Matrix user id (@alice:example.org), a mimi user URI, a phone number or a group's room URI.
GROUP is a group's room URI (mimi://…/r/g-…); MEMBER and M a phone number or a Matrix user id.
Add --json to any command to print the API's JSON answer.`;

export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Io {
  out: (line: string) => void;
}

const AVATAR_TYPES: Record<string, string> = {
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".webp": "image/webp",
  ".gif": "image/gif",
};

const MEDIA_TYPES: Record<string, string> = {
  ...AVATAR_TYPES,
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mov": "video/quicktime",
  ".ogg": "audio/ogg",
  ".opus": "audio/ogg",
  ".mp3": "audio/mpeg",
  ".m4a": "audio/mp4",
  ".wav": "audio/wav",
  ".pdf": "application/pdf",
  ".txt": "text/plain",
};

class Api {
  constructor(private readonly base: string) {}

  async call<T>(method: string, route: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.base + route, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (err) {
      throw new CliError("unreachable", `cannot reach the simulator at ${this.base} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message})`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new CliError("bad_answer", `${method} ${route}: HTTP ${res.status} with a non-JSON answer`);
    }
    if (!res.ok) {
      const e = json as { error?: string; message?: string };
      throw new CliError(e.error ?? `http_${res.status}`, e.message ?? `HTTP ${res.status}`);
    }
    return json as T;
  }
}

function user(phone: string): string {
  return `/users/${encodeURIComponent(phone)}`;
}

function need(positionals: string[], count: number, what: string): string[] {
  if (positionals.length < count) throw new CliError("usage", `expected ${what}`);
  return positionals;
}

function onOff(v: string | undefined, flag: string): boolean {
  if (v === "on") return true;
  if (v === "off") return false;
  throw new CliError("usage", `${flag} must be on or off`);
}

function avatarOf(file: string): { mimetype: string; base64: string } {
  const mimetype = AVATAR_TYPES[path.extname(file).toLowerCase()];
  if (!mimetype) throw new CliError("usage", `--avatar: use a .png, .jpg, .webp or .gif file`);
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new CliError("usage", `--avatar: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { mimetype, base64: bytes.toString("base64") };
}

function time(ts: unknown): string {
  return typeof ts === "number"
    ? new Date(ts)
        .toISOString()
        .replace("T", " ")
        .replace(/\.\d+Z$/, "Z")
    : "-";
}

function uintArg(v: string | undefined, what: string): number {
  const n = Number(v);
  if (v === undefined || !Number.isSafeInteger(n) || n < 0) throw new CliError("usage", `${what} must be a whole number`);
  return n;
}

type Entry = { n: number; kind: string; from: string; fromId?: string; ts?: number } & Record<string, unknown>;

type GroupView = { room: string; name: string; topic?: string; picture?: { url: string }; members: Array<{ id: string; admin: boolean }> };

/** `"Name" (g-1a2b3c4d…)`: enough to recognise a group; `group list` has the whole URI. */
function groupLabel(room: unknown, name: unknown): string {
  const id = typeof room === "string" ? room.slice(room.lastIndexOf("/") + 1) : "";
  const short = id.length > 12 ? `${id.slice(0, 10)}…` : id;
  return typeof name === "string" ? `"${name}" (${short})` : `(${short})`;
}

function membersLine(g: GroupView): string {
  return g.members.map((m) => `${m.id}${m.admin ? "*" : ""}`).join(", ");
}

/** What a group event says happened. */
function groupChange(e: Entry): string {
  const subject = String(e.subjectId ?? e.subject ?? "");
  switch (e.change) {
    case "created":
      return `created the group with ${(e.members as string[]).join(", ")}`;
    case "added":
      return `added ${subject}`;
    case "removed":
      return `removed ${subject}`;
    case "left":
      return "left";
    case "name":
      return `renamed the group to "${e.group}"`;
    case "topic":
      return e.topic ? `set the topic to "${e.topic}"` : "removed the topic";
    case "picture":
      return "changed the group picture";
    case "admin":
      return e.admin ? `made ${subject} an admin` : `made ${subject} no longer an admin`;
    default:
      return String(e.change);
  }
}

function sentLine(what: string, r: { id?: string; ts: number; failed?: Array<{ to: string; error: string }> }): string {
  const failed = r.failed?.length ? `; not sent to ${r.failed.map((f) => `${f.to} (${f.error})`).join(", ")}` : "";
  return `${what}${r.id ? ` ${r.id}` : ""} at ${time(r.ts)}${failed}`;
}

/** One inbox entry as one readable line. */
export function formatEntry(e: Entry): string {
  const head = `#${e.n} ${time(e.ts)} ${e.fromId ?? e.from}${e.room ? ` in ${groupLabel(e.room, e.group)}` : ""}`;
  if (e.kind === "group") return `${head} ${groupChange(e)}`;
  const id = typeof e.id === "string" ? ` [${e.id.slice(0, 12)}…]` : "";
  switch (e.kind) {
    case "text":
      return `${head}${id}: ${e.text}${e.inReplyTo ? ` (reply to ${String(e.inReplyTo).slice(0, 12)}…)` : ""}`;
    case "reaction":
      return `${head} reacted ${e.emoji} to ${String(e.target).slice(0, 12)}…`;
    case "unreaction":
      return `${head} withdrew a reaction on ${String(e.target).slice(0, 12)}…`;
    case "edit":
      return `${head} edited ${String(e.target).slice(0, 12)}…: ${e.text}`;
    case "delete":
      return `${head} deleted ${String(e.target).slice(0, 12)}…`;
    case "read":
      return `${head} read ${(e.ids as string[]).length} message(s)`;
    case "delivered":
      return `${head} received ${e.of ?? "message"}${id}`;
    case "typing":
      return `${head} typing ${e.state}`;
    case "disappearing":
      return `${head} set disappearing messages to ${e.seconds === 0 ? "off" : `${e.seconds} s`}`;
    case "profile":
      return `${head} is now "${e.displayName}"${e.avatar ? " (with a picture)" : ""}`;
    case "media":
      return `${head}${id} sent ${e.mediaKind ?? "media"} ${e.filename || ""} (${e.contentType}${typeof e.size === "number" ? `, ${e.size} bytes` : ""})${e.caption ? `: ${e.caption}` : ""}${e.error ? ` — not received: ${e.error}` : ""}`;
    case "sticker":
      return `${head}${id} sent a sticker`;
    case "undecryptable":
      return `${head} sent something unreadable (${e.reason})`;
    case "identity_changed":
      return `${head} has a new security code`;
    default:
      return `${head} ${e.kind}`;
  }
}

/** Runs one command; resolves with the exit status. */
export async function runCli(argv: string[], io: Io = { out: (l) => process.stdout.write(`${l}\n`) }, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { values, positionals } = (() => {
    try {
      return parseArgs({
        args: argv,
        allowPositionals: true,
        strict: true,
        options: {
          api: { type: "string" },
          name: { type: "string" },
          avatar: { type: "string" },
          "no-avatar": { type: "boolean" },
          "third-party": { type: "string" },
          "reply-to": { type: "string" },
          caption: { type: "string" },
          kind: { type: "string" },
          mimetype: { type: "string" },
          expires: { type: "string" },
          member: { type: "string", multiple: true },
          topic: { type: "string" },
          after: { type: "string" },
          follow: { type: "boolean" },
          json: { type: "boolean" },
          help: { type: "boolean", short: "h" },
        },
      });
    } catch (err) {
      throw new CliError("usage", (err as Error).message);
    }
  })();
  if (values.help || positionals.length === 0) {
    io.out(USAGE);
    return values.help ? 0 : 1;
  }
  const api = new Api((values.api ?? env.SIM_API ?? "http://127.0.0.1:29600").replace(/\/+$/, ""));
  const json = values.json === true;
  const print = (answer: unknown, line: string) => io.out(json ? JSON.stringify(answer, null, 2) : line);
  const [command, ...args] = positionals;

  switch (command) {
    case "health": {
      const h = await api.call<{ status: string; gateway: string; users: number }>("GET", "/health");
      print(h, `${h.status}; gateway ${h.gateway}; ${h.users} user(s)`);
      return 0;
    }
    case "user": {
      const [sub, phone] = args;
      if (sub === "list") {
        const users = await api.call<Array<{ phone: string; name: string; thirdPartyChats: boolean }>>("GET", "/users");
        print(users, users.map((u) => `${u.phone}  ${u.name}  third-party chats ${u.thirdPartyChats ? "on" : "off"}`).join("\n") || "(no users)");
        return 0;
      }
      if (!phone) throw new CliError("usage", `user ${sub ?? ""}: expected a phone number`);
      if (sub === "show") {
        const u = await api.call<{ phone: string; uri: string; name: string; thirdPartyChats: boolean; avatar?: { url: string } }>("GET", user(phone));
        print(u, `${u.phone}  ${u.name}  ${u.uri}  third-party chats ${u.thirdPartyChats ? "on" : "off"}${u.avatar ? `  avatar ${u.avatar.url}` : ""}`);
        return 0;
      }
      if (sub === "add") {
        if (!values.name) throw new CliError("usage", "user add: --name is required");
        const body: Record<string, unknown> = { phone, name: values.name };
        if (values.avatar) body.avatar = avatarOf(values.avatar);
        if (values["third-party"] !== undefined) body.thirdPartyChats = onOff(values["third-party"], "--third-party");
        const u = await api.call<{ phone: string; uri: string; created: boolean }>("POST", "/users", body);
        print(u, `${u.created ? "created" : "updated"} ${u.phone} (${u.uri})`);
        return 0;
      }
      if (sub === "update") {
        const body: Record<string, unknown> = {};
        if (values.name) body.name = values.name;
        if (values.avatar) body.avatar = avatarOf(values.avatar);
        if (values["no-avatar"]) body.avatar = null;
        const u = await api.call<{ phone: string; name: string }>("PATCH", user(phone), body);
        print(u, `updated ${u.phone}: ${u.name}`);
        return 0;
      }
      throw new CliError("usage", `unknown command: user ${sub ?? ""}`);
    }
    case "settings": {
      const [phone] = need(args, 1, "settings PHONE --third-party on|off");
      const u = await api.call<{ phone: string; thirdPartyChats: boolean }>("PUT", `${user(phone!)}/settings`, {
        thirdPartyChats: onOff(values["third-party"], "--third-party"),
      });
      print(u, `${u.phone}: third-party chats ${u.thirdPartyChats ? "on" : "off"}`);
      return 0;
    }
    case "send": {
      const [phone, to, text] = need(args, 3, "send PHONE TO TEXT");
      const body: Record<string, unknown> = { to, text };
      if (values["reply-to"]) body.inReplyTo = values["reply-to"];
      if (values.expires !== undefined) body.expiresInSeconds = uintArg(values.expires, "--expires");
      const r = await api.call<{ id: string; ts: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/messages`, body);
      print(r, sentLine("sent", r));
      return 0;
    }
    case "react": {
      const [phone, to, target, emoji] = need(args, 4, "react PHONE TO MSGID EMOJI");
      const r = await api.call<{ id: string; ts: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/reactions`, { to, target, emoji });
      print(r, sentLine("reacted", r));
      return 0;
    }
    case "unreact": {
      const [phone, to, target, reaction] = need(args, 4, "unreact PHONE TO MSGID REACTIONID");
      const r = await api.call<{ id: string; ts: number }>("POST", `${user(phone!)}/reactions`, { to, target, reaction });
      print(r, `withdrew the reaction (${r.id}) at ${time(r.ts)}`);
      return 0;
    }
    case "edit": {
      const [phone, to, target, text] = need(args, 4, "edit PHONE TO MSGID TEXT");
      const r = await api.call<{ id: string; ts: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/edits`, { to, target, text });
      print(r, sentLine("edited", r));
      return 0;
    }
    case "delete": {
      const [phone, to, target] = need(args, 3, "delete PHONE TO MSGID");
      const r = await api.call<{ id: string; ts: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/deletions`, { to, target });
      print(r, sentLine("deleted", r));
      return 0;
    }
    case "read": {
      const [phone, to, ...ids] = need(args, 3, "read PHONE TO MSGID...");
      const r = await api.call<{ ts: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/read`, { to, ids });
      print(r, sentLine(`marked ${ids.length} message(s) read`, r));
      return 0;
    }
    case "typing": {
      const [phone, to, state] = need(args, 3, "typing PHONE TO on|off");
      const r = await api.call<unknown>("POST", `${user(phone!)}/typing`, { to, state });
      print(r, `typing ${state}`);
      return 0;
    }
    case "status": {
      const [phone, text] = need(args, 2, "status PHONE TEXT");
      const r = await api.call<{ sent: Array<{ to: string }>; failed: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/status`, { text });
      const failed = r.failed.map((f) => `${f.to} (${f.error})`).join(", ");
      print(r, `status sent to ${r.sent.length} contact(s)${failed ? `; failed: ${failed}` : ""}`);
      return 0;
    }
    case "sticker": {
      const [phone, to] = need(args, 2, "sticker PHONE TO");
      const r = await api.call<{ id: string; ts: number }>("POST", `${user(phone!)}/stickers`, { to });
      print(r, `sent sticker ${r.id} at ${time(r.ts)}`);
      return 0;
    }
    case "media": {
      const [phone, to, file] = need(args, 3, "media PHONE TO FILE");
      const mimetype = values.mimetype ?? MEDIA_TYPES[path.extname(file!).toLowerCase()] ?? "application/octet-stream";
      const r = await api.call<{ id: string; ts: number; size: number; failed?: Array<{ to: string; error: string }> }>("POST", `${user(phone!)}/media`, {
        to,
        file: path.resolve(file!),
        mimetype,
        ...(values.kind ? { kind: values.kind } : {}),
        ...(values.caption ? { caption: values.caption } : {}),
      });
      print(r, sentLine(`sent ${values.kind ?? mimetype}`, r));
      return 0;
    }
    case "disappearing": {
      const [phone, to, seconds] = need(args, 3, "disappearing PHONE TO SECONDS");
      const r = await api.call<{ ts: number }>("POST", `${user(phone!)}/disappearing`, { to, seconds: uintArg(seconds, "SECONDS") });
      print(r, `disappearing messages ${seconds === "0" ? "off" : `set to ${seconds} s`}`);
      return 0;
    }
    case "group":
      return runGroup(api, args, values, print);
    case "inbox": {
      const [phone] = need(args, 1, "inbox PHONE");
      let after = values.after === undefined ? 0 : uintArg(values.after, "--after");
      do {
        const route = values.follow ? `${user(phone!)}/inbox/wait?after=${after}&timeoutMs=30000` : `${user(phone!)}/inbox?after=${after}`;
        const entries = await api.call<Entry[]>("GET", route);
        for (const e of entries) {
          io.out(json ? JSON.stringify(e) : formatEntry(e));
          after = Math.max(after, e.n);
        }
        if (!values.follow && entries.length === 0 && !json) io.out("(nothing)");
      } while (values.follow);
      return 0;
    }
    default:
      throw new CliError("usage", `unknown command ${command}; see --help`);
  }
}

async function runGroup(api: Api, args: string[], values: { member?: string[]; topic?: string }, print: (answer: unknown, line: string) => void): Promise<number> {
  const [sub, phone, room] = args;
  const groupRoute = (p: string, r: string) => `${user(p)}/groups/${encodeURIComponent(r)}`;
  switch (sub) {
    case "create": {
      const [owner, name] = need(args.slice(1), 2, "group create OWNER NAME [--member M]...");
      const body: Record<string, unknown> = { name, members: values.member ?? [] };
      if (values.topic !== undefined) body.topic = values.topic;
      const g = await api.call<GroupView & { refused: Array<{ id: string; error: string }> }>("POST", `${user(owner!)}/groups`, body);
      const refused = g.refused.length ? `; not added: ${g.refused.map((r) => `${r.id} (${r.error})`).join(", ")}` : "";
      // The room URI is the line's last word, so scripts can take it with awk '{print $NF}'.
      print(g, `created group "${g.name}" with ${g.members.length} member(s)${refused} ${g.room}`);
      return 0;
    }
    case "add": {
      const [owner, group, member] = need(args.slice(1), 3, "group add OWNER GROUP MEMBER");
      const g = await api.call<GroupView>("POST", `${groupRoute(owner!, group!)}/members`, { member });
      print(g, `added ${member} to ${groupLabel(g.room, g.name)}: ${membersLine(g)}`);
      return 0;
    }
    case "remove": {
      const [owner, group, member] = need(args.slice(1), 3, "group remove OWNER GROUP MEMBER");
      const g = await api.call<GroupView>("DELETE", `${groupRoute(owner!, group!)}/members/${encodeURIComponent(member!)}`);
      print(g, `removed ${member} from ${groupLabel(g.room, g.name)}: ${membersLine(g)}`);
      return 0;
    }
    case "leave": {
      need(args.slice(1), 2, "group leave PHONE GROUP");
      const r = await api.call<{ left: string }>("POST", `${groupRoute(phone!, room!)}/leave`, {});
      print(r, `${phone} left ${r.left}`);
      return 0;
    }
    case "rename": {
      const [owner, group, name] = need(args.slice(1), 3, "group rename OWNER GROUP NAME");
      const g = await api.call<GroupView>("PATCH", groupRoute(owner!, group!), { name });
      print(g, `renamed ${g.room} to "${g.name}"`);
      return 0;
    }
    case "topic": {
      const [owner, group, topic] = need(args.slice(1), 3, "group topic OWNER GROUP TEXT");
      const g = await api.call<GroupView>("PATCH", groupRoute(owner!, group!), { topic });
      print(g, g.topic ? `topic of ${groupLabel(g.room, g.name)}: ${g.topic}` : `removed the topic of ${groupLabel(g.room, g.name)}`);
      return 0;
    }
    case "picture": {
      const [owner, group, file] = need(args.slice(1), 3, "group picture OWNER GROUP FILE|--none");
      const g = await api.call<GroupView>("PATCH", groupRoute(owner!, group!), { picture: file === "--none" ? null : avatarOf(file!) });
      print(g, g.picture ? `picture of ${groupLabel(g.room, g.name)}: ${g.picture.url}` : `removed the picture of ${groupLabel(g.room, g.name)}`);
      return 0;
    }
    case "admin": {
      const [owner, group, member, state] = need(args.slice(1), 4, "group admin OWNER GROUP MEMBER on|off");
      const g = await api.call<GroupView>("POST", `${groupRoute(owner!, group!)}/admins`, { member, admin: onOff(state, "on|off") });
      print(g, `${groupLabel(g.room, g.name)}: ${membersLine(g)}   (* = admin)`);
      return 0;
    }
    case "show": {
      need(args.slice(1), 2, "group show PHONE GROUP");
      const g = await api.call<GroupView>("GET", groupRoute(phone!, room!));
      print(g, `${g.room}  "${g.name}"${g.topic ? `  topic: ${g.topic}` : ""}  ${g.members.length} member(s): ${membersLine(g)}   (* = admin)`);
      return 0;
    }
    case "list": {
      need(args.slice(1), 1, "group list PHONE");
      const groups = await api.call<GroupView[]>("GET", `${user(phone!)}/groups`);
      print(groups, groups.map((g) => `${g.room}  "${g.name}"  ${g.members.length} member(s): ${membersLine(g)}`).join("\n") || "(no groups)");
      return 0;
    }
    default:
      throw new CliError("usage", `unknown command: group ${sub ?? ""}; see --help`);
  }
}

if (require.main === module) {
  runCli(process.argv.slice(2)).then(
    (status) => process.exit(status),
    (err: unknown) => {
      const code = err instanceof CliError ? err.code : "error";
      process.stderr.write(`error: ${code}: ${(err as Error).message.replace(/\s*\n\s*/g, " ")}\n`);
      process.exit(1);
    },
  );
}
