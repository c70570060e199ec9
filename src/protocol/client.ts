/**
 * Client of the interop gateway (docs/protocol.md): one authenticated provider
 * connection multiplexing that provider's user sessions, with automatic
 * reconnection, re-login, resumed delivery and retried requests.
 *
 * Guarantees offered to callers:
 *  - Requests are retried across reconnects until a definite answer (ok or a
 *    non-retryable error) or their deadline; send() has no deadline by default.
 *    Retrying is safe: every request is idempotent on the gateway, send() by its
 *    (from, to, id) key. keys.fetch is the exception that merely wastes a key.
 *  - send() calls for one (from, to) pair are transmitted one at a time, in call
 *    order, so they are accepted (and delivered) in call order even across retries.
 *  - Queued events (deliver, delivered, profile, refused, group) of one user reach the handlers
 *    one at a time in seq order; the ack goes out only after the handler's promise
 *    resolves. Different users proceed in parallel.
 */
import { EventEmitter } from "node:events";
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { getLogger, type Logger } from "../logging.js";
import { Backoff, sleep } from "../util/backoff.js";
import {
  CloseCode,
  DEFAULT_LIMITS,
  FATAL_CLOSE_CODES,
  PROTOCOL_VERSION,
  ProtocolError,
  RETRYABLE_ERROR_CODES,
  decodeFrame,
  dmRoomUri,
  encodeFrame,
  groupRoomUri,
  queueOwner,
  type Avatar,
  type DeliverFrame,
  type DeliveredFrame,
  type ErrorCode,
  type Frame,
  type GroupEventFrame,
  type GroupRefusal,
  type GroupState,
  type KeysLowFrame,
  type KeysPublishFrame,
  type Limits,
  type OkFrame,
  type Payload,
  type PreKeyBundle,
  type Profile,
  type ProfileFrame,
  type QueuedFrame,
  type RefusedFrame,
  type RequestBody,
  type RequestFrame,
  type TypingFrame,
  type WelcomeFrame,
} from "./frames.js";

export type ConnectionState = "connecting" | "connected" | "disconnected";

export interface StateInfo {
  /** Why the connection was lost or refused (close reason, error code or message). */
  reason?: string;
  /** WebSocket close code, when there was one. */
  code?: number;
  /** For "disconnected": when the next attempt starts; absent when the client will not reconnect. */
  retryInMs?: number;
}

export interface ReconnectOptions {
  initialDelayMs: number;
  maxDelayMs: number;
  factor: number;
  /** Fraction of each delay that is randomised away (0 = none, 1 = "full jitter"). */
  jitter: number;
}

export interface InteropClientOptions {
  /** ws:// or wss:// URL of the gateway, including the /v1 path. */
  url: string;
  /** The provider's domain, as configured on the gateway. */
  provider: string;
  secret: string;
  logger?: Logger;
  reconnect?: Partial<ReconnectOptions>;
  /** Deadline of requests other than send (default 30 s); send has none unless given per call. */
  requestTimeoutMs?: number;
  /**
   * A request unanswered this long on a connection that is up means the
   * connection is broken: it is dropped and re-established (default 20 s).
   */
  answerTimeoutMs?: number;
  /** First delay before a failed event handler is called again with the same event (default 1 s). */
  handlerRetryDelayMs?: number;
  /**
   * Optional protocol features to announce in hello (docs/protocol.md §4.1), e.g. ["groups"].
   * Default none: the gateway then sends nothing that belongs to a feature.
   */
  features?: string[];
}

/** What group.create answers. */
export interface GroupCreated {
  group: GroupState;
  /** Members that could not be added, with the code group.add would have given. */
  refused: GroupRefusal[];
  /** The gateway had created this group before (a retried create). */
  duplicate: boolean;
}

/** Changes for updateGroup: a topic of "" and a picture of null remove them. */
export interface GroupUpdate {
  name?: string;
  topic?: string;
  picture?: Avatar | null;
}

export interface SendOptions {
  from: string;
  to: string;
  /** Defaults to the 1:1 room of from and to (dmRoomUri under welcome.roomDomain). */
  room?: string;
  /** 16 bytes; defaults to random. Reuse the same id to make a retry of the same message safe. */
  id?: Uint8Array;
  payload: Payload;
  /** Give up (reject with "timeout") after this long; default: never. */
  timeoutMs?: number;
}

