/**
 * `npm run bench [-- --quick] [-- --json]`: starts a real Synapse, the gateway, the WhatsApp
 * simulator and the bridge (test/support/stack.ts) and measures, in one run, what the bridge
 * adds to the paths a message takes without it: throughput and latency both ways as ratios and
 * differences against direct paths measured in the same run (and, for Matrix → WhatsApp,
 * against Synapse's own appservice push, through a probe appservice), startup and memory with 100,000
 * portals (bench/scale.ts), and memory while a large video crosses (bench/media-rss.ts).
 * docs/benchmarks.md explains the method and the latest results.
 */
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Stack } from "../test/support/stack";
import { measureEncryptedPaths } from "./encrypted";
import { addEncryptedMediaRss } from "./encrypted-media-rss";
import { formatHeap, nodeArgsForHeapSnapshots, summarizeHeap, takeHeapSnapshot } from "./heap";
import { homeserverWorkDelta, HomeserverWork, perMessage, readHomeserverWork, sameWork } from "./homeserver-work";
import { histogramDelta, histogramMean, histogramQuantile, HistogramReading, parseHistogram } from "./histogram";
import { compareThroughput, latencies, LatencySample, pathsOf, throughput, ThroughputResult } from "./paths";
import { cpuMs, INSPECT_ARGS, inspectorUrlFrom, memoryAtRest } from "./process-stats";
import { formatProfile, monotonicUs, readProfile, summarizeProfile } from "./profile";
import { Metric, Report, toJsonLines, toTable } from "./report";
import { measureMediaRss, mediaRssMetrics } from "./media-rss";
import { ProbeAppservice } from "./probe";
import { measureScale, readyMsFrom, registerActivityReceivers, scaleMetrics } from "./scale";
import { benchPhone, inParallel, setUpScenario } from "./scenario";
import { addedLatency, ratio, summarize } from "./stats";

interface Sizes {
  chats: number;
  perChat: number;
  /** Alternating direct/bridged rounds the throughput messages are split into. */
  rounds: number;
  receivers: number;
  latencySamples: number;
  scalePortals: number;
  scaleUsers: number;
  activityPortals: number;
  activityReceivers: number;
  timeoutMs: number;
}

const FULL: Sizes = {
  chats: 100,
  perChat: 20,
  rounds: 4,
  receivers: 10,
  latencySamples: 200,
  scalePortals: 100_000,
  scaleUsers: 10_000,
  activityPortals: 1_000,
  activityReceivers: 50,
  timeoutMs: 240_000,
};

const QUICK: Sizes = {
  chats: 20,
  perChat: 10,
  rounds: 2,
  receivers: 4,
  latencySamples: 40,
  scalePortals: 10_000,
  scaleUsers: 100,
  activityPortals: 100,
  activityReceivers: 10,
  timeoutMs: 90_000,
};

interface Options {
  quick: boolean;
  json: boolean;
  profile: boolean;
  heapSnapshots: boolean;
  /** bridge.message_status_events for the bridge under test (off, as the product's default). */
  statusEvents: boolean;
  sizes: Sizes;
}

const USAGE = `usage: npm run bench [-- [--quick] [--json] [--no-profile] [--heap-snapshots] [--status-events] [--chats-per-user N] [--portals N] [--users M]]
  --quick             a smaller run (under 2 minutes)
  --json              one JSON object per metric and line on stdout, instead of the table
  --no-profile        do not run the bridge under the CPU profiler
  --heap-snapshots    take a heap snapshot of the bridge at each memory reading and list what holds the heap
  --status-events     run the bridge with bridge.message_status_events: true (delivery status events; off by default)
  --chats-per-user N  spread the chats over Matrix users so each has N (default: 10 full, 5 quick)
  --portals N         portals in the store of the scale phase (default: 100000 full, 10000 quick)
  --users M           Matrix users owning them (default: 10000 full, 100 quick)
`;

