/**
 * Heap snapshots of the bridge for `npm run bench -- --heap-snapshots`: the bridge runs with
 * --heapsnapshot-signal=SIGUSR2, the benchmark signals it where it reads memory, and the
 * snapshot is summed up by what holds the bytes (constructor name, or V8's kind of object).
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import path from "node:path";

interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

export interface HeapGroup {
  name: string;
  count: number;
  selfMb: number;
}

export interface HeapSummary {
  totalMb: number;
  groups: HeapGroup[];
}

export function nodeArgsForHeapSnapshots(dir: string): string[] {
  return ["--heapsnapshot-signal=SIGUSR2", `--diagnostic-dir=${dir}`];
}

/** Signals the process and waits until its new snapshot file is completely written; returns the file. */
export async function takeHeapSnapshot(pid: number, dir: string, timeoutMs = 120_000): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  const deadline = Date.now() + timeoutMs;
  let lastSize = -1;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const fresh = readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f));
    if (!fresh) continue;
    const file = path.join(dir, fresh);
    const size = statSync(file).size;
    // V8 writes the snapshot as one JSON document; it is done when it ends with "]}" and stops growing.
    if (size > 0 && size === lastSize && endsWith(file, size, "]}")) return file;
    lastSize = size;
  }
  throw new Error(`no complete heap snapshot from ${pid} in ${dir} after ${timeoutMs} ms`);
}

function endsWith(file: string, size: number, text: string): boolean {
  const tail = Buffer.alloc(Math.min(size, 64));
  const fd = openSync(file, "r");
  try {
    readSync(fd, tail, 0, tail.length, size - tail.length);
  } finally {
    closeSync(fd);
  }
  return tail.toString("utf8").trimEnd().endsWith(text);
}

export function summarizeHeap(file: string, top = 15): HeapSummary {
  const snap = JSON.parse(readFileSync(file, "utf8")) as HeapSnapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const selfAt = fields.indexOf("self_size");
  const groups = new Map<string, { count: number; self: number }>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]];
    // Objects are grouped by constructor; strings, code, arrays and the like by their kind.
    const name = type === "object" ? snap.strings[snap.nodes[i + nameAt]] : `(${type})`;
    const self = snap.nodes[i + selfAt];
    total += self;
    const g = groups.get(name) ?? { count: 0, self: 0 };
    g.count++;
    g.self += self;
    groups.set(name, g);
  }
  return {
    totalMb: total / 1048576,
    groups: [...groups]
      .map(([name, g]) => ({ name, count: g.count, selfMb: g.self / 1048576 }))
      .sort((a, b) => b.selfMb - a.selfMb)
      .slice(0, top),
  };
}

export function formatHeap(label: string, file: string, s: HeapSummary): string {
  return [
    `heap snapshot ${label}: ${s.totalMb.toFixed(1)} MB live JS heap (${file})`,
    ...s.groups.map((g) => `  ${g.selfMb.toFixed(2).padStart(7)} MB ${String(g.count).padStart(8)}  ${g.name.slice(0, 80)}`),
  ].join("\n");
}
