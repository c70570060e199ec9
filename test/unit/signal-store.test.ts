import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { EncryptedRecordStore, MemoryRecordStore, SignalLayerError, deriveStoreKey, type SignalLayerErrorCode } from "../../src/protocol/signal.js";

const isCode = (code: SignalLayerErrorCode) => (err: unknown) => {
  assert.ok(err instanceof SignalLayerError, `expected SignalLayerError, got ${String(err)}`);
  assert.equal(err.code, code);
  return true;
};

describe("MemoryRecordStore", () => {
  it("round-trips, deletes, and keeps namespaces apart", () => {
    const store = new MemoryRecordStore();
    store.put("a", "k", Uint8Array.of(1, 2));
    store.put("b", "k", Uint8Array.of(3));
    assert.deepEqual(store.get("a", "k"), Uint8Array.of(1, 2));
    assert.deepEqual(store.get("b", "k"), Uint8Array.of(3));
    store.get("a", "k")![0] = 9;
    assert.deepEqual(store.get("a", "k"), Uint8Array.of(1, 2), "callers cannot mutate stored values");
    store.delete("a", "k");
    store.delete("a", "missing");
    assert.equal(store.get("a", "k"), undefined);
    assert.equal(store.size, 1);
  });
});

describe("EncryptedRecordStore", () => {
  const secret = new Uint8Array(Buffer.from("top secret session state, must not leak", "utf8"));

  it("round-trips and stores only ciphertext, fresh each time", () => {
    const inner = new MemoryRecordStore();
    const store = new EncryptedRecordStore(inner, randomBytes(32));
    store.put("ns", "k", secret);
    const first = inner.get("ns", "k")!;
    assert.ok(!Buffer.from(first).includes(Buffer.from(secret)));
    assert.deepEqual(store.get("ns", "k"), secret);
    store.put("ns", "k", secret);
    assert.notDeepEqual(inner.get("ns", "k"), first, "a fresh nonce per put");
    assert.deepEqual(store.get("ns", "k"), secret);
    assert.equal(store.get("ns", "missing"), undefined);
    store.delete("ns", "k");
    assert.equal(inner.get("ns", "k"), undefined);
    store.put("ns", "empty", new Uint8Array(0));
    assert.deepEqual(store.get("ns", "empty"), new Uint8Array(0));
  });

  it("reports a wrong key as bad_store_key", () => {
    const inner = new MemoryRecordStore();
    new EncryptedRecordStore(inner, randomBytes(32)).put("ns", "k", secret);
    assert.throws(() => new EncryptedRecordStore(inner, randomBytes(32)).get("ns", "k"), isCode("bad_store_key"));
  });

  it("detects records swapped between keys or namespaces, and tampering", () => {
    const inner = new MemoryRecordStore();
    const store = new EncryptedRecordStore(inner, randomBytes(32));
    store.put("ns", "a", secret);
    store.put("ns", "b", Uint8Array.of(1));
    store.put("other", "a", Uint8Array.of(2));
    inner.put("ns", "b", inner.get("ns", "a")!);
    assert.throws(() => store.get("ns", "b"), isCode("corrupt_record"));
    inner.put("other", "a", inner.get("ns", "a")!);
    assert.throws(() => store.get("other", "a"), isCode("corrupt_record"));
    // ("ns","a") vs ("nsa","") must not share associated data.
    inner.put("nsa", "", inner.get("ns", "a")!);
    assert.throws(() => store.get("nsa", ""), isCode("corrupt_record"));

    const tampered = inner.get("ns", "a")!;
    tampered[tampered.length - 20]! ^= 1;
    inner.put("ns", "a", tampered);
    assert.throws(() => store.get("ns", "a"), isCode("corrupt_record"));
    inner.put("ns", "a", tampered.subarray(0, 20));
    assert.throws(() => store.get("ns", "a"), isCode("corrupt_record"));
  });

  it("insists on a 32-byte key", () => {
    assert.throws(() => new EncryptedRecordStore(new MemoryRecordStore(), randomBytes(31)), isCode("bad_argument"));
  });
});

describe("deriveStoreKey", () => {
  it("derives a stable 32-byte key per secret", () => {
    const a = deriveStoreKey("bridge secret from config");
    assert.equal(a.length, 32);
    assert.deepEqual(deriveStoreKey("bridge secret from config"), a);
    assert.notDeepEqual(deriveStoreKey("bridge secret from config!"), a);
    // NFC and NFD spellings of the same passphrase give the same key.
    assert.deepEqual(deriveStoreKey("caf\u00e9"), deriveStoreKey("cafe\u0301"));
    assert.throws(() => deriveStoreKey(""), isCode("bad_argument"));
  });
});
