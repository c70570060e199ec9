/**
 * The chaos run: messages flow both ways over many chats while the bridge is killed with
 * SIGKILL at random moments (and, with outages, while Synapse and then the gateway are
 * away); afterwards every message must be at its destination exactly once, in order per chat.
 * Used by `npm run chaos` (test/chaos/main.ts) and, in a short form, by the e2e tests.
 */
import { randomInt } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { decodeFrame } from "../../src/protocol/frames";
import { HOME_DOMAIN, Stack } from "../support/stack";
import { Chat, encryptedEnds, pad, plainEnds, sleep, UNDECRYPTABLE_NOTICE, uriOf } from "./ends";

export interface ChaosOptions {
  chats: number;
  /** Messages in total, half from each side, spread evenly over the chats. */
  messages: number;
  /** SIGKILLs of the bridge while messages flow. */
  kills: number;
  /** Synapse stopped for this long, then the gateway for this long (ms), while messages flow. */
  outageMs?: number;
  /** About how long the senders take (ms); sends are spread over it. */
  durationMs: number;
  /** Chats per Matrix user. */
  chatsPerUser?: number;
  /** How long to wait for the last messages after sending stopped (ms). */
  settleMs?: number;
  /**
   * Once everything arrived, the run waits until nothing more moved for this long (ms, at least
   * 10 s) before the final count, so a duplicate replayed late is still seen.
   */
  quietMs?: number;
  /** Seeds the kill schedule and the senders' pacing (a random seed when absent; the summary names it). */
  seed?: number;
  /**
   * Portals in encrypted rooms: the stack's Synapse encrypts every room and the bridge has
   * encryption on (see encryptedStackOptions), and the Matrix users are real end-to-end encrypting
   * clients (matrix-nio with libolm, test/chaos/encrypted.ts) instead of plain HTTP clients.
   */
  encrypted?: boolean;
  log?: (line: string) => void;
}

export interface DirectionSummary {
  sent: number;
  received: number;
  lost: number;
  /** Extra copies at the far end under a new message id (what a user would see twice). */
  duplicated: number;
  /**
   * Extra deliveries of a message under the same id, counted on the wire before anyone
   * de-duplicates (the gateway's frame record): the sender's repeated sends to the gateway, and
   * the gateway's repeated deliveries to the receiving side. Expected after kills; the
   * receiving side must drop them (then `duplicated` stays 0).
   */
  redelivered: { resent: number; redelivered: number };
  outOfOrder: number;
}

export interface OutageRecord {
  what: "synapse" | "gateway";
  from: number;
  to: number;
}

export interface ChaosSummary {
  seed: number;
  /** How long nothing moved before the final count (ms). */
  quietMs: number;
  chats: number;
  kills: number;
  killedWhileStarting: number;
  matrixToWhatsApp: DirectionSummary;
  whatsAppToMatrix: DirectionSummary;
  outages: OutageRecord[];
  /** With encrypted portals: what could not be decrypted, at either end. */
  undecryptable?: UndecryptableSummary;
  /** Bridge log lines at warn or error level, by outage (during it or in the 30 s after). */
  bridgeLogDuringOutages: Record<string, string[]>;
  ms: number;
}

export interface UndecryptableSummary {
  /** Events in the chaos rooms the Matrix users' clients could not decrypt, after trying again with the keys they have at the end. */
  atMatrixClients: number;
  /** The bridge's "could not decrypt" notices in the chaos rooms (a Matrix message it could not decrypt). */
  bridgeNotices: number;
  /** The bridge's "could not decrypt a Matrix event" log lines (every room, every run of the bridge). */
  bridgeLog: number;
  /** Events the clients could decrypt only when tried again (their key came after them): information, not a failure. */
  decryptedLate: number;
  /** Syncs that left a gap in a chaos room (then the client may miss events; should be 0). */
  gappySyncs: number;
}

export const mxBody = (chat: number, i: number) => `chaos c${pad(chat, 3)} mx ${pad(i, 4)}`;
export const waBody = (chat: number, i: number) => `chaos c${pad(chat, 3)} wa ${pad(i, 4)}`;
const BODY_RE = /^chaos c(\d{3}) (mx|wa) (\d{4})$/;

