/**
 * The interop gateway: plays WhatsApp's interop server for our own providers.
 * It authenticates provider connections, multiplexes their users' sessions,
 * hosts the key directory and relays opaque Signal ciphertext through durable
 * per-user queues (docs/protocol.md is the contract this file implements).
 *
 * Frames of one connection are handled synchronously, one after the other
 * (better-sqlite3 is synchronous), so a connection's frames take effect in the
 * order they arrived — clients may pipeline login and send.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type RawData, WebSocket } from "ws";
import { getLogger, type Logger } from "../src/logging.js";
import {
  CloseCode,
  DEFAULT_LIMITS,
  FEATURE_GROUPS,
  GROUP_REQUEST_TYPES,
  KNOWN_FEATURES,
  PROTOCOL_PATH,
  PROTOCOL_VERSION,
  ProtocolError,
  decodeFrame,
  dmRoomUri,
  encodeFrame,
  groupRoomUri,
  isE164,
  isGroupRoom,
  isValidProviderDomain,
  parseMimiUri,
  peekRid,
  userDomain,
  type AckFrame,
  type ErrorCode,
  type Frame,
  type GroupChange,
  type GroupRefusal,
  type GroupState,
  type HelloFrame,
  type Limits,
  type OkFrame,
  type Profile,
  type RequestFrame,
  type TypingFrame,
} from "../src/protocol/frames.js";
import { GatewayStore, type AcceptResult, type Account } from "./store.js";

export interface ProviderConfig {
  /** The provider's domain: its users are mimi://<name>/u/… */
  name: string;
  secret: string;
}

export interface GatewayConfig {
  host: string;
  /** 0 picks a free port. */
  port: number;
  dbPath: string;
  providers: ProviderConfig[];
  /** The provider whose users are the WhatsApp accounts. */
  homeProvider: string;
  /** Domain of room URIs; defaults to the home provider's. */
  roomDomain?: string;
  limits?: Partial<Limits>;
  pingIntervalMs?: number;
  idleTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  /** keys.low is pushed when a fetch leaves fewer one-time keys than this. */
  keysLowThreshold?: number;
  /** Queued events sent to a session ahead of its acknowledgements. */
  deliveryWindow?: number;
  maxQueuePerUser?: number;
  /** Undelivered events and idempotency records are dropped after this long. */
  retentionMs?: number;
  rateLimit?: { perSecond: number; burst: number };
  /** Bad frames tolerated on one connection before it is closed with 4009. */
  maxBadFrames?: number;
  /** Append every frame in and out (hex, one a line) to this file. */
  recordFramesPath?: string;
  synchronous?: "FULL" | "NORMAL";
}

interface Session {
  user: string;
  conn: Connection;
  /** Highest seq written to the socket in this session. */
  sentUpTo: number;
  /** Seqs written but not yet acknowledged, ascending. */
  inFlight: number[];
}

interface Connection {
  id: string;
  ws: WebSocket;
  remote: string;
  provider?: string;
  sessions: Map<string, Session>;
  /** Optional features negotiated in hello/welcome. */
  features: Set<string>;
  lastReceived: number;
  lastPingSent: number;
  badFrames: number;
  tokens: number;
  tokensAt: number;
  handshakeTimer?: NodeJS.Timeout;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** Accepted ciphertext types: libsignal CiphertextMessageType Whisper (2) and PreKey (3). */
const PAYLOAD_TYPES = new Set([2, 3]);

export class GatewayServer {
  readonly config: Required<Omit<GatewayConfig, "recordFramesPath" | "roomDomain" | "limits">> & {
    roomDomain: string;
    limits: Limits;
    recordFramesPath?: string;
  };
  private readonly log: Logger;
  private store?: GatewayStore;
  private http?: http.Server;
  private wss?: WebSocketServer;
  private readonly connections = new Map<string, Connection>();
  private readonly sessions = new Map<string, Session>();
  private readonly secrets = new Map<string, Buffer>();
  private recorder?: WriteStream;
  private pingTimer?: NodeJS.Timeout;
  private expiryTimer?: NodeJS.Timeout;
  private startedAt = 0;
  private pingNonce = 0;
  private stopping = false;

  constructor(config: GatewayConfig, logger?: Logger) {
    this.log = logger ?? getLogger("gateway");
    this.config = {
      host: config.host,
      port: config.port,
      dbPath: config.dbPath,
      providers: config.providers,
      homeProvider: config.homeProvider,
      roomDomain: config.roomDomain ?? config.homeProvider,
      limits: { ...DEFAULT_LIMITS, ...config.limits },
      pingIntervalMs: config.pingIntervalMs ?? 25_000,
      idleTimeoutMs: config.idleTimeoutMs ?? 60_000,
      handshakeTimeoutMs: config.handshakeTimeoutMs ?? 10_000,
      keysLowThreshold: config.keysLowThreshold ?? 10,
      deliveryWindow: config.deliveryWindow ?? 100,
      maxQueuePerUser: config.maxQueuePerUser ?? 10_000,
      retentionMs: config.retentionMs ?? 30 * DAY_MS,
      rateLimit: config.rateLimit ?? { perSecond: 500, burst: 1000 },
      maxBadFrames: config.maxBadFrames ?? 16,
      synchronous: config.synchronous ?? "FULL",
    };
    if (config.recordFramesPath) this.config.recordFramesPath = config.recordFramesPath;
    if (this.config.limits.maxBodyBytes > this.config.limits.maxFrameBytes - 1024)
      throw new Error("limits.maxBodyBytes must leave at least 1024 bytes of maxFrameBytes for the deliver envelope");
    if (!config.providers.some((p) => p.name === config.homeProvider)) throw new Error(`home provider ${config.homeProvider} is not among the configured providers`);
    for (const p of config.providers) {
      if (!isValidProviderDomain(p.name)) throw new Error(`provider name ${JSON.stringify(p.name)} is not a lowercase domain`);
      if (!p.secret) throw new Error(`provider ${p.name} has an empty secret`);
      // Compared as digests so timingSafeEqual sees equal lengths whatever was sent.
      this.secrets.set(p.name, createHash("sha256").update(p.secret).digest());
    }
  }

