import { createHash, timingSafeEqual } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import { Bridge } from "matrix-appservice-bridge";
import { UserControls } from "../bridge/controls";
import { BridgeUserError, RefusalKind } from "../bridge/failure";
import { serverOf } from "../bridge/permissions";
import { BridgeConfig } from "../config";
import { getLogger } from "../logging";
import { BridgeMetrics } from "../metrics/metrics";
import type { DurableAppService } from "./durable-appservice";
import { GhostIds } from "./ghost-ids";

const log = getLogger("provisioning");

export const PROVISIONING_PREFIX = "/_matrix/provision/v1";

/** A refused request: HTTP status plus a Matrix-style errcode and a reason for people. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
  ) {
    super(message);
  }
}

const REFUSAL_STATUS: Record<RefusalKind, [number, string]> = {
  invalid: [400, "M_INVALID_PARAM"],
  not_found: [404, "M_NOT_FOUND"],
  forbidden: [403, "M_FORBIDDEN"],
  conflict: [409, "M_BAD_STATE"],
  unavailable: [503, "M_UNAVAILABLE"],
};

interface Caller {
  /** The Matrix user the request acts for. */
  user: string;
  via: "shared_secret" | "access_token";
}

type Handler = (caller: Caller, body: Record<string, unknown>) => Promise<{ status?: number; body: unknown }>;

const WHOAMI_CACHE_MS = 60_000;
const WHOAMI_CACHE_MAX = 1000;

/**
 * The provisioning API (docs/provisioning.md): the bot's operations over HTTP for integrations,
 * on the appservice's port. A request acts for one Matrix user, named either by the shared
 * secret plus `?user_id=`, or by that user's own access token (checked with /whoami on the
 * homeserver). The same permissions apply as in the bot's DM.
 */
export class ProvisioningApi {
  private readonly ghosts: GhostIds;
  private readonly botMxid: string;
  private readonly whoamiCache = new Map<string, { user: string; until: number }>();
  /** "METHOD /path" of every route, to label refusals that happen before a route is reached. */
  private readonly routes = new Set<string>();

  constructor(
    private readonly controls: UserControls,
    private readonly config: BridgeConfig,
    private readonly metrics: BridgeMetrics,
  ) {
    this.ghosts = new GhostIds(config);
    this.botMxid = `@${config.appservice.bot.localpart}:${config.homeserver.domain}`;
  }

  register(bridge: Bridge, appservice: DurableAppService): void {
    const route = (method: "GET" | "PUT" | "POST" | "DELETE", path: string, handler: Handler) => {
      this.routes.add(`${method} ${path}`);
      bridge.addAppServicePath({
        method,
        path: PROVISIONING_PREFIX + path,
        // Our own authentication: the homeserver token is not what integrations hold.
        authenticate: false,
        handler: (req: Request, res: Response) => void this.serve(method, path, handler, req, res),
      });
    };
    route("GET", "/status", async (caller) => ({ body: this.statusBody(caller.user) }));
    route("PUT", "/settings", (caller, body) => this.putSettings(caller, body));
    route("GET", "/chats", async (caller) => ({
      body: {
        chats: this.controls
          .listChats(caller.user)
          .map((c) =>
            c.kind === "group"
              ? { room_id: c.roomId, kind: "group", group: c.remoteChatId, name: c.name, members: c.members }
              : { room_id: c.roomId, kind: "dm", remote_user_id: c.remoteUserId, name: c.name },
          ),
      },
    }));
    route("POST", "/chats", (caller, body) => this.startChat(caller, body));
    route("DELETE", "/user", (caller) => this.forget(caller));
    route("GET", "/version", async () => {
      const v = this.controls.version();
      return { body: { bridge: v.bridge, protocol: v.protocol, node: v.node } };
    });
    const app = bridge.appService.expressApp;
    // Unknown routes and unreadable bodies under the prefix answer in JSON like the rest.
    app.use(PROVISIONING_PREFIX, (req: Request, res: Response) =>
      this.reply(res, req.method, "unknown", 404, { errcode: "M_UNRECOGNIZED", error: "unknown provisioning endpoint" }),
    );
    // Bodies the JSON parser refused (unreadable, too large) are answered and counted here too.
    appservice.passBodyRefusalsUnder(PROVISIONING_PREFIX);
    app.use(PROVISIONING_PREFIX, (err: { status?: unknown; type?: string; limit?: unknown }, req: Request, res: Response, next: NextFunction) => {
      if (res.headersSent) return next(err);
      const route = this.routes.has(`${req.method} ${req.path}`) ? req.path : "unknown";
      if (err.type === "entity.too.large") {
        return this.reply(res, req.method, route, 413, { errcode: "M_TOO_LARGE", error: `the body is larger than ${String(err.limit)} bytes` });
      }
      if (err.type === "entity.parse.failed") return this.reply(res, req.method, route, 400, { errcode: "M_NOT_JSON", error: "the request body is not valid JSON" });
      const status = typeof err.status === "number" && err.status >= 400 && err.status < 500 ? err.status : 500;
      this.reply(res, req.method, route, status, { errcode: status === 500 ? "M_UNKNOWN" : "M_BAD_JSON", error: "the request body could not be read" });
    });
    log.info("provisioning API enabled", { prefix: PROVISIONING_PREFIX, sharedSecret: Boolean(this.config.provisioning.shared_secret) });
  }

