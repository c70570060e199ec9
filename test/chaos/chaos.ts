/**
 * The chaos run: messages flow both ways over many chats while the bridge is killed with
 * SIGKILL at random moments (and, with outages, while Synapse and then the gateway are
 * away); afterwards every message must be at its destination exactly once, in order per chat.
 * Used by `npm run chaos` (test/chaos/main.ts) and, in a short form, by the e2e tests.
 */
import { randomInt } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { TestClient } from "../support/matrix-client";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

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
  log?: (line: string) => void;
}

export interface DirectionSummary {
  sent: number;
  received: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
}

export interface OutageRecord {
  what: "synapse" | "gateway";
  from: number;
  to: number;
}

export interface ChaosSummary {
  chats: number;
  kills: number;
  killedWhileStarting: number;
  matrixToWhatsApp: DirectionSummary;
  whatsAppToMatrix: DirectionSummary;
  outages: OutageRecord[];
  /** Bridge log lines at warn or error level, by outage (during it or in the 30 s after). */
  bridgeLogDuringOutages: Record<string, string[]>;
  ms: number;
}

interface Chat {
  index: number;
  phone: string;
  client: TestClient;
  roomId: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pad = (n: number, width: number) => String(n).padStart(width, "0");
const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

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

/** Runs n tasks at most `width` at a time. */
async function inBatches<T>(items: T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await fn(item);
    }),
  );
}

