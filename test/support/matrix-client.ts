/**
 * "The Matrix user" of the end-to-end tests: a small real client over the client-server API,
 * talking to a real homeserver with fetch. No mocks, no SDK, so a test failure points at the
 * bridge or the homeserver rather than at client-side magic.
 */
import { createHmac, randomBytes } from "node:crypto";
import { withOwnSignal } from "./own-signal";

/** What the client needs to know about a homeserver (a TestHomeserver fits). */
export interface HomeserverInfo {
  url: string;
  serverName: string;
  /** registration_shared_secret; only registerUser needs it. */
  sharedSecret?: string;
}

/** A Matrix event as the client-server API returns it; fields beyond these are kept as-is. */
export interface MatrixEvent {
  type: string;
  content: Record<string, any>;
  event_id?: string;
  sender?: string;
  state_key?: string;
  origin_server_ts?: number;
  room_id?: string;
  unsigned?: Record<string, any>;
  redacts?: string;
  [key: string]: unknown;
}

/** Where in a /sync response an event was seen. */
export type SyncSection = "timeline" | "state" | "ephemeral" | "room_account_data" | "account_data" | "invite_state";

/** An event seen by the sync loop, with its room (if any) and section filled in. */
export interface SyncedEvent extends MatrixEvent {
  room_id?: string;
  section: SyncSection;
}

export interface Invite {
  roomId: string;
  /** Sender of our m.room.member invite event, if the stripped state included it. */
  inviter?: string;
  isDirect: boolean;
  /** The stripped state events the homeserver sent with the invite. */
  state: MatrixEvent[];
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Said in the timeout error, e.g. "B sees A's message". */
  description?: string;
}

export interface DownloadedMedia {
  data: Buffer;
  contentType: string | undefined;
  contentDisposition: string | undefined;
}

/** A non-2xx answer from the homeserver. */
export class MatrixApiError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly errcode: string | undefined,
    readonly body: unknown,
    who: string,
  ) {
    const detail = typeof body === "object" && body && "error" in body ? String((body as { error: unknown }).error) : String(body).slice(0, 300);
    super(`${method} ${path}${who ? ` (as ${who})` : ""} → ${status} ${errcode ?? "(no errcode)"}: ${detail}`);
    this.name = "MatrixApiError";
  }
}

interface RequestOptions {
  body?: unknown;
  /** Sent as-is instead of JSON. */
  rawBody?: Uint8Array;
  contentType?: string;
  accessToken?: string;
  who?: string;
  signal?: AbortSignal;
}

async function fetchOrExplain(method: string, url: string, pathForErrors: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`${method} ${pathForErrors} failed: ${(error as Error).message}${cause ? ` (${cause.code ?? cause.message})` : ""}`, { cause: error });
  }
}

async function requestJson<T = any>(baseUrl: string, method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.accessToken) headers.authorization = `Bearer ${options.accessToken}`;
  let body: RequestInit["body"];
  if (options.rawBody) {
    body = options.rawBody;
    headers["content-type"] = options.contentType ?? "application/octet-stream";
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers["content-type"] = "application/json";
  }
  const response = await withOwnSignal(options.signal, (signal) => fetchOrExplain(method, baseUrl + path, path, { method, headers, body, signal }));
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    // Not JSON (a proxy's HTML error page, say): keep the text for the error message.
  }
  if (!response.ok) {
    const errcode = typeof parsed === "object" && parsed && "errcode" in parsed ? String((parsed as { errcode: unknown }).errcode) : undefined;
    throw new MatrixApiError(method, path, response.status, errcode, parsed, options.who ?? "");
  }
  return parsed as T;
}

const enc = encodeURIComponent;

/**
 * Creates (or, if it exists, logs in as) a user through Synapse's shared-secret admin
 * registration. Synapse refuses localparts starting with "_", and localparts inside an
 * appservice's exclusive namespace. The password is derived from the shared secret, so a
 * second run against the same homeserver can log in as the user it made before.
 */
