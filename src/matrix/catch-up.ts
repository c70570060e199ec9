import { getLogger } from "../logging";

const log = getLogger("appservice");

/** How long after a start a transaction holding events older than the start still shows a homeserver recovering from the bridge's absence. */
const BACKLOG_SIGN_MS = 10 * 60_000;
/** An event pushed this long after the homeserver got it was held back (pushes take milliseconds). */
const HELD_MS = 10_000;

/** A Matrix event as the client-server API and appservice transactions carry it (the fields read here). */
export type RawEvent = Record<string, unknown>;

export interface CatchUpOptions {
  /** The journal's memory of events it holds (handled or not). */
  journal: { known(keys: string[]): Set<string>; roomsSince(since: number): string[] };
  /** Rooms of portals with bridged messages since `since`, the most recent first. */
  activeRooms(since: number): string[];
  /** The room's newest events, oldest first (with room_id), read as one of our users in it; null when none of them can read it. */
  recentEvents(roomId: string, limit: number): Promise<RawEvent[] | null>;
  /** The bridge's own users (bot and ghosts): their non-state events are never journaled. */
  isOwnUser(mxid: string): boolean;
  /** Journals events found missing, after what is journaled already and before anything else. */
  journalMissed(events: RawEvent[]): Promise<number>;
  /** How long after the bridge starts (or sees a transaction resent) transactions are checked. */
  windowMs?: number;
  /** Transactions paused this long inside the window: the rooms are swept. */
  pauseMs?: number;
  /** Events older than this before the window opened are never taken from a timeline (the homeserver's own retries deliver those). */
  lookbackMs?: number;
  /** Events read per room. */
  pageSize?: number;
  /** Rooms swept at most. */
  maxSweepRooms?: number;
  now?: () => number;
}

/**
 * Finds Matrix events the homeserver never pushed. Synapse (seen with 1.160) can strand an
 * appservice transaction: while it is recovering from an appservice that did not answer, an event
 * arriving just as its recoverer finds nothing left to resend is stored in a transaction that no
 * one sends until the next outage (scheduler.py: `send` reads the state DOWN, the recoverer then
 * marks it UP). Bridge restarts are such outages. So for a while after the homeserver shows that it
 * is recovering (it resends a transaction, or pushes events it held back: sent before the bridge
 * started, or 10 s old or more; the recoverer sends the oldest first), each transaction's rooms are read
 * back to the last journaled event: what is missing is journaled before the transaction's own
 * events, in room order. When transactions pause, and when the window closes, the recently active
 * rooms are swept the same way, for an event whose room saw nothing after it.
 */
export class CatchUp {
  private readonly windowMs: number;
  private readonly pauseMs: number;
  private readonly lookbackMs: number;
  private readonly pageSize: number;
  private readonly maxSweepRooms: number;
  private readonly now: () => number;
  /** When this process began (made this object): events the homeserver held from before it show a recovery. */
  private readonly startedAt: number;
  private openUntil = 0;
  private openedAt = 0;
  private readonly seenTxns = new Set<string>();
  private pauseTimer?: NodeJS.Timeout;
  private closeTimer?: NodeJS.Timeout;
  private sweeping?: Promise<void>;
  private stopped = false;

  constructor(private readonly opts: CatchUpOptions) {
    this.windowMs = opts.windowMs ?? 120_000;
    this.pauseMs = opts.pauseMs ?? 3_000;
    this.lookbackMs = opts.lookbackMs ?? 15 * 60_000;
    this.pageSize = opts.pageSize ?? 50;
    this.maxSweepRooms = opts.maxSweepRooms ?? 500;
    this.now = opts.now ?? Date.now;
    this.startedAt = this.now();
  }

  get active(): boolean {
    return !this.stopped && this.now() < this.openUntil;
  }

