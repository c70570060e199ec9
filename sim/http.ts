/**
 * The simulator's control API: small JSON over HTTP on loopback (docs/simulator.md lists
 * every route). Errors are `{error: code, message}` with a 4xx/5xx status.
 */
import { createReadStream } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../src/logging.js";
import { SimError, httpStatusOf, type Simulator } from "./simulator.js";

const MAX_BODY_BYTES = 8 * 1024 * 1024;

type Handler = (sim: Simulator, params: string[], body: Record<string, unknown>, query: URLSearchParams) => Promise<unknown>;

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
  /** HTTP status of a success (default 200). */
  status?: (result: unknown) => number;
}

const USER = "([^/]+)";
/** A group's room URI, URL-encoded (mimi%3A%2F%2F…). */
const GROUP = "([^/]+)";

const ROUTES: Route[] = [
  { method: "GET", pattern: /^\/health$/, handler: async (sim) => ({ status: "ok", gateway: sim.connectionState, users: sim.users().length }) },
  { method: "GET", pattern: /^\/users$/, handler: async (sim) => sim.users() },
  {
    method: "POST",
    pattern: /^\/users$/,
    handler: (sim, _p, body) => sim.createUser(body),
    status: (result) => ((result as { created: boolean }).created ? 201 : 200),
  },
  { method: "GET", pattern: new RegExp(`^/users/${USER}$`), handler: async (sim, [phone]) => sim.view(sim.requireUser(phone!)) },
  { method: "PATCH", pattern: new RegExp(`^/users/${USER}$`), handler: (sim, [phone], body) => sim.updateUser(phone!, body) },
  { method: "PUT", pattern: new RegExp(`^/users/${USER}/settings$`), handler: (sim, [phone], body) => sim.setSettings(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/messages$`), handler: (sim, [phone], body) => sim.sendText(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/reactions$`), handler: (sim, [phone], body) => sim.sendReaction(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/edits$`), handler: (sim, [phone], body) => sim.sendEdit(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/deletions$`), handler: (sim, [phone], body) => sim.sendDeletion(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/reinstall$`), handler: (sim, [phone]) => sim.reinstall(phone!) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/read$`), handler: (sim, [phone], body) => sim.sendRead(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/typing$`), handler: (sim, [phone], body) => sim.sendTyping(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/status$`), handler: (sim, [phone], body) => sim.sendStatus(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/stickers$`), handler: (sim, [phone], body) => sim.sendSticker(phone!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/disappearing$`), handler: (sim, [phone], body) => sim.sendDisappearing(phone!, body) },
  {
    method: "POST",
    pattern: new RegExp(`^/users/${USER}/media$`),
    handler: (sim, [phone], body) => sim.sendMedia(phone!, body),
  },
  { method: "GET", pattern: new RegExp(`^/users/${USER}/groups$`), handler: (sim, [phone]) => sim.listGroups(phone!) },
  {
    method: "POST",
    pattern: new RegExp(`^/users/${USER}/groups$`),
    handler: (sim, [phone], body) => sim.createGroup(phone!, body),
    status: () => 201,
  },
  { method: "GET", pattern: new RegExp(`^/users/${USER}/groups/${GROUP}$`), handler: (sim, [phone, room]) => sim.showGroup(phone!, room!) },
  { method: "PATCH", pattern: new RegExp(`^/users/${USER}/groups/${GROUP}$`), handler: (sim, [phone, room], body) => sim.updateGroup(phone!, room!, body) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/groups/${GROUP}/members$`), handler: (sim, [phone, room], body) => sim.addGroupMember(phone!, room!, body) },
  {
    method: "DELETE",
    pattern: new RegExp(`^/users/${USER}/groups/${GROUP}/members/${USER}$`),
    handler: (sim, [phone, room, member]) => sim.removeGroupMember(phone!, room!, member!),
  },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/groups/${GROUP}/leave$`), handler: (sim, [phone, room]) => sim.leaveGroup(phone!, room!) },
  { method: "POST", pattern: new RegExp(`^/users/${USER}/groups/${GROUP}/admins$`), handler: (sim, [phone, room], body) => sim.setGroupAdmin(phone!, room!, body) },
  {
    method: "GET",
    pattern: new RegExp(`^/users/${USER}/inbox$`),
    handler: async (sim, [phone], _b, query) => sim.inbox(phone!, afterParam(query)),
  },
  {
    method: "GET",
    pattern: new RegExp(`^/users/${USER}/inbox/wait$`),
    handler: (sim, [phone], _b, query) => sim.waitInbox(phone!, afterParam(query), timeoutParam(query)),
  },
];

