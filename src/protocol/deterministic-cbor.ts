/**
 * Deterministic CBOR (RFC 8949 §4.2.1, what cbor2 calls `cde`) for the plain values our frames,
 * payloads and MIMI messages are made of, byte for byte what cbor2's encoder produces, only
 * without its cost: cbor2 2.3 encodes every map key through a fresh encoder (copied options and
 * a new 4 KB buffer each), which made CBOR encoding the bridge's heaviest CPU cost in the
 * benchmark's profile (docs/benchmarks.md). Anything else (floats, -0, bigints, tags, Buffers
 * (a map to cbor2!), class instances, objects with toCBOR/toJSON, undefined) is handed to cbor2 with the caller's
 * options and spliced in, so the output never differs from cbor2's.
 */
import { encode as cborEncode, type EncodeOptions } from "cbor2";

const MAJOR_UINT = 0;
const MAJOR_NINT = 1;
const MAJOR_BYTES = 2;
const MAJOR_TEXT = 3;
const MAJOR_ARRAY = 4;
const MAJOR_MAP = 5;

const utf8 = new TextEncoder();

class ByteSink {
  private buf: Uint8Array;
  length = 0;

  constructor(capacity = 256) {
    this.buf = new Uint8Array(capacity);
  }

  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    bigger.set(this.buf.subarray(0, this.length));
    this.buf = bigger;
  }

  byte(b: number): void {
    this.room(1);
    this.buf[this.length++] = b;
  }

  bytes(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }

  /** A head: major type and argument in the shortest form. */
  head(major: number, n: number): void {
    const m = major << 5;
    if (n < 24) this.byte(m | n);
    else if (n < 0x100) {
      this.byte(m | 24);
      this.byte(n);
    } else if (n < 0x10000) {
      this.byte(m | 25);
      this.byte(n >>> 8);
      this.byte(n & 0xff);
    } else if (n < 0x100000000) {
      this.byte(m | 26);
      this.room(4);
      new DataView(this.buf.buffer, this.buf.byteOffset).setUint32(this.length, n);
      this.length += 4;
    } else {
      this.byte(m | 27);
      this.room(8);
      new DataView(this.buf.buffer, this.buf.byteOffset).setBigUint64(this.length, BigInt(n));
      this.length += 8;
    }
  }

  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  const v = value as { toCBOR?: unknown; toJSON?: unknown };
  return typeof v.toCBOR !== "function" && typeof v.toJSON !== "function";
}

/** Map keys in deterministic order: bytewise by their encoding. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function writeMap(sink: ByteSink, pairs: Array<[unknown, unknown]>, options: EncodeOptions): void {
  const entries = pairs.map(([k, v]) => {
    const key = new ByteSink(32);
    write(key, k, options);
    return { key: key.result(), value: v };
  });
  entries.sort((a, b) => compareBytes(a.key, b.key));
  sink.head(MAJOR_MAP, entries.length);
  for (const e of entries) {
    sink.bytes(e.key);
    write(sink, e.value, options);
  }
}

function write(sink: ByteSink, value: unknown, options: EncodeOptions): void {
  switch (typeof value) {
    case "string": {
      const bytes = utf8.encode(value);
      sink.head(MAJOR_TEXT, bytes.length);
      sink.bytes(bytes);
      return;
    }
    case "number":
      if (Number.isSafeInteger(value) && !Object.is(value, -0)) {
        if (value >= 0) sink.head(MAJOR_UINT, value);
        else sink.head(MAJOR_NINT, -1 - value);
        return;
      }
      break;
    case "boolean":
      sink.byte(value ? 0xf5 : 0xf4);
      return;
    case "object":
      if (value === null) {
        sink.byte(0xf6);
        return;
      }
      if (value.constructor === Uint8Array) {
        sink.head(MAJOR_BYTES, (value as Uint8Array).length);
        sink.bytes(value as Uint8Array);
        return;
      }
      if (Array.isArray(value) && value.constructor === Array) {
        sink.head(MAJOR_ARRAY, value.length);
        for (let i = 0; i < value.length; i++) write(sink, value[i], options);
        return;
      }
      if (isPlainObject(value)) return writeMap(sink, Object.entries(value), options);
      // MIMI's maps have integer keys, so they are Maps.
      if (value.constructor === Map) return writeMap(sink, [...(value as Map<unknown, unknown>)], options);
      break;
  }
  // Not one of the plain kinds above: cbor2 decides (and refuses what the options refuse).
  sink.bytes(cborEncode(value, options));
}

/** Options whose effect on plain values this file reproduces; with any other, cbor2 encodes it all. */
const UNDERSTOOD_OPTIONS: ReadonlySet<string> = new Set(["cde", "rejectUndefined"]);

/** Encodes exactly like cbor2's `encode(value, options)`; fast when `options` are { cde: true } and maybe rejectUndefined. */
export function encodeDeterministic(value: unknown, options: EncodeOptions): Uint8Array {
  if (options.cde !== true || Object.keys(options).some((k) => !UNDERSTOOD_OPTIONS.has(k))) return cborEncode(value, options);
  const sink = new ByteSink();
  write(sink, value, options);
  return sink.result();
}
