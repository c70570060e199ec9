/**
 * Encrypted attachments (the spec's EncryptedFile): what the bridge encrypts decrypts back with
 * the keys it gives, a wrong hash is refused, and a Matrix `file` with usable keys becomes media
 * to fetch and decrypt (one without them is refused as before).
 */
import assert from "node:assert/strict";
import { createDecipheriv, createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, it } from "node:test";
import { matrixToRemote } from "../../src/convert/message-content";
import { attachmentDecryptor, attachmentEncryptor } from "../../src/crypto/attachments";

async function through(data: Buffer, transform: NodeJS.ReadWriteStream): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([data.subarray(0, 1000), data.subarray(1000)]),
    transform,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        out.push(chunk);
        done();
      },
    }),
  );
  return Buffer.concat(out);
}

describe("encrypted attachments", () => {
  it("encrypts as the spec says (A256CTR JWK, zero counter half, SHA-256 of the ciphertext, v2) and decrypts back", async () => {
    const plain = randomBytes(70_000);
    const enc = attachmentEncryptor();
    const ciphertext = await through(plain, enc.stream);
    const keys = enc.keys();
    assert.notDeepEqual(ciphertext, plain);
    assert.equal(keys.v, "v2");
    assert.equal(keys.key.alg, "A256CTR");
    assert.deepEqual(keys.key.key_ops, ["encrypt", "decrypt"]);
    const iv = Buffer.from(keys.iv, "base64");
    assert.equal(iv.length, 16);
    assert.deepEqual(iv.subarray(8), Buffer.alloc(8), "the counter half starts at zero");
    assert.equal(keys.hashes.sha256, createHash("sha256").update(ciphertext).digest("base64").replace(/=+$/, ""));
    // Any AES-CTR implementation reads it (here Node's own, in one piece).
    const key = Buffer.from(keys.key.k, "base64url");
    assert.deepEqual(Buffer.concat([createDecipheriv("aes-256-ctr", key, iv).update(ciphertext)]), plain);
    const streamed = await through(
      ciphertext,
      attachmentDecryptor({ key: keys.key.k, iv: keys.iv, sha256: keys.hashes.sha256 }, () => new Error("hash")),
    );
    assert.deepEqual(streamed, plain);
  });

  it("refuses a file whose ciphertext does not match its hash", async () => {
    const enc = attachmentEncryptor();
    const ciphertext = await through(randomBytes(5000), enc.stream);
    const keys = enc.keys();
    ciphertext[10] ^= 1;
    await assert.rejects(
      through(
        ciphertext,
        attachmentDecryptor({ key: keys.key.k, iv: keys.iv, sha256: keys.hashes.sha256 }, () => new Error("corrupt")),
      ),
      /corrupt/,
    );
  });

  it("a Matrix file with usable keys becomes media to fetch and decrypt; without them it is refused", () => {
    const enc = attachmentEncryptor();
    enc.stream.end();
    enc.stream.resume();
    return new Promise<void>((resolve) =>
      enc.stream.on("end", () => {
        const keys = enc.keys();
        const remote = matrixToRemote({ msgtype: "m.file", body: "a.pdf", info: { mimetype: "application/pdf", size: 3 }, file: { ...keys, url: "mxc://hs/abc" } });
        assert.ok("type" in remote && remote.type === "media");
        assert.deepEqual(remote.source, { from: "matrix", mxc: "mxc://hs/abc", encryption: { key: keys.key.k, iv: keys.iv, sha256: keys.hashes.sha256 } });
        const noKey = matrixToRemote({ msgtype: "m.file", body: "a.pdf", file: { ...keys, key: { ...keys.key, k: "short" }, url: "mxc://hs/abc" } });
        assert.deepEqual(noKey, { unbridgeable: true, reason: "encrypted attachments cannot be bridged (this room is end-to-end encrypted)" });
        resolve();
      }),
    );
  });
});