  private async serve(method: string, path: string, handler: Handler, req: Request, res: Response): Promise<void> {
    const started = process.hrtime.bigint();
    const reply = (status: number, body: unknown) => this.reply(res, method, path, status, body, started);
    try {
      const caller = await this.authenticate(req);
      const body = method === "PUT" || method === "POST" ? this.jsonBody(req) : {};
      const result = await handler(caller, body);
      reply(result.status ?? 200, result.body);
    } catch (err) {
      if (err instanceof ApiError) return reply(err.status, { errcode: err.errcode, error: err.message });
      if (err instanceof BridgeUserError) {
        const [status, errcode] = REFUSAL_STATUS[err.kind];
        return reply(status, { errcode, error: err.message });
      }
      log.error("provisioning request failed", { method, path, error: (err as Error).message });
      reply(500, { errcode: "M_UNKNOWN", error: "the bridge failed to handle the request" });
    }
  }

  private reply(res: Response, method: string, route: string, status: number, body: unknown, started = process.hrtime.bigint()): void {
    this.metrics.provisioningSeconds.observe({ route, method, status: String(status) }, Number(process.hrtime.bigint() - started) / 1e9);
    res.status(status).json(body);
  }

  // ---- authentication

  private async authenticate(req: Request): Promise<Caller> {
    const header = req.headers.authorization;
    if (!header?.startsWith("Bearer ") || header.length === "Bearer ".length) {
      throw new ApiError(401, "M_MISSING_TOKEN", "send Authorization: Bearer <shared secret or your Matrix access token>");
    }
    const token = header.slice("Bearer ".length);
    const asked = typeof req.query.user_id === "string" ? req.query.user_id : undefined;
    if (req.query.user_id !== undefined && asked === undefined) throw new ApiError(400, "M_INVALID_PARAM", "user_id must be given once");
    let caller: Caller;
    if (this.isSharedSecret(token)) {
      if (!asked) throw new ApiError(400, "M_MISSING_PARAM", "user_id is required with the shared secret");
      caller = { user: asked, via: "shared_secret" };
    } else {
      const owner = await this.whoami(token);
      if (asked && asked !== owner && this.controls.levelOf(owner) !== "admin") {
        throw new ApiError(403, "M_FORBIDDEN", "only bridge admins may act for other users");
      }
      caller = { user: asked ?? owner, via: "access_token" };
    }
    if (!serverOf(caller.user)) throw new ApiError(400, "M_INVALID_PARAM", `${caller.user} is not a Matrix user id`);
    if (caller.user === this.botMxid || this.ghosts.remoteIdOf(caller.user)) {
      throw new ApiError(403, "M_FORBIDDEN", `${caller.user} belongs to the bridge itself`);
    }
    if (this.controls.levelOf(caller.user) === "none") {
      throw new ApiError(403, "M_FORBIDDEN", `${caller.user} is not allowed to use this bridge`);
    }
    return caller;
  }

  private isSharedSecret(token: string): boolean {
    const secret = this.config.provisioning.shared_secret;
    if (!secret) return false;
    // Equal-length digests, so the comparison takes the same time whatever was sent.
    const digest = (s: string) => createHash("sha256").update(s).digest();
    return timingSafeEqual(digest(token), digest(secret));
  }

