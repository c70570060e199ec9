/**
 * The encrypted path of the benchmark: the same throughput rounds as the plain bridged path, with
 * every portal in an encrypted room and the Matrix users on a real end-to-end encrypting client
 * (matrix-nio with libolm, test/support/nio-peer.py), against the same baselines, measured again
 * in the same rounds (alternating with the encrypted rounds): Matrix → Matrix for WhatsApp →
 * Matrix; WhatsApp → WhatsApp and Matrix → appservice for Matrix → WhatsApp. The bridge's CPU per
 * message in these rounds, next to the plain rounds' figure, is what encryption costs.
 *
 * The stack's bridge runs without encryption for the other phases (its Matrix users are plain
 * clients); for these rounds it is restarted with `encryption: {allow: true, default: true}`, so
 * the portals it opens for the encrypted chats start encrypted, and afterwards restarted as it was.
 */
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import YAML from "yaml";
import { registerUser, type TestClient } from "../test/support/matrix-client";
import { NioPeer } from "../test/support/nio";
import type { Stack } from "../test/support/stack";
import { Arrivals, SimReader, tagOf } from "./arrivals";
import { compareThroughput, Path, Paths, ThroughputResult } from "./paths";
import { cpuMs } from "./process-stats";
import { Report } from "./report";
import { benchPhone, Chat, inParallel, Scenario, userUriOf } from "./scenario";
import { ratio } from "./stats";

/** One encrypted chat: a WhatsApp user and the nio user whose encrypted portal it is. */
export interface EncryptedChat {
  index: number;
  phone: string;
  user: TestClient;
  peer: NioPeer;
  portalRoomId: string;
}

/** The bridge's `encryption:` section, written into the stack's config file (the next start reads it). */
export function setBridgeEncryption(stack: Stack, encryption: { allow: boolean; default?: boolean }): void {
  const config = YAML.parse(fs.readFileSync(stack.configPath, "utf8")) as Record<string, unknown>;
  config.encryption = encryption;
  fs.writeFileSync(stack.configPath, YAML.stringify(config));
}

/** Restarts the stack's bridge with encryption on and checks, in its log, that the homeserver check turned it on. */
export async function restartEncrypted(stack: Stack): Promise<void> {
  const watch = stack.bridge.watch();
  try {
    setBridgeEncryption(stack, { allow: true, default: true });
    await stack.restartBridge();
    await watch.until((line) => /encryption: on/.test(line), 60_000);
  } finally {
    watch.stop();
  }
}

/**
 * Opens `count` encrypted chats over `users` new Matrix users, each with its own nio client:
 * the user talks to the bot (`enable`), each WhatsApp user writes first, and the user joins the
 * portal its ghost opens, which must be encrypted.
 */
export async function openEncryptedChats(stack: Stack, count: number, users: number, series: number, timeoutMs: number): Promise<{ chats: EncryptedChat[]; stop(): void }> {
  const peers: NioPeer[] = [];
  const stop = () => {
    for (const peer of peers) peer.stop();
  };
  try {
    const people = await inParallel(
      Array.from({ length: users }, (_, u) => u),
      4,
      async (u) => {
        const user = await registerUser(stack.hs, `benchenc${series}_${u}`);
        const peer = NioPeer.start(stack.hs, user, stack.dir, { timelineLimit: 1000 });
        peers.push(peer);
        const bot = await peer.ask<{ room_id: string }>({ cmd: "create_room", invite: stack.botId }, timeoutMs);
        await peer.ask({ cmd: "wait_body", room: bot.room_id, sender: stack.botId, pattern: "start <phone>" }, timeoutMs);
        await peer.ask({ cmd: "send", room: bot.room_id, text: "enable" }, timeoutMs);
        await peer.ask({ cmd: "wait_body", room: bot.room_id, sender: stack.botId, pattern: "Third-Party Chats (are \\*\\*on\\*\\*|were already on)" }, timeoutMs);
        return { user, peer };
      },
    );
    const chats: EncryptedChat[] = [];
    // One chat at a time per user (a nio peer answers one command at a time), the users in parallel.
    await inParallel(people, 4, async ({ user, peer }, u) => {
      for (let index = u; index < count; index += users) {
        const phone = benchPhone(series, index);
        await stack.sim.createUser(phone, `Encrypted ${index}`);
        await stack.sim.sendText(phone, userUriOf(user.userId), "hello from the benchmark");
        const room = (await peer.ask<{ room_id: string }>({ cmd: "wait_invite", inviter: stack.ghostId(phone) }, timeoutMs)).room_id;
        const joined = await peer.ask<{ encrypted: boolean }>({ cmd: "join", room }, timeoutMs);
        if (!joined.encrypted) throw new Error(`the portal of ${phone} is not encrypted (encryption.default should make it so)`);
        chats.push({ index, phone, user, peer, portalRoomId: room });
      }
    });
    chats.sort((a, b) => a.index - b.index);
    return { chats, stop };
  } catch (err) {
    stop();
    throw err;
  }
}