  /** Opens (or extends) the window. */
  open(reason: string): void {
    if (this.stopped) return;
    if (!this.active) {
      this.openedAt = this.now();
      log.debug("checking transactions for events the homeserver did not push", { reason, seconds: this.windowMs / 1000 });
    }
    this.openUntil = this.now() + this.windowMs;
    clearTimeout(this.closeTimer);
    this.closeTimer = setTimeout(() => void this.sweep("window closed"), this.windowMs);
    this.closeTimer.unref();
    this.armPause();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.pauseTimer);
    clearTimeout(this.closeTimer);
  }

  /** Resolves when a sweep under way has finished. */
  async idle(): Promise<void> {
    await this.sweeping;
  }

  /**
   * Events of the rooms of this transaction's timeline that precede its own, were never journaled
   * and are not the bridge's echo; empty outside the window. Oldest first, room after room.
   */
  async missedBefore(txnId: string, events: RawEvent[]): Promise<RawEvent[]> {
    if (this.seenTxns.has(txnId)) this.open("the homeserver resent a transaction");
    else if (events.some((e) => this.heldByHomeserver(e))) this.open("the homeserver is sending events it held back");
    this.seenTxns.add(txnId);
    if (this.seenTxns.size > 1000) this.seenTxns.delete(this.seenTxns.values().next().value as string);
    if (!this.active) return [];
    this.armPause();
    const firstInRoom = new Map<string, string>();
    for (const event of events) {
      // Only what the bridge acts on must keep its room's order (the echo of its own sends is ignored anyway).
      if (this.isEcho(event)) continue;
      if (typeof event.room_id === "string" && typeof event.event_id === "string" && !firstInRoom.has(event.room_id)) firstInRoom.set(event.room_id, event.event_id);
    }
    const inTxn = new Set(events.map((e) => e.event_id));
    const found: RawEvent[] = [];
    for (const [roomId, eventId] of firstInRoom) {
      const timeline = await this.read(roomId);
      const at = timeline.findIndex((e) => e.event_id === eventId);
      if (at < 0) continue;
      found.push(...this.unjournaledTail(timeline.slice(0, at).filter((e) => !inTxn.has(e.event_id))));
    }
    if (found.length > 0)
      log.warn("the homeserver had not pushed some events; taken from the room timelines", { events: found.length, rooms: new Set(found.map((e) => e.room_id)).size });
    return found;
  }

  /** Reads the recently active rooms and journals what they hold that was never pushed. */
  sweep(reason: string): Promise<void> {
    if (this.stopped || this.sweeping) return this.sweeping ?? Promise.resolve();
    this.sweeping = this.sweepRooms(reason)
      .catch((err: Error) => {
        log.error("could not sweep rooms for events the homeserver did not push", { reason, error: err.message });
      })
      .finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepRooms(reason: string): Promise<void> {
    const since = this.now() - 24 * 3600_000;
    const rooms = [...new Set([...this.opts.journal.roomsSince(since), ...this.opts.activeRooms(since)])].slice(0, this.maxSweepRooms);
    let journaled = 0;
    for (const roomId of rooms) {
      if (this.stopped) return;
      const missed = this.unjournaledTail(await this.read(roomId));
      if (missed.length === 0) continue;
      try {
        journaled += await this.opts.journalMissed(missed);
      } catch (err) {
        log.error("could not journal events found in a room's timeline", { room: roomId, error: (err as Error).message });
      }
    }
    if (journaled > 0) log.warn("the homeserver had not pushed some events; taken from the room timelines", { events: journaled, reason });
    else log.debug("swept rooms for events the homeserver did not push", { rooms: rooms.length, reason });
  }

  private async read(roomId: string): Promise<RawEvent[]> {
    try {
      return (await this.opts.recentEvents(roomId, this.pageSize)) ?? [];
    } catch (err) {
      log.debug("could not read a room's timeline", { room: roomId, error: (err as Error).message });
      return [];
    }
  }

  /**
   * The events at the end of `timeline` (oldest first) back to the last journaled one that are
   * neither journaled nor the bridge's echo, nor older than the window's lookback.
   */
  private unjournaledTail(timeline: RawEvent[]): RawEvent[] {
    const known = this.opts.journal.known(timeline.map((e) => String(e.event_id)));
    const floor = this.openedAt - this.lookbackMs;
    const tail: RawEvent[] = [];
    for (let i = timeline.length - 1; i >= 0; i--) {
      const event = timeline[i];
      if (known.has(String(event.event_id))) break;
      if (this.isEcho(event)) continue;
      const receivedAt = this.receivedAt(event);
      if (receivedAt === undefined || receivedAt < floor) break;
      tail.unshift(event);
    }
    return tail;
  }

  /**
   * Whether the homeserver held the event back instead of pushing it at once, as it does while it
   * counts the bridge as down: it waited at least HELD_MS (by its age as the homeserver counts it,
   * else by its timestamp), or, soon after a start, it was sent before the start.
   */
  private heldByHomeserver(event: RawEvent): boolean {
    const now = this.now();
    const sentAt = this.receivedAt(event) ?? now;
    return now - sentAt >= HELD_MS || (sentAt < this.startedAt && now - this.startedAt < BACKLOG_SIGN_MS);
  }

  /** When the homeserver got the event, on this clock: by its age as the homeserver counts it (no clock skew), else its timestamp. */
  private receivedAt(event: RawEvent): number | undefined {
    const unsigned = event.unsigned as { age?: unknown } | undefined;
    if (typeof unsigned?.age === "number") return this.now() - unsigned.age;
    return typeof event.origin_server_ts === "number" ? event.origin_server_ts : undefined;
  }

  /** A non-state event of the bridge's own users: never journaled. */
  private isEcho(event: RawEvent): boolean {
    return event.state_key === undefined && typeof event.sender === "string" && this.opts.isOwnUser(event.sender);
  }

  private armPause(): void {
    clearTimeout(this.pauseTimer);
    if (!this.active) return;
    this.pauseTimer = setTimeout(() => void this.sweep("transactions paused"), this.pauseMs);
    this.pauseTimer.unref();
  }
}