  /** Starts listening; resolves with the WebSocket URL clients connect to. */
  async start(): Promise<string> {
    this.store = new GatewayStore(this.config.dbPath, {
      synchronous: this.config.synchronous,
      maxQueuePerUser: this.config.maxQueuePerUser,
    });
    this.expire();
    if (this.config.recordFramesPath) this.recorder = createWriteStream(this.config.recordFramesPath, { flags: "a" });
    this.startedAt = Date.now();
    this.http = http.createServer((req, res) => this.onHttp(req, res));
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.config.limits.maxFrameBytes });
    this.http.on("upgrade", (req, socket, head) => {
      const path = (req.url ?? "").split("?")[0];
      if (path !== PROTOCOL_PATH) {
        socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n");
        return;
      }
      this.wss!.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req));
    });
    await new Promise<void>((resolve, reject) => {
      this.http!.once("error", reject);
      this.http!.listen(this.config.port, this.config.host, () => resolve());
    });
    this.pingTimer = setInterval(() => this.keepalive(), Math.min(this.config.pingIntervalMs, 1000));
    this.expiryTimer = setInterval(() => this.expire(), 60 * 60 * 1000);
    this.expiryTimer.unref();
    return this.url;
  }

  get url(): string {
    const addr = this.http?.address() as AddressInfo | null;
    if (!addr) throw new Error("gateway is not listening");
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    return `ws://${host}:${addr.port}${PROTOCOL_PATH}`;
  }

  /** Closes every connection (1001, so clients reconnect later), stops listening, closes the database. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.pingTimer);
    clearInterval(this.expiryTimer);
    const closing = [...this.connections.values()].map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.ws.readyState === WebSocket.CLOSED) return resolve();
          conn.ws.once("close", () => resolve());
          conn.ws.close(CloseCode.goingAway, "gateway shutting down");
          setTimeout(() => {
            conn.ws.terminate();
            resolve();
          }, 1000).unref();
        }),
    );
    await Promise.all(closing);
    this.wss?.close();
    await new Promise<void>((resolve) => (this.http ? this.http.close(() => resolve()) : resolve()));
    this.http?.closeAllConnections();
    await new Promise<void>((resolve) => (this.recorder ? this.recorder.end(() => resolve()) : resolve()));
    this.store?.close();
    this.log.info("gateway stopped");
  }

  // ------------------------------------------------------------------ plumbing

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/health" && (req.method === "GET" || req.method === "HEAD")) {
      const body = JSON.stringify({
        status: "ok",
        version: PROTOCOL_VERSION,
        connections: this.connections.size,
        sessions: this.sessions.size,
        uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      });
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found\n");
  }

  private onConnection(ws: WebSocket, req: http.IncomingMessage): void {
    const conn: Connection = {
      id: randomBytes(12).toString("base64url"),
      ws,
      remote: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
      sessions: new Map(),
      features: new Set(),
      lastReceived: Date.now(),
      lastPingSent: 0,
      badFrames: 0,
      tokens: this.config.rateLimit.burst,
      tokensAt: Date.now(),
    };
    this.connections.set(conn.id, conn);
    conn.handshakeTimer = setTimeout(() => ws.close(CloseCode.handshakeTimeout, "no hello in time"), this.config.handshakeTimeoutMs);
    ws.on("message", (data, isBinary) => this.onMessage(conn, data, isBinary));
    ws.on("close", (code, reason) => this.onClose(conn, code, reason.toString()));
    // ws raises 'error' for oversize messages (it then closes with 1009) and socket faults.
    ws.on("error", (err) => this.log.warn("connection error", { conn: conn.id, provider: conn.provider, error: err.message }));
  }

  private onClose(conn: Connection, code: number, reason: string): void {
    clearTimeout(conn.handshakeTimer);
    this.connections.delete(conn.id);
    for (const user of conn.sessions.keys()) {
      if (this.sessions.get(user)?.conn === conn) this.sessions.delete(user);
    }
    conn.sessions.clear();
    this.log.info("connection closed", { conn: conn.id, provider: conn.provider, code, reason });
  }

  private record(direction: "in" | "out", bytes: Uint8Array): void {
    this.recorder?.write(`${direction} ${Date.now()} ${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex")}\n`);
  }

  private sendRaw(conn: Connection, bytes: Uint8Array): void {
    if (conn.ws.readyState !== WebSocket.OPEN) return;
    this.record("out", bytes);
    conn.ws.send(bytes, { binary: true });
  }

  private sendFrame(conn: Connection, frame: Frame): void {
    this.sendRaw(conn, encodeFrame(frame));
  }

  private sendError(conn: Connection, rid: number | undefined, err: ProtocolError): void {
    const code: ErrorCode = err.code === "timeout" || err.code === "closed" ? "internal" : err.code;
    const frame: Frame = { t: "error", code, message: err.message.slice(0, 1024) };
    if (rid !== undefined) frame.rid = rid;
    if (err.retryAfterMs !== undefined) frame.retryAfterMs = err.retryAfterMs;
    this.sendFrame(conn, frame);
  }

  private onMessage(conn: Connection, data: RawData, isBinary: boolean): void {
    if (this.stopping) return; // the database is about to close; the client will retry elsewhere
    conn.lastReceived = Date.now();
    if (!isBinary) {
      conn.ws.close(CloseCode.unsupportedData, "text frames are not part of the protocol");
      return;
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    if (!conn.provider) return this.onHello(conn, bytes);
    this.record("in", bytes);
    let frame: Frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      this.onBadFrame(conn, peekRid(bytes), err as ProtocolError);
      return;
    }
    try {
      this.dispatch(conn, frame);
    } catch (err) {
      const rid = "rid" in frame && frame.t !== "ok" && frame.t !== "error" ? frame.rid : undefined;
      if (err instanceof ProtocolError) {
        if (err.code === "bad_frame") return this.onBadFrame(conn, rid, err);
        this.sendError(conn, rid, err);
      } else {
        this.log.error("request failed", { conn: conn.id, type: frame.t, error: (err as Error).stack });
        this.sendError(conn, rid, new ProtocolError("internal", "internal error"));
      }
    }
  }

  private onBadFrame(conn: Connection, rid: number | undefined, err: ProtocolError): void {
    conn.badFrames += 1;
    this.log.warn("bad frame", { conn: conn.id, provider: conn.provider, problem: err.message });
    this.sendError(conn, rid, err.code === "too_large" ? err : new ProtocolError("bad_frame", err.message));
    if (conn.badFrames >= this.config.maxBadFrames) conn.ws.close(CloseCode.protocolViolation, "too many bad frames");
  }

  private onHello(conn: Connection, bytes: Buffer): void {
    let hello: HelloFrame;
    try {
      const frame = decodeFrame(bytes);
      if (frame.t !== "hello") throw new ProtocolError("bad_frame", `first frame must be hello, got ${frame.t}`, { field: "t" });
      hello = frame;
    } catch (err) {
      this.record("in", bytes);
      const pe = err instanceof ProtocolError ? err : new ProtocolError("bad_frame", String(err));
      this.sendError(conn, undefined, new ProtocolError("bad_frame", pe.message));
      conn.ws.close(CloseCode.badHandshake, "expected hello");
      return;
    }
    // The recording must never hold a secret.
    this.record("in", encodeFrame({ ...hello, secret: "<redacted>" }));
    clearTimeout(conn.handshakeTimer);
    if (hello.version !== PROTOCOL_VERSION) {
      this.sendError(conn, undefined, new ProtocolError("unsupported_version", `this gateway speaks version ${PROTOCOL_VERSION}`));
      conn.ws.close(CloseCode.unsupportedVersion, "unsupported version");
      return;
    }
    const expected = this.secrets.get(hello.provider);
    const given = createHash("sha256").update(hello.secret).digest();
    if (!expected || !timingSafeEqual(expected, given)) {
      this.log.warn("authentication refused", { conn: conn.id, provider: hello.provider, remote: conn.remote });
      this.sendError(conn, undefined, new ProtocolError("unauthorized", "unknown provider or wrong secret"));
      conn.ws.close(CloseCode.unauthorized, "unauthorized");
      return;
    }
    conn.provider = hello.provider;
    conn.features = new Set((hello.features ?? []).filter((f) => KNOWN_FEATURES.includes(f)));
    // Whether this provider's users can be added to groups follows from its latest hello.
    try {
      this.store!.setProviderFeatures(hello.provider, [...conn.features]);
    } catch (err) {
      // The connection still works; group additions keep going by the previous record.
      this.log.warn("could not record the provider's features", { conn: conn.id, provider: hello.provider, error: (err as Error).message });
    }
    if (hello.resume) {
      const old = this.connections.get(hello.resume);
      if (old && old !== conn && old.provider === hello.provider) {
        this.log.info("closing connection replaced by resume", { conn: old.id, provider: old.provider });
        this.endConnectionSessions(old);
        old.ws.close(CloseCode.replaced, "replaced by a newer connection");
      }
    }
    this.sendFrame(conn, {
      t: "welcome",
      version: PROTOCOL_VERSION,
      connectionId: conn.id,
      provider: hello.provider,
      homeProvider: this.config.homeProvider,
      roomDomain: this.config.roomDomain,
      serverTime: Date.now(),
      pingIntervalMs: this.config.pingIntervalMs,
      idleTimeoutMs: this.config.idleTimeoutMs,
      limits: this.config.limits,
      features: [...conn.features].sort(),
    });
    this.log.info("provider connected", { conn: conn.id, provider: conn.provider, remote: conn.remote });
  }

  private endConnectionSessions(conn: Connection): void {
    for (const user of conn.sessions.keys()) if (this.sessions.get(user)?.conn === conn) this.sessions.delete(user);
    conn.sessions.clear();
  }

  private keepalive(): void {
    const now = Date.now();
    for (const conn of this.connections.values()) {
      if (now - conn.lastReceived > this.config.idleTimeoutMs) {
        this.log.info("closing idle connection", { conn: conn.id, provider: conn.provider });
        conn.ws.close(CloseCode.idle, "idle");
        // A dead peer never completes the closing handshake.
        setTimeout(() => conn.ws.terminate(), 2000).unref();
        continue;
      }
      if (conn.provider && now - Math.max(conn.lastReceived, conn.lastPingSent) >= this.config.pingIntervalMs) {
        conn.lastPingSent = now;
        this.pingNonce = (this.pingNonce + 1) % Number.MAX_SAFE_INTEGER;
        this.sendFrame(conn, { t: "ping", nonce: this.pingNonce });
      }
    }
  }

  private expire(): void {
    const dropped = this.store!.expire(Date.now() - this.config.retentionMs);
    if (dropped.events || dropped.sends) this.log.info("expired old records", dropped);
  }

  private takeToken(conn: Connection): void {
    const now = Date.now();
    const { perSecond, burst } = this.config.rateLimit;
    conn.tokens = Math.min(burst, conn.tokens + ((now - conn.tokensAt) / 1000) * perSecond);
    conn.tokensAt = now;
    if (conn.tokens < 1)
      throw new ProtocolError("rate_limited", "too many requests", {
        retryAfterMs: Math.ceil(((1 - conn.tokens) / perSecond) * 1000),
      });
    conn.tokens -= 1;
  }

  // ------------------------------------------------------------------ dispatch

  private dispatch(conn: Connection, frame: Frame): void {
    switch (frame.t) {
      case "ping":
        return this.sendFrame(conn, { t: "pong", nonce: frame.nonce });
      case "pong":
        return;
      case "ack":
        return this.onAck(conn, frame);
      case "typing":
        return this.onTyping(conn, frame);
      case "hello":
        throw new ProtocolError("bad_frame", "hello: already authenticated", { field: "t" });
      case "login":
      case "logout":
      case "enlist":
      case "unenlist":
      case "account.upsert":
      case "settings.set":
      case "profile.get":
      case "keys.publish":
      case "keys.fetch":
      case "keys.count":
      case "send":
      case "group.create":
      case "group.add":
      case "group.remove":
      case "group.leave":
      case "group.update":
      case "group.admin":
      case "group.get":
      case "group.list": {
        this.takeToken(conn);
        const answer = this.handleRequest(conn, frame);
        this.sendFrame(conn, { t: "ok", rid: frame.rid, ...answer });
        // Events are streamed only after the ok, so a login answer precedes its first deliver.
        if (frame.t === "login") this.afterLogin(frame.user);
        return;
      }
      default:
        throw new ProtocolError("bad_frame", `t: ${frame.t} is sent by the gateway, not to it`, { field: "t" });
    }
  }

  private handleRequest(conn: Connection, frame: RequestFrame): Omit<OkFrame, "t" | "rid"> {
    const store = this.store!;
    if (GROUP_REQUEST_TYPES.has(frame.t) && !conn.features.has(FEATURE_GROUPS))
      throw new ProtocolError("not_supported", `${frame.t}: announce the "${FEATURE_GROUPS}" feature in hello first`);
    switch (frame.t) {
      case "login": {
        this.requireOwnUser(conn, frame.user, "user");
        if (!store.getAccount(frame.user)) throw new ProtocolError("unknown_user", `login: no account ${frame.user}`);
        const previous = this.sessions.get(frame.user);
        if (previous && previous.conn !== conn) {
          previous.conn.sessions.delete(frame.user);
          this.sendFrame(previous.conn, { t: "session.ended", user: frame.user, reason: "replaced" });
        }
        const acked = store.ackedSeq(frame.user);
        const session: Session = { user: frame.user, conn, sentUpTo: acked, inFlight: [] };
        conn.sessions.set(frame.user, session);
        this.sessions.set(frame.user, session);
        this.log.debug("login", { conn: conn.id, user: frame.user });
        return { queued: store.queuedCount(frame.user) };
      }
      case "logout": {
        this.requireOwnUser(conn, frame.user, "user");
        if (conn.sessions.delete(frame.user) && this.sessions.get(frame.user)?.conn === conn) this.sessions.delete(frame.user);
        return {};
      }
      case "enlist": {
        this.requireOwnUser(conn, frame.user, "user");
        if (conn.provider === this.config.homeProvider) throw new ProtocolError("forbidden", "enlist: home provider accounts are made with account.upsert");
        const { created, changed } = store.upsertAccount(frame.user, conn.provider!, false, frame.displayName, undefined, frame.thirdPartyChats);
        if (changed && !created) this.fanOutProfile(frame.user);
        return { created };
      }
      case "unenlist": {
        this.requireOwnUser(conn, frame.user, "user");
        if (conn.provider === this.config.homeProvider) throw new ProtocolError("forbidden", "unenlist: home provider accounts cannot be unenlisted");
        // Out of every group first, so the other members hear that the user left.
        for (const group of store.groupsOf(frame.user)) this.leaveGroup(group, frame.user);
        store.deleteAccount(frame.user);
        const session = this.sessions.get(frame.user);
        if (session) {
          session.conn.sessions.delete(frame.user);
          this.sessions.delete(frame.user);
        }
        return {};
      }
      case "account.upsert": {
        this.requireHome(conn, frame.t);
        this.requireOwnUser(conn, frame.user, "user");
        const local = parseMimiUri(frame.user)!.id;
        if (!isE164(local))
          throw new ProtocolError("bad_frame", "account.upsert.user must be mimi://<home>/u/<E.164 number>", {
            field: "account.upsert.user",
          });
        const { created, changed } = store.upsertAccount(frame.user, conn.provider!, true, frame.displayName, frame.avatar);
        if (changed && !created) this.fanOutProfile(frame.user);
        return { created };
      }
      case "settings.set": {
        // Home and third-party providers alike set the setting of their own accounts.
        this.requireOwnUser(conn, frame.user, "user");
        const changed = store.setThirdPartyChats(frame.user, frame.thirdPartyChats);
        if (changed === undefined) throw new ProtocolError("unknown_user", `settings.set: no account ${frame.user}`);
        if (changed && store.getAccount(frame.user)?.home) this.fanOutProfile(frame.user);
        return {};
      }
      case "profile.get":
        return { profile: this.profileOf(frame.user) };
      case "keys.publish": {
        this.requireSession(conn, frame.user, "user");
        const { maxOneTimeKeysPerPublish, maxOneTimeKeysStored } = this.config.limits;
        if (frame.oneTimePreKeys.length > maxOneTimeKeysPerPublish) throw new ProtocolError("too_large", `keys.publish.oneTimePreKeys: more than ${maxOneTimeKeysPerPublish} keys`);
        if (new Set(frame.oneTimePreKeys.map((k) => k.id)).size !== frame.oneTimePreKeys.length)
          throw new ProtocolError("bad_frame", "keys.publish.oneTimePreKeys: duplicate id", {
            field: "keys.publish.oneTimePreKeys",
          });
        const remaining = store.publishKeys(frame, maxOneTimeKeysStored);
        if (remaining === undefined) throw new ProtocolError("too_large", `keys.publish: more than ${maxOneTimeKeysStored} one-time keys stored`);
        return { remaining };
      }
      case "keys.fetch": {
        this.requireSession(conn, frame.from, "from");
        const target = store.getAccount(frame.user);
        if (!target) throw new ProtocolError("unknown_user", `keys.fetch: no account ${frame.user}`);
        this.checkReachable(store.getAccount(frame.from)!, target, dmRoomUri(frame.from, frame.user, this.config.roomDomain));
        const taken = store.takeBundle(frame.user);
        if (!taken) throw new ProtocolError("no_keys", `keys.fetch: ${frame.user} has published no keys`);
        if (taken.remaining < this.config.keysLowThreshold) {
          const owner = this.sessions.get(frame.user);
          if (owner) this.sendFrame(owner.conn, { t: "keys.low", user: frame.user, remaining: taken.remaining });
        }
        return { bundle: taken.bundle };
      }
      case "keys.count":
        this.requireSession(conn, frame.user, "user");
        return { remaining: store.countOneTimeKeys(frame.user) };
      case "send":
        return this.onSend(conn, frame);
      case "group.create":
        return this.onGroupCreate(conn, frame);
      case "group.add": {
        this.requireSession(conn, frame.by, "by");
        const group = this.requireGroup(frame.room);
        this.requireAdmin(group, frame.by, frame.t);
        if (group.members.some((m) => m.user === frame.user)) return { group };
        if (group.members.length >= this.maxGroupMembers) throw new ProtocolError("too_large", `group.add: the group has ${this.maxGroupMembers} members already`);
        const refusal = this.joinRefusal(
          group.members.map((m) => m.user),
          frame.user,
        );
        if (refusal) throw new ProtocolError(refusal.code, `group.add: ${refusal.message}`);
        const next = this.nextRev(group, { members: [...group.members, { user: frame.user, admin: false }] });
        this.commitGroup(next, { change: "added", by: frame.by, subject: frame.user });
        return { group: next };
      }
      case "group.remove": {
        this.requireSession(conn, frame.by, "by");
        const group = this.requireGroup(frame.room);
        this.requireAdmin(group, frame.by, frame.t);
        if (frame.user === frame.by) throw new ProtocolError("bad_frame", "group.remove: to leave a group, use group.leave", { field: "group.remove.user" });
        // Removing somebody who is not (or no longer) a member changes nothing: a retried remove gets ok.
        if (!group.members.some((m) => m.user === frame.user)) return { group };
        const next = this.withAnAdmin(this.nextRev(group, { members: group.members.filter((m) => m.user !== frame.user) }));
        this.commitGroup(next, { change: "removed", by: frame.by, subject: frame.user }, [frame.user]);
        return { group: next };
      }
      case "group.leave": {
        this.requireSession(conn, frame.by, "by");
        const group = this.requireGroup(frame.room);
        // Not a member (any more): nothing to do, and nothing of the group is shown.
        if (!group.members.some((m) => m.user === frame.by)) return {};
        this.leaveGroup(group, frame.by);
        return {};
      }
      case "group.update":
        return this.onGroupUpdate(conn, frame);
      case "group.admin": {
        this.requireSession(conn, frame.by, "by");
        const group = this.requireGroup(frame.room);
        this.requireAdmin(group, frame.by, frame.t);
        const target = group.members.find((m) => m.user === frame.user);
        if (!target) throw new ProtocolError("not_member", `group.admin: ${frame.user} is not a member of ${frame.room}`);
        if (target.admin === frame.admin) return { group };
        if (!frame.admin && group.members.filter((m) => m.admin).length === 1) throw new ProtocolError("forbidden", "group.admin: a group keeps at least one admin");
        const next = this.nextRev(group, { members: group.members.map((m) => (m.user === frame.user ? { user: m.user, admin: frame.admin } : m)) });
        this.commitGroup(next, { change: "admin", by: frame.by, subject: frame.user });
        return { group: next };
      }
      case "group.get": {
        this.requireSession(conn, frame.by, "by");
        const group = this.requireGroup(frame.room);
        this.requireMember(group, frame.by, frame.t);
        return { group };
      }
      case "group.list":
        this.requireSession(conn, frame.user, "user");
        return { groups: store.groupsOf(frame.user) };
    }
  }

  // -------------------------------------------------------------------- groups

  private get maxGroupMembers(): number {
    return this.config.limits.maxGroupMembers ?? DEFAULT_LIMITS.maxGroupMembers;
  }

  private onGroupCreate(conn: Connection, frame: Extract<RequestFrame, { t: "group.create" }>): Omit<OkFrame, "t" | "rid"> {
    const store = this.store!;
    this.requireSession(conn, frame.by, "by");
    const room = groupRoomUri(frame.by, frame.id, this.config.roomDomain);
    const existing = store.getGroup(room);
    // A retry (the ok was lost): the same group, its refusals, and nothing new.
    if (existing) return { group: existing, refused: store.createRefusals(room), duplicate: true };
    const creator = store.getAccount(frame.by)!;
    if (!creator.home && !creator.thirdPartyChats) throw new ProtocolError("not_opted_in", `group.create: ${frame.by} has not turned Third-Party Chats on`);
    const candidates = [...new Set(frame.members)].filter((u) => u !== frame.by);
    if (candidates.length + 1 > this.maxGroupMembers) throw new ProtocolError("too_large", `group.create: more than ${this.maxGroupMembers} members`);
    const members = [frame.by];
    const refused: GroupRefusal[] = [];
    // In the order given, each against those already in: the same answer group.add would give.
    for (const user of candidates) {
      const refusal = this.joinRefusal(members, user);
      if (refusal) refused.push({ user, code: refusal.code });
      else members.push(user);
    }
    const group: GroupState = {
      room,
      rev: 1,
      name: frame.name,
      creator: frame.by,
      created: store.now(),
      members: members.map((user) => ({ user, admin: user === frame.by })),
    };
    if (frame.topic) group.topic = frame.topic;
    if (frame.picture) group.picture = frame.picture;
    this.commitGroup(group, { change: "created", by: frame.by }, [], refused);
    this.log.debug("group created", { room, members: members.length, refused: refused.length });
    return { group, refused };
  }

  private onGroupUpdate(conn: Connection, frame: Extract<RequestFrame, { t: "group.update" }>): Omit<OkFrame, "t" | "rid"> {
    this.requireSession(conn, frame.by, "by");
    if (frame.picture && frame.removePicture)
      throw new ProtocolError("bad_frame", "group.update: picture and removePicture exclude each other", { field: "group.update.removePicture" });
    if (frame.name === undefined && frame.topic === undefined && frame.picture === undefined && !frame.removePicture)
      throw new ProtocolError("bad_frame", "group.update: give name, topic, picture or removePicture", { field: "group.update" });
    let group = this.requireGroup(frame.room);
    this.requireAdmin(group, frame.by, frame.t);
    // One event per field that changed, each with its own rev, in one transaction.
    const steps: Array<[GroupChange, Partial<GroupState>, boolean]> = [];
    if (frame.name !== undefined && frame.name !== group.name) steps.push(["name", { name: frame.name }, false]);
    if (frame.topic !== undefined && frame.topic !== (group.topic ?? "")) steps.push(["topic", { topic: frame.topic }, frame.topic === ""]);
    if (frame.picture !== undefined && !samePicture(frame.picture, group.picture)) steps.push(["picture", { picture: frame.picture }, false]);
    if (frame.removePicture && group.picture) steps.push(["picture", {}, true]);
    this.store!.transaction(() => {
      for (const [change, fields, clear] of steps) {
        const next = this.nextRev(group, fields);
        if (clear && change === "topic") delete next.topic;
        if (clear && change === "picture") delete next.picture;
        this.commitGroup(next, { change, by: frame.by });
        group = next;
      }
    });
    return { group };
  }

  /** The member leaves; if it was the last admin, the longest-standing member becomes one. */
  private leaveGroup(group: GroupState, user: string): void {
    const next = this.withAnAdmin(this.nextRev(group, { members: group.members.filter((m) => m.user !== user) }));
    this.commitGroup(next, { change: "left", by: user, subject: user }, [user]);
  }

  private nextRev(group: GroupState, fields: Partial<GroupState>): GroupState {
    return { ...group, ...fields, rev: group.rev + 1 };
  }

  private withAnAdmin(group: GroupState): GroupState {
    if (group.members.length === 0 || group.members.some((m) => m.admin)) return group;
    return { ...group, members: group.members.map((m, i) => (i === 0 ? { user: m.user, admin: true } : m)) };
  }

  private commitGroup(next: GroupState, event: { change: GroupChange; by: string; subject?: string }, alsoNotify: string[] = [], refused?: GroupRefusal[]): void {
    for (const user of this.store!.commitGroup(next, event, alsoNotify, refused)) this.pump(user);
  }

  private requireGroup(room: string): GroupState {
    const group = isGroupRoom(room) ? this.store!.getGroup(room) : undefined;
    if (!group) throw new ProtocolError("unknown_room", `${room} is not a group room of this gateway`);
    return group;
  }

  private requireMember(group: GroupState, user: string, what: string): void {
    if (!group.members.some((m) => m.user === user)) throw new ProtocolError("not_member", `${what}: ${user} is not a member of ${group.room}`);
  }

  private requireAdmin(group: GroupState, user: string, what: string): void {
    const member = group.members.find((m) => m.user === user);
    if (!member) throw new ProtocolError("not_member", `${what}: ${user} is not a member of ${group.room}`);
    if (!member.admin) throw new ProtocolError("forbidden", `${what}: only the group's admins may do this`);
  }

  /**
   * Why `user` may not join a group whose members are `members`, or undefined if it may
   * (§3.3.3): it has an account, its provider speaks groups, and a group with a third-party
   * member has only members with Third-Party Chats on.
   */
  private joinRefusal(members: string[], user: string): { code: ErrorCode; message: string } | undefined {
    const store = this.store!;
    const candidate = store.getAccount(user);
    if (!candidate) return { code: "unknown_user", message: `no account ${user}` };
    if (!store.providerFeatures(candidate.provider).has(FEATURE_GROUPS)) return { code: "not_supported", message: `the provider of ${user} does not support groups` };
    const accounts = members.map((m) => store.getAccount(m)).filter((a): a is Account => a !== undefined);
    if (!candidate.home) {
      if (!candidate.thirdPartyChats) return { code: "not_opted_in", message: `${user} has not turned Third-Party Chats on` };
      const off = accounts.find((a) => a.home && !a.thirdPartyChats);
      if (off) return { code: "third_party_disabled", message: `member ${off.user} has Third-Party Chats turned off` };
    } else if (!candidate.thirdPartyChats && accounts.some((a) => !a.home)) {
      return { code: "third_party_disabled", message: `${user} has Third-Party Chats turned off` };
    }
    return undefined;
  }

  /** §3.3.4: both are members; a home member takes part; each side's setting as in §6.4. */
  private checkGroupSend(what: string, from: Account, to: Account, room: string): void {
    const group = this.requireGroup(room);
    this.requireMember(group, from.user, what);
    if (!group.members.some((m) => m.user === to.user)) throw new ProtocolError("not_member", `${what}: ${to.user} is not a member of ${room}`);
    if (from.home && to.home) return;
    if (!from.home && !to.home) {
      const store = this.store!;
      if (!group.members.some((m) => store.getAccount(m.user)?.home))
        throw new ProtocolError("forbidden", `${what}: a group without WhatsApp members does not relay between third-party users`);
      const off = [from, to].find((a) => !a.thirdPartyChats);
      if (off) throw new ProtocolError("not_opted_in", `${off.user} has not turned Third-Party Chats on`);
      return;
    }
    this.checkReachable(from, to);
  }

  private onSend(conn: Connection, frame: Extract<RequestFrame, { t: "send" }>): Omit<OkFrame, "t" | "rid"> {
    const store = this.store!;
    this.requireSession(conn, frame.from, "from");
    if (!PAYLOAD_TYPES.has(frame.payload.type))
      throw new ProtocolError("bad_frame", "send.payload.type must be 2 (Whisper) or 3 (PreKey)", {
        field: "send.payload.type",
      });
    if (frame.payload.body.length > this.config.limits.maxBodyBytes)
      throw new ProtocolError("too_large", `send.payload.body is ${frame.payload.body.length} bytes, limit ${this.config.limits.maxBodyBytes}`);
    // Before the other checks so that a retry of an accepted send gets the same
    // answer even if the recipient has since switched Third-Party Chats off.
    const prior = store.priorSend(frame);
    if (prior) return this.sendOutcome(frame, prior);
    const recipient = store.getAccount(frame.to);
    if (!recipient) throw new ProtocolError("unknown_user", `send: no account ${frame.to}`);
    if (isGroupRoom(frame.room)) {
      if (!conn.features.has(FEATURE_GROUPS)) throw new ProtocolError("not_supported", `send: announce the "${FEATURE_GROUPS}" feature in hello to send to group rooms`);
      this.checkGroupSend("send", store.getAccount(frame.from)!, recipient, frame.room);
      return this.sendOutcome(frame, store.acceptSend(frame, true));
    }
    this.checkRoom(frame.from, frame.to, frame.room);
    this.checkReachable(store.getAccount(frame.from)!, recipient, frame.room);
    return this.sendOutcome(frame, store.acceptSend(frame));
  }

  private sendOutcome(frame: Extract<RequestFrame, { t: "send" }>, result: AcceptResult): Omit<OkFrame, "t" | "rid"> {
    switch (result.kind) {
      case "duplicate":
        return { ts: result.ts, duplicate: true };
      case "queue_full":
        throw new ProtocolError("queue_full", `send: ${frame.to} has too many undelivered events`);
      case "accepted":
        this.pump(frame.to);
        return { ts: result.ts };
    }
  }

  private afterLogin(user: string): void {
    const session = this.sessions.get(user);
    if (!session) return;
    const store = this.store!;
    if (store.hasKeys(user)) {
      const remaining = store.countOneTimeKeys(user);
      if (remaining < this.config.keysLowThreshold) this.sendFrame(session.conn, { t: "keys.low", user, remaining });
    }
    this.pump(user);
  }

  private onAck(conn: Connection, frame: AckFrame): void {
    const session = this.requireSession(conn, frame.user, "user");
    const store = this.store!;
    if (frame.seq > store.lastSeq(frame.user))
      throw new ProtocolError("bad_frame", `ack.seq ${frame.seq} is beyond the last event of ${frame.user}`, {
        field: "ack.seq",
      });
    const notified = store.ack(frame.user, frame.seq);
    session.inFlight = session.inFlight.filter((s) => s > frame.seq);
    if (session.sentUpTo < frame.seq) session.sentUpTo = frame.seq;
    for (const sender of notified) this.pump(sender);
    this.pump(frame.user);
  }

  private onTyping(conn: Connection, frame: TypingFrame): void {
    const store = this.store!;
    this.requireSession(conn, frame.from, "from");
    const recipient = store.getAccount(frame.to);
    if (!recipient) throw new ProtocolError("unknown_user", `typing: no account ${frame.to}`);
    const inGroup = isGroupRoom(frame.room);
    if (inGroup) {
      if (!conn.features.has(FEATURE_GROUPS)) throw new ProtocolError("not_supported", `typing: announce the "${FEATURE_GROUPS}" feature in hello to use group rooms`);
      this.checkGroupSend("typing", store.getAccount(frame.from)!, recipient, frame.room);
    } else {
      this.checkRoom(frame.from, frame.to, frame.room);
      this.checkReachable(store.getAccount(frame.from)!, recipient);
    }
    const target = this.sessions.get(frame.to);
    if (target && (!inGroup || target.conn.features.has(FEATURE_GROUPS))) this.sendFrame(target.conn, frame);
  }

  /** Sends queued events to the user's session, up to the delivery window. */
  private pump(user: string): void {
    const session = this.sessions.get(user);
    if (!session || session.conn.ws.readyState !== WebSocket.OPEN) return;
    const room = this.config.deliveryWindow - session.inFlight.length;
    if (room <= 0) return;
    for (const event of this.store!.eventsAfter(user, session.sentUpTo, room)) {
      // A connection without the groups feature is never sent group traffic: the queue waits
      // there until the user logs in on one that has it (§4.1).
      if (event.group && !session.conn.features.has(FEATURE_GROUPS)) break;
      this.sendRaw(session.conn, event.frame);
      session.sentUpTo = event.seq;
      session.inFlight.push(event.seq);
    }
  }

  private fanOutProfile(user: string): void {
    const account = this.store!.getAccount(user);
    if (!account) return;
    for (const peer of this.store!.fanOutProfile(account)) this.pump(peer);
  }

  private profileOf(user: string): Profile {
    const account = this.store!.getAccount(user);
    if (!account) return { user, exists: false };
    const profile: Profile = { user, exists: true, home: account.home, displayName: account.displayName };
    if (account.avatar) profile.avatar = account.avatar;
    if (account.home) profile.thirdPartyChats = account.thirdPartyChats;
    return profile;
  }

  // -------------------------------------------------------------------- checks

  private requireOwnUser(conn: Connection, user: string, field: string): void {
    if (userDomain(user) !== conn.provider) throw new ProtocolError("forbidden", `${field}: ${user} is not a user of provider ${conn.provider}`);
  }

  private requireHome(conn: Connection, what: string): void {
    if (conn.provider !== this.config.homeProvider) throw new ProtocolError("forbidden", `${what} is reserved to the home provider`);
  }

  private requireSession(conn: Connection, user: string, field: string): Session {
    this.requireOwnUser(conn, user, field);
    const session = conn.sessions.get(user);
    if (!session) throw new ProtocolError("not_logged_in", `${field}: ${user} is not logged in on this connection`);
    return session;
  }

  private checkRoom(from: string, to: string, room: string): void {
    if (room !== dmRoomUri(from, to, this.config.roomDomain)) throw new ProtocolError("unknown_room", `room ${room} is not the chat of ${from} and ${to}`);
  }

  /**
   * Interop connects WhatsApp users with third-party users: at least one side
   * must be a home account, and each side takes part only with its
   * Third-Party Chats setting on (the home user's first). When `room` is given
   * (a send or keys.fetch by actor `a`) and the third-party side is the one that
   * is off, it is told who tried, once per sender until it acks (§6.4).
   */
  private checkReachable(a: Account, b: Account, room?: string): void {
    if (!a.home && !b.home) throw new ProtocolError("forbidden", "third-party users can only reach users of the home provider");
    if (a.home && b.home) return;
    const homeSide = a.home ? a : b;
    if (!homeSide.thirdPartyChats) throw new ProtocolError("third_party_disabled", `${homeSide.user} has Third-Party Chats turned off`);
    const thirdPartySide = a.home ? b : a;
    if (!thirdPartySide.thirdPartyChats) {
      if (room !== undefined && thirdPartySide === b && this.store!.queueRefused(b.user, a.user, room)) this.pump(b.user);
      throw new ProtocolError("not_opted_in", `${thirdPartySide.user} has not turned Third-Party Chats on`);
    }
  }
}

function samePicture(a: GroupState["picture"], b: GroupState["picture"]): boolean {
  if (!a || !b) return a === b;
  return a.url === b.url && a.mimetype === b.mimetype && a.size === b.size && Buffer.compare(a.sha256, b.sha256) === 0;
}