/** Retries fn until it succeeds (the other side may be away); gives up after timeoutMs. */
async function untilDone<T>(what: string, fn: () => Promise<T>, timeoutMs = 10 * 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: still failing after ${timeoutMs} ms: ${(err as Error).message}`, { cause: err });
      await sleep(delay);
    }
  }
}

/** A small seeded generator (mulberry32): the same seed gives the same kill schedule and pacing. */
export function seededInts(seed: number): (min: number, max?: number) => number {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  // Like crypto.randomInt: (max) → [0, max), (min, max) → [min, max).
  return (min, max) => (max === undefined ? Math.floor(next() * min) : min + Math.floor(next() * (max - min)));
}

export async function runChaos(stack: Stack, opts: ChaosOptions): Promise<ChaosSummary> {
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const seed = opts.seed ?? randomInt(2 ** 31);
  const quietMs = Math.max(10_000, opts.quietMs ?? 10_000);
  log(`seed ${seed} (replay the kill schedule with --seed ${seed})`);
  const killDice = seededInts(seed);
  const paceDice = seededInts(seed ^ 0x5bd1e995);
  const perChat = Math.max(1, Math.round(opts.messages / 2 / opts.chats));
  const chatsPerUser = opts.chatsPerUser ?? 5;

  // ---- setup: Matrix users with their bot rooms, WhatsApp users, one open chat each
  const ends = opts.encrypted ? await encryptedEnds(stack, opts.chats, chatsPerUser) : await plainEnds(stack, opts.chats, chatsPerUser);
  const chats = ends.chats;
  log(
    `setup: ${ends.users} Matrix users, ${opts.chats} chats open${opts.encrypted ? " in encrypted rooms, end-to-end encrypting clients" : ""} (${Math.round((Date.now() - started) / 1000)} s)`,
  );

  // ---- traffic: per chat, one sequential sender per side, paced over durationMs
  const gapMs = opts.durationMs / perChat;
  const pace = () => sleep(paceDice(0, Math.max(1, Math.round(2 * gapMs))));
  let sendingDone = false;
  const senders = chats.flatMap((chat) => [
    (async () => {
      for (let i = 0; i < perChat; i++) {
        await pace();
        const txnId = `chaos-${chat.index}-${i}`;
        await untilDone(`Matrix send ${mxBody(chat.index, i)}`, () => chat.send(mxBody(chat.index, i), txnId));
      }
    })(),
    (async () => {
      for (let i = 0; i < perChat; i++) {
        await pace();
        await untilDone(`WhatsApp send ${waBody(chat.index, i)}`, () => stack.sim.sendText(chat.phone, uriOf(chat.userId), waBody(chat.index, i)));
      }
    })(),
  ]);
  const sending = Promise.all(senders).then(() => {
    sendingDone = true;
  });

  // ---- the disturbances
  let kills = 0;
  let killedWhileStarting = 0;
  const outages: OutageRecord[] = [];
  const killer = (async () => {
    const spacing = opts.durationMs / Math.max(1, opts.kills);
    while (kills < opts.kills) {
      // Often soon after a restart, while the backlog of the downtime is being worked off.
      await sleep(killDice(2) === 0 ? killDice(200, 2500) : killDice(200, Math.max(300, Math.round(spacing))));
      await stack.bridge.stop("SIGKILL");
      kills++;
      log(`kill ${kills}/${opts.kills} (while running)`);
      if (kills < opts.kills && killDice(4) === 0) {
        // Now and then the bridge dies again while it is still starting (migrations, replay, logins).
        const starting = stack.bridge.start(/bridge ready/, 60_000).then(
          () => true,
          () => false,
        );
        await sleep(killDice(100, 2000));
        await stack.bridge.stop("SIGKILL");
        const wasReady = await starting;
        kills++;
        if (!wasReady) killedWhileStarting++;
        log(`kill ${kills}/${opts.kills} (${wasReady ? "just after it was ready" : "while it was starting"})`);
      }
      await stack.startBridge();
    }
  })();
  const outage = (async () => {
    if (!opts.outageMs) return;
    await sleep(Math.min(10_000, opts.durationMs / 6));
    let from = Date.now();
    await stack.hs.pause();
    log(`synapse stopped for ${opts.outageMs / 1000} s`);
    await sleep(opts.outageMs);
    await stack.hs.resume();
    outages.push({ what: "synapse", from, to: Date.now() });
    log("synapse back");
    await sleep(Math.min(10_000, opts.durationMs / 6));
    from = Date.now();
    await stack.gateway.stop();
    log(`gateway stopped for ${opts.outageMs / 1000} s`);
    await sleep(opts.outageMs);
    await stack.gateway.start(/gateway listening/);
    outages.push({ what: "gateway", from, to: Date.now() });
    log("gateway back");
  })();
  try {
    await Promise.all([sending, killer, outage]);
  } catch (err) {
    await ends.stop();
    throw err;
  }
  log(`sending done (${Math.round((Date.now() - started) / 1000)} s); waiting for the last deliveries`);

  // ---- settle: wait until everything arrived or nothing moved for settleMs
  let summary = await measure(stack, chats, perChat);
  let lastProgress = Date.now();
  let lastCount = -1;
  while (!complete(summary, perChat * chats.length) && Date.now() - lastProgress < (opts.settleMs ?? 120_000)) {
    await sleep(3_000);
    summary = await measure(stack, chats, perChat);
    const count = summary.matrixToWhatsApp.received + summary.whatsAppToMatrix.received;
    if (count !== lastCount) {
      lastCount = count;
      lastProgress = Date.now();
    }
  }
  // ---- quiet: the final count only after nothing moved (arrivals, same-id repeats on the wire) for quietMs
  // Said as it is: the settle loop also ends when nothing moved for settleMs with messages still missing.
  const settled = complete(summary, perChat * chats.length) ? "everything arrived" : "still missing messages, and nothing moved for a while";
  log(`${settled}; waiting for ${quietMs / 1000} s without any movement before the final count`);
  let quietSince = Date.now();
  let lastState = "";
  for (;;) {
    // Arrivals at both ends and same-id repeats on the wire (keep-alive traffic does not count).
    const state = JSON.stringify(summary);
    if (state !== lastState) {
      lastState = state;
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= quietMs) break;
    await sleep(1_000);
    summary = await measure(stack, chats, perChat);
  }
  void sendingDone;
  await ends.stop();
  const { undecryptable, ...counts } = summary;
  return {
    seed,
    quietMs,
    chats: chats.length,
    kills,
    killedWhileStarting,
    ...counts,
    ...(opts.encrypted ? { undecryptable: { ...undecryptable, bridgeLog: bridgeLogCount(stack, /could not decrypt a Matrix event/) } } : {}),
    outages,
    bridgeLogDuringOutages: outageLogLines(stack, outages),
    ms: Date.now() - started,
  };
}

function complete(s: { matrixToWhatsApp: DirectionSummary; whatsAppToMatrix: DirectionSummary }, expected: number): boolean {
  return [s.matrixToWhatsApp, s.whatsAppToMatrix].every((d) => d.received >= expected && d.lost === 0);
}

/** What arrived where: every chat's Matrix room history and WhatsApp inbox, compared with what was sent. */
async function measure(
  stack: Stack,
  chats: Chat[],
  perChat: number,
): Promise<{ matrixToWhatsApp: DirectionSummary; whatsAppToMatrix: DirectionSummary; undecryptable: Omit<UndecryptableSummary, "bridgeLog"> }> {
  const toMatrix: number[][] = [];
  const toWhatsApp: number[][] = [];
  const undecryptable = { atMatrixClients: 0, bridgeNotices: 0, decryptedLate: 0, gappySyncs: 0 };
  for (const chat of chats) {
    const arrivals = await untilDone("reading a room", () => chat.arrivals());
    toMatrix.push(indicesOf(arrivals.ghostBodies, chat.index, "wa"));
    undecryptable.atMatrixClients += arrivals.undecryptable;
    undecryptable.bridgeNotices += arrivals.ghostBodies.filter((b) => UNDECRYPTABLE_NOTICE.test(b)).length;
    undecryptable.decryptedLate += arrivals.decryptedLate;
    undecryptable.gappySyncs += arrivals.gappySyncs;
    const inbox = await untilDone("reading an inbox", () => fullInbox(stack, chat.phone));
    toWhatsApp.push(
      indicesOf(
        inbox.filter((e) => e.from === uriOf(chat.userId)).map((e) => String(e.text ?? "")),
        chat.index,
        "mx",
      ),
    );
  }
  const wire = sameIdRepeats(stack, chats);
  return {
    matrixToWhatsApp: { ...compare(toWhatsApp, perChat), redelivered: wire.matrixToWhatsApp },
    whatsAppToMatrix: { ...compare(toMatrix, perChat), redelivered: wire.whatsAppToMatrix },
    undecryptable,
  };
}

/** How many lines of the bridge's log (every run of it) match. */
function bridgeLogCount(stack: Stack, re: RegExp): number {
  const file = path.join(stack.dir, "bridge.log");
  return fs.existsSync(file)
    ? fs
        .readFileSync(file, "utf8")
        .split("\n")
        .filter((l) => re.test(l)).length
    : 0;
}

const framesFile = (stack: Stack) => path.join(stack.dir, "gateway-frames.log");

/**
 * Same-id repeats on the wire, per direction, from the gateway's frame record (every frame it
 * received or sent, before the gateway, the bridge or the simulator de-duplicate anything):
 * `resent` = send frames repeating a (from, to, id) already sent; `redelivered` = deliver frames
 * repeating a (to, id) already delivered. Only the chaos chats' messages count.
 */
function sameIdRepeats(stack: Stack, chats: Chat[]): { matrixToWhatsApp: DirectionSummary["redelivered"]; whatsAppToMatrix: DirectionSummary["redelivered"] } {
  const matrixUsers = new Set(chats.map((c) => uriOf(c.userId)));
  const phones = new Set(chats.map((c) => `mimi://${HOME_DOMAIN}/u/${c.phone}`));
  const counts = { mxResent: new Map<string, number>(), mxDelivered: new Map<string, number>(), waResent: new Map<string, number>(), waDelivered: new Map<string, number>() };
  const bump = (m: Map<string, number>, key: string) => m.set(key, (m.get(key) ?? 0) + 1);
  const text = fs.existsSync(framesFile(stack)) ? fs.readFileSync(framesFile(stack), "utf8") : "";
  for (const line of text.split("\n")) {
    const [direction, , hex] = line.split(" ");
    if (!hex || !/^[0-9a-f]+$/.test(hex)) continue;
    let frame: { t: string; from?: string; to?: string; id?: Uint8Array };
    try {
      frame = decodeFrame(Buffer.from(hex, "hex"), { maxFrameBytes: 64 * 1024 * 1024 }) as typeof frame;
    } catch {
      continue; // a line cut short by a killed process, or a frame the gateway refused
    }
    if (!frame.from || !frame.to || !frame.id) continue;
    const key = `${frame.from} ${frame.to} ${Buffer.from(frame.id).toString("hex")}`;
    const toWhatsApp = matrixUsers.has(frame.from) && phones.has(frame.to);
    const toMatrix = phones.has(frame.from) && matrixUsers.has(frame.to);
    if (direction === "in" && frame.t === "send") {
      if (toWhatsApp) bump(counts.mxResent, key);
      if (toMatrix) bump(counts.waResent, key);
    } else if (direction === "out" && frame.t === "deliver") {
      if (toWhatsApp) bump(counts.mxDelivered, key);
      if (toMatrix) bump(counts.waDelivered, key);
    }
  }
  const extra = (m: Map<string, number>) => [...m.values()].reduce((n, c) => n + c - 1, 0);
  return {
    matrixToWhatsApp: { resent: extra(counts.mxResent), redelivered: extra(counts.mxDelivered) },
    whatsAppToMatrix: { resent: extra(counts.waResent), redelivered: extra(counts.waDelivered) },
  };
}

