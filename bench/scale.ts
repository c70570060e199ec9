/**
 * The bridge with a big store: a copy of the run's bridge database grown to N portals (each
 * with its own WhatsApp contact and ghost, one message each) owned by M Matrix users with their
 * Signal identities, the gateway's database holding the same users' accounts and keys
 * (bench/scale-seed.ts), as a bridge that has run for a while would have them. The bridge is
 * started on the copy: how long until ready, how much memory at rest, how much after activity
 * in many more portals (where caches that never forget would show), and how fast it bridges
 * when all those new chats are active at once, against the homeserver taking the same
 * messages straight from the appservice.
 */
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import Database from "better-sqlite3";
import YAML from "yaml";
import { repoRoot } from "../test/support/homeserver";
import { registerUser } from "../test/support/matrix-client";
import { ManagedProcess } from "../test/support/processes";
import { Stack } from "../test/support/stack";
import { INSPECT_ARGS, inspectorUrlFrom, memoryAtRest, RestingMemory } from "./process-stats";
import { Report } from "./report";
import { seedStores } from "./scale-seed";
import { inParallel, userUriOf } from "./scenario";

export interface ScaleOptions {
  portals: number;
  /** Matrix users owning the generated portals (the first `activityReceivers` of them are real accounts). */
  users: number;
  /** WhatsApp users (already in the simulator) who each open a new chat after startup, one message each. */
  activityPhones: string[];
  activityReceivers: number;
  timeoutMs: number;
  say: (line: string) => void;
  /** Node flags for the bridge process (besides the inspector the memory readings need). */
  nodeArgs: string[];
  /** Called right after each memory reading, while the bridge still runs (heap snapshots). */
  afterReading?: (label: string, pid: number) => Promise<void>;
}

export interface ScaleResult {
  portalsInStore: number;
  /** What the bridge logs as "bridge ready" (ms from the start of runBridge to ready). */
  readyMs: number;
  /** Spawn to the ready line, module loading included. */
  wallMs: number;
  atRest: RestingMemory;
  afterActivity: RestingMemory;
  activityMs: number;
  manyChats: ManyChatsResult;
}

/** The "bridge ready" line's ms field, from a process's recent output. */
export function readyMsFrom(output: string): number {
  const line = output
    .split("\n")
    .reverse()
    .find((l) => l.includes('"bridge ready"'));
  if (!line) throw new Error('no "bridge ready" line in the bridge\'s output');
  const ms = (JSON.parse(line.slice(line.indexOf("{"))) as { ms?: unknown }).ms;
  if (typeof ms !== "number") throw new Error(`"bridge ready" line without ms: ${line}`);
  return ms;
}

export function scaleUser(i: number, domain: string): string {
  return `@benchscale${i}:${domain}`;
}

/** Registers the Matrix accounts the activity's chats go to (the ghosts invite them, so they must exist). */
export async function registerActivityReceivers(stack: Stack, count: number): Promise<void> {
  await inParallel(
    Array.from({ length: count }, (_, u) => u),
    4,
    (u) => registerUser(stack.hs, scaleUser(u, stack.domain).slice(1).split(":")[0]),
  );
}