export interface SendResult {
  id: Uint8Array;
  ts: number;
  /** The gateway had already accepted this (from, to, id) before. */
  duplicate: boolean;
}

export type KeysPublish = Omit<KeysPublishFrame, "t" | "rid" | "deviceId"> & { deviceId?: 1 };

export type QueuedHandler<F extends QueuedFrame> = (frame: F) => Promise<void>;

export interface InteropClientEvents {
  state: [state: ConnectionState, info: StateInfo];
  /** The connection is up and every logged-in user has been logged in again. */
  welcome: [frame: WelcomeFrame];
  typing: [frame: TypingFrame];
  keysLow: [frame: KeysLowFrame];
  /** A user's session ended without logout(): taken over elsewhere, or its re-login was refused. */
  sessionEnded: [user: string, reason: string];
  /** Emitted for delivered/profile/refused events when no handler is registered (they are then acked at once). */
  delivered: [frame: DeliveredFrame];
  profile: [frame: ProfileFrame];
  refused: [frame: RefusedFrame];
  /** Emitted for group events when no onGroup handler is registered (they are then acked at once). */
  group: [frame: GroupEventFrame];
  /** A handler rejected; the same event is offered again after a delay. */
  handlerError: [error: unknown, frame: QueuedFrame];
  /** An error frame that answered no request of ours (e.g. a refused ack or typing). */
  warning: [error: ProtocolError];
}

interface PendingRequest {
  order: number;
  body: RequestBody;
  resolve: (ok: OkFrame) => void;
  reject: (err: Error) => void;
  /** rid of the current transmission; undefined while waiting to be (re)transmitted. */
  rid?: number;
  attempts: number;
  deadlineTimer?: NodeJS.Timeout;
  answerTimer?: NodeJS.Timeout;
  retryTimer?: NodeJS.Timeout;
}

interface Inbox {
  queue: QueuedFrame[];
  running: boolean;
  /** Highest seq whose handler completed in this process (duplicates at or below it are only re-acked). */
  processed: number;
}

/** A definite "no" from the gateway, as opposed to a local timeout/close or a retryable error. */
function isRefusal(err: unknown): err is ProtocolError {
  return err instanceof ProtocolError && !err.retryable && err.code !== "timeout" && err.code !== "closed";
}

const DEFAULT_RECONNECT: ReconnectOptions = { initialDelayMs: 500, maxDelayMs: 30_000, factor: 2, jitter: 0.5 };
/** Longest wait before a failed event handler gets the same event again. */
const HANDLER_RETRY_MAX_MS = 30_000;

export class InteropClient extends EventEmitter<InteropClientEvents> {
  private readonly opts: Required<Omit<InteropClientOptions, "logger" | "reconnect" | "features">> & {
    features: string[];
    reconnect: ReconnectOptions;
  };
  private readonly log: Logger;
  private ws?: WebSocket;
  private state: ConnectionState = "disconnected";
  private welcomeFrame?: WelcomeFrame;
  private lastConnectionId?: string;
  private closed = false;
  private started = false;
  /** Reconnect delays (with jitter); its attempt count is the number of failed connects in this outage. */
  private readonly reconnectBackoff: Backoff;
  /** Delays of a request answered with a retryable error, by the request's own attempt count. */
  private readonly requestBackoff: Backoff;
  /** Delays before a failed event handler is offered the same event again. */
  private readonly handlerBackoff: Backoff;
  private reconnectTimer?: NodeJS.Timeout;
  private livenessTimer?: NodeJS.Timeout;
  private lastReceived = 0;
  private lastPingSent = 0;
  private nextRid = 1;
  private nextOrder = 1;
  private readonly pending = new Set<PendingRequest>();
  private readonly byRid = new Map<number, PendingRequest>();
  private readonly users = new Set<string>();
  private readonly inboxes = new Map<string, Inbox>();
  private readonly sendChains = new Map<string, Promise<unknown>>();
  private readonly handlers: {
    deliver?: QueuedHandler<DeliverFrame>;
    delivered?: QueuedHandler<DeliveredFrame>;
    profile?: QueuedHandler<ProfileFrame>;
    refused?: QueuedHandler<RefusedFrame>;
    group?: QueuedHandler<GroupEventFrame>;
  } = {};
  private deliverHandlerWaiters: (() => void)[] = [];
  private connectedWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  constructor(options: InteropClientOptions) {
    super();
    this.log = options.logger ?? getLogger("interop-client");
    this.opts = {
      url: options.url,
      provider: options.provider,
      secret: options.secret,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      answerTimeoutMs: options.answerTimeoutMs ?? 20_000,
      handlerRetryDelayMs: options.handlerRetryDelayMs ?? 1000,
      features: [...(options.features ?? [])],
      reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
    };
    const { initialDelayMs, maxDelayMs, factor, jitter } = this.opts.reconnect;
    this.reconnectBackoff = new Backoff({ initialMs: initialDelayMs, maxMs: Math.max(initialDelayMs, maxDelayMs), factor, jitter });
    this.requestBackoff = new Backoff({ initialMs: initialDelayMs, maxMs: Math.max(initialDelayMs, maxDelayMs), factor });
    const handlerInitialMs = Math.min(HANDLER_RETRY_MAX_MS, this.opts.handlerRetryDelayMs);
    this.handlerBackoff = new Backoff({ initialMs: handlerInitialMs, maxMs: HANDLER_RETRY_MAX_MS });
  }

