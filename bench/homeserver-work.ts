/**
 * What the bridge asked of the homeserver in a phase of the benchmark, from its own counters
 * (bridge_homeserver_requests_total{kind}, bridge_homeserver_events_total{type}): the difference
 * between two readings of /metrics, per bridged message. Pure functions, unit-tested
 * (test/unit/bench-stats.test.ts).
 */

/** A counter's samples by the value of its one label. */
export type CounterReading = Record<string, number>;

export interface HomeserverWork {
  requests: CounterReading;
  events: CounterReading;
}

/** Kinds of request that follow the users (typing, read receipts), not the messages: left out of the per-message request figure. */
export const PER_USER_KINDS: ReadonlySet<string> = new Set(["typing", "receipt"]);

/** The samples of counter `name` (no `_total` suffix added) in a Prometheus exposition, by the value of `label`. */
export function parseCounter(exposition: string, name: string, label: string): CounterReading {
  const reading: CounterReading = {};
  for (const line of exposition.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line.trim());
    if (!m || m[1] !== name) continue;
    const value = new RegExp(`(?:^|,)${label}="([^"]*)"`).exec(m[2] ?? "")?.[1] ?? "";
    reading[value] = (reading[value] ?? 0) + Number(m[3]);
  }
  return reading;
}

export function readHomeserverWork(exposition: string): HomeserverWork {
  return {
    requests: parseCounter(exposition, "bridge_homeserver_requests_total", "kind"),
    events: parseCounter(exposition, "bridge_homeserver_events_total", "type"),
  };
}

function delta(after: CounterReading, before: CounterReading): CounterReading {
  const out: CounterReading = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

export function homeserverWorkDelta(after: HomeserverWork, before: HomeserverWork): HomeserverWork {
  return { requests: delta(after.requests, before.requests), events: delta(after.events, before.events) };
}

const sum = (r: CounterReading, keep: (k: string) => boolean = () => true) => Object.entries(r).reduce((a, [k, v]) => a + (keep(k) ? v : 0), 0);

export interface PerMessage {
  /** Requests per message, typing and receipts aside. */
  requests: number;
  events: number;
  /** "send 200, query 2; typing 40, receipt 198 (left out)" and "m.room.message 200": what the figures are made of. */
  requestsNote: string;
  eventsNote: string;
}

/** The phase's work per bridged message, with what it is made of. */
export function perMessage(work: HomeserverWork, messages: number): PerMessage {
  const list = (r: CounterReading, keep: (k: string) => boolean) =>
    Object.entries(r)
      .filter(([k]) => keep(k))
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(", ");
  const counted = list(work.requests, (k) => !PER_USER_KINDS.has(k));
  const aside = list(work.requests, (k) => PER_USER_KINDS.has(k));
  return {
    requests: sum(work.requests, (k) => !PER_USER_KINDS.has(k)) / messages,
    events: sum(work.events) / messages,
    requestsNote: `${messages} messages: ${counted || "no requests"}${aside ? `; ${aside} (left out)` : ""}`,
    eventsNote: `${messages} messages: ${list(work.events, () => true) || "no events"}`,
  };
}

/** Whether two readings are the same (the bridge asked nothing in between). */
export function sameWork(a: HomeserverWork, b: HomeserverWork): boolean {
  const d = homeserverWorkDelta(a, b);
  return Object.keys(d.requests).length === 0 && Object.keys(d.events).length === 0;
}
