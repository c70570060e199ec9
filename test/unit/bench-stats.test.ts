/**
 * The benchmark's arithmetic (bench/stats.ts, bench/report.ts, bench/profile.ts,
 * bench/histogram.ts, bench/homeserver-work.ts, the orders in bench/paths.ts): percentiles, rates, ratios and added
 * latency, what counts as a met target, how a CPU profile's time is attributed, the bridge's
 * /metrics histograms and homeserver counters, and the order paths are measured in. Numbers only, no timing: the
 * benchmark itself runs with `npm run bench`.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { met, Report, toJsonLines, toTable } from "../../bench/report";
import { ownerOf, summarizeProfile } from "../../bench/profile";
import { histogramDelta, histogramMean, histogramQuantile, parseHistogram } from "../../bench/histogram";
import { homeserverWorkDelta, perMessage, readHomeserverWork, sameWork } from "../../bench/homeserver-work";
import { latencyOrder, roundOrder } from "../../bench/paths";
import { addedLatency, percentile, rate, ratio, round, summarize } from "../../bench/stats";

describe("percentile", () => {
  test("interpolates between closest ranks", () => {
    assert.equal(percentile([1, 2, 3, 4], 50), 2.5);
    assert.equal(percentile([10, 20, 30, 40, 50], 50), 30);
    assert.equal(percentile([10, 20, 30, 40, 50], 25), 20);
    assert.equal(percentile([0, 100], 99), 99);
  });

  test("does not care about input order and leaves the input alone", () => {
    const samples = [5, 1, 4, 2, 3];
    assert.equal(percentile(samples, 50), 3);
    assert.deepEqual(samples, [5, 1, 4, 2, 3]);
  });

  test("p0 and p100 are the extremes; one sample is every percentile", () => {
    assert.equal(percentile([3, 9, 1], 0), 1);
    assert.equal(percentile([3, 9, 1], 100), 9);
    assert.equal(percentile([7], 99), 7);
  });

  test("p99 of 200 samples sits between the two largest", () => {
    const samples = Array.from({ length: 200 }, (_, i) => i + 1);
    assert.equal(round(percentile(samples, 99), 2), 198.01);
  });

  test("refuses no samples and percentiles outside 0..100", () => {
    assert.throws(() => percentile([], 50), RangeError);
    assert.throws(() => percentile([1], 101), RangeError);
    assert.throws(() => percentile([1], -1), RangeError);
    assert.throws(() => percentile([1], NaN), RangeError);
  });
});

describe("summary, rate, ratio, added latency", () => {
  test("summarize gives count, p50, p99, mean and max", () => {
    const s = summarize([4, 1, 3, 2]);
    assert.deepEqual({ ...s, p99: round(s.p99, 6) }, { count: 4, p50: 2.5, p99: 3.97, mean: 2.5, max: 4 });
  });

  test("rate is messages per second", () => {
    assert.equal(rate(2000, 40_000), 50);
    assert.throws(() => rate(10, 0), RangeError);
  });

  test("ratio is bridged over direct and needs a positive baseline", () => {
    assert.equal(ratio(45, 90), 0.5);
    assert.equal(ratio(100, 80), 1.25);
    assert.throws(() => ratio(1, 0), RangeError);
  });

  test("added latency subtracts percentile from percentile, and may be negative", () => {
    const added = addedLatency([12, 14, 16], [10, 10, 10]);
    assert.equal(added.p50, 4);
    assert.equal(round(added.p99, 6), 5.96);
    assert.equal(addedLatency([1, 1], [2, 2]).p50, -1);
  });
});

describe("report", () => {
  test("a target is met, missed, or unknown without a value", () => {
    assert.equal(met({ metric: "r", value: 0.95, unit: "ratio", target: { op: ">=", value: 0.9 } }), true);
    assert.equal(met({ metric: "r", value: 0.85, unit: "ratio", target: { op: ">=", value: 0.9 } }), false);
    assert.equal(met({ metric: "l", value: 5, unit: "ms", target: { op: "<=", value: 5 } }), true);
    assert.equal(met({ metric: "l", value: null, unit: "ms", target: { op: "<=", value: 5 } }), undefined);
    assert.equal(met({ metric: "x", value: 1, unit: "ms" }), undefined);
  });

  test("JSON lines carry metric, value and unit; a missing metric has a null value and says why", () => {
    const report = new Report();
    report.add({ metric: "throughput_ratio_remote_to_matrix", value: 0.91234, unit: "ratio", target: { op: ">=", value: 0.9 } });
    report.missing("rss_growth_mb_100mb_video", "MB", "no media benchmark yet");
    const lines = toJsonLines(report)
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(lines[0], { metric: "throughput_ratio_remote_to_matrix", value: 0.91, unit: "ratio", target: ">= 0.9", met: true });
    assert.deepEqual(lines[1], { metric: "rss_growth_mb_100mb_video", value: null, unit: "MB", note: "not measured: no media benchmark yet" });
  });

  test("the table shows a dash, never a number, for what was not measured", () => {
    const report = new Report();
    report.missing("rss_growth_mb_100mb_video", "MB", "no media benchmark yet");
    const row = toTable(report).split("\n")[2];
    assert.match(row, /^rss_growth_mb_100mb_video\s+—\s+MB/);
  });
});

describe("CPU profile summary", () => {
  const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });

  test("scripts belong to the bridge, a package, node, or V8", () => {
    assert.equal(ownerOf(frame("onMessage", "file:///repo/dist/src/bridge/core.js")), "bridge");
    assert.equal(ownerOf(frame("e", "file:///repo/node_modules/cbor2/lib/writer.js")), "cbor2");
    assert.equal(ownerOf(frame("x", "file:///repo/node_modules/@signalapp/libsignal-client/dist/index.js")), "@signalapp/libsignal-client");
    assert.equal(ownerOf(frame("readFile", "node:fs")), "node");
    assert.equal(ownerOf(frame("(garbage collector)", "")), "(garbage collector)");
  });

  test("self time goes to the sampled function, total time to every caller once, inside the window", () => {
    // root → handle (bridge) → encode (cbor2); handle calls itself once (recursion counts once).
    const profile = {
      nodes: [
        { id: 1, callFrame: frame("(root)", ""), children: [2, 5] },
        { id: 2, callFrame: frame("handle", "file:///r/dist/src/core.js"), children: [3] },
        { id: 3, callFrame: frame("handle", "file:///r/dist/src/core.js"), children: [4] },
        { id: 4, callFrame: frame("encode", "file:///r/node_modules/cbor2/w.js") },
        { id: 5, callFrame: frame("(idle)", "") },
      ],
      startTime: 1_000_000,
      endTime: 1_010_000,
      samples: [4, 4, 3, 5, 5, 4],
      timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000],
    };
    const all = summarizeProfile(profile);
    assert.equal(all.idleMs, 2);
    const handle = all.ownFunctions.find((f) => f.name === "handle")!;
    assert.equal(handle.totalMs, 4);
    assert.equal(handle.selfMs, 1);
    assert.deepEqual(all.byOwner, [
      { owner: "cbor2", selfMs: 3 },
      { owner: "bridge", selfMs: 1 },
    ]);
    // Samples stamped 1,001,000 … 1,006,000 µs; the window keeps the first three.
    const early = summarizeProfile(profile, 12, { fromUs: 1_000_000, toUs: 1_003_000 });
    assert.equal(early.durationMs, 3);
    assert.equal(early.idleMs, 0);
    assert.equal(early.hottest[0].name, "encode");
    assert.equal(early.hottest[0].selfMs, 2);
  });
});

describe("the bridge's /metrics histograms", () => {
  const exposition = (n: number) =>
    [
      "# HELP bridge_matrix_event_duration_seconds Time to handle one event",
      "# TYPE bridge_matrix_event_duration_seconds histogram",
      `bridge_matrix_event_duration_seconds_bucket{le="0.005",type="m.room.message"} ${2 * n}`,
      `bridge_matrix_event_duration_seconds_bucket{le="0.01",type="m.room.message"} ${3 * n}`,
      `bridge_matrix_event_duration_seconds_bucket{le="+Inf",type="m.room.message"} ${4 * n}`,
      `bridge_matrix_event_duration_seconds_sum{type="m.room.message"} ${0.02 * n}`,
      `bridge_matrix_event_duration_seconds_count{type="m.room.message"} ${4 * n}`,
      'bridge_matrix_event_duration_seconds_bucket{le="0.005",type="m.room.member"} 50',
      'bridge_matrix_event_duration_seconds_bucket{le="0.01",type="m.room.member"} 50',
      'bridge_matrix_event_duration_seconds_bucket{le="+Inf",type="m.room.member"} 50',
      'bridge_matrix_event_duration_seconds_sum{type="m.room.member"} 0.1',
      'bridge_matrix_event_duration_seconds_count{type="m.room.member"} 50',
      "bridge_matrix_event_duration_seconds_total_other 7",
    ].join("\n");

  test("reads one series, by its labels, buckets in order", () => {
    const h = parseHistogram(exposition(1), "bridge_matrix_event_duration_seconds", { type: "m.room.message" });
    assert.deepEqual(h.buckets, [
      { le: 0.005, count: 2 },
      { le: 0.01, count: 3 },
      { le: Infinity, count: 4 },
    ]);
    assert.equal(h.sum, 0.02);
    assert.equal(h.count, 4);
  });

  test("a series that does not exist yet reads as empty", () => {
    assert.deepEqual(parseHistogram(exposition(1), "bridge_matrix_to_network_duration_seconds"), { buckets: [], sum: 0, count: 0 });
  });

  test("the difference of two readings is what was observed in between", () => {
    const name = "bridge_matrix_event_duration_seconds";
    const d = histogramDelta(parseHistogram(exposition(3), name, { type: "m.room.message" }), parseHistogram(exposition(1), name, { type: "m.room.message" }));
    assert.deepEqual(
      d.buckets.map((b) => b.count),
      [4, 6, 8],
    );
    assert.equal(round(d.sum, 6), 0.04);
    assert.equal(d.count, 8);
    assert.equal(round(histogramMean(d), 6), 0.005);
  });

  test("a quantile is interpolated in its bucket, from 0 below the first", () => {
    const h = {
      buckets: [
        { le: 0.01, count: 10 },
        { le: 0.02, count: 30 },
        { le: Infinity, count: 40 },
      ],
      sum: 0,
      count: 40,
    };
    assert.equal(round(histogramQuantile(h, 0.125), 6), 0.005, "rank 5 of the first 10, between 0 and 0.01");
    assert.equal(round(histogramQuantile(h, 0.5), 6), 0.015, "rank 20: half way through the second bucket");
    assert.equal(histogramQuantile(h, 0.75), 0.02, "rank 30: the second bucket's bound");
    assert.equal(histogramQuantile(h, 0.99), 0.02, "in +Inf: the largest finite bound");
  });

  test("no observations have no mean and no quantile", () => {
    const empty = { buckets: [{ le: Infinity, count: 0 }], sum: 0, count: 0 };
    assert.throws(() => histogramMean(empty), RangeError);
    assert.throws(() => histogramQuantile(empty, 0.5), RangeError);
    assert.throws(() => histogramQuantile({ ...empty, count: 1, buckets: [{ le: 1, count: 1 }] }, 1.5), RangeError);
  });
});

describe("the order paths are measured in", () => {
  test("throughput rounds: direct first and bridged last, reversed every other round", () => {
    assert.deepEqual(roundOrder(["direct", "bridged"], 0), ["direct", "bridged"]);
    assert.deepEqual(roundOrder(["bridged", "direct"], 1), ["bridged", "direct"]);
    assert.deepEqual(roundOrder(["bridged", "direct", "synapseAlone"], 0), ["direct", "synapseAlone", "bridged"]);
    assert.deepEqual(roundOrder(["bridged", "direct", "synapseAlone"], 1), ["bridged", "synapseAlone", "direct"]);
  });

  for (const n of [1, 2, 3, 4, 5, 6]) {
    test(`latency samples of ${n} paths: each goes first and follows each other one equally often`, () => {
      const cycle = n % 2 === 0 ? n : 2 * n;
      const first = new Map<number, number>();
      const follows = new Map<string, number>();
      for (let k = 0; k < cycle; k++) {
        const order = latencyOrder(n, k);
        assert.deepEqual(
          [...order].sort((a, b) => a - b),
          Array.from({ length: n }, (_, i) => i),
          `sample ${k} measures every path once`,
        );
        first.set(order[0], (first.get(order[0]) ?? 0) + 1);
        for (let j = 1; j < n; j++) follows.set(`${order[j - 1]}>${order[j]}`, (follows.get(`${order[j - 1]}>${order[j]}`) ?? 0) + 1);
      }
      assert.deepEqual(new Set(first.values()), new Set([cycle / n]));
      assert.equal(first.size, n);
      if (n > 1) {
        assert.equal(follows.size, n * (n - 1), "every ordered pair occurs");
        assert.deepEqual(new Set(follows.values()), new Set([cycle / n]), "and equally often");
      }
      assert.deepEqual(latencyOrder(n, cycle), latencyOrder(n, 0), "then it repeats");
    });
  }

  test("refuses no paths", () => {
    assert.throws(() => latencyOrder(0, 0), RangeError);
  });
});

describe("homeserver work from the bridge's counters", () => {
  const exposition = (send: number, typing: number, status: number) =>
    [
      "# HELP bridge_homeserver_requests_total HTTP requests",
      "# TYPE bridge_homeserver_requests_total counter",
      `bridge_homeserver_requests_total{kind="send"} ${send}`,
      `bridge_homeserver_requests_total{kind="typing"} ${typing}`,
      'bridge_homeserver_requests_total{kind="query"} 3',
      `bridge_homeserver_events_total{type="m.room.message"} ${send - status}`,
      `bridge_homeserver_events_total{type="com.beeper.message_send_status"} ${status}`,
      'bridge_homeserver_requests_total_other{kind="send"} 1000',
    ].join("\n");

  test("per message: the difference of two readings, typing and receipts left out of the requests", () => {
    const before = readHomeserverWork(exposition(10, 5, 0));
    const after = readHomeserverWork(exposition(210, 45, 100));
    const work = homeserverWorkDelta(after, before);
    assert.deepEqual(work, { requests: { send: 200, typing: 40 }, events: { "m.room.message": 100, "com.beeper.message_send_status": 100 } });
    const per = perMessage(work, 100);
    assert.equal(per.requests, 2);
    assert.equal(per.events, 2);
    assert.equal(per.requestsNote, "100 messages: send 200; typing 40 (left out)");
    assert.equal(per.eventsNote, "100 messages: m.room.message 100, com.beeper.message_send_status 100");
  });

  test("a bridge that asked nothing reads the same; counters not there yet read as nothing", () => {
    assert.equal(sameWork(readHomeserverWork(exposition(1, 1, 0)), readHomeserverWork(exposition(1, 1, 0))), true);
    assert.equal(sameWork(readHomeserverWork(exposition(2, 1, 0)), readHomeserverWork(exposition(1, 1, 0))), false);
    assert.deepEqual(readHomeserverWork(""), { requests: {}, events: {} });
    assert.equal(perMessage({ requests: {}, events: {} }, 10).requests, 0);
  });
});