export async function measureScale(stack: Stack, opts: ScaleOptions): Promise<ScaleResult> {
  const { say } = opts;
  await stack.bridge.stop();
  const source = path.join(stack.dir, "bridge.db");
  const file = path.join(stack.dir, "bridge-scale.db");
  for (const suffix of ["", "-wal", "-shm"]) if (existsSync(source + suffix)) copyFileSync(source + suffix, file + suffix);
  const config = YAML.parse(readFileSync(stack.configPath, "utf8")) as Record<string, any>;
  const seeded = seedStores(file, path.join(stack.dir, "gateway.db"), {
    portals: opts.portals,
    users: opts.users,
    storeSecret: config.network.store_key,
    domain: stack.domain,
    ghostId: (phone) => stack.ghostId(phone),
    mxidOf: (i) => scaleUser(i, stack.domain),
    ownIdentities: opts.activityReceivers,
  });
  const portalsInStore = seeded.portals;
  say(`store copy has ${portalsInStore} portals and ${opts.users} more Matrix users (seeded in ${(seeded.ms / 1000).toFixed(1)} s)`);

  config.database.path = file;
  const configPath = path.join(stack.dir, "config-scale.yaml");
  writeFileSync(configPath, YAML.stringify(config));
  const bridge = new ManagedProcess(
    "bridge-scale",
    process.execPath,
    [path.join(repoRoot(), "dist", "src", "cli.js"), "-c", configPath, "-f", stack.registrationPath],
    path.join(stack.dir, "bridge-scale.log"),
  );
  bridge.leadingArgs = [...INSPECT_ARGS, ...opts.nodeArgs];
  try {
    const spawned = performance.now();
    await bridge.start(/bridge ready/, opts.timeoutMs);
    const wallMs = performance.now() - spawned;
    const output = bridge.tail(400);
    const readyMs = readyMsFrom(output);
    const inspector = inspectorUrlFrom(output);
    const pid = bridge.pid!;
    const atRest = await memoryAtRest(pid, inspector, opts.timeoutMs);
    await opts.afterReading?.(`${portalsInStore} portals at rest`, pid);
    say(`ready in ${readyMs} ms; ${atRest.afterGcMb.toFixed(1)} MB at rest (${atRest.asFoundMb.toFixed(1)} MB before a full GC)`);

    // The bridge's own message map says when every activity message is bridged (a Matrix user
    // would have to join 1,000 rooms to see them, which would measure the homeserver instead).
    const counter = new Database(file, { readonly: true, fileMustExist: true });
    const messages = () => counterOf(counter);
    const bridgedCount = async (count: number, what: string, pollMs: number) => {
      const deadline = Date.now() + opts.timeoutMs;
      let n = messages();
      while (n < count) {
        if (Date.now() > deadline) throw new Error(`${what}: ${n} of ${count} messages bridged after ${opts.timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, pollMs));
        n = messages();
      }
      return performance.now();
    };
    try {
      const before = messages();
      const started = performance.now();
      await inParallel(opts.activityPhones, 16, (phone, i) => stack.sim.sendText(phone, userUriOf(scaleUser(i % opts.activityReceivers, stack.domain)), `activity ${i}`));
      await bridgedCount(before + opts.activityPhones.length, "activity", 250);
      const activityMs = performance.now() - started;
      const afterActivity = await memoryAtRest(pid, inspector, opts.timeoutMs);
      await opts.afterReading?.(`after activity in ${opts.activityPhones.length} new portals`, pid);
      say(
        `${opts.activityPhones.length} new portals in ${(activityMs / 1000).toFixed(1)} s; ${afterActivity.afterGcMb.toFixed(1)} MB after (${afterActivity.asFoundMb.toFixed(1)} MB before a full GC)`,
      );
      const manyChats = await manyChatsRound(stack, counter, opts, (count) => bridgedCount(count, "many chats", 20));
      say(`${manyChats.chats} chats at once: ${manyChats.bridged.perSecond.toFixed(1)}/s bridged, ${manyChats.direct.perSecond.toFixed(1)}/s straight from the appservice`);
      return { portalsInStore, readyMs, wallMs, atRest, afterActivity, activityMs, manyChats };
    } finally {
      counter.close();
    }
  } finally {
    await bridge.stop();
  }
}

export interface RateResult {
  messages: number;
  ms: number;
  perSecond: number;
}

export interface ManyChatsResult {
  chats: number;
  bridged: RateResult;
  direct: RateResult;
}

/**
 * All the activity's chats at once: each WhatsApp user writes one message in its chat, all
 * together, and the clock runs until the bridge has recorded the Matrix event of the last one
 * (the homeserver accepted it). The direct path is the homeserver's own leg of the same
 * messages: the same ghosts send one message each into the same portal rooms, straight from
 * the appservice's token (identity assertion), until the last send is accepted. Rounds
 * alternate (direct, bridged, bridged, direct) so load from elsewhere falls on both alike.
 */
async function manyChatsRound(stack: Stack, counter: Database.Database, opts: ScaleOptions, bridgedBy: (count: number) => Promise<number>): Promise<ManyChatsResult> {
  const rows = counter
    .prepare(
      `SELECT p.room_id AS room, g.mxid AS ghost, g.remote_id AS phone, p.receiver AS receiver FROM portals p
       JOIN portal_participants pp ON pp.portal_id = p.id JOIN ghosts g ON g.remote_id = pp.remote_user_id
       WHERE p.room_id IS NOT NULL AND g.remote_id IN (SELECT value FROM json_each(?))`,
    )
    .all(JSON.stringify(opts.activityPhones)) as { room: string; ghost: string; phone: string; receiver: string }[];
  if (rows.length !== opts.activityPhones.length) throw new Error(`many chats: ${rows.length} of ${opts.activityPhones.length} activity portals have a room`);
  const registration = YAML.parse(readFileSync(stack.registrationPath, "utf8")) as { as_token: string };
  let txn = 0;
  const sendDirect = async (row: (typeof rows)[number], text: string) => {
    const url = `${stack.hs.url}/_matrix/client/v3/rooms/${encodeURIComponent(row.room)}/send/m.room.message/bench-many-${process.pid}-${++txn}?user_id=${encodeURIComponent(row.ghost)}`;
    const res = await fetch(url, {
      method: "PUT",
      headers: { authorization: `Bearer ${registration.as_token}`, "content-type": "application/json" },
      body: JSON.stringify({ msgtype: "m.text", body: text }),
    });
    if (!res.ok) throw new Error(`many chats, direct: ${res.status} ${await res.text()}`);
    await res.arrayBuffer();
  };
  const total = { bridged: { messages: 0, ms: 0 }, direct: { messages: 0, ms: 0 } };
  let round = 0;
  const run = async (kind: "bridged" | "direct") => {
    round++;
    const started = performance.now();
    let done: number;
    if (kind === "direct") {
      await inParallel(rows, MANY_CHATS_IN_FLIGHT, (row, i) => sendDirect(row, `many ${round} ${i}`));
      done = performance.now();
    } else {
      const target = counterOf(counter) + rows.length;
      const arrived = bridgedBy(target);
      await inParallel(rows, MANY_CHATS_IN_FLIGHT, (row, i) => stack.sim.sendText(row.phone, userUriOf(row.receiver), `many ${round} ${i}`));
      done = await arrived;
    }
    total[kind].messages += rows.length;
    total[kind].ms += done - started;
  };
  for (const kind of ["direct", "bridged", "bridged", "direct"] as const) await run(kind);
  const rate = (r: { messages: number; ms: number }): RateResult => ({ ...r, perSecond: (r.messages * 1000) / r.ms });
  return { chats: rows.length, bridged: rate(total.bridged), direct: rate(total.direct) };
}

/** Sends in flight at once in the many-chats round, on either path (the senders' side; the bridge takes what comes). */
const MANY_CHATS_IN_FLIGHT = 100;

function counterOf(db: Database.Database): number {
  return (db.prepare("SELECT COUNT(*) AS n FROM messages").get() as { n: number }).n;
}

/** "10k", "100k", "2500": how a store size reads in a metric's name. */
export function sizeLabel(n: number): string {
  return n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n);
}

/** The scale phase's metric lines (targets from issue 16 item 4). */
export function scaleMetrics(report: Report, scale: ScaleResult, sizes: { scalePortals: number; scaleUsers: number; activityPortals: number; activityReceivers: number }): void {
  const label = sizeLabel(sizes.scalePortals);
  const storeNote = `${scale.portalsInStore} portals over ${sizes.scaleUsers} more Matrix users`;
  report.add({ metric: `startup_ms_${label}_portals`, value: scale.readyMs, unit: "ms", target: { op: "<=", value: 2000 }, note: `"bridge ready"; ${storeNote}` });
  report.add({ metric: `startup_wall_ms_${label}_portals`, value: scale.wallMs, unit: "ms", note: "spawn to the ready line, module loading included" });
  const quietNote = (quiet: boolean) => (quiet ? "" : "; the bridge never went quiet");
  report.add({
    metric: `rss_mb_${label}_portals`,
    value: scale.atRest.afterGcMb,
    unit: "MB",
    target: { op: "<=", value: 150 },
    note: `at rest after startup (every user logged in) and a full GC; ${scale.atRest.asFoundMb.toFixed(0)} MB before${quietNote(scale.atRest.quiet)}`,
  });
  report.add({
    metric: `rss_mb_after_activity_${sizes.activityPortals}_portals`,
    value: scale.afterActivity.afterGcMb,
    unit: "MB",
    note: `${sizes.activityPortals} new chats over ${sizes.activityReceivers} users in ${(scale.activityMs / 1000).toFixed(0)} s; ${scale.afterActivity.asFoundMb.toFixed(0)} MB before a full GC${quietNote(scale.afterActivity.quiet)}`,
  });
  const growth = scale.afterActivity.afterGcMb - scale.atRest.afterGcMb;
  report.add({ metric: "rss_growth_mb_activity", value: growth, unit: "MB" });
  report.add({
    metric: "rss_kb_per_active_portal",
    value: (growth * 1024) / sizes.activityPortals,
    unit: "KB",
    target: { op: "<=", value: 10 },
    note: `RSS growth over ${sizes.activityPortals} newly active portals, both readings after a full GC`,
  });
  const { manyChats: m } = scale;
  report.add({
    metric: `throughput_remote_to_matrix_bridged_${m.chats}_chats`,
    value: m.bridged.perSecond,
    unit: "msg/s",
    note: `${m.bridged.messages} messages in ${(m.bridged.ms / 1000).toFixed(1)} s, one per chat per round, all chats at once`,
  });
  report.add({
    metric: `throughput_remote_to_matrix_direct_${m.chats}_chats`,
    value: m.direct.perSecond,
    unit: "msg/s",
    note: `${m.direct.messages} messages in ${(m.direct.ms / 1000).toFixed(1)} s: the same ghosts → the same rooms, straight from the appservice's token`,
  });
  report.add({
    metric: `throughput_ratio_remote_to_matrix_${m.chats}_chats`,
    value: m.bridged.perSecond / m.direct.perSecond,
    unit: "ratio",
    target: { op: ">=", value: 0.9 },
    note: `bridged / the homeserver taking the same messages from the appservice (${MANY_CHATS_IN_FLIGHT} sends in flight on either path)`,
  });
}