  get connectionState(): ConnectionState {
    return this.state;
  }

  /** The welcome of the current (or last) connection. */
  get welcome(): WelcomeFrame | undefined {
    return this.welcomeFrame;
  }

  get limits(): Limits {
    return this.welcomeFrame?.limits ?? DEFAULT_LIMITS;
  }

  /** Whether the current connection negotiated an optional feature (e.g. "groups"). */
  hasFeature(feature: string): boolean {
    return this.welcomeFrame?.features?.includes(feature) ?? false;
  }

  /** Users this client keeps logged in (re-logged in after every reconnect). */
  get loggedInUsers(): string[] {
    return [...this.users];
  }

  /**
   * Starts connecting (and keeps reconnecting on its own). Resolves at the first
   * welcome; rejects only if the gateway refuses this provider (4001/4002) or close() is called.
   */
  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new ProtocolError("closed", "client is closed"));
    if (!this.started) {
      this.started = true;
      this.livenessTimer = setInterval(() => this.checkLiveness(), 1000);
      this.openSocket();
    }
    return this.whenConnected();
  }

  /** Resolves when the client is (next) connected. */
  whenConnected(): Promise<void> {
    if (this.state === "connected") return Promise.resolve();
    if (this.closed) return Promise.reject(new ProtocolError("closed", "client is closed"));
    return new Promise((resolve, reject) => this.connectedWaiters.push({ resolve, reject }));
  }

  /** Closes the connection for good; pending requests reject with code "closed". */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.livenessTimer);
    const err = new ProtocolError("closed", "client closed");
    for (const p of [...this.pending]) this.finish(p, err);
    for (const w of this.connectedWaiters.splice(0)) w.reject(err);
    const ws = this.ws;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      await new Promise<void>((resolve) => {
        ws.once("close", () => resolve());
        ws.close(CloseCode.normal, "client closing");
        setTimeout(() => {
          ws.terminate();
          resolve();
        }, 1000).unref();
      });
    }
    this.setState("disconnected", { reason: "closed by client" });
  }

  // ------------------------------------------------------------------ requests

  /**
   * Sends a request (rid assigned here) and resolves with its ok frame. Rejects
   * with a ProtocolError carrying the gateway's error code, or "timeout"/"closed".
   */
  request(body: RequestBody, options: { timeoutMs?: number } = {}): Promise<OkFrame> {
    if (this.closed) return Promise.reject(new ProtocolError("closed", "client is closed"));
    try {
      this.checkEncodable(body);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<OkFrame>((resolve, reject) => {
      const p: PendingRequest = { order: this.nextOrder++, body, resolve, reject, attempts: 0 };
      const timeoutMs = options.timeoutMs ?? (body.t === "send" ? Infinity : this.opts.requestTimeoutMs);
      if (Number.isFinite(timeoutMs))
        p.deadlineTimer = setTimeout(() => this.finish(p, new ProtocolError("timeout", `${body.t}: no definite answer within ${timeoutMs} ms`)), timeoutMs);
      this.pending.add(p);
      if (this.state === "connected") this.transmit(p);
    });
  }

  /** Logs a user in; the client keeps it logged in across reconnects until logout(). Resolves with the queue length. */
  async login(user: string): Promise<{ queued: number }> {
    this.users.add(user);
    try {
      const ok = await this.request({ t: "login", user });
      return { queued: ok.queued ?? 0 };
    } catch (err) {
      if (isRefusal(err)) this.users.delete(user);
      throw err;
    }
  }

  async logout(user: string): Promise<void> {
    this.users.delete(user);
    this.inboxes.delete(user);
    await this.request({ t: "logout", user });
  }

  /**
   * Creates (or renames) a third-party account; resolves with whether it was new. With
   * thirdPartyChats the account's Third-Party Chats setting is set in the same step.
   */
  async enlist(user: string, displayName: string, opts: { thirdPartyChats?: boolean } = {}): Promise<{ created: boolean }> {
    const body: RequestBody = { t: "enlist", user, displayName };
    if (opts.thirdPartyChats !== undefined) body.thirdPartyChats = opts.thirdPartyChats;
    const ok = await this.request(body);
    return { created: ok.created ?? false };
  }

  /** Removes a third-party account with its keys and queue (it can enlist again later). */
  async unenlist(user: string): Promise<void> {
    this.users.delete(user);
    this.inboxes.delete(user);
    await this.request({ t: "unenlist", user });
  }

  /** Home provider only: creates or replaces a WhatsApp account's profile. */
  async upsertAccount(account: { user: string; displayName: string; avatar?: Avatar }): Promise<{ created: boolean }> {
    const body: RequestBody = { t: "account.upsert", user: account.user, displayName: account.displayName };
    if (account.avatar) body.avatar = account.avatar;
    const ok = await this.request(body);
    return { created: ok.created ?? false };
  }

  /** The Third-Party Chats setting of one of this provider's accounts (home or third-party). */
  async setSettings(user: string, settings: { thirdPartyChats: boolean }): Promise<void> {
    await this.request({ t: "settings.set", user, thirdPartyChats: settings.thirdPartyChats });
  }

  async getProfile(user: string): Promise<Profile> {
    const ok = await this.request({ t: "profile.get", user });
    if (!ok.profile) throw new ProtocolError("bad_frame", "profile.get answer has no profile", { field: "ok.profile" });
    return ok.profile;
  }

  /** Publishes the user's prekeys (user must be logged in); resolves with the one-time keys stored. */
  async publishKeys(keys: KeysPublish): Promise<{ remaining: number }> {
    const ok = await this.request({ ...keys, t: "keys.publish", deviceId: keys.deviceId ?? 1 });
    return { remaining: ok.remaining ?? 0 };
  }

  /** Fetches one prekey bundle of `user` for the logged-in `from` (consumes a one-time key). */
  async fetchKeys(from: string, user: string): Promise<PreKeyBundle> {
    const ok = await this.request({ t: "keys.fetch", from, user });
    if (!ok.bundle) throw new ProtocolError("bad_frame", "keys.fetch answer has no bundle", { field: "ok.bundle" });
    return ok.bundle;
  }

  async countKeys(user: string): Promise<number> {
    const ok = await this.request({ t: "keys.count", user });
    return ok.remaining ?? 0;
  }

  /**
   * Sends one ciphertext; resolves once the gateway stored it durably. The very
   * same frame (same id) is retried across reconnects until ok or a non-retryable error.
   */
  send(options: SendOptions): Promise<SendResult> {
    const id = options.id ?? new Uint8Array(randomBytes(16));
    const key = `${options.from}\n${options.to}`;
    const previous = this.sendChains.get(key) ?? Promise.resolve();
    const result = previous
      .catch(() => undefined)
      .then(async () => {
        const room = options.room ?? (await this.dmRoom(options.from, options.to));
        const req: RequestBody = { t: "send", from: options.from, to: options.to, room, id, payload: options.payload };
        const ok = await this.request(req, options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {});
        return { id, ts: ok.ts ?? 0, duplicate: ok.duplicate ?? false };
      });
    this.sendChains.set(key, result);
    const cleanup = () => {
      if (this.sendChains.get(key) === result) this.sendChains.delete(key);
    };
    result.then(cleanup, cleanup);
    return result;
  }

  /** The 1:1 room of two users as the gateway names it (needs a welcome for the room domain). */
  async dmRoom(a: string, b: string): Promise<string> {
    if (!this.welcomeFrame) await this.whenConnected();
    return dmRoomUri(a, b, this.welcomeFrame!.roomDomain);
  }

  /** Typing notifications are live only: dropped (returns false) when not connected. */
  typing(notice: { from: string; to: string; room?: string; state: "on" | "off" }): boolean {
    if (this.state !== "connected" || !this.welcomeFrame) return false;
    const room = notice.room ?? dmRoomUri(notice.from, notice.to, this.welcomeFrame.roomDomain);
    this.sendFrame({ t: "typing", from: notice.from, to: notice.to, room, state: notice.state });
    return true;
  }

  /**
   * Handles incoming messages. Until a handler is set, deliver events wait (unacked).
   * Resolve once the message is durably processed; reject only for transient
   * failures (the same frame is offered again later). Events that arrive again
   * after a reconnect are skipped if this process already handled them, but a
   * restarted process sees them again: persist the last seq handled per user.
   */
  onDeliver(handler: QueuedHandler<DeliverFrame>): void {
    this.handlers.deliver = handler;
    for (const wake of this.deliverHandlerWaiters.splice(0)) wake();
  }

  /** Handles the gateway's delivery receipts (otherwise emitted as "delivered" and acked at once). */
  onDelivered(handler: QueuedHandler<DeliveredFrame>): void {
    this.handlers.delivered = handler;
  }

  /** Handles profile changes of chat peers (otherwise emitted as "profile" and acked at once). */
  onProfile(handler: QueuedHandler<ProfileFrame>): void {
    this.handlers.profile = handler;
  }

  /** Handles reports of home users refused because ours had Third-Party Chats off (otherwise emitted as "refused" and acked at once). */
  onRefused(handler: QueuedHandler<RefusedFrame>): void {
    this.handlers.refused = handler;
  }

  // -------------------------------------------------------------------- groups
  // Needs the "groups" feature (the features option); every call acts as the logged-in `by`
  // and is idempotent on the gateway, so the retries across reconnects are safe.

  /**
   * Creates a group with `by` as its admin. `id` (16 bytes, random by default) names it: reuse
   * it to retry the same creation. Members that cannot be added come back in `refused`.
   */
  async createGroup(options: { by: string; name: string; members: string[]; topic?: string; picture?: Avatar; id?: Uint8Array }): Promise<GroupCreated> {
    const body: RequestBody = {
      t: "group.create",
      by: options.by,
      id: options.id ?? new Uint8Array(randomBytes(16)),
      name: options.name,
      members: options.members,
    };
    if (options.topic !== undefined) body.topic = options.topic;
    if (options.picture !== undefined) body.picture = options.picture;
    const ok = await this.request(body);
    return { group: this.groupOf(ok), refused: ok.refused ?? [], duplicate: ok.duplicate ?? false };
  }

  /** The room a group.create by `by` with `id` makes (known before the answer). */
  async groupRoom(by: string, id: Uint8Array): Promise<string> {
    if (!this.welcomeFrame) await this.whenConnected();
    return groupRoomUri(by, id, this.welcomeFrame!.roomDomain);
  }

  /** Adds a member (admins only); refused with the member's code (not_opted_in, third_party_disabled, …). */
  async addGroupMember(by: string, room: string, user: string): Promise<GroupState> {
    return this.groupOf(await this.request({ t: "group.add", by, room, user }));
  }

  async removeGroupMember(by: string, room: string, user: string): Promise<GroupState> {
    return this.groupOf(await this.request({ t: "group.remove", by, room, user }));
  }

  async leaveGroup(by: string, room: string): Promise<void> {
    await this.request({ t: "group.leave", by, room });
  }

  /** Name, topic ("" removes it) and picture (null removes it); admins only. */
  async updateGroup(by: string, room: string, update: GroupUpdate): Promise<GroupState> {
    const body: RequestBody = { t: "group.update", by, room };
    if (update.name !== undefined) body.name = update.name;
    if (update.topic !== undefined) body.topic = update.topic;
    if (update.picture === null) body.removePicture = true;
    else if (update.picture !== undefined) body.picture = update.picture;
    return this.groupOf(await this.request(body));
  }

  async setGroupAdmin(by: string, room: string, user: string, admin: boolean): Promise<GroupState> {
    return this.groupOf(await this.request({ t: "group.admin", by, room, user, admin }));
  }

  async getGroup(by: string, room: string): Promise<GroupState> {
    return this.groupOf(await this.request({ t: "group.get", by, room }));
  }

  /** The groups `user` (logged in) is a member of. */
  async listGroups(user: string): Promise<GroupState[]> {
    const ok = await this.request({ t: "group.list", user });
    return ok.groups ?? [];
  }

  /** Handles group events (membership and metadata changes); otherwise emitted as "group" and acked at once. */
  onGroup(handler: QueuedHandler<GroupEventFrame>): void {
    this.handlers.group = handler;
  }

  private groupOf(ok: OkFrame): GroupState {
    if (!ok.group) throw new ProtocolError("bad_frame", "group answer has no group", { field: "ok.group" });
    return ok.group;
  }

  // ---------------------------------------------------------------- connection

  private setState(state: ConnectionState, info: StateInfo = {}): void {
    if (this.state === state && state !== "disconnected") return;
    this.state = state;
    this.emit("state", state, info);
  }

  private openSocket(): void {
    if (this.closed) return;
    this.setState("connecting");
    const ws = new WebSocket(this.opts.url, { maxPayload: 16 * 1024 * 1024, perMessageDeflate: false });
    this.ws = ws;
    let welcomed = false;
    let refusal: string | undefined;
    ws.binaryType = "nodebuffer";
    ws.on("open", () => {
      const hello: Frame = { t: "hello", provider: this.opts.provider, secret: this.opts.secret, version: PROTOCOL_VERSION };
      if (this.lastConnectionId) hello.resume = this.lastConnectionId;
      if (this.opts.features.length > 0) hello.features = this.opts.features;
      this.lastReceived = Date.now();
      ws.send(encodeFrame(hello));
    });
    ws.on("message", (data, isBinary) => {
      if (ws !== this.ws) return;
      this.lastReceived = Date.now();
      if (!isBinary) return this.log.warn("ignoring a text frame from the gateway");
      let frame: Frame;
      try {
        frame = decodeFrame(data as Buffer);
      } catch (err) {
        this.log.warn("undecodable frame from the gateway", { error: (err as Error).message });
        return;
      }
      if (!welcomed) {
        if (frame.t === "welcome") {
          welcomed = true;
          this.onWelcome(frame);
        } else if (frame.t === "error") {
          refusal = `${frame.code}: ${frame.message}`;
        }
        return;
      }
      this.onFrame(frame);
    });
    ws.on("error", (err) => this.log.debug("websocket error", { error: err.message }));
    ws.on("close", (code, reasonBuf) => {
      if (ws !== this.ws) return;
      this.ws = undefined;
      const reason = refusal ?? (reasonBuf.toString() || `connection closed (${code})`);
      this.onDisconnected(code, reason);
    });
  }

  private onWelcome(frame: WelcomeFrame): void {
    this.welcomeFrame = frame;
    this.lastConnectionId = frame.connectionId;
    this.reconnectBackoff.reset();
    this.log.info("connected to gateway", { connectionId: frame.connectionId, users: this.users.size });
    this.setState("connected");
    // Logins go first: the gateway handles a connection's frames in order, so
    // everything transmitted after them acts on logged-in sessions.
    const pending = [...this.pending].sort((a, b) => a.order - b.order);
    const loginsPending = new Set(pending.filter((p) => p.body.t === "login").map((p) => (p.body as { user: string }).user));
    for (const user of this.users) if (!loginsPending.has(user)) this.relogin(user);
    for (const p of pending.filter((p) => p.body.t === "login")) this.transmit(p);
    for (const p of pending.filter((p) => p.body.t !== "login")) this.transmit(p);
    this.emit("welcome", frame);
    for (const w of this.connectedWaiters.splice(0)) w.resolve();
  }

  private relogin(user: string): void {
    this.request({ t: "login", user }).catch((err: unknown) => {
      if (isRefusal(err) && this.users.delete(user)) {
        this.inboxes.delete(user);
        this.log.warn("re-login refused", { user, code: err.code });
        this.emit("sessionEnded", user, err.code);
      }
    });
  }

  private onDisconnected(code: number, reason: string): void {
    for (const p of this.byRid.values()) {
      clearTimeout(p.answerTimer);
      p.rid = undefined;
    }
    this.byRid.clear();
    // Unprocessed events will be redelivered after re-login; the one in a handler finishes.
    for (const inbox of this.inboxes.values()) inbox.queue = [];
    if (this.closed) return;
    if (FATAL_CLOSE_CODES.has(code)) {
      // Before the first welcome, connect()'s caller reports it (the bridge: one line naming the settings to check); later, nobody else will.
      if (!this.welcomeFrame) this.log.debug("gateway refused this provider; not reconnecting", { code, reason });
      else this.log.error("gateway refused this provider; not reconnecting", { code, reason });
      this.closed = true;
      clearInterval(this.livenessTimer);
      const err = new ProtocolError(code === CloseCode.unauthorized ? "unauthorized" : "unsupported_version", reason);
      for (const p of [...this.pending]) this.finish(p, err);
      for (const w of this.connectedWaiters.splice(0)) w.reject(err);
      this.setState("disconnected", { reason, code });
      return;
    }
    const firstOfOutage = this.reconnectBackoff.attempts === 0;
    const delay = this.reconnectBackoff.next();
    // Logged once per outage: the first reconnect attempt is the news, the following ones are not.
    if (firstOfOutage) this.log.info("disconnected from gateway", { code, reason, retryInMs: delay });
    else this.log.debug("gateway still unreachable", { code, reason, retryInMs: delay });
    this.setState("disconnected", { reason, code, retryInMs: delay });
    this.reconnectTimer = setTimeout(() => this.openSocket(), delay);
  }

  private checkLiveness(): void {
    if (this.state !== "connected" || !this.ws || !this.welcomeFrame) return;
    const now = Date.now();
    const silent = now - this.lastReceived;
    if (silent > this.welcomeFrame.idleTimeoutMs) {
      this.log.warn("gateway silent; reconnecting", { silentMs: silent });
      this.ws.terminate();
    } else if (silent >= this.welcomeFrame.pingIntervalMs && now - this.lastPingSent >= this.welcomeFrame.pingIntervalMs) {
      this.lastPingSent = now;
      this.sendFrame({ t: "ping", nonce: now });
    }
  }

  private sendFrame(frame: Frame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(encodeFrame(frame));
    return true;
  }

  /** Rejects locally what the gateway would refuse anyway, so it is never retried. */
  private checkEncodable(body: RequestBody): void {
    if (body.t === "send" && body.payload.body.length > this.limits.maxBodyBytes)
      throw new ProtocolError("too_large", `send.payload.body is ${body.payload.body.length} bytes, limit ${this.limits.maxBodyBytes}`);
    if (body.t === "send" && body.room === undefined) return;
    encodeFrame({ ...body, rid: 0 } as RequestFrame, { maxFrameBytes: this.limits.maxFrameBytes });
  }

  private transmit(p: PendingRequest): void {
    clearTimeout(p.retryTimer);
    p.retryTimer = undefined;
    if (!this.pending.has(p) || this.state !== "connected") return;
    const rid = this.nextRid++;
    let bytes: Uint8Array;
    try {
      bytes = encodeFrame({ ...p.body, rid } as RequestFrame, { maxFrameBytes: this.limits.maxFrameBytes });
    } catch (err) {
      return this.finish(p, err as Error);
    }
    p.rid = rid;
    p.attempts += 1;
    this.byRid.set(rid, p);
    this.ws!.send(bytes);
    p.answerTimer = setTimeout(() => {
      if (p.rid !== rid || this.state !== "connected") return;
      this.log.warn("request unanswered; dropping the connection", { type: p.body.t, rid });
      this.ws?.terminate();
    }, this.opts.answerTimeoutMs);
  }

  private finish(p: PendingRequest, outcome: OkFrame | Error): void {
    if (!this.pending.delete(p)) return;
    clearTimeout(p.deadlineTimer);
    clearTimeout(p.answerTimer);
    clearTimeout(p.retryTimer);
    if (p.rid !== undefined) this.byRid.delete(p.rid);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  private onAnswer(rid: number, outcome: OkFrame | ProtocolError): void {
    const p = this.byRid.get(rid);
    if (!p) return;
    this.byRid.delete(rid);
    clearTimeout(p.answerTimer);
    p.rid = undefined;
    if (outcome instanceof ProtocolError && RETRYABLE_ERROR_CODES.has(outcome.code)) {
      const delay = outcome.retryAfterMs ?? this.requestBackoff.delayFor(p.attempts);
      this.log.debug("retrying request", { type: p.body.t, code: outcome.code, delay });
      p.retryTimer = setTimeout(() => this.transmit(p), delay);
      return;
    }
    this.finish(p, outcome);
  }

  // -------------------------------------------------------------------- events

  private onFrame(frame: Frame): void {
    switch (frame.t) {
      case "ok":
        return this.onAnswer(frame.rid, frame);
      case "error": {
        const err = new ProtocolError(frame.code as ErrorCode, frame.message, frame.retryAfterMs !== undefined ? { retryAfterMs: frame.retryAfterMs } : {});
        if (frame.rid !== undefined && this.byRid.has(frame.rid)) return this.onAnswer(frame.rid, err);
        this.log.warn("gateway reported an error", { code: frame.code, message: frame.message });
        this.emit("warning", err);
        return;
      }
      case "ping":
        this.sendFrame({ t: "pong", nonce: frame.nonce });
        return;
      case "pong":
        return;
      case "deliver":
      case "delivered":
      case "profile":
      case "refused":
      case "group":
        return this.onQueued(frame);
      case "typing":
        this.emit("typing", frame);
        return;
      case "keys.low":
        this.emit("keysLow", frame);
        return;
      case "session.ended":
        if (this.users.delete(frame.user)) {
          this.inboxes.delete(frame.user);
          this.log.warn("session taken over elsewhere", { user: frame.user });
          this.emit("sessionEnded", frame.user, frame.reason);
        }
        return;
      default:
        this.log.warn("unexpected frame from the gateway", { type: frame.t });
    }
  }

  private onQueued(frame: QueuedFrame): void {
    const user = queueOwner(frame);
    if (!this.users.has(user)) return; // late event of a logged-out user: it stays queued on the gateway
    let inbox = this.inboxes.get(user);
    if (!inbox) {
      inbox = { queue: [], running: false, processed: 0 };
      this.inboxes.set(user, inbox);
    }
    inbox.queue.push(frame);
    if (!inbox.running) void this.drain(user, inbox);
  }

  private async drain(user: string, inbox: Inbox): Promise<void> {
    inbox.running = true;
    try {
      let failures = 0;
      while (inbox.queue.length > 0 && this.inboxes.get(user) === inbox) {
        const frame = inbox.queue[0]!;
        if (frame.seq <= inbox.processed) {
          inbox.queue.shift();
          this.sendFrame({ t: "ack", user, seq: frame.seq });
          continue;
        }
        try {
          await this.handle(frame);
        } catch (err) {
          failures += 1;
          this.log.warn("event handler failed; will retry", { user, seq: frame.seq, type: frame.t, error: (err as Error)?.message });
          this.emit("handlerError", err, frame);
          await sleep(this.handlerBackoff.delayFor(failures));
          continue;
        }
        failures = 0;
        inbox.processed = frame.seq;
        if (inbox.queue[0] === frame) inbox.queue.shift();
        // Not connected: the ack is lost with the connection; the redelivered copy is acked above.
        if (this.users.has(user)) this.sendFrame({ t: "ack", user, seq: frame.seq });
      }
    } finally {
      inbox.running = false;
    }
  }

  private async handle(frame: QueuedFrame): Promise<void> {
    switch (frame.t) {
      case "deliver": {
        while (!this.handlers.deliver) await new Promise<void>((resolve) => this.deliverHandlerWaiters.push(resolve));
        return this.handlers.deliver(frame);
      }
      case "delivered":
        if (this.handlers.delivered) return this.handlers.delivered(frame);
        this.emit("delivered", frame);
        return;
      case "profile":
        if (this.handlers.profile) return this.handlers.profile(frame);
        this.emit("profile", frame);
        return;
      case "refused":
        if (this.handlers.refused) return this.handlers.refused(frame);
        this.emit("refused", frame);
        return;
      case "group":
        if (this.handlers.group) return this.handlers.group(frame);
        this.emit("group", frame);
        return;
    }
  }
}
