import { LinkHealth } from "../bridge/link-health";
import { getLogger } from "../logging";
import { Backoff, type BackoffPolicy, sleep } from "../util/backoff";
import { classifyHomeserverRequest, type HomeserverRequestCounter, type HomeserverRequestKind } from "./homeserver-requests";
import { type RequestCallback, type RequestFn, wrapMatrixRequests } from "./library-internals";

const log = getLogger("homeserver");

/** Errors after which the request certainly did not reach the homeserver: safe to repeat, whatever the method. */
const NOT_SENT = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
/** Errors after which the homeserver may or may not have acted: the caller decides (see AppserviceMatrixPort.send). */
const MAYBE_SENT = new Set(["ECONNRESET", "ETIMEDOUT", "ESOCKETTIMEDOUT", "EPIPE"]);

/** The Matrix errcode of an error answer's body (parsed or not), if it has one. */
export function errcodeOf(body: unknown): string | undefined {
  let parsed = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  const errcode = typeof parsed === "object" && parsed !== null ? (parsed as { errcode?: unknown }).errcode : undefined;
  return typeof errcode === "string" ? errcode : undefined;
}

/**
 * Whether an answer is a proxy's for a homeserver that is down (Synapse's own 5xx carry a
 * Matrix errcode). 504 counts only for requests that are harmless to repeat: the homeserver
 * may have acted on the request before the proxy gave up on it.
 */
export function isProxyRefusal(status: number, body: unknown, repeatable = false): boolean {
  return (status === 502 || status === 503 || (repeatable && status === 504)) && errcodeOf(body) === undefined;
}

/** A request made outside the matrix-bot-sdk found the homeserver down (see HomeserverLink.untilReachable). */
export class HomeserverUnreachable extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = "HomeserverUnreachable";
  }
}

/** Why a request failed without an answer from the homeserver, or undefined if it got one. */
function unreachableReason(err: unknown): string | undefined {
  if (err instanceof HomeserverUnreachable) return err.message;
  // fetch() puts the socket error under `cause`; http.request's errors carry the code themselves.
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  const code = typeof e?.code === "string" ? e.code : typeof e?.cause?.code === "string" ? e.cause.code : undefined;
  return code && (NOT_SENT.has(code) || MAYBE_SENT.has(code)) ? code : undefined;
}

/** Whether an error from a homeserver request leaves it open whether the homeserver acted on it. */
export function isAmbiguousFailure(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return typeof code === "string" && MAYBE_SENT.has(code);
}

/**
 * Every HTTP request the appservice library makes goes through the matrix-bot-sdk's request
 * function; this wraps it. A request that cannot reach the homeserver (refused, proxy 502/503)
 * is repeated until the homeserver answers: callers (a message for a Matrix room, say) just
 * wait (network events in the inbound queue, Matrix events in the journal). The outage is logged once.
 * Every request to the homeserver, here and through untilReachable, is counted once (each attempt
 * is a request), with the events it made the homeserver store (bridge_homeserver_*_total).
 */
export class HomeserverLink {
  readonly health = new LinkHealth("homeserver", log, "Matrix-bound messages wait until it is back");

  constructor(
    private readonly homeserverUrl: string,
    private readonly retry: BackoffPolicy = { initialMs: 500, maxMs: 10_000 },
    private readonly counter?: HomeserverRequestCounter,
  ) {}

  install(): void {
    wrapMatrixRequests((inner) => (params, callback) => this.attempt(inner, params, callback, new Backoff(this.retry)));
  }

  /** Whether a URL is the homeserver's (http://hs:80 is not http://hs:8008's). */
  private isHomeserver(url: string): boolean {
    return url.startsWith(this.homeserverUrl) && (url.length === this.homeserverUrl.length || "/?".includes(url[this.homeserverUrl.length]!));
  }

  /** One try of a request; `backoff` is the request's own (its attempts: the tries that found the homeserver down). */
  private attempt(inner: RequestFn, params: Parameters<RequestFn>[0], callback: RequestCallback, backoff: Backoff): unknown {
    const url = params.uri ?? params.url ?? "";
    if (!this.isHomeserver(String(url))) return inner(params, callback);
    const request = this.counter ? classifyHomeserverRequest(params.method ?? "GET", String(url), params.body) : undefined;
    if (request) this.counter!.homeserverRequest(request.kind);
    return inner(params, (err, res, body) => {
      // A proxy in front of a homeserver that is down answers 502/503 without a Matrix error;
      // Synapse's own 502s (a remote server or the appservice ping failed) carry an errcode.
      const proxyRefusal = !err && res && isProxyRefusal(res.statusCode, body);
      if ((err && err.code && NOT_SENT.has(err.code)) || proxyRefusal) {
        this.health.down(err ? `${err.code}` : `HTTP ${res!.statusCode}`);
        if (backoff.attempts === 0) this.health.noteHeld();
        const delay = backoff.next();
        log.debug("homeserver request waits for the homeserver", { method: params.method, inMs: delay });
        setTimeout(() => this.attempt(inner, params, callback, backoff), delay);
        return;
      }
      if (err && err.code && MAYBE_SENT.has(err.code)) this.health.down(err.code);
      else if (res) this.health.up();
      if (request && !err && res && res.statusCode >= 200 && res.statusCode < 300) for (const e of request.events) this.counter!.homeserverEvents(e.type, e.count);
      callback(err, res, body);
    });
  }

  /**
   * The same for a request made outside the matrix-bot-sdk (media streams), which must be
   * harmless to repeat: while it cannot reach the homeserver (a socket error, or `attempt`
   * throws HomeserverUnreachable for a proxy's refusal) it is repeated, and it counts in the
   * outage. An answer marks the homeserver reachable; it and any other error are the caller's.
   * Each attempt counts as one request of `kind`.
   */
  async untilReachable<T>(what: string, attempt: () => Promise<T>, kind: HomeserverRequestKind = "media"): Promise<T> {
    const backoff = new Backoff(this.retry);
    for (;;) {
      this.counter?.homeserverRequest(kind);
      try {
        const result = await attempt();
        this.health.up();
        return result;
      } catch (err) {
        const reason = unreachableReason(err);
        if (!reason) throw err;
        this.health.down(reason);
        if (backoff.attempts === 0) this.health.noteHeld();
        const delay = backoff.next();
        log.debug("homeserver request waits for the homeserver", { what, inMs: delay });
        await sleep(delay);
      }
    }
  }
}