/**
 * What the nio clients decrypted, as arrivals: each peer is asked every 100 ms for the messages
 * it saw since the last time; the arrival time is when nio had decrypted the message (wall clock,
 * turned into this process's performance.now()).
 */
export class NioArrivals {
  readonly arrivals = new Arrivals();
  private stopped = false;
  private readonly loop: Promise<void>;
  lastError?: string;

  constructor(peers: { peer: NioPeer; userId: string }[]) {
    const positions = peers.map(() => 0);
    this.loop = (async () => {
      while (!this.stopped) {
        for (const [i, { peer, userId }] of peers.entries()) {
          try {
            const got = await peer.ask<{ arrivals: { sender: string; text: unknown; at: number }[]; next: number }>({ cmd: "arrivals", after: positions[i] });
            positions[i] = got.next;
            for (const a of got.arrivals) if (a.sender !== userId) this.arrivals.record(a.text, a.at - performance.timeOrigin);
          } catch (err) {
            this.lastError = (err as Error).message;
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

function uniquePeers(chats: readonly EncryptedChat[]): { peer: NioPeer; userId: string }[] {
  const seen = new Map<NioPeer, string>();
  for (const c of chats) seen.set(c.peer, c.user.userId);
  return [...seen].map(([peer, userId]) => ({ peer, userId }));
}

let txn = 0;

/**
 * The encrypted bridged paths. They are used with the scenario's chats (the baselines' rooms),
 * chat i of the scenario standing for encrypted chat i: the same number of chats at once.
 */
export function encryptedPaths(stack: Stack, chats: readonly EncryptedChat[], atMatrix: Arrivals, atWhatsApp: Arrivals): { remoteToMatrix: Path; matrixToRemote: Path } {
  const byIndex = new Map(chats.map((c) => [c.index, c]));
  const of = (chat: Chat): EncryptedChat => {
    const c = byIndex.get(chat.index);
    if (!c) throw new Error(`no encrypted chat ${chat.index}`);
    return c;
  };
  return {
    remoteToMatrix: {
      name: "WhatsApp → bridge → Matrix, encrypted",
      arrivals: atMatrix,
      send: (chat, text) => stack.sim.sendText(of(chat).phone, userUriOf(of(chat).user.userId), text),
    },
    matrixToRemote: {
      name: "Matrix → bridge → WhatsApp, encrypted",
      arrivals: atWhatsApp,
      send: (chat, text) => of(chat).peer.ask({ cmd: "send_txn", room: of(chat).portalRoomId, text, txn: `bench-${process.pid}-${++txn}` }),
    },
  };
}

export interface EncryptedSizes {
  perChat: number;
  rounds: number;
  timeoutMs: number;
}

/**
 * The encrypted rounds: opens as many encrypted chats as the scenario has chats (over as many
 * Matrix users), warms each up one message each way, then runs both directions' throughput
 * rounds against the baselines and adds the metrics. Leaves the stack's bridge as it found it
 * (restarted without encryption).
 */
export async function measureEncryptedPaths(stack: Stack, scenario: Scenario, paths: Paths, sizes: EncryptedSizes, report: Report, say: (line: string) => void): Promise<void> {
  await restartEncrypted(stack);
  say("bridge restarted with encryption on");
  const opened = await openEncryptedChats(stack, scenario.chats.length, scenario.receivers.length, 1740, sizes.timeoutMs);
  const atMatrix = new NioArrivals(uniquePeers(opened.chats));
  const atWhatsApp = new Arrivals();
  const simReader = new SimReader(stack.sim, atWhatsApp);
  try {
    await simReader.watch(opened.chats.map((c) => c.phone));
    say(`${opened.chats.length} encrypted portals opened and joined by ${scenario.receivers.length} nio clients`);
    const encrypted = encryptedPaths(stack, opened.chats, atMatrix.arrivals, atWhatsApp);
    const chats = scenario.chats.filter((c) => opened.chats.some((e) => e.index === c.index));
    // One message each way per chat first: Olm sessions, room keys and device lists are in place before timing.
    await inParallel(chats, 8, async (c) => {
      await encrypted.remoteToMatrix.send(c, tagOf("warm-encrypted-in", c.index));
      await encrypted.matrixToRemote.send(c, tagOf("warm-encrypted-out", c.index));
    });
    await atMatrix.arrivals.waitForCount("warm-encrypted-in", chats.length, sizes.timeoutMs);
    await atWhatsApp.waitForCount("warm-encrypted-out", chats.length, sizes.timeoutMs);
    say("encrypted paths warmed up");

    const bridgeCpu = () => cpuMs(stack.bridge.pid!);
    const inbound = await compareThroughput(
      { direct: paths.remoteToMatrix.direct, bridged: encrypted.remoteToMatrix },
      chats,
      sizes.perChat,
      sizes.rounds,
      sizes.timeoutMs,
      bridgeCpu,
    );
    say(`WhatsApp → Matrix, encrypted: ${inbound.bridged.perSecond.toFixed(1)}/s bridged, ${inbound.direct.perSecond.toFixed(1)}/s Matrix → Matrix`);
    const outbound = await compareThroughput(
      { direct: paths.matrixToRemote.direct, synapseAlone: paths.matrixToRemote.synapseAlone, bridged: encrypted.matrixToRemote },
      chats,
      sizes.perChat,
      sizes.rounds,
      sizes.timeoutMs,
      bridgeCpu,
    );
    say(
      `Matrix → WhatsApp, encrypted: ${outbound.bridged.perSecond.toFixed(1)}/s bridged, ${outbound.direct.perSecond.toFixed(1)}/s WhatsApp → WhatsApp, ${outbound.synapseAlone.perSecond.toFixed(1)}/s Matrix → appservice`,
    );
    encryptedMetrics(report, inbound, outbound);
    if (atMatrix.lastError) report.note(`note: polling the nio clients failed at least once: ${atMatrix.lastError}`);
  } finally {
    await atMatrix.stop();
    await simReader.stop();
    opened.stop();
    setBridgeEncryption(stack, { allow: false });
    await stack.restartBridge();
  }
}

function encryptedMetrics(
  report: Report,
  inbound: { direct: ThroughputResult; bridged: ThroughputResult; bridgeCpuMs: number },
  outbound: { direct: ThroughputResult; synapseAlone: ThroughputResult; bridged: ThroughputResult; bridgeCpuMs: number },
): void {
  const spent = (r: ThroughputResult) => `${r.messages} messages in ${(r.ms / 1000).toFixed(1)} s`;
  report.add({ metric: "throughput_remote_to_matrix_bridged_encrypted", value: inbound.bridged.perSecond, unit: "msg/s", note: `${spent(inbound.bridged)}; nio decrypts` });
  report.add({
    metric: "throughput_remote_to_matrix_direct_encrypted_rounds",
    value: inbound.direct.perSecond,
    unit: "msg/s",
    note: `${spent(inbound.direct)}: the Matrix → Matrix baseline, measured again between the encrypted rounds`,
  });
  report.add({
    metric: "throughput_ratio_remote_to_matrix_encrypted",
    value: ratio(inbound.bridged.perSecond, inbound.direct.perSecond),
    unit: "ratio",
    note: "encrypted bridged / a Matrix client's own (plain) sends, in the same rounds",
  });
  report.add({
    metric: "throughput_matrix_to_remote_bridged_encrypted",
    value: outbound.bridged.perSecond,
    unit: "msg/s",
    note: `${spent(outbound.bridged)}; nio encrypts, one send at a time per Matrix user`,
  });
  report.add({
    metric: "throughput_ratio_matrix_to_remote_encrypted",
    value: ratio(outbound.bridged.perSecond, outbound.direct.perSecond),
    unit: "ratio",
    note: "encrypted bridged / WhatsApp → WhatsApp, in the same rounds",
  });
  const slowerLeg = Math.min(outbound.synapseAlone.perSecond, outbound.direct.perSecond);
  report.add({
    metric: "throughput_ratio_matrix_to_remote_vs_appservice_encrypted",
    value: ratio(outbound.bridged.perSecond, slowerLeg),
    unit: "ratio",
    note: `encrypted bridged / the slower leg alone (${slowerLeg === outbound.direct.perSecond ? "WhatsApp → WhatsApp" : "Matrix → appservice, plain"}, ${slowerLeg.toFixed(1)}/s), in the same rounds`,
  });
  const cpuNote = (plainMetric: string) => {
    const plain = report.get(plainMetric)?.value;
    return `CPU time of the bridge process during the encrypted bridged rounds, per message${typeof plain === "number" && plain > 0 ? ` (${plain} unencrypted)` : ""}`;
  };
  const cpuIn = inbound.bridgeCpuMs / inbound.bridged.messages;
  const cpuOut = outbound.bridgeCpuMs / outbound.bridged.messages;
  report.add({ metric: "bridge_cpu_ms_per_message_remote_to_matrix_encrypted", value: cpuIn, unit: "ms", note: cpuNote("bridge_cpu_ms_per_message_remote_to_matrix") });
  report.add({ metric: "bridge_cpu_ms_per_message_matrix_to_remote_encrypted", value: cpuOut, unit: "ms", note: cpuNote("bridge_cpu_ms_per_message_matrix_to_remote") });
  for (const direction of ["remote_to_matrix", "matrix_to_remote"] as const) {
    const plain = report.get(`bridge_cpu_ms_per_message_${direction}`)?.value;
    const enc = direction === "remote_to_matrix" ? cpuIn : cpuOut;
    if (typeof plain === "number" && plain > 0)
      report.add({ metric: `encryption_cpu_ratio_${direction}`, value: enc / plain, unit: "ratio", note: "bridge CPU per message, encrypted / unencrypted (same run)" });
  }
}
