import { createHash, timingSafeEqual } from "node:crypto";
import type { Request, Response } from "express";
import { AppService } from "matrix-appservice";
import { getLogger } from "../logging";
import type { JournalEntry, JournalKind } from "../store";
import type { JournalStore } from "../store/journal";
import { Backoff, type BackoffPolicy } from "../util/backoff";
import { KeyedQueue } from "../util/keyed-queue";
import { replaceAppServiceHandlers } from "./library-internals";

const log = getLogger("appservice");

export interface DurableAppServiceOptions {
  homeserverToken: string;
  journal: JournalStore;
  /** Largest request body accepted; larger ones are refused (413) before they are read. */
  maxBodyBytes: number;
  /**
   * Delays before a failed event is handled again; after `maxAttempts` failed tries it is given
   * up (logged). Always finite: an event that can never be handled must not block the ones behind it.
   */
  retry?: BackoffPolicy & { maxAttempts: number };
  /**
   * Users whose non-state events are the echo of what the bridge itself sent (its ghosts and
   * bot): nothing acts on them, so they are answered without being journaled or dispatched.
   */
  isOwnUser?: (mxid: string) => boolean;
  /** An event given up after its retries: the bridge reports it to its sender (status.ts report()). */
  onGaveUp?: (event: Record<string, unknown>) => void;
  /**
   * Events the homeserver should have pushed before a transaction's own but did not (catch-up.ts):
   * they are journaled first, in the same SQLite transaction.
   */
  missedBefore?: (txnId: string, events: Record<string, unknown>[]) => Promise<Record<string, unknown>[]>;
  /**
   * Reads what the transaction carries besides its events (to-device messages, device lists and
   * key counts for end-to-bridge encryption) before its events are journaled and it is answered;
   * a failure answers 500, so the homeserver resends it (none of that is journaled).
   */
  beforeJournal?: (body: Record<string, unknown>) => Promise<void>;
}

/** Four tries: the first, then after 1 s, 5 s and 25 s. */
const DEFAULT_RETRY = { initialMs: 1_000, maxMs: 30_000, factor: 5, maxAttempts: 4 };

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest();
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * matrix-appservice's AppService, made durable: a transaction's events are journaled in
 * SQLite (one SQLite transaction, de-duplicated by event id) before the homeserver gets its
 * 200, then handed to the bridge; entries not handled when the process died are replayed on
 * start. Homeserver-token checks compare digests in constant time. The library's own
 * transaction route and token check are replaced by these (see library-internals.ts).
 */
export class DurableAppService extends AppService {
  private readonly journal: JournalStore;
  private readonly tokenDigest: Buffer;
  private readonly retry: Backoff;
  private readonly isOwnUser?: (mxid: string) => boolean;
  private readonly onGaveUp?: (event: Record<string, unknown>) => void;
  private readonly missedBefore?: DurableAppServiceOptions["missedBefore"];
  private readonly beforeJournal?: DurableAppServiceOptions["beforeJournal"];
  /** Journal writes one at a time: a transaction's catch-up read and its append are not overtaken. */
  private readonly writes = new KeyedQueue();
  private dispatching = false;
  private pumping = false;
  /** Highest journal seq handed to the bridge in this process. */
  private dispatchedUpTo = 0;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  /** Path prefixes whose own error handler (added later) answers and counts body refusals. */
  private readonly refusalsHandledUnder: string[] = [];

  constructor(opts: DurableAppServiceOptions) {
    super({ homeserverToken: opts.homeserverToken, httpMaxSizeBytes: opts.maxBodyBytes });
    this.journal = opts.journal;
    this.tokenDigest = sha256(opts.homeserverToken);
    this.retry = new Backoff(opts.retry ?? DEFAULT_RETRY);
    this.isOwnUser = opts.isOwnUser;
    this.onGaveUp = opts.onGaveUp;
    this.missedBefore = opts.missedBefore;
    this.beforeJournal = opts.beforeJournal;
    // Body parser refusals as Matrix errors in one log line, not Express's HTML and stack trace.
    this.expressApp.use((err: { status?: number; type?: string; message?: string }, req: Request, res: Response, next: (err?: unknown) => void) => {
      if (res.headersSent || this.refusalsHandledUnder.some((prefix) => req.path.startsWith(prefix))) return next(err);
      const status = typeof err.status === "number" && err.status >= 400 && err.status < 500 ? err.status : 500;
      const errcode = status === 413 ? "M_TOO_LARGE" : err.type === "entity.parse.failed" ? "M_NOT_JSON" : status === 500 ? "M_UNKNOWN" : "M_BAD_JSON";
      log.warn("refused an HTTP request", { method: req.method, path: req.path, status, reason: err.type ?? err.message });
      res.status(status).json({ errcode, error: status === 413 ? `the body is larger than ${opts.maxBodyBytes} bytes` : (err.message ?? "bad request") });
    });
  }

