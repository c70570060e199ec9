/**
 * Keeps streamed media from piling up in memory. Every chunk of a transfer is a fresh Buffer
 * whose memory lives outside V8's heap; V8 only collects such garbage once about 64 MB of it
 * has accumulated, so a 100 MB file would raise the process's memory by that much although
 * no more than a few chunks are ever in use. Transfers report the bytes they stream here, and
 * every PACE bytes this asks V8 for a (cheap, young-generation) collection, which frees the
 * chunks already passed on.
 */
import { Transform } from "node:stream";
import v8 from "node:v8";
import vm from "node:vm";

const PACE = 4 * 1024 * 1024;
/** Chunks still in flight at a young-generation collection move to the old generation; a full one now and then frees those. */
const FULL_EVERY = 8;
let collect: ((options?: { type: "minor" | "major" }) => void) | null | undefined;
let streamed = 0;
let collections = 0;

function collector(): ((options?: { type: "minor" | "major" }) => void) | null {
  if (collect === undefined) {
    try {
      // The documented way to reach gc() without starting node with --expose-gc.
      v8.setFlagsFromString("--expose-gc");
      collect = vm.runInNewContext("gc") as (options?: { type: "minor" | "major" }) => void;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/** Counts bytes a transfer moved; collects garbage every PACE bytes, across all transfers. */
export function noteStreamed(bytes: number): void {
  streamed += bytes;
  if (streamed < PACE) return;
  streamed = 0;
  collections++;
  collector()?.({ type: collections % FULL_EVERY === 0 ? "major" : "minor" });
}

/** A pass-through stream that reports what flows through it to noteStreamed. */
export function pacedPassThrough(): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      noteStreamed(chunk.length);
      done(null, chunk);
    },
  });
}