function parseArgs(argv: string[]): Options {
  const flags = new Set(["--quick", "--json", "--no-profile", "--heap-snapshots", "--status-events", "--help", "-h"]);
  let chatsPerUser: number | undefined;
  const scale: Partial<Pick<Sizes, "scalePortals" | "scaleUsers">> = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--portals" || argv[i] === "--users") {
      const n = Number(argv[i + 1]);
      if (!Number.isInteger(n) || n < 1) {
        process.stderr.write(`bench: ${argv[i]} needs a whole number ≥ 1\n${USAGE}`);
        process.exit(2);
      }
      scale[argv[i] === "--portals" ? "scalePortals" : "scaleUsers"] = n;
      i++;
    } else if (argv[i] === "--chats-per-user") {
      chatsPerUser = Number(argv[++i]);
      if (!Number.isInteger(chatsPerUser) || chatsPerUser < 1) {
        process.stderr.write(`bench: --chats-per-user needs a whole number ≥ 1\n${USAGE}`);
        process.exit(2);
      }
    } else if (!flags.has(argv[i])) {
      process.stderr.write(`bench: unknown option ${argv[i]}\n${USAGE}`);
      process.exit(2);
    }
  }
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  // `npm run bench --quick` (without "--") hands the flag to npm, which passes it on as npm_config_quick.
  const quick = argv.includes("--quick") || process.env.npm_config_quick === "true";
  const json = argv.includes("--json") || process.env.npm_config_json === "true";
  const base = quick ? QUICK : FULL;
  const sizes = { ...base, ...scale, ...(chatsPerUser ? { receivers: Math.ceil(base.chats / chatsPerUser) } : {}) };
  if (sizes.scaleUsers < sizes.activityReceivers) sizes.scaleUsers = sizes.activityReceivers;
  return { quick, json, profile: !argv.includes("--no-profile"), heapSnapshots: argv.includes("--heap-snapshots"), statusEvents: argv.includes("--status-events"), sizes };
}

