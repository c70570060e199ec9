import { getRequestFn, setRequestFn } from "@vector-im/matrix-bot-sdk";
import { LinkHealth } from "../bridge/link-health";
import { getLogger } from "../logging";

const log = getLogger("homeserver");

/** Errors after which the request certainly did not reach the homeserver: safe to repeat, whatever the method. */
const NOT_SENT = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
/** Errors after which the homeserver may or may not have acted: the caller decides (see AppserviceMatrixPort.send). */
const MAYBE_SENT = new Set(["ECONNRESET", "ETIMEDOUT", "ESOCKETTIMEDOUT", "EPIPE"]);

type RequestCallback = (err: (Error & { code?: string }) | null, res?: { statusCode: number }, body?: unknown) => void;
type RequestFn = (params: { uri?: string; url?: string; method?: string }, callback: RequestCallback) => unknown;

function hasErrcode(body: unknown): boolean {
  let parsed = body;
  if (typeof body === "string") {
    try {
      parsed = JSON.parse(body);
    } catch {
      return false;
    }
  }
  return typeof parsed === "object" && parsed !== null && typeof (parsed as { errcode?: unknown }).errcode === "string";
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
 */
export class HomeserverLink {
  readonly health = new LinkHealth("homeserver", log, "Matrix-bound messages wait until it is back");

  constructor(
    private readonly homeserverUrl: string,
    private readonly retry = { initialMs: 500, maxMs: 10_000 },
  ) {}

  install(): void {
    const inner = getRequestFn() as unknown as RequestFn;
    const wrapped: RequestFn = (params, callback) => this.attempt(inner, params, callback, this.retry.initialMs, false);
    setRequestFn(wrapped);
  }

  private attempt(inner: RequestFn, params: Parameters<RequestFn>[0], callback: RequestCallback, delay: number, waited: boolean): unknown {
    const url = params.uri ?? params.url ?? "";
    if (!String(url).startsWith(this.homeserverUrl)) return inner(params, callback);
    return inner(params, (err, res, body) => {
      // A proxy in front of a homeserver that is down answers 502/503 without a Matrix error;
      // Synapse's own 502s (a remote server or the appservice ping failed) carry an errcode.
      const proxyRefusal = !err && res && (res.statusCode === 502 || res.statusCode === 503) && !hasErrcode(body);
      if ((err && err.code && NOT_SENT.has(err.code)) || proxyRefusal) {
        this.health.down(err ? `${err.code}` : `HTTP ${res!.statusCode}`);
        if (!waited) this.health.noteHeld();
        log.debug("homeserver request waits for the homeserver", { method: params.method, inMs: delay });
        setTimeout(() => this.attempt(inner, params, callback, Math.min(delay * 2, this.retry.maxMs), true), delay);
        return;
      }
      if (err && err.code && MAYBE_SENT.has(err.code)) this.health.down(err.code);
      else if (res) this.health.up();
      callback(err, res, body);
    });
  }
}
