/**
 * The four ways a message travels in the benchmark, and the two measurements made on them:
 * throughput (many messages at once, until the last one arrived) and latency (one message at a
 * time, send → arrival). Bridged and direct paths of a direction end at the same reader, so
 * their difference is what the bridge adds.
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
  matrixToRemote: { bridged: Path; direct: Path };
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
 * Latency samples of several paths, taken one message at a time and interleaved (path A, B, A,
 * B, … on rotating chats), so that load from outside the benchmark falls on all paths alike.
 */
export async function latencies(paths: readonly Path[], chats: readonly Chat[], samples: number, timeoutMs: number): Promise<number[][]> {
  const results: number[][] = paths.map(() => []);
  const runs = paths.map(() => runName("lat"));
  for (let k = 0; k < samples; k++) {
    const chat = chats[k % chats.length];
    for (let j = 0; j < paths.length; j++) {
      // Rotate which path goes first, so none always follows the same neighbour.
      const p = (j + k) % paths.length;
      const started = performance.now();
      await paths[p].send(chat, tagOf(runs[p], k));
      const arrived = await paths[p].arrivals.waitForOne(runs[p], k, timeoutMs);
      results[p].push(arrived - started);
    }
  }
  return results;
}

/**
 * Direct and bridged throughput of one direction, in `rounds` alternating rounds (direct,
 * bridged, bridged, direct, …) so that a change of load on the machine during the run falls on
 * both alike; each path's throughput is all its messages over all its time.
 */
export async function compareThroughput(
  pair: { direct: Path; bridged: Path },
  chats: readonly Chat[],
  perChat: number,
  rounds: number,
  timeoutMs: number,
  /** CPU ms the bridge process has used so far; summed over the bridged rounds. */
  bridgeCpuMs: () => number,
): Promise<{ direct: ThroughputResult; bridged: ThroughputResult; bridgeCpuMs: number }> {
  const totals = { direct: { messages: 0, ms: 0, sendMs: 0 }, bridged: { messages: 0, ms: 0, sendMs: 0 } };
  let cpu = 0;
  for (let r = 0; r < rounds; r++) {
    // Spread perChat over the rounds: the first rounds take the remainder.
    const count = Math.floor(perChat / rounds) + (r < perChat % rounds ? 1 : 0);
    const order: Array<"direct" | "bridged"> = r % 2 === 0 ? ["direct", "bridged"] : ["bridged", "direct"];
    for (const which of order) {
      const cpuBefore = bridgeCpuMs();
      const result = await throughput(pair[which], chats, count, timeoutMs);
      if (which === "bridged") cpu += bridgeCpuMs() - cpuBefore;
      totals[which].messages += result.messages;
      totals[which].ms += result.ms;
      totals[which].sendMs += result.sendMs;
    }
  }
  const asResult = (t: { messages: number; ms: number; sendMs: number }): ThroughputResult => ({ ...t, perSecond: (t.messages * 1000) / t.ms });
  return { direct: asResult(totals.direct), bridged: asResult(totals.bridged), bridgeCpuMs: cpu };
}
