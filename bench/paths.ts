/**
 * The five ways a message travels in the benchmark, and the two measurements made on them:
 * throughput (many messages at once, until the last one arrived) and latency (one message at a
 * time, send → arrival). Bridged and direct paths of a direction end at the same reader, so
 * their difference is what the bridge adds; the fifth, Matrix → the probe appservice, is
 * Synapse's own part of the bridged Matrix → WhatsApp path.
 */
import { performance } from "node:perf_hooks";
import { Stack } from "../test/support/stack";
import { Arrivals, tagOf } from "./arrivals";
import { Chat, Scenario, userUriOf } from "./scenario";

export interface Path {
  name: string;
  send(chat: Chat, text: string): Promise<unknown>;
  arrivals: Arrivals;
}

export interface Paths {
  remoteToMatrix: { bridged: Path; direct: Path };
  matrixToRemote: { bridged: Path; direct: Path; synapseAlone: Path };
}

export function pathsOf(stack: Stack, s: Scenario): Paths {
  return {
    remoteToMatrix: {
      // A WhatsApp user writes; simulator → gateway → bridge → Synapse → the Matrix user's sync.
      bridged: { name: "WhatsApp → bridge → Matrix", arrivals: s.atMatrix, send: (c, text) => stack.sim.sendText(c.phone, userUriOf(c.receiver.userId), text) },
      // A Matrix user writes to the same Matrix user; Synapse → sync.
      direct: { name: "Matrix → Matrix", arrivals: s.atMatrix, send: (c, text) => s.directSender.sendText(c.directRoomId, text) },
    },
    matrixToRemote: {
      // The Matrix user writes in the portal; Synapse → bridge → gateway → simulator inbox.
      bridged: { name: "Matrix → bridge → WhatsApp", arrivals: s.atWhatsApp, send: (c, text) => c.receiver.sendText(c.portalRoomId, text) },
      // Another WhatsApp user writes to the same WhatsApp user; simulator → gateway → simulator inbox.
      direct: { name: "WhatsApp → WhatsApp", arrivals: s.atWhatsApp, send: (c, text) => stack.sim.sendText(c.peerPhone, c.phone, text) },
      // The same Matrix user writes to a user of the probe appservice; Synapse → the probe's transaction.
      synapseAlone: { name: "Matrix → appservice (Synapse alone)", arrivals: s.atAppservice, send: (c, text) => c.receiver.sendText(c.probeRoomId, text) },
    },
  };
}

let runCounter = 0;
function runName(label: string): string {
  return `${label}-${process.pid}-${++runCounter}`;
}

export interface ThroughputResult {
  messages: number;
  /** First send started → last message arrived. */
  ms: number;
  perSecond: number;
  /** First send started → last send accepted (by Synapse or the gateway, whichever the sender talks to). */
  sendMs: number;
}

/**
 * Every chat sends `perChat` messages one after the other, all chats at once, like many people
 * typing; the clock runs from the first send to the arrival of the last message.
 */
export async function throughput(path: Path, chats: readonly Chat[], perChat: number, timeoutMs: number): Promise<ThroughputResult> {
  const run = runName("tp");
  const total = chats.length * perChat;
  const started = performance.now();
  let sendError: Error | undefined;
  const sending = Promise.all(
    chats.map(async (chat, c) => {
      for (let k = 0; k < perChat && !sendError; k++) await path.send(chat, tagOf(run, c * perChat + k));
    }),
  ).then(
    () => performance.now(),
    (err: Error) => {
      sendError = err;
      return 0;
    },
  );
  const allArrived = path.arrivals.waitForCount(run, total, timeoutMs);
  allArrived.catch(() => undefined);
  const last = await Promise.race([
    allArrived,
    sending.then(() => {
      if (sendError) throw new Error(`${path.name}: a send failed: ${sendError.message}`);
      return new Promise<never>(() => undefined);
    }),
  ]);
  const sent = await sending;
  const ms = last - started;
  return { messages: total, ms, perSecond: (total * 1000) / ms, sendMs: sent - started };
}

/**
 * The order of n paths in latency sample k: a Williams design (with its mirror for odd n), so
 * that over 2n samples (n when even) every path runs first equally often and follows every
 * other path equally often. A path right after a bridged one shares the homeserver with what
 * the bridge does once a message is through (a delivery status, receipts): with a plain
 * rotation the same path always came next and paid for it alone.
 */
