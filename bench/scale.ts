/**
 * The bridge with a big store: a copy of the run's bridge database grown to 10,000 portals
 * (each with its own WhatsApp contact and ghost, one message each) owned by 100 Matrix users
 * with their Signal identities, written with the store and Signal classes (not through the
 * network), as a bridge that has run for a while would have it. The bridge is started on the
 * copy: how long until ready, how much memory at rest, and how much after activity in many
 * more portals, which is where caches that never forget would show.
 */
import { copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import Database from "better-sqlite3";
import YAML from "yaml";
import { dmRoomUri, userUri } from "../src/protocol/frames";
import { deriveStoreKey, EncryptedRecordStore, SignalParty } from "../src/protocol/signal";
import { BridgeStore } from "../src/store";
import { repoRoot } from "../test/support/homeserver";
import { registerUser } from "../test/support/matrix-client";
import { ManagedProcess } from "../test/support/processes";
import { HOME_DOMAIN, PROVIDER_DOMAIN, Stack } from "../test/support/stack";
import { INSPECT_ARGS, inspectorUrlFrom, memoryAtRest, RestingMemory } from "./process-stats";
import { benchPhone, inParallel, userUriOf } from "./scenario";

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

/** Adds users (with Signal identities), ghosts, portals and one message per portal to a copy of the bridge's database. */
function growStore(file: string, opts: ScaleOptions, stack: Stack, storeSecret: string): number {
  const store = BridgeStore.open(file);
  try {
    const storeKey = deriveStoreKey(storeSecret);
    const now = Date.now();
    store.transaction(() => {
      for (let u = 0; u < opts.users; u++) {
        const mxid = scaleUser(u, stack.domain);
        store.users.getOrCreate(mxid, { thirdPartyEnabled: true });
        // A user who has been bridged before has an identity; the bridge only logs them in.
        const uri = userUri(PROVIDER_DOMAIN, mxid);
        SignalParty.open(uri, new EncryptedRecordStore(store.signalRecords(uri), storeKey)).prepareKeys({ oneTimeCount: 0 });
      }
      for (let i = 0; i < opts.portals; i++) {
        const phone = benchPhone(1800, i);
        const receiver = scaleUser(i % opts.users, stack.domain);
        store.ghosts.ensure(phone, stack.ghostId(phone));
        store.ghosts.markRegistered(phone);
        store.ghosts.setDisplayName(phone, `Scale ${i} (WhatsApp)`);
        const chatId = dmRoomUri(userUri(PROVIDER_DOMAIN, receiver), userUri(HOME_DOMAIN, phone), HOME_DOMAIN);
        const portal = store.portals.getOrCreate(chatId, receiver, "dm", [phone]);
        store.portals.setRoom(portal.id, `!benchscale${i}:${stack.domain}`);
        store.messages.insert({ portalId: portal.id, remoteId: `scale-${i}`, part: 0, eventId: `$benchscale${i}`, sender: phone, timestamp: now - i * 1000 });
      }
    });
    return store.portals.count();
  } finally {
    store.close();
  }
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
  const portalsInStore = growStore(file, opts, stack, config.network.store_key);
  say(`store copy has ${portalsInStore} portals and ${opts.users} more Matrix users`);

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
    const messages = () => (counter.prepare("SELECT COUNT(*) AS n FROM messages").get() as { n: number }).n;
    try {
      const before = messages();
      const started = performance.now();
      await inParallel(opts.activityPhones, 16, (phone, i) => stack.sim.sendText(phone, userUriOf(scaleUser(i % opts.activityReceivers, stack.domain)), `activity ${i}`));
      const deadline = Date.now() + opts.timeoutMs;
      while (messages() < before + opts.activityPhones.length) {
        if (Date.now() > deadline) throw new Error(`activity: ${messages() - before} of ${opts.activityPhones.length} messages bridged after ${opts.timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 250));
      }
      const activityMs = performance.now() - started;
      const afterActivity = await memoryAtRest(pid, inspector, opts.timeoutMs);
      await opts.afterReading?.(`after activity in ${opts.activityPhones.length} new portals`, pid);
      say(
        `${opts.activityPhones.length} new portals in ${(activityMs / 1000).toFixed(1)} s; ${afterActivity.afterGcMb.toFixed(1)} MB after (${afterActivity.asFoundMb.toFixed(1)} MB before a full GC)`,
      );
      return { portalsInStore, readyMs, wallMs, atRest, afterActivity, activityMs };
    } finally {
      counter.close();
    }
  } finally {
    await bridge.stop();
  }
}