const started = performance.now();
function say(line: string): void {
  process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(0).padStart(3)} s] ${line}\n`);
}

const MEDIA_TARGET: Metric["target"] = { op: "<=", value: 32 };

/** Adds the media benchmark's metric lines ({metric, value, unit}); the 100 MB figure gets its target. */
function addMediaResult(report: Report, lines: unknown): void {
  if (!Array.isArray(lines) || !lines.every((m) => m && typeof m.metric === "string" && typeof m.value === "number" && typeof m.unit === "string")) {
    report.missing("rss_growth_mb_100mb_video", "MB", `bench/media-rss.ts answered ${JSON.stringify(lines)?.slice(0, 100)}, not metric lines`, MEDIA_TARGET);
    return;
  }
  for (const m of lines as Metric[]) report.add({ metric: m.metric, value: m.value, unit: m.unit, ...(m.metric === "rss_growth_mb_100mb_video" ? { target: MEDIA_TARGET } : {}) });
  if (!report.get("rss_growth_mb_100mb_video")) report.missing("rss_growth_mb_100mb_video", "MB", "bench/media-rss.ts reported no such metric", MEDIA_TARGET);
}

function throughputMetrics(report: Report, direction: "remote_to_matrix" | "matrix_to_remote", direct: ThroughputResult, bridged: ThroughputResult): void {
  const spent = (r: ThroughputResult) => `${r.messages} messages in ${(r.ms / 1000).toFixed(1)} s`;
  report.add({ metric: `throughput_${direction}_direct`, value: direct.perSecond, unit: "msg/s", note: spent(direct) });
  report.add({ metric: `throughput_${direction}_bridged`, value: bridged.perSecond, unit: "msg/s", note: spent(bridged) });
  // WhatsApp → Matrix: against a Matrix client's own sends, a target (issue 16). Matrix → WhatsApp: against the gateway alone, which never touches the homeserver: information only.
  const target =
    direction === "remote_to_matrix"
      ? { target: { op: ">=" as const, value: 0.95 } }
      : { note: "against the gateway alone (information: the homeserver's leg is not in the baseline)" };
  report.add({ metric: `throughput_ratio_${direction}`, value: ratio(bridged.perSecond, direct.perSecond), unit: "ratio", ...target });
}

/** How long the bridge must ask nothing of the homeserver to count as done: longer than the 2 s a "sent" status waits for the delivery receipt. */
const QUIET_MS = 2500;

/**
 * The bridge's homeserver counters once they have stopped moving (QUIET_MS without a request),
 * so that what trails a phase's last message (a delivery status, a read receipt) is counted in it.
 */
async function settledHomeserverWork(stack: Stack, report: Report, timeoutMs = 30_000): Promise<HomeserverWork> {
  const deadline = performance.now() + timeoutMs;
  let last = readHomeserverWork(await stack.metrics());
  let quietSince = performance.now();
  while (performance.now() - quietSince < QUIET_MS) {
    if (performance.now() > deadline) {
      report.note(
        `warning: the bridge was still making homeserver requests ${timeoutMs / 1000} s after a throughput phase; homeserver_*_per_message may count some of the next phase`,
      );
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
    const now = readHomeserverWork(await stack.metrics());
    if (!sameWork(now, last)) quietSince = performance.now();
    last = now;
  }
  return last;
}

/**
 * Homeserver work per bridged message in a direction's throughput rounds (all its rounds: the
 * direct paths do not touch the bridge), from the bridge's own counters.
 */
function homeserverWorkMetrics(report: Report, direction: "remote_to_matrix" | "matrix_to_remote", work: HomeserverWork, messages: number): void {
  const per = perMessage(work, messages);
  const target = direction === "remote_to_matrix" ? 1.05 : 0.1;
  report.add({
    metric: `homeserver_requests_per_message_${direction}`,
    value: per.requests,
    unit: "requests",
    target: { op: "<=", value: target },
    note: `HTTP requests of the bridge to the homeserver by kind, typing and receipts aside: ${per.requestsNote}`,
  });
  report.add({
    metric: `homeserver_events_per_message_${direction}`,
    value: per.events,
    unit: "events",
    note: `room events the homeserver stored for the bridge: ${per.eventsNote}`,
  });
}

/**
 * The bridge's own histograms of a Matrix message: handling the pushed event (up to queueing
 * it), queued → the network accepted it, and within that the accepted send attempt.
 */
function bridgeHistograms(exposition: string): { handling: HistogramReading; passage: HistogramReading; attempt: HistogramReading } {
  return {
    handling: parseHistogram(exposition, "bridge_matrix_event_duration_seconds", { type: "m.room.message" }),
    passage: parseHistogram(exposition, "bridge_matrix_to_network_duration_seconds"),
    attempt: parseHistogram(exposition, "bridge_network_send_duration_seconds", { outcome: "accepted" }),
  };
}

/**
 * The bridge's own time per Matrix → WhatsApp message in the latency phase, from its /metrics:
 * handling the event the homeserver pushed (which ends by queueing it) plus queued → the
 * gateway accepted it (the gateway's acknowledgement is in it). Means add up; percentiles don't.
 */
function bridgeOwnTime(report: Report, handling: HistogramReading, passage: HistogramReading, attempt: HistogramReading, sent: number): void {
  const metric = "bridge_internal_ms_mean_matrix_to_remote";
  if (handling.count < sent || passage.count < sent) {
    report.missing(
      metric,
      "ms",
      `the bridge's /metrics counted ${handling.count} handled and ${passage.count} accepted Matrix messages of ${sent} sent (a build without bridge_matrix_to_network_duration_seconds?)`,
    );
    return;
  }
  const handlingMs = histogramMean(handling) * 1000;
  const passageMs = histogramMean(passage) * 1000;
  report.add({
    metric,
    value: handlingMs + passageMs,
    unit: "ms",
    note:
      `bridge /metrics, ${passage.count === handling.count ? `${passage.count} messages` : `${handling.count} handled, ${passage.count} accepted`}: ` +
      `handling the pushed event ${handlingMs.toFixed(1)} + queued → gateway accepted ${passageMs.toFixed(1)} (p50 ≈ ${(histogramQuantile(passage, 0.5) * 1000).toFixed(1)} from buckets; ` +
      `the send attempt itself, encryption and the gateway's round trip: ${attempt.count > 0 ? (histogramMean(attempt) * 1000).toFixed(1) : "?"})`,
  });
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const { sizes } = opts;
  const report = new Report();
  say(`${opts.quick ? "quick" : "full"} run${opts.statusEvents ? " with message status events" : ""}: starting Synapse, gateway, simulator and bridge`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "mib-bench-"));
  const diagnostics = path.join(dir, "diagnostics");
  mkdirSync(diagnostics);
  // The inspector lets the benchmark ask for a full GC before memory readings; the heap
  // snapshot flags are for --heap-snapshots; the profiler writes when the bridge exits.
  const nodeArgs = opts.heapSnapshots ? nodeArgsForHeapSnapshots(diagnostics) : [];
  const profileArgs = opts.profile ? ["--cpu-prof", "--cpu-prof-dir", diagnostics] : [];
  const heapSnapshot = async (label: string, pid: number) => {
    if (!opts.heapSnapshots) return;
    const file = await takeHeapSnapshot(pid, diagnostics);
    report.note(formatHeap(label, file, summarizeHeap(file)));
  };
  // Synapse loads the probe appservice's registration next to the bridge's.
  const probe = await ProbeAppservice.start();
  const stack = await Stack.start("bench", {
    logLevel: "info",
    dir,
    bridgeNodeArgs: [...INSPECT_ARGS, ...nodeArgs, ...profileArgs],
    recordFrames: false,
    bridgeConfig: (c) => {
      c.bridge = { ...(c.bridge ?? {}), message_status_events: opts.statusEvents };
    },
    extraRegistrations: [probe.writeRegistration(path.join(dir, "probe-registration.yaml"))],
    // Third-Party Chats stay off by default, as in the product: each benchmark user says `enable` (scenario.ts, media-rss.ts).
  }).catch(async (err) => {
    await probe.stop();
    throw err;
  });
  say(`stack up in ${stack.dir}`);
  if (opts.statusEvents) report.note("run with bridge.message_status_events: true (--status-events): a delivery status event per message sent to WhatsApp");
  let failed = false;
  let profiled: { fromUs: number; toUs: number } | undefined;
  try {
    if (!stack.hs.managed)
      throw new Error("the benchmark needs a Synapse it starts itself (MATRIX_HOMESERVER_URL is set): that homeserver has not loaded the probe appservice's registration");
    const firstOutput = stack.bridge.tail(400);
    report.add({ metric: "startup_ms_empty_store", value: readyMsFrom(firstOutput), unit: "ms", note: '"bridge ready" on its first start, for comparison' });
    const inspector = inspectorUrlFrom(firstOutput);

    // The WhatsApp users and Matrix accounts of the scale phase's activity are made now, while
    // nothing is being measured, so that phase times only the bridge.
    const activityPhones = Array.from({ length: sizes.activityPortals }, (_, i) => benchPhone(1720, i));
    const activityReady = Promise.all([
      inParallel(activityPhones, 4, (phone, i) => stack.sim.createUser(phone, `Activity ${i}`)),
      registerActivityReceivers(stack, sizes.activityReceivers),
    ]);
    activityReady.catch(() => undefined);

    const scenario = await setUpScenario(stack, { chats: sizes.chats, receivers: sizes.receivers, probe, say, timeoutMs: sizes.timeoutMs });
    const paths = pathsOf(stack, scenario);
    const { chats } = scenario;
    await activityReady;
    say(`${activityPhones.length} WhatsApp users for the scale phase are ready`);

    // ---- throughput
    profiled = { fromUs: monotonicUs(), toUs: 0 };
    const bridgeCpu = () => cpuMs(stack.bridge.pid!);
    // What the bridge asks of the homeserver in each direction's rounds, its delivery statuses and receipts that trail the last message included.
    const workAtStart = await settledHomeserverWork(stack, report);
    const inbound = await compareThroughput(paths.remoteToMatrix, chats, sizes.perChat, sizes.rounds, sizes.timeoutMs, bridgeCpu);
    const workAfterInbound = await settledHomeserverWork(stack, report);
    say(`WhatsApp → Matrix: ${inbound.bridged.perSecond.toFixed(1)}/s bridged, ${inbound.direct.perSecond.toFixed(1)}/s Matrix → Matrix`);
    throughputMetrics(report, "remote_to_matrix", inbound.direct, inbound.bridged);
    const outbound = await compareThroughput(paths.matrixToRemote, chats, sizes.perChat, sizes.rounds, sizes.timeoutMs, bridgeCpu);
    const workAfterOutbound = await settledHomeserverWork(stack, report);
    homeserverWorkMetrics(report, "remote_to_matrix", homeserverWorkDelta(workAfterInbound, workAtStart), inbound.bridged.messages);
    homeserverWorkMetrics(report, "matrix_to_remote", homeserverWorkDelta(workAfterOutbound, workAfterInbound), outbound.bridged.messages);
    say(
      `Matrix → WhatsApp: ${outbound.bridged.perSecond.toFixed(1)}/s bridged, ${outbound.direct.perSecond.toFixed(1)}/s WhatsApp → WhatsApp, ${outbound.synapseAlone.perSecond.toFixed(1)}/s Matrix → appservice`,
    );
    throughputMetrics(report, "matrix_to_remote", outbound.direct, outbound.bridged);
    const acceptRate = (r: ThroughputResult) => (r.messages * 1000) / r.sendMs;
    // The bridged path chains Synapse's appservice push and the gateway: it can go no faster than the slower of the two alone.
    const slowerLeg = Math.min(outbound.synapseAlone.perSecond, outbound.direct.perSecond);
    report.add({
      metric: "throughput_matrix_to_appservice_direct",
      value: outbound.synapseAlone.perSecond,
      unit: "msg/s",
      // How fast Synapse took the sends with and without the bridge in the loop: the bridge's own Matrix events (delivery statuses) load it too.
      note: `${outbound.synapseAlone.messages} messages in ${(outbound.synapseAlone.ms / 1000).toFixed(1)} s: the same Matrix users → Synapse → an appservice that answers at once; Synapse accepted the sends at ${acceptRate(outbound.synapseAlone).toFixed(1)}/s (${acceptRate(outbound.bridged).toFixed(1)}/s in the bridged rounds)`,
    });
    report.add({
      metric: "throughput_ratio_matrix_to_remote_vs_appservice",
      value: ratio(outbound.bridged.perSecond, slowerLeg),
      unit: "ratio",
      target: { op: ">=", value: 0.95 },
      note: `bridged / the slower leg alone (${slowerLeg === outbound.direct.perSecond ? "WhatsApp → WhatsApp" : "Matrix → appservice"}, ${slowerLeg.toFixed(1)}/s): 1 = the bridge is not the bottleneck (chained, the legs also share the cores)`,
    });
    // The bridge's CPU per message (its whole process: Signal, gateway protocol, HTTP, GC): what a busier bridge would run out of first.
    const cpuNote = "CPU time of the bridge process during the bridged rounds, per message";
    report.add({ metric: "bridge_cpu_ms_per_message_remote_to_matrix", value: inbound.bridgeCpuMs / inbound.bridged.messages, unit: "ms", note: cpuNote });
    report.add({ metric: "bridge_cpu_ms_per_message_matrix_to_remote", value: outbound.bridgeCpuMs / outbound.bridged.messages, unit: "ms", note: cpuNote });
    profiled.toUs = monotonicUs();
    // The pace Synapse accepted the Matrix user's sends at in the same rounds: what the bridge was fed.
    report.add({
      metric: "throughput_ratio_matrix_to_remote_vs_homeserver_accept",
      value: ratio(outbound.bridged.perSecond, (outbound.bridged.messages * 1000) / outbound.bridged.sendMs),
      unit: "ratio",
      note: `bridged end to end over the rate Synapse accepted the sends (${((outbound.bridged.messages * 1000) / outbound.bridged.sendMs).toFixed(1)}/s): 1 = the bridge keeps up with the homeserver`,
    });
    const afterThroughput = await memoryAtRest(stack.bridge.pid!, inspector, sizes.timeoutMs);
    report.add({
      metric: "rss_mb_after_throughput",
      value: afterThroughput.afterGcMb,
      unit: "MB",
      note: `${chats.length} portals, after ${chats.length * sizes.perChat * 2} bridged messages; ${afterThroughput.asFoundMb.toFixed(0)} MB before a full GC`,
    });
    await heapSnapshot("after the throughput runs", stack.bridge.pid!);

    // ---- latency, one message at a time, all five paths interleaved
    // The GC above may have thrown away optimized code: one message each way first.
    await throughput(paths.remoteToMatrix.bridged, chats, 1, sizes.timeoutMs);
    await throughput(paths.matrixToRemote.bridged, chats, 1, sizes.timeoutMs);
    const bridgeHistogramsBefore = bridgeHistograms(await stack.metrics());
    const latencyLog: LatencySample[] = [];
    const [inD, inB, outD, outB, outS] = await latencies(
      [paths.remoteToMatrix.direct, paths.remoteToMatrix.bridged, paths.matrixToRemote.direct, paths.matrixToRemote.bridged, paths.matrixToRemote.synapseAlone],
      chats,
      sizes.latencySamples,
      sizes.timeoutMs,
      (sample) => latencyLog.push(sample),
    );
    const bridgeHistogramsAfter = bridgeHistograms(await stack.metrics());
    // Every sample with the path measured before it, for a closer look at what one path costs the next.
    writeFileSync(path.join(dir, "latency-samples.json"), JSON.stringify(latencyLog, null, 1));
    const addedIn = addedLatency(inB, inD);
    const addedOut = addedLatency(outB, outD);
    for (const [label, samples] of [
      ["remote_to_matrix_direct", inD],
      ["remote_to_matrix_bridged", inB],
      ["matrix_to_remote_direct", outD],
      ["matrix_to_remote_bridged", outB],
      ["matrix_to_appservice_direct", outS],
    ] as const) {
      const s = summarize(samples);
      report.add({ metric: `latency_p50_ms_${label}`, value: s.p50, unit: "ms", note: `${s.count} samples` });
      report.add({ metric: `latency_p99_ms_${label}`, value: s.p99, unit: "ms", note: `max ${s.max.toFixed(1)} ms` });
    }
    report.add({ metric: "added_latency_p50_ms_remote_to_matrix", value: addedIn.p50, unit: "ms", note: "bridged − Matrix → Matrix" });
    report.add({ metric: "added_latency_p99_ms_remote_to_matrix", value: addedIn.p99, unit: "ms", note: "bridged − Matrix → Matrix" });
    report.add({ metric: "added_latency_p50_ms_matrix_to_remote", value: addedOut.p50, unit: "ms", note: "bridged − WhatsApp → WhatsApp" });
    report.add({ metric: "added_latency_p99_ms_matrix_to_remote", value: addedOut.p99, unit: "ms", note: "bridged − WhatsApp → WhatsApp" });
    // Information: against the gateway alone, Matrix → WhatsApp contains the homeserver's hop (the targets are the bridge's share below).
    report.add({ metric: "added_latency_p50_ms", value: Math.max(addedIn.p50, addedOut.p50), unit: "ms", note: "the worse direction (information)" });
    report.add({ metric: "added_latency_p99_ms", value: Math.max(addedIn.p99, addedOut.p99), unit: "ms", note: "the worse direction (information)" });
    // What neither Synapse nor the gateway explains: the bridged median minus the medians of the two legs it chains, each measured alone.
    const p50 = (samples: number[]) => summarize(samples).p50;
    report.add({
      metric: "bridge_share_latency_p50_ms_remote_to_matrix",
      value: p50(inB) - p50(inD) - p50(outD),
      unit: "ms",
      target: { op: "<=", value: 2 },
      note: "medians: bridged − Matrix → Matrix − WhatsApp → WhatsApp (an estimate; no such sum for p99)",
    });
    report.add({
      metric: "bridge_share_latency_p50_ms_matrix_to_remote",
      value: p50(outB) - p50(outS) - p50(outD),
      unit: "ms",
      target: { op: "<=", value: 2 },
      note: "medians: bridged − Matrix → appservice − WhatsApp → WhatsApp (an estimate; no such sum for p99)",
    });
    const phase = (k: keyof typeof bridgeHistogramsAfter) => histogramDelta(bridgeHistogramsAfter[k], bridgeHistogramsBefore[k]);
    bridgeOwnTime(report, phase("handling"), phase("passage"), phase("attempt"), outB.length);
    say("latency measured");
    // ---- the encrypted path against the same baselines (bench/encrypted.ts; restarts the bridge, which writes its CPU profile)
    await measureEncryptedPaths(stack, scenario, paths, sizes, report, say);
    say("encrypted path measured");
    const gaps = scenario.syncGaps();
    if (gaps > 0) report.note(`warning: ${gaps} /sync responses had timeline gaps (a message in a gap is never counted)`);
    await scenario.stop();
    if (probe.refused > 0) report.note(`warning: the probe appservice refused ${probe.refused} requests for a missing or wrong hs_token`);

    // ---- media (restarts the stack's bridge: its CPU profile is written then; no profiler from here on)
    stack.bridge.leadingArgs = [...INSPECT_ARGS, ...nodeArgs];
    if (opts.quick) {
      report.missing("rss_growth_mb_100mb_video", "MB", "skipped by --quick (a 100 MB video each way takes minutes)", MEDIA_TARGET);
      report.missing("rss_growth_mb_100mb_video_encrypted", "MB", "skipped by --quick (node dist/bench/encrypted-media-rss.js measures it alone)", MEDIA_TARGET);
    } else {
      try {
        addMediaResult(report, mediaRssMetrics(await measureMediaRss(stack)));
      } catch (err) {
        // undici says only "fetch failed"; the reason (refused, reset, …) is in its cause.
        const cause = (err as Error & { cause?: Error }).cause;
        const why = `${(err as Error).message.split("\n")[0]}${cause ? ` (${cause.message})` : ""}`;
        process.stderr.write(`measureMediaRss: ${(err as Error).stack ?? why}\n`);
        report.missing("rss_growth_mb_100mb_video", "MB", `measureMediaRss failed: ${why}`, MEDIA_TARGET);
      }
      await addEncryptedMediaRss(stack, report);
      say("media measured");
    }

    // ---- scale
    const scale = await measureScale(stack, {
      portals: sizes.scalePortals,
      users: sizes.scaleUsers,
      activityPhones,
      activityReceivers: sizes.activityReceivers,
      timeoutMs: sizes.timeoutMs,
      say,
      nodeArgs,
      afterReading: heapSnapshot,
    });
    scaleMetrics(report, scale, sizes);
  } catch (err) {
    failed = true;
    say(`failed: ${(err as Error).stack ?? err}`);
    say(`log tails:\n${stack.logs()}`);
  } finally {
    await stack.stop();
    await probe.stop();
  }
  if (opts.profile && profiled && profiled.toUs > 0) {
    const profiles = readdirSync(diagnostics).filter((f) => f.endsWith(".cpuprofile"));
    // The stack's bridge is the first process to exit with a profile; the scale bridge is not profiled.
    const file = profiles.sort()[0];
    if (!file) report.note("CPU profile: none was written (did the bridge exit cleanly?)");
    else {
      const summary = summarizeProfile(readProfile(path.join(diagnostics, file)), 12, profiled);
      report.note(`CPU profile of the bridge during the throughput runs (${path.join(diagnostics, file)}):\n${formatProfile(summary)}`);
    }
  }
  report.note(`whole run: ${((performance.now() - started) / 1000).toFixed(0)} s (${opts.quick ? "quick" : "full"}); state and logs in ${dir}`);
  if (opts.json) {
    process.stdout.write(toJsonLines(report) + "\n");
    // The profile and heap summaries are for people: stderr, next to the progress lines.
    if (report.notes.length) process.stderr.write(report.notes.join("\n") + "\n");
  } else process.stdout.write(toTable(report) + "\n");
  if (failed) process.exitCode = 1;
}

void main();
