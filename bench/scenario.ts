/**
 * The people and rooms of a benchmark run, made through the product's own paths: Matrix users
 * who talked to the bot, WhatsApp users in the simulator, one bridged portal per chat (opened
 * by the WhatsApp side, joined by the Matrix user), and for the baselines a plain Matrix room
 * per chat, a second WhatsApp user per chat who talks to the first one directly, and a room of
 * the chat's Matrix user with a user of the probe appservice (bench/probe.ts).
 */
import { Stack, PROVIDER_DOMAIN } from "../test/support/stack";
import { TestClient } from "../test/support/matrix-client";
import { Arrivals, MatrixReader, SimReader, tagOf } from "./arrivals";
import { PROBE_LOCALPART_PREFIX, ProbeAppservice } from "./probe";

export interface Chat {
  index: number;
  /** The WhatsApp user of the bridged chat. */
  phone: string;
  /** The WhatsApp user who talks to `phone` without the bridge (the gateway baseline). */
  peerPhone: string;
  receiver: TestClient;
  /** The bridged room (the portal) of `receiver` and `phone`. */
  portalRoomId: string;
  /** A plain room of `receiver` and the direct Matrix sender (the homeserver baseline). */
  directRoomId: string;
  /** A room of `receiver` and one user of the probe appservice (Synapse's appservice leg alone). */
  probeRoomId: string;
}

export interface Scenario {
  chats: Chat[];
  receivers: TestClient[];
  directSender: TestClient;
  /** Arrivals on the Matrix side (all receivers' syncs) and on the WhatsApp side (all inboxes). */
  atMatrix: Arrivals;
  atWhatsApp: Arrivals;
  /** Arrivals at the probe appservice (Synapse's transactions to it). */
  atAppservice: Arrivals;
  /** /sync responses whose timeline had a gap (a message may have been missed); 0 in a sound run. */
  syncGaps(): number;
  stop(): Promise<void>;
}

/** Runs fn over items with at most `limit` calls in flight. */
export async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function userUriOf(mxid: string): string {
  return `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;
}

/** Phone numbers no test uses: the benchmark's WhatsApp users. */
export function benchPhone(series: number, i: number): string {
  return `+49${series}${String(i).padStart(7, "0")}`;
}

export async function setUpScenario(
  stack: Stack,
  opts: { chats: number; receivers: number; probe: ProbeAppservice; say: (line: string) => void; timeoutMs: number },
): Promise<Scenario> {
  const { say, timeoutMs } = opts;
  const receivers = await inParallel(
    Array.from({ length: opts.receivers }, (_, r) => r),
    4,
    (r) => stack.user(`bench${r}`),
  );
  const directSender = await stack.user("direct");
  // Third-Party Chats are off for a new user: the benchmark's users turn them on.
  await inParallel(receivers, 4, (client) => stack.botRoom(client, { enable: true }));
  say(`${receivers.length} Matrix users talked to the bot`);

  const chats = Array.from({ length: opts.chats }, (_, index) => ({
    index,
    phone: benchPhone(1700, index),
    peerPhone: benchPhone(1710, index),
    receiver: receivers[index % receivers.length],
  }));
  await inParallel(chats, 4, async (c) => {
    await stack.sim.createUser(c.phone, `Bench ${c.index}`);
    await stack.sim.createUser(c.peerPhone, `Peer ${c.index}`);
  });
  say(`${chats.length * 2} WhatsApp users created`);

  // The WhatsApp side opens each chat (the bridge makes the portal and invites); the Matrix user joins.
  const withPortals = await inParallel(chats, 8, async (c) => {
    await stack.sim.sendText(c.phone, userUriOf(c.receiver.userId), "hello from the benchmark");
    const invite = await c.receiver.waitForInvite((i) => i.inviter === stack.ghostId(c.phone), { timeoutMs, description: `portal for ${c.phone}` });
    await c.receiver.joinRoom(invite.roomId);
    return { ...c, portalRoomId: invite.roomId };
  });
  say(`${chats.length} portals opened and joined`);
  const full = await inParallel(withPortals, 8, async (c) => {
    const directRoomId = await directSender.createRoom({ invite: [c.receiver.userId], is_direct: true, preset: "trusted_private_chat" });
    await c.receiver.joinRoom(directRoomId);
    return { ...c, directRoomId };
  });
  say(`${chats.length} direct rooms made`);
  // Like a portal: the Matrix user and one appservice user per chat, but nothing behind the appservice.
  const { probe } = opts;
  const withProbes = await inParallel(full, 8, async (c) => {
    const probeUser = await probe.registerUser(stack.hs.url, `${PROBE_LOCALPART_PREFIX}${c.index}`, stack.domain);
    const probeRoomId = await c.receiver.createRoom({ invite: [probeUser], is_direct: true, preset: "trusted_private_chat" });
    await probe.join(stack.hs.url, probeUser, probeRoomId);
    return { ...c, probeRoomId };
  });
  say(`${chats.length} rooms with the probe appservice made`);

  // The measuring clients: each receiver's lean /sync and the simulated users' inboxes.
  for (const r of receivers) await r.stopSync();
  const atMatrix = new Arrivals();
  const readers = receivers.map((r) => new MatrixReader(stack.hs.url, r.accessToken, atMatrix));
  for (const reader of readers) await reader.start();
  const atWhatsApp = new Arrivals();
  const simReader = new SimReader(stack.sim, atWhatsApp);
  await simReader.watch(full.map((c) => c.phone));

  const scenario: Scenario = {
    chats: withProbes,
    receivers,
    directSender,
    atMatrix,
    atWhatsApp,
    atAppservice: probe.arrivals,
    syncGaps: () => readers.reduce((n, r) => n + r.gaps, 0),
    async stop() {
      for (const reader of readers) await reader.stop();
      await simReader.stop();
    },
  };
  // One message each way on every path first: sessions, caches and connections are warm before timing.
  await warmUp(stack, scenario, timeoutMs);
  say("every path warmed up");
  return scenario;
}

async function warmUp(stack: Stack, s: Scenario, timeoutMs: number): Promise<void> {
  const n = s.chats.length;
  await inParallel(s.chats, 8, async (c) => {
    await stack.sim.sendText(c.phone, userUriOf(c.receiver.userId), tagOf("warm-bridged-in", c.index));
    await s.directSender.sendText(c.directRoomId, tagOf("warm-direct-in", c.index));
    await c.receiver.sendText(c.portalRoomId, tagOf("warm-bridged-out", c.index));
    await stack.sim.sendText(c.peerPhone, c.phone, tagOf("warm-direct-out", c.index));
    await c.receiver.sendText(c.probeRoomId, tagOf("warm-appservice", c.index));
  });
  await s.atMatrix.waitForCount("warm-bridged-in", n, timeoutMs);
  await s.atMatrix.waitForCount("warm-direct-in", n, timeoutMs);
  await s.atWhatsApp.waitForCount("warm-bridged-out", n, timeoutMs);
  await s.atWhatsApp.waitForCount("warm-direct-out", n, timeoutMs);
  await s.atAppservice.waitForCount("warm-appservice", n, timeoutMs);
}