export async function registerUser(hs: HomeserverInfo, localpart: string, options: { admin?: boolean; password?: string; displayName?: string } = {}): Promise<TestClient> {
  if (!hs.sharedSecret) throw new Error(`registerUser(${localpart}): the homeserver's registration shared secret is unknown`);
  const baseUrl = hs.url.replace(/\/+$/, "");
  const password = options.password ?? createHmac("sha256", hs.sharedSecret).update(`password:${localpart}`).digest("hex").slice(0, 32);
  const admin = options.admin ?? false;
  const path = "/_synapse/admin/v1/register";
  const { nonce } = await requestJson<{ nonce: string }>(baseUrl, "GET", path);
  const mac = createHmac("sha1", hs.sharedSecret)
    .update([nonce, localpart, password, admin ? "admin" : "notadmin"].join("\0"))
    .digest("hex");
  let session: { user_id: string; access_token: string; device_id?: string };
  try {
    session = await requestJson(baseUrl, "POST", path, {
      body: { nonce, username: localpart, password, admin, mac, displayname: options.displayName },
    });
  } catch (error) {
    if (!(error instanceof MatrixApiError && error.errcode === "M_USER_IN_USE")) throw error;
    session = await requestJson(baseUrl, "POST", "/_matrix/client/v3/login", {
      body: { type: "m.login.password", identifier: { type: "m.id.user", user: localpart }, password, initial_device_display_name: "e2e test" },
    });
  }
  return new TestClient(hs, session.user_id, session.access_token, session.device_id);
}

let txnCounter = 0;
function newTxnId(): string {
  // Unique across clients, processes and homeserver restarts.
  return `t${Date.now()}.${++txnCounter}.${randomBytes(4).toString("hex")}`;
}

interface Waiter {
  check(): boolean;
}

interface SyncRoom {
  timeline?: { events?: MatrixEvent[] };
  state?: { events?: MatrixEvent[] };
  ephemeral?: { events?: MatrixEvent[] };
  account_data?: { events?: MatrixEvent[] };
}
interface SyncResponse {
  next_batch: string;
  rooms?: {
    join?: Record<string, SyncRoom>;
    leave?: Record<string, SyncRoom>;
    invite?: Record<string, { invite_state?: { events?: MatrixEvent[] } }>;
  };
  account_data?: { events?: MatrixEvent[] };
}

export class TestClient {
  readonly baseUrl: string;

  /** Every event the sync loop has seen, in order of arrival. */
  private readonly seen: SyncedEvent[] = [];
  private readonly seenEventIds = new Set<string>();
  private readonly timelines = new Map<string, SyncedEvent[]>();
  private readonly invites = new Map<string, Invite>();
  private readonly globalAccountData = new Map<string, Record<string, any>>();
  private readonly waiters = new Set<Waiter>();
  private syncAbort: AbortController | undefined;
  private syncLoop: Promise<void> | undefined;
  private syncToken: string | undefined;
  private lastSyncError: Error | undefined;

  constructor(
    readonly homeserver: HomeserverInfo,
    readonly userId: string,
    readonly accessToken: string,
    readonly deviceId?: string,
  ) {
    this.baseUrl = homeserver.url.replace(/\/+$/, "");
  }