  /** Leaves body refusals (unreadable JSON, too large) under `prefix` to an error handler registered there. */
  passBodyRefusalsUnder(prefix: string): void {
    this.refusalsHandledUnder.push(prefix);
  }

  /** Whether a request carries the homeserver token (Authorization: Bearer, or the legacy access_token query parameter). */
  hasHomeserverToken(req: Request): boolean {
    return this.providedToken(req) !== undefined && timingSafeEqual(sha256(this.providedToken(req)!), this.tokenDigest);
  }

  private providedToken(req: Request): string | undefined {
    const header = req.headers.authorization;
    if (header !== undefined) return typeof header === "string" && header.startsWith("Bearer ") ? header.slice("Bearer ".length) : undefined;
    const query = req.query.access_token;
    return typeof query === "string" ? query : undefined;
  }

  /** Answers 401/403 and returns true when the request lacks the homeserver token (the spec's codes). */
  refuseWithoutToken(req: Request, res: Response): boolean {
    if (this.hasHomeserverToken(req)) return false;
    if (this.providedToken(req) === undefined) res.status(401).json({ errcode: "M_UNAUTHORIZED", error: "No homeserver token supplied" });
    else res.status(403).json({ errcode: "M_FORBIDDEN", error: "Bad homeserver token supplied" });
    return true;
  }

  /** PUT /_matrix/app/v1/transactions/:txnId — journal, answer, then hand to the bridge. */
  handleTransaction(req: Request, res: Response): void {
    if (this.refuseWithoutToken(req, res)) return;
    const txnId = req.params.txnId;
    const body: unknown = req.body;
    const events = isObject(body) ? (body.events ?? []) : undefined;
    const ephemeral = isObject(body) ? (body["de.sorunome.msc2409.ephemeral"] ?? body.ephemeral ?? []) : undefined;
    if (!Array.isArray(events) || !Array.isArray(ephemeral)) {
      res.status(400).json({ errcode: "M_BAD_JSON", error: "a transaction is a JSON object whose events and ephemeral fields are arrays" });
      return;
    }
    const timeline: Record<string, unknown>[] = [];
    events.forEach((event: unknown, index) => {
      const problem = malformedEvent(event);
      if (problem) {
        // Nothing can be done with it; refusing the transaction would only make the homeserver resend it forever.
        log.warn("ignoring a malformed event in a homeserver transaction", { txnId, index, problem });
        return;
      }
      timeline.push(event as Record<string, unknown>);
    });
    const entries = this.entriesOf(timeline);
    ephemeral.forEach((event: unknown, index) => {
      if (!isObject(event) || typeof event.type !== "string") {
        log.warn("ignoring a malformed ephemeral event in a homeserver transaction", { txnId, index });
        return;
      }
      const json = JSON.stringify(event);
      // Ephemeral events have no id; a resent transaction repeats the same id, index and content.
      entries.push({ key: `ephemeral:${sha256(`${txnId}\n${index}\n${json}`).toString("hex")}`, kind: "ephemeral", body: json });
    });
    void this.writes
      .run("journal", async () => {
        if (this.beforeJournal) {
          try {
            await this.beforeJournal(body as Record<string, unknown>);
          } catch (err) {
            log.error("could not take in a homeserver transaction's encryption data; the homeserver will resend it", { txnId, error: (err as Error).message });
            res.status(500).json({ errcode: "M_UNKNOWN", error: "the bridge could not take in the transaction" });
            return;
          }
        }
        const missed = this.missedBefore
          ? await this.missedBefore(txnId, timeline).catch((err: Error) => {
              log.warn("could not look for events the homeserver did not push", { txnId, error: err.message });
              return [];
            })
          : [];
        const all = [...this.entriesOf(missed.filter((e) => malformedEvent(e) === null)), ...entries];
        let added: number;
        try {
          added = this.journal.append(all);
        } catch (err) {
          log.error("could not journal a homeserver transaction; the homeserver will resend it", { txnId, error: (err as Error).message });
          res.status(500).json({ errcode: "M_UNKNOWN", error: "the bridge could not store the transaction" });
          return;
        }
        res.status(200).json({});
        if (added < all.length) log.debug("transaction held events seen before", { txnId, repeated: all.length - added });
        this.pump();
      })
      .catch((err: Error) => {
        log.error("could not handle a homeserver transaction; the homeserver will resend it", { txnId, error: err.message });
        if (!res.headersSent) res.status(500).json({ errcode: "M_UNKNOWN", error: "the bridge could not store the transaction" });
      });
  }

