/**
 * The probe appservice: a second appservice registration, served by a tiny HTTP server in the
 * benchmark process, that does nothing but note when Synapse pushes each tagged message to it.
 * A Matrix user writing into a room with one of its users measures Synapse's own part of the
 * bridged Matrix → WhatsApp path (accept the send, push it in an appservice transaction), with
 * an appservice that answers at once.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { createServer, IncomingMessage, Server, ServerResponse } from "node:http";
import { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import YAML from "yaml";
import { Arrivals } from "./arrivals";

/** Localparts of the probe's users: its exclusive namespace, clear of the bridge's and the tests' users. */
export const PROBE_LOCALPART_PREFIX = "benchprobe_";

/** The pieces of a transaction body the probe reads (Application Service API, PUT /transactions). */
interface TransactionBody {
  events?: Array<{ type?: unknown; content?: { body?: unknown } }>;
}

export class ProbeAppservice {
  /** Arrival of each tagged m.room.message, when its transaction's body had been read. */
  readonly arrivals = new Arrivals();
  /** Transactions answered with 200, and requests refused for a missing or wrong hs_token. */
  transactions = 0;
  refused = 0;
  readonly asToken = randomBytes(32).toString("hex");
  private readonly hsToken = randomBytes(32).toString("hex");

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  /** Starts the HTTP server on a free loopback port. */
  static async start(): Promise<ProbeAppservice> {
    let probe: ProbeAppservice | undefined;
    const server = createServer((req, res) => probe!.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    probe = new ProbeAppservice(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return probe;
  }

  /** Writes the registration file Synapse loads next to the bridge's (Stack's extraRegistrations). */
  writeRegistration(file: string): string {
    const registration = {
      id: "benchprobe",
      url: this.url,
      as_token: this.asToken,
      hs_token: this.hsToken,
      sender_localpart: "benchprobe",
      // Anchored like the bridge's: homeservers match from the start only.
      namespaces: { users: [{ exclusive: true, regex: `^@${PROBE_LOCALPART_PREFIX}.*$` }], aliases: [], rooms: [] },
      // Its users only join rooms; unlimited like the bridge's, so the two appservices are treated alike.
      rate_limited: false,
    };
    writeFileSync(file, YAML.stringify(registration));
    return file;
  }

  /**
   * Makes a user of the probe's namespace (POST /register, m.login.application_service) and
   * returns its id; an existing user is fine.
   */
  async registerUser(homeserverUrl: string, localpart: string, serverName: string): Promise<string> {
    const res = await fetch(`${homeserverUrl}/_matrix/client/v3/register`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.asToken}`, "content-type": "application/json" },
      body: JSON.stringify({ type: "m.login.application_service", username: localpart, inhibit_login: true }),
    });
    const body = (await res.json().catch(() => ({}))) as { user_id?: string; errcode?: string; error?: string };
    if (res.ok && body.user_id) return body.user_id;
    if (body.errcode === "M_USER_IN_USE") return `@${localpart}:${serverName}`;
    throw new Error(`probe appservice: registering ${localpart} → ${res.status} ${body.errcode ?? ""} ${body.error ?? ""} (is its registration loaded by the homeserver?)`);
  }

  /** Joins a room the user was invited to, as that user (identity assertion with user_id). */
  async join(homeserverUrl: string, userId: string, roomId: string): Promise<void> {
    const res = await fetch(`${homeserverUrl}/_matrix/client/v3/join/${encodeURIComponent(roomId)}?user_id=${encodeURIComponent(userId)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.asToken}`, "content-type": "application/json" },
      body: "{}",
    });
    if (!res.ok) throw new Error(`probe appservice: ${userId} joining ${roomId} → ${res.status} ${await res.text()}`);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const answer = (status: number, body: Record<string, unknown>) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    const url = new URL(req.url ?? "/", this.url);
    // The spec's codes: 401 without a token, 403 with a wrong one (Authorization header, or the legacy query parameter).
    const header = req.headers.authorization;
    const token = header?.startsWith("Bearer ") ? header.slice("Bearer ".length) : (url.searchParams.get("access_token") ?? undefined);
    if (token !== this.hsToken) {
      this.refused++;
      req.resume();
      answer(
        token === undefined ? 401 : 403,
        token === undefined ? { errcode: "M_UNAUTHORIZED", error: "no homeserver token" } : { errcode: "M_FORBIDDEN", error: "wrong homeserver token" },
      );
      return;
    }
    const isTransaction = /^\/_matrix\/app\/v1\/transactions\/[^/]+$/.test(url.pathname);
    if (req.method === "PUT" && isTransaction) {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const at = performance.now();
        let body: TransactionBody;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as TransactionBody;
        } catch {
          answer(400, { errcode: "M_NOT_JSON", error: "the body is not JSON" });
          return;
        }
        for (const event of Array.isArray(body.events) ? body.events : []) {
          if (event?.type === "m.room.message") this.arrivals.record(event.content?.body, at);
        }
        this.transactions++;
        answer(200, {});
      });
      return;
    }
    req.resume();
    if (req.method === "POST" && url.pathname === "/_matrix/app/v1/ping") answer(200, {});
    // It creates no users or aliases on demand.
    else if (req.method === "GET" && /^\/_matrix\/app\/v1\/(users|rooms)\//.test(url.pathname)) answer(404, { errcode: "M_NOT_FOUND", error: "not here" });
    else if (isTransaction) answer(405, { errcode: "M_UNRECOGNIZED", error: "transactions are PUT" });
    else answer(404, { errcode: "M_UNRECOGNIZED", error: "unknown endpoint" });
  }
}