  /** Any client-server API call as this user; throws MatrixApiError on a non-2xx answer. */
  request<T = any>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    return requestJson<T>(this.baseUrl, method, path, { body, accessToken: this.accessToken, who: this.userId, signal });
  }

  // ---- rooms and events

  /** POST /createRoom with the given body (preset, invite, is_direct, name, ...); returns the room id. */
  async createRoom(options: Record<string, unknown> = {}): Promise<string> {
    const { room_id } = await this.request<{ room_id: string }>("POST", "/_matrix/client/v3/createRoom", options);
    return room_id;
  }

  async joinRoom(roomIdOrAlias: string, via: string[] = []): Promise<string> {
    const query = via.map((server) => `server_name=${enc(server)}`).join("&");
    const { room_id } = await this.request<{ room_id: string }>("POST", `/_matrix/client/v3/join/${enc(roomIdOrAlias)}${query ? `?${query}` : ""}`, {});
    return room_id;
  }

  async leaveRoom(roomId: string, reason?: string): Promise<void> {
    await this.request("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/leave`, reason ? { reason } : {});
  }

  async invite(roomId: string, userId: string, reason?: string): Promise<void> {
    await this.request("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/invite`, { user_id: userId, ...(reason ? { reason } : {}) });
  }

  async kick(roomId: string, userId: string, reason?: string): Promise<void> {
    await this.request("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/kick`, { user_id: userId, ...(reason ? { reason } : {}) });
  }

  /** Sends an m.text message; `extra` is merged into the content (format, m.relates_to, ...). */
  sendText(roomId: string, body: string, extra: Record<string, unknown> = {}): Promise<string> {
    return this.sendEvent(roomId, "m.room.message", { msgtype: "m.text", body, ...extra });
  }

  /** Sends a message event (with a fresh transaction id unless one is given, for a safe retry); returns the event id. */
  async sendEvent(roomId: string, type: string, content: Record<string, unknown>, txnId = newTxnId()): Promise<string> {
    const { event_id } = await this.request<{ event_id: string }>("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/send/${enc(type)}/${enc(txnId)}`, content);
    return event_id;
  }

  /** Sets a state event (argument order as in matrix-js-sdk); returns the event id. */
  async sendState(roomId: string, type: string, content: Record<string, unknown>, stateKey = ""): Promise<string> {
    const { event_id } = await this.request<{ event_id: string }>("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, content);
    return event_id;
  }

  /** Content of a state event; throws MatrixApiError (errcode M_NOT_FOUND) if there is none. */
  getState(roomId: string, type: string, stateKey = ""): Promise<Record<string, any>> {
    return this.request("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`);
  }

  /** The room's m.room.member events, optionally only those with a given membership. */
  async getRoomMembers(roomId: string, membership?: "join" | "invite" | "leave" | "ban" | "knock"): Promise<MatrixEvent[]> {
    const query = membership ? `?membership=${membership}` : "";
    const { chunk } = await this.request<{ chunk: MatrixEvent[] }>("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/members${query}`);
    return chunk;
  }

  /** Redacts an event; returns the redaction's event id. */
  async redact(roomId: string, eventId: string, reason?: string): Promise<string> {
    const { event_id } = await this.request<{ event_id: string }>("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/redact/${enc(eventId)}/${newTxnId()}`, reason ? { reason } : {});
    return event_id;
  }

  /** Room history, newest first (GET /messages with dir=b). */
  async messages(roomId: string, options: { limit?: number; from?: string; filter?: Record<string, unknown> } = {}): Promise<MatrixEvent[]> {
    const params = new URLSearchParams({ dir: "b", limit: String(options.limit ?? 100) });
    if (options.from) params.set("from", options.from);
    if (options.filter) params.set("filter", JSON.stringify(options.filter));
    const { chunk } = await this.request<{ chunk: MatrixEvent[] }>("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${params}`);
    return chunk;
  }

  /** The whole room history the user can see, oldest first (paginates GET /messages). */
  async history(roomId: string, filter?: Record<string, unknown>): Promise<MatrixEvent[]> {
    const events: MatrixEvent[] = [];
    let from: string | undefined;
    for (;;) {
      const params = new URLSearchParams({ dir: "b", limit: "500" });
      if (from) params.set("from", from);
      if (filter) params.set("filter", JSON.stringify(filter));
      const page = await this.request<{ chunk: MatrixEvent[]; end?: string }>("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?${params}`);
      events.push(...page.chunk);
      if (!page.end || page.chunk.length === 0) break;
      from = page.end;
    }
    return events.reverse();
  }

  async joinedRooms(): Promise<string[]> {
    const { joined_rooms } = await this.request<{ joined_rooms: string[] }>("GET", "/_matrix/client/v3/joined_rooms");
    return joined_rooms;
  }

  // ---- media

  /** Uploads bytes; returns the mxc:// URI. */
  async uploadMedia(bytes: Uint8Array, mimetype: string, filename?: string): Promise<string> {
    const query = filename ? `?filename=${enc(filename)}` : "";
    const { content_uri } = await requestJson<{ content_uri: string }>(this.baseUrl, "POST", `/_matrix/media/v3/upload${query}`, {
      rawBody: bytes,
      contentType: mimetype,
      accessToken: this.accessToken,
      who: this.userId,
    });
    return content_uri;
  }

  /** Downloads through the authenticated media API (Synapse refuses unauthenticated downloads). */
  async downloadMedia(mxc: string): Promise<DownloadedMedia> {
    const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc);
    if (!match) throw new Error(`downloadMedia: not an mxc URI: ${mxc}`);
    const path = `/_matrix/client/v1/media/download/${enc(match[1])}/${enc(match[2])}`;
    const response = await fetchOrExplain("GET", this.baseUrl + path, path, { headers: { authorization: `Bearer ${this.accessToken}` } });
    const data = Buffer.from(await response.arrayBuffer());
    if (!response.ok) {
      let body: unknown = data.toString("utf8");
      try {
        body = JSON.parse(body as string);
      } catch {
        // keep the text
      }
      const errcode = typeof body === "object" && body && "errcode" in body ? String((body as { errcode: unknown }).errcode) : undefined;
      throw new MatrixApiError("GET", path, response.status, errcode, body, this.userId);
    }
    return {
      data,
      contentType: response.headers.get("content-type") ?? undefined,
      contentDisposition: response.headers.get("content-disposition") ?? undefined,
    };
  }

  // ---- profile, typing, receipts, account data

  async setDisplayName(displayName: string): Promise<void> {
    await this.request("PUT", `/_matrix/client/v3/profile/${enc(this.userId)}/displayname`, { displayname: displayName });
  }

  getProfile(userId: string): Promise<{ displayname?: string; avatar_url?: string; [key: string]: unknown }> {
    return this.request("GET", `/_matrix/client/v3/profile/${enc(userId)}`);
  }

  async sendTyping(roomId: string, typing: boolean, timeoutMs = 30_000): Promise<void> {
    await this.request("PUT", `/_matrix/client/v3/rooms/${enc(roomId)}/typing/${enc(this.userId)}`, typing ? { typing, timeout: timeoutMs } : { typing });
  }

  async sendReceipt(roomId: string, eventId: string, receiptType: "m.read" | "m.read.private" = "m.read"): Promise<void> {
    await this.request("POST", `/_matrix/client/v3/rooms/${enc(roomId)}/receipt/${receiptType}/${enc(eventId)}`, {});
  }

  /** Global account data of a type (e.g. "m.direct"), or undefined if never set. */
  async getAccountData(type: string): Promise<Record<string, any> | undefined> {
    try {
      return await this.request("GET", `/_matrix/client/v3/user/${enc(this.userId)}/account_data/${enc(type)}`);
    } catch (error) {
      if (error instanceof MatrixApiError && error.errcode === "M_NOT_FOUND") return undefined;
      throw error;
    }
  }

  async setAccountData(type: string, content: Record<string, unknown>): Promise<void> {
    await this.request("PUT", `/_matrix/client/v3/user/${enc(this.userId)}/account_data/${enc(type)}`, content);
  }

  // ---- sync

  /**
   * Starts the /sync loop; resolves once the first (initial) sync has been recorded, so what
   * the user could already see is in eventsIn()/waitFor() from then on.
   */
  async startSync(): Promise<void> {
    if (this.syncLoop) return;
    const abort = new AbortController();
    this.syncAbort = abort;
    await this.syncOnce(abort.signal, 0);
    this.syncLoop = this.runSyncLoop(abort.signal);
  }

  /** Stops the loop and waits for the in-flight /sync to end. What was seen stays readable. */
  async stopSync(): Promise<void> {
    this.syncAbort?.abort();
    await this.syncLoop;
    this.syncAbort = undefined;
    this.syncLoop = undefined;
  }

  get syncing(): boolean {
    return this.syncLoop !== undefined;
  }

  private async runSyncLoop(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.syncOnce(signal, 10_000);
        this.lastSyncError = undefined;
      } catch (error) {
        if (signal.aborted) return;
        // Keep going: the homeserver may be restarting. waitFor's timeout error reports this.
        this.lastSyncError = error as Error;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  private async syncOnce(signal: AbortSignal, timeoutMs: number): Promise<void> {
    const params = new URLSearchParams({ timeout: String(timeoutMs), set_presence: "offline" });
    if (this.syncToken) params.set("since", this.syncToken);
    else params.set("filter", JSON.stringify({ room: { timeline: { limit: 100 } } }));
    let response: SyncResponse;
    try {
      response = await this.request<SyncResponse>("GET", `/_matrix/client/v3/sync?${params}`, undefined, signal);
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    }
    this.record(response);
    this.syncToken = response.next_batch;
  }

  private record(response: SyncResponse): void {
    const add = (event: MatrixEvent, section: SyncSection, roomId?: string) => {
      if (event.event_id && section !== "invite_state") {
        // A gappy sync can repeat a timeline event; one record per event keeps waitFor honest.
        const key = `${section}:${event.event_id}`;
        if (this.seenEventIds.has(key)) return;
        this.seenEventIds.add(key);
      }
      const synced: SyncedEvent = { ...event, section, ...(roomId ? { room_id: roomId } : {}) };
      this.seen.push(synced);
      if (roomId && section === "timeline") {
        let timeline = this.timelines.get(roomId);
        if (!timeline) this.timelines.set(roomId, (timeline = []));
        timeline.push(synced);
      }
    };
    const rooms = response.rooms ?? {};
    for (const joinedOrLeft of [rooms.join ?? {}, rooms.leave ?? {}]) {
      for (const [roomId, room] of Object.entries(joinedOrLeft)) {
        for (const event of room.state?.events ?? []) add(event, "state", roomId);
        for (const event of room.timeline?.events ?? []) add(event, "timeline", roomId);
        for (const event of room.ephemeral?.events ?? []) add(event, "ephemeral", roomId);
        for (const event of room.account_data?.events ?? []) add(event, "room_account_data", roomId);
      }
    }
    for (const [roomId, invited] of Object.entries(rooms.invite ?? {})) {
      const state = invited.invite_state?.events ?? [];
      const ownMembership = state.find((e) => e.type === "m.room.member" && e.state_key === this.userId);
      this.invites.set(roomId, {
        roomId,
        inviter: ownMembership?.sender,
        isDirect: ownMembership?.content?.is_direct === true,
        state,
      });
      for (const event of state) add(event, "invite_state", roomId);
    }
    for (const event of response.account_data?.events ?? []) {
      this.globalAccountData.set(event.type, event.content);
      add(event, "account_data");
    }
    for (const waiter of [...this.waiters]) waiter.check();
  }

  /** Timeline events seen in a room, oldest first. */
  eventsIn(roomId: string): SyncedEvent[] {
    return [...(this.timelines.get(roomId) ?? [])];
  }

  /** Every event the sync loop has seen (all sections), in order of arrival. */
  allSeenEvents(): SyncedEvent[] {
    return [...this.seen];
  }

  /** Ephemeral events (m.typing, m.receipt) seen in a room, oldest first. */
  ephemeralIn(roomId: string): SyncedEvent[] {
    return this.seen.filter((e) => e.section === "ephemeral" && e.room_id === roomId);
  }

  /** Invites seen by sync (also those since accepted), by room id. */
  seenInvites(): Invite[] {
    return [...this.invites.values()];
  }

  /** Latest global account data of a type seen by sync (e.g. "m.direct"). */
  syncedAccountData(type: string): Record<string, any> | undefined {
    return this.globalAccountData.get(type);
  }

  /**
   * Resolves with the first event (of any section: timeline, state, ephemeral, account data,
   * invite state) matching the predicate: first among those already seen, then as they arrive.
   */
  waitFor(predicate: (event: SyncedEvent) => boolean, options: WaitOptions = {}): Promise<SyncedEvent> {
    let scanned = 0;
    return this.waitUntil(
      () => {
        for (; scanned < this.seen.length; scanned++) {
          if (predicate(this.seen[scanned])) return this.seen[scanned];
        }
        return undefined;
      },
      options,
      "an event",
    );
  }

  /** Resolves with the first invite (seen already, or arriving) matching the predicate. */
  waitForInvite(predicate: (invite: Invite) => boolean = () => true, options: WaitOptions = {}): Promise<Invite> {
    return this.waitUntil(() => [...this.invites.values()].find(predicate), options, "an invite");
  }

  private waitUntil<T>(find: () => T | undefined, options: WaitOptions, what: string): Promise<T> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    return new Promise<T>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        check: () => {
          let found: T | undefined;
          try {
            found = find();
          } catch (error) {
            finish();
            reject(error);
            return true;
          }
          if (found === undefined) return false;
          finish();
          resolve(found);
          return true;
        },
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      if (waiter.check()) return;
      if (!this.syncing) {
        reject(
          new Error(
            `${this.userId}: no ${what} matches${options.description ? ` (${options.description})` : ""} and sync is not running; call startSync() first.\n${this.describeSeen()}`,
          ),
        );
        return;
      }
      this.waiters.add(waiter);
      timer = setTimeout(() => {
        finish();
        reject(new Error(`${this.userId}: timed out after ${timeoutMs} ms waiting for ${options.description ?? `${what} matching the predicate`}.\n${this.describeSeen()}`));
      }, timeoutMs);
    });
  }

  /** A compact summary of what sync delivered, for timeout errors. */
  describeSeen(): string {
    const byRoom = new Map<string, Map<string, number>>();
    for (const event of this.seen) {
      const room = event.room_id ?? "(account)";
      let counts = byRoom.get(room);
      if (!counts) byRoom.set(room, (counts = new Map()));
      const label = event.section === "timeline" ? event.type : `${event.section}:${event.type}`;
      counts.set(label, (counts.get(label) ?? 0) + 1);
    }
    const lines = [`seen ${this.seen.length} event(s)${byRoom.size ? ":" : ""}`];
    for (const [room, counts] of byRoom) {
      lines.push(`  ${room}: ${[...counts].map(([type, n]) => (n > 1 ? `${type}×${n}` : type)).join(", ")}`);
    }
    if (this.invites.size) lines.push(`  invites: ${[...this.invites.keys()].join(", ")}`);
    if (this.lastSyncError) lines.push(`  last /sync error: ${this.lastSyncError.message}`);
    return lines.join("\n");
  }
}