function afterParam(query: URLSearchParams): number {
  const raw = query.get("after") ?? "0";
  const after = Number(raw);
  if (!Number.isSafeInteger(after) || after < 0) throw new SimError(400, "bad_request", "after must be a whole number ≥ 0");
  return after;
}

function timeoutParam(query: URLSearchParams): number {
  const raw = query.get("timeoutMs") ?? "30000";
  const timeoutMs = Number(raw);
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 0) throw new SimError(400, "bad_request", "timeoutMs must be a whole number ≥ 0");
  return timeoutMs;
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new SimError(413, "too_large", `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new SimError(400, "bad_request", "the request body is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new SimError(400, "bad_request", "the request body must be a JSON object");
  return value as Record<string, unknown>;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(text);
}

export class ControlApi {
  private server?: http.Server;
  private sim?: Simulator;
  /** Every request for a hosted blob (/media/v1/…), so tests can tell whether the far side fetched one (the last 10,000). */
  private readonly blobRequests: { method: string; path: string; at: number }[] = [];

  constructor(private readonly log: Logger) {}

  /** Starts serving requests for the simulator; until then every route answers 503 "starting". */
  attach(sim: Simulator): void {
    this.sim = sim;
  }

  async listen(port: number, host = "127.0.0.1"): Promise<string> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(port, host, () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    return `http://${addr.address}:${addr.port}`;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://sim");
    const method = req.method ?? "GET";
    try {
      const sim = this.sim;
      if (!sim) throw new SimError(503, "starting", "the simulator is starting");
      if (url.pathname.startsWith("/media/v1/")) {
        this.blobRequests.push({ method, path: url.pathname, at: Date.now() });
        if (this.blobRequests.length > 10_000) this.blobRequests.shift();
      }
      if (method === "GET" && url.pathname === "/hosted-media/requests") return send(res, 200, this.blobRequests);
      if (sim.mediaHost.handle(req, res)) return;
      const media = /^\/media\/([0-9a-f]{64})$/.exec(url.pathname);
      if (media && (method === "GET" || method === "HEAD")) return this.serveMedia(sim, media[1]!, method, res);
      let pathMatched = false;
      for (const route of ROUTES) {
        const m = route.pattern.exec(url.pathname);
        if (!m) continue;
        pathMatched = true;
        if (route.method !== method) continue;
        const params = m.slice(1).map((p) => decodeURIComponent(p));
        const body = method === "GET" ? {} : await readJson(req);
        const result = await route.handler(sim, params, body, url.searchParams);
        return send(res, route.status?.(result) ?? 200, result);
      }
      throw pathMatched
        ? new SimError(405, "method_not_allowed", `${method} is not allowed on ${url.pathname}`)
        : new SimError(404, "not_found", `no route ${method} ${url.pathname}`);
    } catch (err) {
      const { status, code, message } = httpStatusOf(err);
      // Failures worth an operator's look; refusals (4xx, 501, 503) are the API working as documented.
      if (status === 500 || status === 502 || status === 504) this.log.warn("control API request failed", { method, path: url.pathname, status, code, error: message });
      else this.log.debug("control API request refused", { method, path: url.pathname, status, code });
      if (!res.headersSent) send(res, status, { error: code, message });
      else res.end();
    }
  }

  private serveMedia(sim: Simulator, sha256: string, method: string, res: http.ServerResponse): void {
    const media = sim.mediaFile(sha256);
    if (!media) return send(res, 404, { error: "not_found", message: "no such media" });
    res.writeHead(200, { "content-type": media.mimetype, "content-length": String(media.size), "cache-control": "public, max-age=31536000, immutable" });
    if (method === "HEAD") return void res.end();
    createReadStream(media.file).pipe(res);
  }
}