  /** The owner of an access token, asked of the homeserver (cached briefly, keyed by a hash of the token). */
  private async whoami(token: string): Promise<string> {
    const key = createHash("sha256").update(token).digest("hex");
    const cached = this.whoamiCache.get(key);
    if (cached && cached.until > Date.now()) return cached.user;
    let res: globalThis.Response;
    // The one request to the homeserver made outside HomeserverLink (it answers 503 at once rather than wait out an outage).
    this.metrics.homeserverRequest("query");
    try {
      res = await fetch(`${this.config.homeserver.url.replace(/\/+$/, "")}/_matrix/client/v3/account/whoami`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      log.warn("could not reach the homeserver to check a token", { error: (err as Error).message });
      throw new ApiError(503, "M_UNAVAILABLE", "the homeserver could not be reached to check the access token");
    }
    if (res.status === 401 || res.status === 403) throw new ApiError(401, "M_UNKNOWN_TOKEN", "the access token is neither the shared secret nor valid on the homeserver");
    if (!res.ok) throw new ApiError(503, "M_UNAVAILABLE", `the homeserver answered ${res.status} when checking the access token`);
    const body = (await res.json()) as { user_id?: unknown };
    if (typeof body.user_id !== "string") throw new ApiError(503, "M_UNAVAILABLE", "the homeserver's whoami answer has no user_id");
    if (this.whoamiCache.size >= WHOAMI_CACHE_MAX) this.whoamiCache.delete(this.whoamiCache.keys().next().value!);
    this.whoamiCache.set(key, { user: body.user_id, until: Date.now() + WHOAMI_CACHE_MS });
    return body.user_id;
  }

  // ---- bodies and operations

  private jsonBody(req: Request): Record<string, unknown> {
    if (!req.is("application/json")) throw new ApiError(400, "M_NOT_JSON", "send a JSON body with Content-Type: application/json");
    const body = req.body as unknown;
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, "M_BAD_JSON", "the body must be a JSON object");
    return body as Record<string, unknown>;
  }

  private statusBody(user: string): Record<string, unknown> {
    const s = this.controls.status(user);
    const body: Record<string, unknown> = {
      user_id: s.user,
      permission: s.permission,
      third_party_chats: s.thirdPartyChats,
      inbox: s.inbox,
      space_room_id: s.spaceRoomId,
      network: s.connection,
      chats: s.chats,
      queued: s.queued,
      refused_contacts: s.refusedContacts.map((c) => ({ remote_user_id: c.remoteId, attempts: c.attempts, first_at: c.firstAt, last_at: c.lastAt })),
    };
    if (s.bridge) body.bridge = s.bridge;
    return body;
  }

  private async putSettings(caller: Caller, body: Record<string, unknown>): Promise<{ body: unknown }> {
    const unknown = Object.keys(body).filter((k) => k !== "third_party_chats" && k !== "inbox");
    if (unknown.length) throw new ApiError(400, "M_BAD_JSON", `unknown setting ${unknown.map((k) => JSON.stringify(k)).join(", ")} (known: third_party_chats, inbox)`);
    if (body.third_party_chats === undefined && body.inbox === undefined) throw new ApiError(400, "M_BAD_JSON", "give third_party_chats and/or inbox");
    if (body.third_party_chats !== undefined && typeof body.third_party_chats !== "boolean") throw new ApiError(400, "M_BAD_JSON", "third_party_chats must be true or false");
    if (body.inbox !== undefined && body.inbox !== "dedicated" && body.inbox !== "unified") throw new ApiError(400, "M_BAD_JSON", 'inbox must be "dedicated" or "unified"');
    const changed: Record<string, boolean> = {};
    let refusedWhileOff: unknown[] | undefined;
    if (typeof body.third_party_chats === "boolean") {
      const change = await this.controls.setThirdPartyChats(caller.user, body.third_party_chats);
      changed.third_party_chats = change.changed;
      if (change.refusedWhileOff.length) refusedWhileOff = change.refusedWhileOff.map((c) => c.remoteId);
    }
    if (body.inbox === "dedicated" || body.inbox === "unified") changed.inbox = (await this.controls.setInbox(caller.user, body.inbox)).changed;
    return { body: { ...this.statusBody(caller.user), changed, ...(refusedWhileOff ? { refused_while_off: refusedWhileOff } : {}) } };
  }

  private async startChat(caller: Caller, body: Record<string, unknown>): Promise<{ status: number; body: unknown }> {
    const unknown = Object.keys(body).filter((k) => k !== "phone");
    if (unknown.length) throw new ApiError(400, "M_BAD_JSON", `unknown field ${unknown.map((k) => JSON.stringify(k)).join(", ")} (known: phone)`);
    if (typeof body.phone !== "string" || !this.controls.isIdentifier(body.phone)) {
      throw new ApiError(400, "M_BAD_JSON", "phone must be a phone number in international format, e.g. +4915123456789");
    }
    const chat = await this.controls.startChat(caller.user, body.phone);
    return { status: chat.created ? 201 : 200, body: { room_id: chat.roomId, name: chat.name, created: chat.created } };
  }

  private async forget(caller: Caller): Promise<{ body: unknown }> {
    const done = await this.controls.forget(caller.user);
    return {
      body: {
        deleted: {
          network_identity: true,
          keys_and_sessions: true,
          portals: done.portals,
          messages: done.messages,
          queued: done.queued,
          refused_contacts: done.refusedContacts,
          space: done.spaceRemoved,
          settings: true,
        },
      },
    };
  }
}