  /** Journals events found in room timelines that the homeserver never pushed (catch-up.ts); returns how many were new. */
  journalMissed(events: Record<string, unknown>[]): Promise<number> {
    return this.writes.run("journal", () => {
      const added = this.journal.append(this.entriesOf(events.filter((e) => malformedEvent(e) === null)));
      this.pump();
      return Promise.resolve(added);
    });
  }

  /** Journal entries for well-formed timeline events, leaving out the echo of the bridge's own sends. */
  private entriesOf(events: Record<string, unknown>[]): { key: string; kind: JournalKind; body: string }[] {
    return events
      .filter((event) => !(event.state_key === undefined && this.isOwnUser?.(event.sender as string)))
      .map((event) => ({ key: event.event_id as string, kind: "event" as const, body: JSON.stringify(event) }));
  }

  /** Starts handing journaled events to the bridge: first those left from before a restart, in order. */
  startDispatching(): void {
    const backlog = this.journal.pendingCount();
    if (backlog > 0) log.info("replaying Matrix events received before the restart", { events: backlog });
    this.dispatching = true;
    this.pump();
  }

  stopDispatching(): void {
    this.dispatching = false;
    for (const timer of this.retryTimers) clearTimeout(timer);
    this.retryTimers.clear();
  }

  private pump(): void {
    if (!this.dispatching || this.pumping) return;
    this.pumping = true;
    try {
      for (let batch = this.journal.pending(this.dispatchedUpTo); batch.length > 0 && this.dispatching; batch = this.journal.pending(this.dispatchedUpTo)) {
        for (const entry of batch) {
          this.dispatchedUpTo = entry.seq;
          this.dispatch(entry);
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  /** Calls the bridge's listeners synchronously (they queue the event in order) and marks the entry done when they finish. */
  private dispatch(entry: JournalEntry): void {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(entry.body) as Record<string, unknown>;
    } catch {
      this.journal.markDone(entry.seq);
      return;
    }
    const outcomes = this.listeners(entry.kind).map(async (listener) => (listener as (e: unknown) => unknown)(event));
    Promise.all(outcomes).then(
      () => this.journal.markDone(entry.seq),
      (err: unknown) => this.onHandlerFailed(entry, event, err),
    );
  }

  private onHandlerFailed(entry: JournalEntry, event: Record<string, unknown>, err: unknown): void {
    if (!this.dispatching) return;
    const attempts = this.journal.recordAttempt(entry.seq);
    if (this.retry.exhaustedAt(attempts)) {
      log.error("giving up on a Matrix event after repeated failures", { eventId: event.event_id, type: event.type, attempts, error: (err as Error)?.message });
      this.journal.markDone(entry.seq);
      this.onGaveUp?.(event);
      return;
    }
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      if (this.dispatching) this.dispatch(entry);
    }, this.retry.delayFor(attempts));
    this.retryTimers.add(timer);
  }

  /** Forgets handled entries older than maxAgeMs (their ids only guard against late repeats). */
  prune(maxAgeMs: number): number {
    return this.journal.prune(Date.now() - maxAgeMs);
  }
}

/** Why a timeline event cannot be handled, or null when it has what every event must have. */
function malformedEvent(event: unknown): string | null {
  if (!isObject(event)) return "not an object";
  for (const field of ["event_id", "room_id", "sender", "type"] as const) {
    if (typeof event[field] !== "string" || (event[field] as string).length === 0) return `${field} is missing or not a string`;
  }
  if (!isObject(event.content)) return "content is missing or not an object";
  if (event.state_key !== undefined && typeof event.state_key !== "string") return "state_key is not a string";
  if (typeof event.origin_server_ts !== "number") return "origin_server_ts is missing or not a number";
  return null;
}

replaceAppServiceHandlers(DurableAppService, {
  onTransaction: DurableAppService.prototype.handleTransaction,
  isInvalidToken: DurableAppService.prototype.refuseWithoutToken,
});
