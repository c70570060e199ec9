/**
 * Reads a V8 CPU profile (node --cpu-prof) of the bridge and says where its time went: idle,
 * garbage collection, the bridge's own code, and which libraries, with the heaviest functions.
 * Inclusive time ("total") counts a function once per sample even when it recurses.
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionTime {
  name: string;
  where: string;
  selfMs: number;
  totalMs: number;
}

export interface ProfileSummary {
  durationMs: number;
  idleMs: number;
  gcMs: number;
  /** Self time by owner: "bridge" (dist/src, gateway, sim), a package name, "node" internals, "(program)"… */
  byOwner: Array<{ owner: string; selfMs: number }>;
  /** The bridge's own functions (src/), heaviest total first. */
  ownFunctions: FunctionTime[];
  /** All functions, heaviest self time first. */
  hottest: FunctionTime[];
}

/** Who a script belongs to: our code, a package, node itself, or V8's pseudo-frames. */
export function ownerOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (!url) return functionName.startsWith("(") ? functionName : "(native)";
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (pkg) return pkg[1];
  if (url.startsWith("node:")) return "node";
  if (/\/dist\/src\//.test(url)) return "bridge";
  return "other";
}

function whereOf(frame: CallFrame): string {
  const short = frame.url
    .replace(/^.*\/node_modules\//, "")
    .replace(/^.*\/dist\//, "")
    .replace(/^file:\/\//, "");
  return short ? `${short}:${frame.lineNumber + 1}` : "";
}

/** Microseconds of the monotonic clock V8's profiler stamps samples with (the same as process.hrtime). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Sums up the samples taken inside `window` (monotonic µs, see monotonicUs), or all of them. */
export function summarizeProfile(profile: CpuProfile, top = 12, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const keyOf = (n: ProfileNode) => `${n.callFrame.functionName || "(anonymous)"}\u0000${whereOf(n.callFrame)}`;

  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const ownerSelf = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let at = profile.startTime;
  const from = Math.max(window?.fromUs ?? profile.startTime, profile.startTime);
  const to = Math.min(window?.toUs ?? profile.endTime, profile.endTime);
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (at < from || at > to) continue;
    const ms = (profile.timeDeltas[i] ?? 0) / 1000;
    const leaf = byId.get(profile.samples[i]);
    if (!leaf || ms <= 0) continue;
    const name = leaf.callFrame.functionName;
    if (name === "(idle)") {
      idle += ms;
      continue;
    }
    if (name === "(garbage collector)") gc += ms;
    self.set(keyOf(leaf), (self.get(keyOf(leaf)) ?? 0) + ms);
    const owner = ownerOf(leaf.callFrame);
    ownerSelf.set(owner, (ownerSelf.get(owner) ?? 0) + ms);
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const key = keyOf(byId.get(id)!);
      if (seen.has(key)) continue;
      seen.add(key);
      total.set(key, (total.get(key) ?? 0) + ms);
    }
  }
  const frames = new Map<string, CallFrame>();
  for (const n of profile.nodes) frames.set(keyOf(n), n.callFrame);
  const fn = (key: string): FunctionTime => {
    const [name, where] = key.split("\u0000");
    return { name, where, selfMs: self.get(key) ?? 0, totalMs: total.get(key) ?? 0 };
  };
  const keys = [...total.keys()];
  return {
    durationMs: Math.max(0, to - from) / 1000,
    idleMs: idle,
    gcMs: gc,
    byOwner: [...ownerSelf].map(([owner, selfMs]) => ({ owner, selfMs })).sort((a, b) => b.selfMs - a.selfMs),
    ownFunctions: keys
      .filter((k) => ownerOf(frames.get(k)!) === "bridge")
      .map(fn)
      .sort((a, b) => b.totalMs - a.totalMs)
      .slice(0, top),
    hottest: [...self.keys()]
      .map(fn)
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, top),
  };
}

export function readProfile(file: string): CpuProfile {
  return JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
}

export function formatProfile(s: ProfileSummary): string {
  const busy = s.durationMs - s.idleMs;
  const pct = (ms: number, of = busy) => `${((100 * ms) / Math.max(of, 1)).toFixed(1)}%`;
  const lines = [
    `profiled ${(s.durationMs / 1000).toFixed(1)} s: busy ${pct(busy, s.durationMs)} of the time (idle ${pct(s.idleMs, s.durationMs)}); GC ${pct(s.gcMs)} of busy`,
    `busy time by owner: ${s.byOwner
      .slice(0, 10)
      .map((o) => `${o.owner} ${pct(o.selfMs)}`)
      .join(", ")}`,
    "bridge's own functions, by total time (self in brackets), % of busy:",
    ...s.ownFunctions.map((f) => `  ${pct(f.totalMs).padStart(6)} (${pct(f.selfMs)})  ${f.name}  ${f.where}`),
    "hottest functions anywhere, by self time, % of busy:",
    ...s.hottest.map((f) => `  ${pct(f.selfMs).padStart(6)}  ${f.name}  ${f.where}`),
  ];
  return lines.join("\n");
}