export async function runChaos(stack: Stack, opts: ChaosOptions): Promise<ChaosSummary> {
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const perChat = Math.max(1, Math.round(opts.messages / 2 / opts.chats));
  const chatsPerUser = opts.chatsPerUser ?? 5;

  // ---- setup: Matrix users with their bot rooms, WhatsApp users, one open chat each
  const userCount = Math.ceil(opts.chats / chatsPerUser);
  const clients: TestClient[] = [];
  for (let u = 0; u < userCount; u++) clients.push(await stack.user(`chaos${pad(u, 2)}`));
  await inBatches(clients, 4, async (client) => {
    // Third-Party Chats are off by default: every chaos user turns them on.
    await stack.botRoom(client, { enable: true });
  });
  const chats: Chat[] = [];
  await inBatches(
    Array.from({ length: opts.chats }, (_, i) => i),
    6,
    async (index) => {
      const phone = `+49170${pad(index, 7)}`;
      const client = clients[Math.floor(index / chatsPerUser)];
      await stack.sim.createUser(phone, `Chaos ${index}`);
      await stack.sim.sendText(phone, uriOf(client.userId), `chaos open c${pad(index, 3)}`);
      const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone), { timeoutMs: 120_000 });
      await client.joinRoom(invite.roomId);
      chats.push({ index, phone, client, roomId: invite.roomId });
    },
  );
  chats.sort((a, b) => a.index - b.index);
  // From here on, histories are read with /messages; idle sync loops would only cost CPU.
  for (const client of clients) await client.stopSync();
  log(`setup: ${userCount} Matrix users, ${opts.chats} chats open (${Math.round((Date.now() - started) / 1000)} s)`);

  // ---- traffic: per chat, one sequential sender per side, paced over durationMs
  const gapMs = opts.durationMs / perChat;
  const pace = () => sleep(randomInt(0, Math.max(1, Math.round(2 * gapMs))));
  let sendingDone = false;
  const senders = chats.flatMap((chat) => [
    (async () => {
      for (let i = 0; i < perChat; i++) {
        await pace();
        const txnId = `chaos-${chat.index}-${i}`;
        await untilDone(`Matrix send ${mxBody(chat.index, i)}`, () => chat.client.sendEvent(chat.roomId, "m.room.message", { msgtype: "m.text", body: mxBody(chat.index, i) }, txnId));
      }
    })(),
    (async () => {
      for (let i = 0; i < perChat; i++) {
        await pace();
        await untilDone(`WhatsApp send ${waBody(chat.index, i)}`, () => stack.sim.sendText(chat.phone, uriOf(chat.client.userId), waBody(chat.index, i)));
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
      await sleep(randomInt(2) === 0 ? randomInt(200, 2500) : randomInt(200, Math.max(300, Math.round(spacing))));
      await stack.bridge.stop("SIGKILL");
      kills++;
      log(`kill ${kills}/${opts.kills} (while running)`);
      if (kills < opts.kills && randomInt(4) === 0) {
        // Now and then the bridge dies again while it is still starting (migrations, replay, logins).
        const starting = stack.bridge.start(/bridge ready/, 60_000).then(
          () => true,
          () => false,
        );
        await sleep(randomInt(100, 2000));
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
  await Promise.all([sending, killer, outage]);
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
  void sendingDone;
  return {
    chats: chats.length,
    kills,
    killedWhileStarting,
    ...summary,
    outages,
    bridgeLogDuringOutages: outageLogLines(stack, outages),
    ms: Date.now() - started,
  };
}

function complete(s: { matrixToWhatsApp: DirectionSummary; whatsAppToMatrix: DirectionSummary }, expected: number): boolean {
  return [s.matrixToWhatsApp, s.whatsAppToMatrix].every((d) => d.received >= expected && d.lost === 0);
}

/** What arrived where: every chat's Matrix room history and WhatsApp inbox, compared with what was sent. */
async function measure(stack: Stack, chats: Chat[], perChat: number): Promise<{ matrixToWhatsApp: DirectionSummary; whatsAppToMatrix: DirectionSummary }> {
  const toMatrix: number[][] = [];
  const toWhatsApp: number[][] = [];
  for (const chat of chats) {
    const history = await untilDone("reading a room", () => chat.client.history(chat.roomId, { types: ["m.room.message"] }));
    toMatrix.push(indicesOf(history.filter((e) => e.sender === stack.ghostId(chat.phone)).map((e) => String(e.content.body)), chat.index, "wa"));
    const inbox = await untilDone("reading an inbox", () => fullInbox(stack, chat.phone));
    toWhatsApp.push(indicesOf(inbox.filter((e) => e.from === uriOf(chat.client.userId)).map((e) => String(e.text ?? "")), chat.index, "mx"));
  }
  return { matrixToWhatsApp: compare(toWhatsApp, perChat), whatsAppToMatrix: compare(toMatrix, perChat) };
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
export function compare(arrivals: number[][], perChat: number): DirectionSummary {
  const summary: DirectionSummary = { sent: perChat * arrivals.length, received: 0, lost: 0, duplicated: 0, outOfOrder: 0 };
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
  for (let after = 0; ; ) {
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
    `${name}: sent ${d.sent}, received ${d.received}, lost ${d.lost}, duplicated ${d.duplicated}, out of order ${d.outOfOrder}`;
  const lines = [
    `chaos: ${s.chats} chats, ${s.matrixToWhatsApp.sent + s.whatsAppToMatrix.sent} messages, ${s.kills} SIGKILLs of the bridge (${s.killedWhileStarting} while it was starting)` +
      (s.outages.length ? `, outages: ${s.outages.map((o) => `${o.what} ${Math.round((o.to - o.from) / 1000)} s`).join(", ")}` : "") +
      `, ${Math.round(s.ms / 1000)} s`,
    line("  Matrix → WhatsApp", s.matrixToWhatsApp),
    line("  WhatsApp → Matrix", s.whatsAppToMatrix),
  ];
  for (const [what, entries] of Object.entries(s.bridgeLogDuringOutages)) {
    lines.push(`  bridge log during the ${what} outage: ${entries.length} warn/error line(s)${entries.length ? ":" : ""}`);
    for (const e of entries.slice(0, 10)) lines.push(`    ${e.slice(0, 300)}`);
  }
  return lines.join("\n");
}

export function failed(s: ChaosSummary): boolean {
  return [s.matrixToWhatsApp, s.whatsAppToMatrix].some((d) => d.lost > 0 || d.duplicated > 0 || d.outOfOrder > 0);
}
