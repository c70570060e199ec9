/**
 * Encrypted media blobs (docs/protocol.md §17): AES-128-GCM with the 16-byte tag appended, and
 * the SHA-256 and size of those ciphertext bytes. Both directions stream through files, so a
 * blob of any size crosses in a few 64 KiB buffers.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, type Hash } from "node:crypto";
import fs from "node:fs";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { noteStreamed } from "../gc-pacing";

export const MEDIA_KEY_BYTES = 16;
export const MEDIA_NONCE_BYTES = 12;
export const MEDIA_TAG_BYTES = 16;
const CIPHER = "aes-128-gcm";

export interface BlobKey {
  key: Uint8Array;
  nonce: Uint8Array;
}

/** What a receiver checks before it trusts a blob: the ciphertext's length and SHA-256. */
export interface BlobDigest {
  /** Bytes of ciphertext including the tag. */
  size: number;
  sha256: Uint8Array;
}

export type BlobCheckCode =
  /** More bytes arrived than the announced size. */
  | "too_long"
  /** The stream ended before (or after) the announced size. */
  | "wrong_size"
  | "bad_hash"
  /** The GCM tag did not verify: the bytes were altered or the key is wrong. */
  | "bad_tag";

/** A blob that failed a check; nothing of its plaintext was released. */
export class BlobCheckError extends Error {
  override readonly name = "BlobCheckError";
  constructor(
    readonly code: BlobCheckCode,
    message: string,
  ) {
    super(message);
  }
}

export function newBlobKey(): BlobKey {
  return { key: new Uint8Array(randomBytes(MEDIA_KEY_BYTES)), nonce: new Uint8Array(randomBytes(MEDIA_NONCE_BYTES)) };
}

/** Plaintext bytes of a blob of `ciphertextSize` bytes. */
export function plaintextSize(ciphertextSize: number): number {
  return Math.max(0, ciphertextSize - MEDIA_TAG_BYTES);
}

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<Buffer> {
  const hash = createHash("sha256");
  await pipeline(fs.createReadStream(file), async function (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      noteStreamed(chunk.length);
      hash.update(chunk);
    }
  });
  return hash.digest();
}

/** Encrypts `source` into `dest` (created 0600); returns the ciphertext's size and SHA-256. */
export async function encryptFile(source: string, dest: string, blobKey: BlobKey): Promise<BlobDigest> {
  const cipher = createCipheriv(CIPHER, blobKey.key, blobKey.nonce);
  const hash = createHash("sha256");
  let size = 0;
  const emit = (self: Transform, bytes: Buffer) => {
    if (bytes.length === 0) return;
    hash.update(bytes);
    size += bytes.length;
    self.push(bytes);
  };
  const encrypt = new Transform({
    transform(chunk: Buffer, _enc, done) {
      noteStreamed(chunk.length);
      emit(this, cipher.update(chunk));
      done();
    },
    flush(done) {
      emit(this, cipher.final());
      emit(this, cipher.getAuthTag());
      done();
    },
  });
  await pipeline(fs.createReadStream(source), encrypt, fs.createWriteStream(dest, { mode: 0o600 }));
  return { size, sha256: new Uint8Array(hash.digest()) };
}

/**
 * The receiving half as one transform: counts and hashes the ciphertext, refuses a byte beyond
 * `expected.size`, holds the trailing tag back from the decipher, and on end checks size, hash and
 * tag before it emits the last plaintext block. Whoever writes its output must treat it as
 * unverified until the stream finished without error.
 */
class VerifyingDecipher extends Transform {
  private readonly hash: Hash = createHash("sha256");
  private readonly decipher;
  private received = 0;
  private tail = Buffer.alloc(0);

  constructor(
    private readonly expected: BlobDigest,
    blobKey: BlobKey,
  ) {
    super();
    this.decipher = createDecipheriv(CIPHER, blobKey.key, blobKey.nonce);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    noteStreamed(chunk.length);
    this.received += chunk.length;
    if (this.received > this.expected.size) {
      done(new BlobCheckError("too_long", `the blob is longer than the announced ${this.expected.size} bytes`));
      return;
    }
    this.hash.update(chunk);
    // The last 16 bytes seen may be the tag: they wait until more bytes (or the end) show they are not.
    if (chunk.length >= MEDIA_TAG_BYTES) {
      const release = chunk.length - MEDIA_TAG_BYTES;
      const held = this.tail;
      this.tail = Buffer.from(chunk.subarray(release));
      if (held.length > 0) this.pushPlain(this.decipher.update(held));
      if (release > 0) this.pushPlain(this.decipher.update(chunk.subarray(0, release)));
    } else {
      const data = Buffer.concat([this.tail, chunk]);
      const release = Math.max(0, data.length - MEDIA_TAG_BYTES);
      this.tail = Buffer.from(data.subarray(release));
      if (release > 0) this.pushPlain(this.decipher.update(data.subarray(0, release)));
    }
    done();
  }

  private pushPlain(plain: Buffer): void {
    if (plain.length > 0) this.push(plain);
  }

  override _flush(done: TransformCallback): void {
    if (this.received !== this.expected.size) {
      done(new BlobCheckError("wrong_size", `the blob has ${this.received} bytes, ${this.expected.size} were announced`));
      return;
    }
    if (!this.hash.digest().equals(Buffer.from(this.expected.sha256))) {
      done(new BlobCheckError("bad_hash", "the blob's SHA-256 differs from the announced hash"));
      return;
    }
    if (this.tail.length !== MEDIA_TAG_BYTES) {
      done(new BlobCheckError("wrong_size", "the blob is shorter than its authentication tag"));
      return;
    }
    try {
      this.decipher.setAuthTag(this.tail);
      const last = this.decipher.final();
      if (last.length > 0) this.push(last);
    } catch {
      done(new BlobCheckError("bad_tag", "the blob failed authentication (altered, or the wrong key)"));
      return;
    }
    done();
  }
}

/**
 * Decrypts a ciphertext stream into `dest` (created 0600), checking length, SHA-256 and the GCM
 * tag. Until it resolves, `dest` holds unverified plaintext: on any failure it is deleted, so
 * the caller only ever sees a file that passed every check. Resolves to the plaintext size.
 */
export async function decryptToFile(source: Readable | AsyncIterable<Uint8Array>, dest: string, expected: BlobDigest, blobKey: BlobKey): Promise<number> {
  const verify = new VerifyingDecipher(expected, blobKey);
  let written = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      written += chunk.length;
      done(null, chunk);
    },
  });
  try {
    await pipeline(source, verify, count, fs.createWriteStream(dest, { mode: 0o600 }));
  } catch (err) {
    await fs.promises.rm(dest, { force: true });
    throw err;
  }
  return written;
}
