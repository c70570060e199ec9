/**
 * Where the benchmark sees messages arrive, and when: a Matrix user's /sync (a real client of
 * the client-server API, like Element's) and a simulated WhatsApp user's inbox (the simulator's
 * long-poll). Every benchmark message carries a tag "<run> <n>" as its whole text; arrival
 * times are performance.now() in this process, the same clock the senders start from.
 */
import { setMaxListeners } from "node:events";
import { performance } from "node:perf_hooks";
import { SimApi } from "../test/support/sim-api";
import { withOwnSignal } from "../test/support/own-signal";

/** The tag a benchmark message carries as its whole text. */
export function tagOf(run: string, n: number): string {
  return `${run} ${n}`;
}

function parseTag(text: unknown): { run: string; n: number } | undefined {
  if (typeof text !== "string") return undefined;
  const m = /^(\S+) (\d+)$/.exec(text);
  return m ? { run: m[1], n: Number(m[2]) } : undefined;
}

/** Arrival times of tagged messages, by run, with waiting for a count or for one message. */
export class Arrivals {
  private readonly byRun = new Map<string, Map<number, number>>();
  private readonly waiters = new Set<() => void>();

  record(text: unknown, at: number): void {
    const tag = parseTag(text);
    if (!tag) return;
    let run = this.byRun.get(tag.run);
    if (!run) this.byRun.set(tag.run, (run = new Map()));
    // The first sighting counts: a redelivered copy is not a new arrival.
    if (!run.has(tag.n)) run.set(tag.n, at);
    for (const wake of [...this.waiters]) wake();
  }

  count(run: string): number {
    return this.byRun.get(run)?.size ?? 0;
  }

  arrivals(run: string): Map<number, number> {
    return this.byRun.get(run) ?? new Map();
  }

  /** Resolves with the arrival time once `check` holds; rejects after timeoutMs saying what was seen. */
  waitUntil<T>(find: () => T | undefined, timeoutMs: number, what: () => string): Promise<T> {
    return new Promise((resolve, reject) => {
      const wake = () => {
        const found = find();
        if (found === undefined) return;
        clearTimeout(timer);
        this.waiters.delete(wake);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(wake);
        reject(new Error(`timed out after ${timeoutMs} ms: ${what()}`));
      }, timeoutMs);
      this.waiters.add(wake);
      wake();
    });
  }

  waitForCount(run: string, n: number, timeoutMs: number): Promise<number> {
    return this.waitUntil(
      () => (this.count(run) >= n ? Math.max(...this.arrivals(run).values()) : undefined),
      timeoutMs,
      () => `${this.count(run)} of ${n} "${run}" messages arrived`,
    );
  }

  waitForOne(run: string, n: number, timeoutMs: number): Promise<number> {
    return this.waitUntil(
      () => this.byRun.get(run)?.get(n),
      timeoutMs,
      () => `"${tagOf(run, n)}" did not arrive`,
    );
  }
}

interface SyncResponse {
  next_batch: string;
  rooms?: { join?: Record<string, { timeline?: { events?: Array<{ type: string; content?: { body?: unknown } }>; limited?: boolean } }> };
}

/**
 * Reads one Matrix user's /sync and logs when tagged messages appear. It asks only for message
 * events (up to 1,000 per room per sync, so a burst never leaves a gap) and no state, presence
 * or account data, to cost the homeserver and this process as little as a client can.
 */
export class MatrixReader {
  private abort = new AbortController();
  private loop?: Promise<void>;
  /** Syncs whose timeline had a gap: messages may have been skipped and the count is unsafe. */
  gaps = 0;
  lastError?: string;

  constructor(
    private readonly baseUrl: string,
    private readonly accessToken: string,
    private readonly log: Arrivals,
  ) {}

  private static readonly FILTER = JSON.stringify({
    presence: { types: [] },
    account_data: { types: [] },
    room: {
      timeline: { limit: 1000, types: ["m.room.message"] },
      state: { types: [] },
      ephemeral: { types: [] },
      account_data: { types: [] },
    },
  });

  /** Starts from "now": what was sent before is not logged. */
  async start(): Promise<void> {
    const first = await this.sync(undefined, 0);
    this.loop = this.run(first.next_batch);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(since: string): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        const res = await this.sync(since, 30_000);
        const at = performance.now();
        for (const room of Object.values(res.rooms?.join ?? {})) {
          if (room.timeline?.limited) this.gaps++;
          for (const event of room.timeline?.events ?? []) this.log.record(event.content?.body, at);
        }
        since = res.next_batch;
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.lastError = (err as Error).message;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private async sync(since: string | undefined, timeout: number): Promise<SyncResponse> {
    const params = new URLSearchParams({ timeout: String(timeout), filter: MatrixReader.FILTER, set_presence: "offline" });
    if (since) params.set("since", since);
    return withOwnSignal(this.abort.signal, async (signal) => {
      const res = await fetch(`${this.baseUrl}/_matrix/client/v3/sync?${params}`, { headers: { authorization: `Bearer ${this.accessToken}` }, signal });
      if (!res.ok) throw new Error(`/sync → ${res.status} ${await res.text()}`);
      return (await res.json()) as SyncResponse;
    });
  }
}

/** Long-polls the inboxes of simulated WhatsApp users and logs when tagged texts arrive. */
export class SimReader {
  private abort = new AbortController();
  private loops: Promise<void>[] = [];
  lastError?: string;

  constructor(
    private readonly sim: SimApi,
    private readonly log: Arrivals,
  ) {
    // One listener per watched user's long poll at a time (withOwnSignal), 100 in a full run.
    setMaxListeners(0, this.abort.signal);
  }

  /** Starts watching these users from their current inbox position. */
  async watch(phones: readonly string[]): Promise<void> {
    for (const phone of phones) {
      const entries = await this.sim.inbox(phone);
      const after = entries.reduce((max, e) => Math.max(max, e.n), 0);
      this.loops.push(this.run(phone, after));
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await Promise.all(this.loops);
  }

  private async run(phone: string, after: number): Promise<void> {
    while (!this.abort.signal.aborted) {
      try {
        const url = `${this.sim.url}/users/${encodeURIComponent(phone)}/inbox/wait?after=${after}&timeoutMs=20000`;
        const entries = await withOwnSignal(this.abort.signal, async (signal) => {
          const res = await fetch(url, { signal });
          if (!res.ok) throw new Error(`inbox/wait → ${res.status} ${await res.text()}`);
          return (await res.json()) as Array<{ n: number; kind: string; text?: string }>;
        });
        const at = performance.now();
        for (const e of entries) {
          after = Math.max(after, e.n);
          if (e.kind === "text") this.log.record(e.text, at);
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.lastError = (err as Error).message;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }
}
