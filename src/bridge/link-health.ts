import { Logger } from "../logging";

export type LinkState = "unknown" | "up" | "down";

/** What /health and the metrics report about one link (the homeserver, the network). */
export interface LinkSnapshot {
  state: LinkState;
  /** When the link entered this state (ms since epoch). */
  since: number;
  /** Outages since the bridge started. */
  outages: number;
  /** Why the link is down (or was, last time). */
  lastError?: string;
  /** Requests or messages that waited for the link in the current (or last) outage. */
  held: number;
}

/**
 * The state of one link the bridge depends on. An outage is logged once when it starts and
 * once when it ends, however many requests or messages ran into it: the per-request failures
 * below it are only counted ("held").
 */
export class LinkHealth {
  private state: LinkState = "unknown";
  private since = Date.now();
  private outages = 0;
  private lastError?: string;
  private held = 0;

  constructor(
    readonly name: string,
    private readonly log: Logger,
    /** What the bridge does meanwhile, for the log line ("messages wait until it is back"). */
    private readonly meanwhile: string,
  ) {}

  up(): void {
    if (this.state === "up") return;
    if (this.state === "down") {
      this.log.info(`${this.name} reachable again`, { downForMs: Date.now() - this.since, held: this.held });
    }
    this.state = "up";
    this.since = Date.now();
  }

  down(reason: string): void {
    this.lastError = reason;
    if (this.state === "down") return;
    this.outages++;
    this.held = 0;
    this.state = "down";
    this.since = Date.now();
    this.log.warn(`${this.name} unreachable; ${this.meanwhile}`, { reason });
  }

  /** One more request or message waited for the link. */
  noteHeld(): void {
    this.held++;
  }

  get isDown(): boolean {
    return this.state === "down";
  }

  snapshot(): LinkSnapshot {
    return { state: this.state, since: this.since, outages: this.outages, held: this.held, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }
}