function indicesOf(bodies: string[], chat: number, side: "mx" | "wa"): number[] {
  const out: number[] = [];
  for (const body of bodies) {
    const m = BODY_RE.exec(body);
    if (m && Number(m[1]) === chat && m[2] === side) out.push(Number(m[3]));
  }
  return out;
}

/** Per chat: the indices in arrival order. Lost = never arrived; duplicated = extra copies; out of order = arrived after a later one. */
export function compare(arrivals: number[][], perChat: number): Omit<DirectionSummary, "redelivered"> {
  const summary: Omit<DirectionSummary, "redelivered"> = { sent: perChat * arrivals.length, received: 0, lost: 0, duplicated: 0, outOfOrder: 0 };
  for (const seq of arrivals) {
    summary.received += seq.length;
    const seen = new Set<number>();
    let highest = -1;
    for (const i of seq) {
      if (seen.has(i)) {
        summary.duplicated++;
        continue;
      }
      seen.add(i);
      if (i < highest) summary.outOfOrder++;
      highest = Math.max(highest, i);
    }
    for (let i = 0; i < perChat; i++) if (!seen.has(i)) summary.lost++;
  }
  return summary;
}

async function fullInbox(stack: Stack, phone: string) {
  const all: Awaited<ReturnType<Stack["sim"]["inbox"]>> = [];
  for (let after = 0; ;) {
    const page = await stack.sim.inbox(phone, after);
    if (page.length === 0) return all;
    all.push(...page);
    after = page[page.length - 1].n;
  }
}

