/**
 * Memory and CPU of a child process, read from /proc (Linux, like the machines we run on), and
 * a full garbage collection in a node child started with --inspect, over its inspector socket.
 */
import { readFileSync } from "node:fs";
import WebSocket from "ws";

/** Resident set size in MB (VmRSS), what the kernel really holds for the process. */
export function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kb) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb[1]) / 1024;
}

/** User + system CPU time the process used so far, in ms (clock ticks of 10 ms). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) * 10;
}

/**
 * Waits until the process uses under `maxShare` of one core over `windowMs` (background work
 * after startup is done), at most timeoutMs. Returns whether it got there.
 */
export async function waitForQuiet(pid: number, opts: { windowMs?: number; maxShare?: number; timeoutMs: number }): Promise<boolean> {
  const windowMs = opts.windowMs ?? 1000;
  const maxShare = opts.maxShare ?? 0.05;
  const deadline = Date.now() + opts.timeoutMs;
  while (Date.now() < deadline) {
    const before = cpuMs(pid);
    await new Promise((r) => setTimeout(r, windowMs));
    if (cpuMs(pid) - before <= windowMs * maxShare) return true;
  }
  return false;
}

/** Node flags that let the benchmark ask the process for a full GC (inspector on loopback, free port). */
export const INSPECT_ARGS = ["--inspect=127.0.0.1:0"];

/** The inspector's WebSocket URL from the process output ("Debugger listening on ws://…"). */
export function inspectorUrlFrom(output: string): string {
  const m = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(output);
  if (!m) throw new Error("no inspector URL in the process output (started without --inspect?)");
  return m[1];
}

/**
 * A full, memory-reducing garbage collection (what V8's memory reducer does on its own some
 * seconds after work stops), so a reading does not depend on when V8 last collected.
 */
export async function collectGarbage(inspectorUrl: string, timeoutMs = 30_000): Promise<void> {
  const ws = new WebSocket(inspectorUrl);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer from the inspector at ${inspectorUrl} in ${timeoutMs} ms`)), timeoutMs);
      ws.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      ws.once("open", () => ws.send(JSON.stringify({ id: 1, method: "HeapProfiler.collectGarbage" })));
      ws.on("message", (data) => {
        const answer = JSON.parse(String(data)) as { id?: number; error?: { message: string } };
        if (answer.id !== 1) return;
        clearTimeout(timer);
        if (answer.error) reject(new Error(`HeapProfiler.collectGarbage: ${answer.error.message}`));
        else resolve();
      });
    });
  } finally {
    ws.close();
  }
}

export interface RestingMemory {
  /** RSS when the process went quiet, as V8 left it. */
  asFoundMb: number;
  /** RSS after a full GC: what the process holds at rest. */
  afterGcMb: number;
  /** Whether the process went quiet before the reading. */
  quiet: boolean;
}

/** Waits until the process is quiet, reads RSS, forces a full GC, and reads RSS again once it settled. */
export async function memoryAtRest(pid: number, inspectorUrl: string, timeoutMs: number): Promise<RestingMemory> {
  const quiet = await waitForQuiet(pid, { timeoutMs });
  const asFoundMb = rssMb(pid);
  await collectGarbage(inspectorUrl);
  // Freed pages go back to the OS right after the collection; give the sweeper a moment.
  await new Promise((r) => setTimeout(r, 1500));
  return { asFoundMb, afterGcMb: rssMb(pid), quiet };
}
