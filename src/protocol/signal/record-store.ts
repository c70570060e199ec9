import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import { SignalLayerError } from "./errors.js";

/**
 * Where the Signal layer keeps its records. Synchronous on purpose: better-sqlite3 is, and a
 * synchronous get-modify-put cannot interleave with another one in the same process.
 * Implementations must return a value equal to what was last put (a copy is fine).
 */
export interface SignalRecordStore {
  get(ns: string, key: string): Uint8Array | undefined;
  put(ns: string, key: string, value: Uint8Array): void;
  delete(ns: string, key: string): void;
  /** Optional: runs fn so that all its puts and deletes commit together or not at all (a crash-safe store should have it). */
  transaction?<T>(fn: () => T): T;
}

/** In-process store for tests and the simulated WhatsApp users. */
export class MemoryRecordStore implements SignalRecordStore {
  private readonly namespaces = new Map<string, Map<string, Uint8Array>>();

  get(ns: string, key: string): Uint8Array | undefined {
    const value = this.namespaces.get(ns)?.get(key);
    // Copies in and out so nobody can mutate stored state through a shared buffer.
    return value === undefined ? undefined : Uint8Array.from(value);
  }

  put(ns: string, key: string, value: Uint8Array): void {
    let records = this.namespaces.get(ns);
    if (!records) {
      records = new Map();
      this.namespaces.set(ns, records);
    }
    records.set(key, Uint8Array.from(value));
  }

  delete(ns: string, key: string): void {
    const records = this.namespaces.get(ns);
    if (!records) return;
    records.delete(key);
    if (records.size === 0) this.namespaces.delete(ns);
  }

  /** Every record as [ns, key, value]; for tests and debugging. */
  entries(): Array<[string, string, Uint8Array]> {
    const out: Array<[string, string, Uint8Array]> = [];
    for (const [ns, records] of this.namespaces) {
      for (const [key, value] of records) out.push([ns, key, Uint8Array.from(value)]);
    }
    return out;
  }

  get size(): number {
    let n = 0;
    for (const records of this.namespaces.values()) n += records.size;
    return n;
  }
}

const FORMAT_V1 = 1;
const KEY_CHECK_LEN = 8;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const HEADER_LEN = 1 + KEY_CHECK_LEN;
const AAD_LABEL = Buffer.from("matrix-interop-bridge/signal-record/v1\0", "utf8");

/**
 * Encrypts every value at rest with AES-256-GCM.
 *
 * Stored layout: version(1) | key check(8) | nonce(12) | ciphertext | tag(16).
 * The AAD binds header, namespace and key, so a record copied to another slot fails to open.
 * The key check (an HKDF output, not the key) lets a wrong key be told apart from tampering:
 * wrong key → "bad_store_key", right key but failed authentication → "corrupt_record".
 */
export class EncryptedRecordStore implements SignalRecordStore {
  private readonly aesKey: Buffer;
  private readonly keyCheck: Buffer;

  constructor(
    private readonly inner: SignalRecordStore,
    key: Uint8Array,
  ) {
    if (!(key instanceof Uint8Array) || key.length !== 32) {
      throw new SignalLayerError("bad_argument", "EncryptedRecordStore needs a 32-byte key");
    }
    // Separate subkeys so the value stored in clear (key check) reveals nothing about the AES key.
    this.aesKey = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), "matrix-interop-bridge/record-store/aes-256-gcm", 32));
    this.keyCheck = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), "matrix-interop-bridge/record-store/key-check", KEY_CHECK_LEN));
  }

  get(ns: string, key: string): Uint8Array | undefined {
    const stored = this.inner.get(ns, key);
    if (stored === undefined) return undefined;
    if (stored.length < HEADER_LEN + NONCE_LEN + TAG_LEN || stored[0] !== FORMAT_V1) {
      throw new SignalLayerError("corrupt_record", "stored record is truncated or of an unknown format");
    }
    const header = stored.subarray(0, HEADER_LEN);
    if (!timingSafeEqual(header.subarray(1), this.keyCheck)) {
      throw new SignalLayerError("bad_store_key", "stored record was encrypted with a different store key");
    }
    const nonce = stored.subarray(HEADER_LEN, HEADER_LEN + NONCE_LEN);
    const tag = stored.subarray(stored.length - TAG_LEN);
    const ciphertext = stored.subarray(HEADER_LEN + NONCE_LEN, stored.length - TAG_LEN);
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.aesKey, nonce, { authTagLength: TAG_LEN });
      decipher.setAAD(this.aad(header, ns, key));
      decipher.setAuthTag(tag);
      return new Uint8Array(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
    } catch (err) {
      throw new SignalLayerError("corrupt_record", "stored record failed authentication (tampered or moved)", {
        cause: err,
      });
    }
  }

  put(ns: string, key: string, value: Uint8Array): void {
    const header = Buffer.concat([Buffer.of(FORMAT_V1), this.keyCheck]);
    const nonce = randomBytes(NONCE_LEN);
    const cipher = createCipheriv("aes-256-gcm", this.aesKey, nonce, { authTagLength: TAG_LEN });
    cipher.setAAD(this.aad(header, ns, key));
    const ciphertext = Buffer.concat([cipher.update(value), cipher.final()]);
    this.inner.put(ns, key, new Uint8Array(Buffer.concat([header, nonce, ciphertext, cipher.getAuthTag()])));
  }

  delete(ns: string, key: string): void {
    this.inner.delete(ns, key);
  }

  transaction<T>(fn: () => T): T {
    return this.inner.transaction ? this.inner.transaction(fn) : fn();
  }

  private aad(header: Uint8Array, ns: string, key: string): Buffer {
    const nsBytes = Buffer.from(ns, "utf8");
    const nsLen = Buffer.alloc(4);
    // Length prefix so ("ab", "c") and ("a", "bc") give different AADs.
    nsLen.writeUInt32BE(nsBytes.length);
    return Buffer.concat([AAD_LABEL, header, nsLen, nsBytes, Buffer.from(key, "utf8")]);
  }
}

const STORE_KEY_SALT = Buffer.from("matrix-interop-bridge/signal-record-store/v1", "utf8");

/**
 * Derives the 32-byte EncryptedRecordStore key from a configuration secret with scrypt
 * (N=2^15, r=8, p=1, fixed application salt; about 0.1 s, once at startup), so even a
 * human-chosen passphrase is costly to brute-force from a stolen database. The secret is
 * NFC-normalised first so the same passphrase typed on different systems gives the same key.
 * Changing the secret makes every existing record unreadable ("bad_store_key").
 */
export function deriveStoreKey(secret: string): Uint8Array {
  if (typeof secret !== "string" || secret.length === 0) {
    throw new SignalLayerError("bad_argument", "store secret must be a non-empty string");
  }
  const key = scryptSync(secret.normalize("NFC"), STORE_KEY_SALT, 32, {
    N: 1 << 15,
    r: 8,
    p: 1,
    maxmem: 64 * 1024 * 1024,
  });
  return new Uint8Array(key);
}
