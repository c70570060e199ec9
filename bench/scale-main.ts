/**
 * `node dist/bench/scale-main.js [--portals N] [--users M] [--activity K] [--json] [--heap-snapshots]`:
 * only the scale phase of `npm run bench` (bench/scale.ts) on a fresh stack, without the
 * throughput, latency and media phases before it: for working on startup and memory with a big
 * store. The figures are the same metrics as in the full run.
 */
import { mkdirSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Stack } from "../test/support/stack";
import { formatHeap, nodeArgsForHeapSnapshots, summarizeHeap, takeHeapSnapshot } from "./heap";
import { INSPECT_ARGS } from "./process-stats";
import { Report, toJsonLines, toTable } from "./report";
import { measureScale, registerActivityReceivers, scaleMetrics } from "./scale";
import { benchPhone, inParallel } from "./scenario";

function numberArg(argv: string[], name: string, fallback: number): number {
  const i = argv.indexOf(name);
  if (i < 0) return fallback;
  const n = Number(argv[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} needs a whole number ≥ 1`);
  return n;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const sizes = {
    scalePortals: numberArg(argv, "--portals", 100_000),
    scaleUsers: numberArg(argv, "--users", 10_000),
    activityPortals: numberArg(argv, "--activity", 1_000),
    activityReceivers: 50,
  };
  sizes.activityReceivers = Math.min(sizes.activityReceivers, sizes.scaleUsers);
  const started = performance.now();
  const say = (line: string) => process.stderr.write(`[scale ${((performance.now() - started) / 1000).toFixed(0).padStart(3)} s] ${line}\n`);
  const dir = mkdtempSync(path.join(os.tmpdir(), "mib-bench-scale-"));
  const diagnostics = path.join(dir, "diagnostics");
  mkdirSync(diagnostics);
  const heapSnapshots = argv.includes("--heap-snapshots");
  const nodeArgs = heapSnapshots ? nodeArgsForHeapSnapshots(diagnostics) : [];
  const report = new Report();
  const stack = await Stack.start("bench-scale", { logLevel: "info", dir, bridgeNodeArgs: [...INSPECT_ARGS, ...nodeArgs], recordFrames: false });
  let failed = false;
  try {
    const activityPhones = Array.from({ length: sizes.activityPortals }, (_, i) => benchPhone(1720, i));
    await Promise.all([inParallel(activityPhones, 4, (phone, i) => stack.sim.createUser(phone, `Activity ${i}`)), registerActivityReceivers(stack, sizes.activityReceivers)]);
    say(`stack up in ${dir}; ${activityPhones.length} WhatsApp users for the activity are ready`);
    const scale = await measureScale(stack, {
      portals: sizes.scalePortals,
      users: sizes.scaleUsers,
      activityPhones,
      activityReceivers: sizes.activityReceivers,
      timeoutMs: 600_000,
      say,
      nodeArgs,
      afterReading: async (label, pid) => {
        if (!heapSnapshots) return;
        const file = await takeHeapSnapshot(pid, diagnostics);
        report.note(formatHeap(label, file, summarizeHeap(file)));
      },
    });
    scaleMetrics(report, scale, sizes);
  } catch (err) {
    failed = true;
    say(`failed: ${(err as Error).stack ?? err}`);
    say(`log tails:\n${stack.logs()}`);
  } finally {
    await stack.stop();
  }
  report.note(`whole run: ${((performance.now() - started) / 1000).toFixed(0)} s; state and logs in ${dir}`);
  process.stdout.write((argv.includes("--json") ? toJsonLines(report) : toTable(report)) + "\n");
  if (failed) process.exitCode = 1;
}

void main();