export function latencyOrder(n: number, k: number): number[] {
  if (!(Number.isInteger(n) && n > 0)) throw new RangeError(`latencyOrder needs a positive number of paths, got ${n}`);
  // 0, 1, n−1, 2, n−2, …: each difference between neighbours occurs once.
  const first = Array.from({ length: n }, (_, j) => (j === 0 ? 0 : j % 2 === 1 ? (j + 1) / 2 : n - j / 2));
  const rows = n % 2 === 0 ? n : 2 * n;
  const row = k % rows;
  const order = first.map((p) => (p + (row % n)) % n);
  return row < n ? order : order.reverse();
}

export interface LatencySample {
  path: string;
  sample: number;
  /** The path measured just before (none for the very first message). */
  after: string | null;
  ms: number;
}

/**
 * Latency samples of several paths, taken one message at a time and interleaved (latencyOrder,
 * on rotating chats), so that load from outside the benchmark falls on all paths alike.
 */
export async function latencies(paths: readonly Path[], chats: readonly Chat[], samples: number, timeoutMs: number, onSample?: (s: LatencySample) => void): Promise<number[][]> {
  const results: number[][] = paths.map(() => []);
  const runs = paths.map(() => runName("lat"));
  let previous: string | null = null;
  for (let k = 0; k < samples; k++) {
    const chat = chats[k % chats.length];
    for (const p of latencyOrder(paths.length, k)) {
      const started = performance.now();
      await paths[p].send(chat, tagOf(runs[p], k));
      const arrived = await paths[p].arrivals.waitForOne(runs[p], k, timeoutMs);
      results[p].push(arrived - started);
      onSample?.({ path: paths[p].name, sample: k, after: previous, ms: arrived - started });
      previous = paths[p].name;
    }
  }
  return results;
}

/**
 * The order the paths of a direction run in round r: direct first, then any others in the
 * order given, bridged last; every other round the reverse (direct, bridged, bridged, direct, …
 * with two paths), so that each path sits as often early as late in a round pair.
 */
export function roundOrder<K extends string>(names: readonly K[], r: number): K[] {
  const middle = names.filter((n) => n !== "direct" && n !== "bridged");
  const order = [...names.filter((n) => n === "direct"), ...middle, ...names.filter((n) => n === "bridged")];
  return r % 2 === 0 ? order : order.reverse();
}

/**
 * Throughput of a direction's paths (direct, bridged, and any others such as Synapse alone), in
 * `rounds` alternating rounds (roundOrder) so that a change of load on the machine during the
 * run falls on all alike; each path's throughput is all its messages over all its time.
 */
export async function compareThroughput<K extends string>(
  paths: Record<K | "direct" | "bridged", Path>,
  chats: readonly Chat[],
  perChat: number,
  rounds: number,
  timeoutMs: number,
  /** CPU ms the bridge process has used so far; summed over the bridged rounds. */
  bridgeCpuMs: () => number,
): Promise<Record<K | "direct" | "bridged", ThroughputResult> & { bridgeCpuMs: number }> {
  type Name = K | "direct" | "bridged";
  const names = Object.keys(paths) as Name[];
  const totals = Object.fromEntries(names.map((n) => [n, { messages: 0, ms: 0, sendMs: 0 }])) as Record<Name, { messages: number; ms: number; sendMs: number }>;
  let cpu = 0;
  for (let r = 0; r < rounds; r++) {
    // Spread perChat over the rounds: the first rounds take the remainder.
    const count = Math.floor(perChat / rounds) + (r < perChat % rounds ? 1 : 0);
    for (const which of roundOrder(names, r)) {
      const cpuBefore = bridgeCpuMs();
      const result = await throughput(paths[which], chats, count, timeoutMs);
      if (which === "bridged") cpu += bridgeCpuMs() - cpuBefore;
      totals[which].messages += result.messages;
      totals[which].ms += result.ms;
      totals[which].sendMs += result.sendMs;
    }
  }
  const asResult = (t: { messages: number; ms: number; sendMs: number }): ThroughputResult => ({ ...t, perSecond: (t.messages * 1000) / t.ms });
  const results = Object.fromEntries(names.map((n) => [n, asResult(totals[n])])) as Record<Name, ThroughputResult>;
  return { ...results, bridgeCpuMs: cpu };
}
