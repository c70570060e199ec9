/**
 * encodeDeterministic must produce exactly cbor2's deterministic (cde) bytes, for every value:
 * the plain kinds it encodes itself and everything it hands back to cbor2.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decode, encode, Tag } from "cbor2";
import fc from "fast-check";
import { encodeDeterministic } from "../../src/protocol/deterministic-cbor";
import { propertyRuns } from "../support/property-runs";

const FRAME_OPTIONS = { cde: true, rejectUndefined: true } as const;
const MIMI_OPTIONS = { cde: true } as const;

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function sameAsCbor2(value: unknown, options: typeof FRAME_OPTIONS | typeof MIMI_OPTIONS): void {
  let expected: string | Error;
  try {
    expected = hex(encode(value, options));
  } catch (err) {
    expected = err as Error;
  }
  if (expected instanceof Error) {
    assert.throws(() => encodeDeterministic(value, options), { message: expected.message });
  } else {
    assert.equal(hex(encodeDeterministic(value, options)), expected);
  }
}

/** JSON-like values with byte strings, the whole integer range, floats and any text. */
const plainValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.string({ unit: "grapheme-composite" }),
    fc.string({ unit: "binary" }),
    fc.integer({ min: -1000, max: 1000 }),
    fc.maxSafeInteger(),
    fc.maxSafeNat().map((n) => -n),
    fc.constantFrom(23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -24, -25, -256, -257, -(2 ** 32), -(2 ** 32) - 1),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 40 }),
    fc.array(tie("value"), { maxLength: 5 }),
    fc.dictionary(fc.string({ unit: "grapheme-composite", maxLength: 30 }), tie("value"), { maxKeys: 6 }),
    // MIMI's shape: Maps with integer (and sometimes text) keys.
    fc
      .uniqueArray(fc.tuple(fc.oneof(fc.integer({ min: -300, max: 70000 }), fc.string({ maxLength: 5 })), tie("value")), { maxLength: 6, selector: ([k]) => k })
      .map((pairs) => new Map(pairs)),
  ),
})).value;

describe("encodeDeterministic", () => {
  test("gives cbor2's deterministic bytes for any plain value", () => {
    fc.assert(
      fc.property(plainValue, (value) => {
        sameAsCbor2(value, FRAME_OPTIONS);
        sameAsCbor2(value, MIMI_OPTIONS);
      }),
      { numRuns: propertyRuns(3000) },
    );
  });

  test("orders map keys by their encoding: shorter first, then bytewise", () => {
    const bytes = encodeDeterministic({ bb: 1, a: 2, ab: 3, b: 4, ["x".repeat(30)]: 5 }, FRAME_OPTIONS);
    assert.deepEqual(Object.keys(decode(bytes) as object), ["a", "b", "ab", "bb", "x".repeat(30)]);
  });

  test("what it does not encode itself comes out as cbor2 makes it", () => {
    for (const value of [
      -0,
      0.5,
      NaN,
      Infinity,
      2 ** 53,
      10n,
      -(2n ** 70n),
      new Map<unknown, unknown>([
        [2, "b"],
        ["a", 1],
      ]),
      new Tag(1, 1_700_000_000),
      Buffer.from("buffer"),
      new Uint16Array([1, 2]),
      new Date(0),
      { toJSON: () => "json" },
      [1, { a: new Map([["k", 0.25]]) }, new Tag(32, "https://example.org")],
      Object.assign(Object.create(null), { z: 1, y: [true, false] }),
    ]) {
      sameAsCbor2(value, FRAME_OPTIONS);
      sameAsCbor2(value, MIMI_OPTIONS);
    }
  });

  test("undefined is refused where the options refuse it, and encoded where they don't", () => {
    sameAsCbor2({ a: undefined }, FRAME_OPTIONS);
    sameAsCbor2([1, undefined], FRAME_OPTIONS);
    sameAsCbor2({ a: undefined }, MIMI_OPTIONS);
    assert.throws(() => encodeDeterministic({ a: undefined }, FRAME_OPTIONS));
  });

  test("options it does not know make cbor2 encode the whole value", () => {
    const value = { caf: "cafe\u0301", n: 1 };
    const options = { cde: true, dcbor: true } as const;
    assert.equal(hex(encodeDeterministic(value, options)), hex(encode(value, options)));
  });
});