/** The bridge's warn/error lines logged during each outage and the 30 s after it (or until the next one). */
function outageLogLines(stack: Stack, outages: OutageRecord[]): Record<string, string[]> {
  const file = path.join(stack.dir, "bridge.log");
  const lines = fs.existsSync(file) ? fs.readFileSync(file, "utf8").split("\n") : [];
  const result: Record<string, string[]> = {};
  for (const [i, o] of outages.entries()) {
    const until = Math.min(o.to + 30_000, outages[i + 1]?.from ?? Infinity);
    result[o.what] = lines.filter((line) => {
      let entry: { level?: string; timestamp?: string };
      try {
        entry = JSON.parse(line);
      } catch {
        return false;
      }
      const at = Date.parse(entry.timestamp ?? "");
      return (entry.level === "warn" || entry.level === "error") && at >= o.from && at <= until;
    });
  }
  return result;
}

export function formatSummary(s: ChaosSummary): string {
  const line = (name: string, d: DirectionSummary) =>
    `${name}: sent ${d.sent}, received ${d.received}, lost ${d.lost}, duplicated ${d.duplicated}, ` +
    `redelivered (same id) ${d.redelivered.resent + d.redelivered.redelivered} (${d.redelivered.resent} re-sent to the gateway, ${d.redelivered.redelivered} re-delivered by it), out of order ${d.outOfOrder}`;
  const lines = [
    `chaos: ${s.chats} chats, ${s.matrixToWhatsApp.sent + s.whatsAppToMatrix.sent} messages, ${s.kills} SIGKILLs of the bridge (${s.killedWhileStarting} while it was starting)` +
      (s.outages.length ? `, outages: ${s.outages.map((o) => `${o.what} ${Math.round((o.to - o.from) / 1000)} s`).join(", ")}` : "") +
      `, ${Math.round(s.ms / 1000)} s, seed ${s.seed}, counted after ${Math.round(s.quietMs / 1000)} s without movement`,
    line("  Matrix → WhatsApp", s.matrixToWhatsApp),
    line("  WhatsApp → Matrix", s.whatsAppToMatrix),
  ];
  if (s.undecryptable) {
    const u = s.undecryptable;
    lines.push(
      `  undecryptable ${u.atMatrixClients + u.bridgeNotices} (${u.atMatrixClients} at the Matrix clients, ${u.bridgeNotices} bridge notices; ` +
        `bridge log "could not decrypt" ${u.bridgeLog}; decrypted only on a retry ${u.decryptedLate}; syncs with a gap ${u.gappySyncs})`,
    );
  }
  if (s.matrixToWhatsApp.redelivered.resent > resendBound(s)) {
    lines.push(`  the bridge re-sent ${s.matrixToWhatsApp.redelivered.resent} Matrix messages under the same id: more than ${s.kills} kill(s) × ${s.chats} chats can explain`);
  }
  for (const [what, entries] of Object.entries(s.bridgeLogDuringOutages)) {
    lines.push(`  bridge log during the ${what} outage: ${entries.length} warn/error line(s)${entries.length ? ":" : ""}`);
    for (const e of entries.slice(0, 10)) lines.push(`    ${e.slice(0, 300)}`);
  }
  return lines.join("\n");
}

/**
 * The most same-id re-sends of Matrix messages a run can explain: the bridge sends one message per
 * chat at a time, so a kill leaves at most one per chat unacknowledged, to be sent again.
 */
export function resendBound(s: ChaosSummary): number {
  return s.kills * s.chats;
}

export function failed(s: ChaosSummary): boolean {
  const u = s.undecryptable;
  return (
    [s.matrixToWhatsApp, s.whatsAppToMatrix].some((d) => d.lost > 0 || d.duplicated > 0 || d.outOfOrder > 0) ||
    s.matrixToWhatsApp.redelivered.resent > resendBound(s) ||
    (u !== undefined && (u.atMatrixClients > 0 || u.bridgeNotices > 0 || u.bridgeLog > 0 || u.gappySyncs > 0))
  );
}
