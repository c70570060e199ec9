/**
 * What one HTTP request of the bridge asks of the homeserver: its kind (for
 * bridge_homeserver_requests_total) and the room events the homeserver stores when it succeeds
 * (for bridge_homeserver_events_total). Pure: HomeserverLink counts every request with it.
 */

/** Kinds of homeserver requests, as the metrics label them. */
export type HomeserverRequestKind =
  /** PUT …/send/… and …/redact/…: one room event each. */
  | "send"
  /** PUT …/state/…: one state event. */
  | "state"
  /** Joins, leaves, invites, kicks and bans: one m.room.member event. */
  | "membership"
  /** POST …/createRoom: the create event, the creator's join, power levels, the preset's rules, name, topic, invites. */
  | "create_room"
  /** Display names and avatars (the homeserver also updates the user's member event in each of its rooms). */
  | "profile"
  | "typing"
  /** Read receipts and read markers. */
  | "receipt"
  /** Uploads and downloads of the media repository. */
  | "media"
  /** Other reads (GET): members, messages, joined rooms, whoami… */
  | "query"
  /** Everything else: registration, the appservice ping… */
  | "other";

export interface HomeserverRequest {
  kind: HomeserverRequestKind;
  /**
   * The room events the homeserver stores when the request succeeds, by event type (or
   * "room_creation" for a new room's own events); empty for requests that store none.
   */
  events: Array<{ type: string; count: number }>;
}

/** Where HomeserverLink counts (BridgeMetrics implements it). */
export interface HomeserverRequestCounter {
  homeserverRequest(kind: HomeserverRequestKind): void;
  homeserverEvents(type: string, count: number): void;
}

const MEMBERSHIP_ACTIONS = new Set(["join", "leave", "invite", "kick", "ban", "unban"]);

function decodedSegments(pathname: string): string[] {
  return pathname
    .split("/")
    .filter((s) => s !== "")
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
}

function parsedBody(body: unknown): Record<string, unknown> {
  if (typeof body === "string") {
    try {
      const parsed = JSON.parse(body) as unknown;
      return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  }
  return typeof body === "object" && body !== null && !Buffer.isBuffer(body) ? (body as Record<string, unknown>) : {};
}

/**
 * The events Synapse stores for a createRoom request: m.room.create, the creator's join, power
 * levels, the preset's join rules and history visibility (and guest access for the private
 * presets), an alias, name and topic when given, the initial state, and one member event per invite.
 */
export function roomCreationEvents(body: Record<string, unknown>): number {
  const preset = typeof body.preset === "string" ? body.preset : body.visibility === "public" ? "public_chat" : "private_chat";
  const length = (v: unknown) => (Array.isArray(v) ? v.length : 0);
  return (
    3 +
    (preset === "public_chat" ? 2 : 3) +
    (body.room_alias_name ? 1 : 0) +
    (body.name ? 1 : 0) +
    (body.topic ? 1 : 0) +
    length(body.initial_state) +
    length(body.invite) +
    length(body.invite_3pid)
  );
}

/** Classifies a request to the homeserver by its method, URL (absolute, or a path) and JSON body. */
export function classifyHomeserverRequest(method: string, url: string, body?: unknown): HomeserverRequest {
  const verb = method.toUpperCase();
  let pathname: string;
  try {
    pathname = new URL(url, "http://homeserver.invalid").pathname;
  } catch {
    return { kind: "other", events: [] };
  }
  const s = decodedSegments(pathname);
  const none = (kind: HomeserverRequestKind): HomeserverRequest => ({ kind, events: [] });
  if (s[0] !== "_matrix") return none(verb === "GET" ? "query" : "other");
  // /_matrix/media/… and /_matrix/client/v1/media/…
  if (s[1] === "media" || (s[1] === "client" && s[3] === "media")) return none("media");
  if (s[1] !== "client") return none(verb === "GET" ? "query" : "other");
  // /_matrix/client/<version>/<rest…>
  const rest = s.slice(3);
  if (rest[0] === "rooms" && rest.length >= 3) {
    const action = rest[2];
    if (verb === "PUT" && action === "send" && rest[3]) return { kind: "send", events: [{ type: rest[3], count: 1 }] };
    if (verb === "PUT" && action === "redact") return { kind: "send", events: [{ type: "m.room.redaction", count: 1 }] };
    if (verb === "PUT" && action === "state" && rest[3]) return { kind: "state", events: [{ type: rest[3], count: 1 }] };
    if (verb === "PUT" && action === "typing") return none("typing");
    if (verb === "POST" && (action === "receipt" || action === "read_markers")) return none("receipt");
    if (verb === "POST" && MEMBERSHIP_ACTIONS.has(action)) return { kind: "membership", events: [{ type: "m.room.member", count: 1 }] };
  }
  if (verb === "POST" && rest[0] === "join" && rest[1]) return { kind: "membership", events: [{ type: "m.room.member", count: 1 }] };
  if (verb === "POST" && rest[0] === "createRoom") return { kind: "create_room", events: [{ type: "room_creation", count: roomCreationEvents(parsedBody(body)) }] };
  if (verb === "PUT" && rest[0] === "profile") return none("profile");
  return none(verb === "GET" ? "query" : "other");
}
