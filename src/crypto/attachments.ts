/**
 * Encrypted attachments as the client-server spec defines them (m.room.message `file`,
 * EncryptedFile): AES-256-CTR with a random key and a 128-bit counter block whose low 64 bits
 * start at zero, the key as a JWK (A256CTR), the SHA-256 of the ciphertext, version v2. Streamed:
 * the cipher and the hash run as the bytes pass.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { Transform } from "node:stream";

/** EncryptedFile without its url (known once the ciphertext is uploaded). */
export interface EncryptedFileKeys {
  key: { kty: "oct"; key_ops: ["encrypt", "decrypt"]; alg: "A256CTR"; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: "v2";
}

export type EncryptedFile = EncryptedFileKeys & { url: string };

const unpadded = (b: Buffer): string => b.toString("base64").replace(/=+$/, "");

/** A Transform that encrypts what passes through it; `keys()` once it has ended gives the file's keys and hash. */
export function attachmentEncryptor(): { stream: Transform; keys(): EncryptedFileKeys } {
  const key = randomBytes(32);
  // Random high half, zero counter: as the spec's clients do, so the counter never wraps into the nonce.
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const hash = createHash("sha256");
  let digest: string | undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      const out = cipher.update(chunk);
      hash.update(out);
      done(null, out);
    },
    flush(done) {
      const out = cipher.final();
      hash.update(out);
      digest = unpadded(hash.digest());
      done(null, out.length ? out : undefined);
    },
  });
  return {
    stream,
    keys() {
      if (digest === undefined) throw new Error("the attachment has not been encrypted to its end yet");
      return {
        key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: key.toString("base64url"), ext: true },
        iv: unpadded(iv),
        hashes: { sha256: digest },
        v: "v2",
      };
    },
  };
}

/**
 * A Transform that decrypts an encrypted attachment as it passes (key: the JWK's `k`, iv and
 * sha256 as in the event), hashing the ciphertext; it fails at the end, passing nothing more,
 * when the hash is not the one the sender gave (a corrupt or substituted file).
 */
export function attachmentDecryptor(keys: { key: string; iv: string; sha256: string }, onMismatch: () => Error): Transform {
  const decipher = createDecipheriv("aes-256-ctr", Buffer.from(keys.key, "base64url"), Buffer.from(keys.iv, "base64"));
  const hash = createHash("sha256");
  const expected = Buffer.from(keys.sha256, "base64");
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, decipher.update(chunk));
    },
    flush(done) {
      const digest = hash.digest();
      if (digest.length !== expected.length || !timingSafeEqual(digest, expected)) return done(onMismatch());
      const out = decipher.final();
      done(null, out.length ? out : undefined);
    },
  });
}
