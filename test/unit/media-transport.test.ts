/**
 * The media transport (docs/protocol.md §17) over real HTTP on loopback: a blob is encrypted
 * and hosted, fetched, checked and decrypted; every way a blob or its link can be wrong is
 * refused, the early ones before a single request is made, and no plaintext is left behind.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { MediaError } from "../../src/network/connector";
import { checkBlobRef, fetchBlob, type BlobRef, type FetchPolicy } from "../../src/network/media-fetch";
import { MEDIA_PATH_PREFIX, MediaHost, newMediaToken, type HostedBlob } from "../../src/network/media-host";
import { BlobCheckError, decryptToFile, encryptFile, newBlobKey, plaintextSize } from "../../src/protocol/media-crypto";
import { BridgeStore } from "../../src/store";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let dir: string;
let store: BridgeStore;
let host: MediaHost;
let hostUrl: string;
let plainFile: string;
let plain: Buffer;
let requests = 0;

function refOf(blob: HostedBlob): BlobRef {
  return { url: blob.url, expires: blob.expires, size: blob.size, sha256: blob.sha256, key: blob.key, nonce: blob.nonce };
}

function policy(extra: Partial<FetchPolicy> = {}): FetchPolicy {
  return { maxBytes: 10 * 1024 * 1024, allowedHosts: [new URL(hostUrl).host], tempDir: path.join(dir, "tmp"), attempts: 1, ...extra };
}

async function refusal(p: Promise<unknown>): Promise<MediaError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof MediaError, `expected a MediaError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a refusal");
}

function leftoverTempFiles(): string[] {
  const tmp = path.join(dir, "tmp");
  return fs.existsSync(tmp) ? fs.readdirSync(tmp) : [];
}

/** A server answering every request with `respond` (for blobs a host serves wrongly). */
async function rogueServer(respond: (res: http.ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => respond(res));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-media-transport-"));
  store = BridgeStore.open(path.join(dir, "bridge.db"));
  host = new MediaHost({ dir: path.join(dir, "blobs"), index: store.hostedMedia, lifetimeMs: 60_000 });
  hostUrl = await host.listen("127.0.0.1", 0);
  // Count what reaches the host, to show refusals that need no request make none.
  const server = (host as unknown as { server: http.Server }).server;
  server.prependListener("request", () => requests++);
  plain = randomBytes(1024 * 1024 + 7);
  plainFile = path.join(dir, "plain.bin");
  fs.writeFileSync(plainFile, plain);
});

after(async () => {
  await host.close();
  store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("media transport", () => {
  it("encrypts, hosts, fetches, verifies and decrypts a blob to the same bytes", async () => {
    const blob = await host.host(plainFile);
    assert.match(blob.url, new RegExp(`^${hostUrl}${MEDIA_PATH_PREFIX}[A-Za-z0-9_-]{43}$`), "the path carries a 256-bit token");
    assert.equal(blob.size, plain.length + 16, "ciphertext plus the 16-byte GCM tag");
    assert.equal(blob.key.length, 16);
    assert.equal(blob.nonce.length, 12);
    const served = Buffer.from(await (await fetch(blob.url)).arrayBuffer());
    assert.equal(served.length, blob.size);
    assert.equal(sha256(served), Buffer.from(blob.sha256).toString("hex"), "size and hash describe the bytes served");
    assert.notEqual(sha256(served.subarray(0, plain.length)), sha256(plain), "what is served is not the plaintext");
    const fetched = await fetchBlob(refOf(blob), policy());
    assert.equal(fetched.size, plain.length);
    assert.equal(sha256(fs.readFileSync(fetched.path)), sha256(plain));
    fs.rmSync(fetched.path);
  });

  it("uses a fresh key, nonce and URL for every blob unless the caller derives them", async () => {
    const a = await host.host(plainFile);
    const b = await host.host(plainFile);
    assert.notEqual(a.url, b.url);
    assert.notDeepEqual(a.key, b.key);
    assert.notDeepEqual(a.nonce, b.nonce);
    const token = newMediaToken();
    const blobKey = newBlobKey();
    const first = await host.host(plainFile, { token, blobKey, expiresAt: Date.now() + 60_000 });
    const again = await host.host(plainFile, { token, blobKey, expiresAt: first.expires * 1000 });
    assert.deepEqual(again, first, "a retried send with the same material hosts the very same blob");
  });

  it("refuses altered ciphertext: a hash mismatch, or a bad GCM tag when the hash was forged too", async () => {
    const blob = await host.host(plainFile);
    const file = path.join(dir, "blobs", blob.url.slice(blob.url.lastIndexOf("/") + 1));
    const bytes = fs.readFileSync(file);
    bytes[1000] ^= 0x01;
    fs.writeFileSync(file, bytes);
    const badHash = await refusal(fetchBlob(refOf(blob), policy()));
    assert.equal(badHash.code, "bad_hash");
    const forged = { ...refOf(blob), sha256: new Uint8Array(createHash("sha256").update(bytes).digest()) };
    const badTag = await refusal(fetchBlob(forged, policy()));
    assert.equal(badTag.code, "bad_tag");
    assert.match(badTag.reason, /integrity check/);
    assert.deepEqual(leftoverTempFiles(), [], "no unverified plaintext is left behind");
  });

  it("refuses a blob whose size differs from the announced size", async () => {
    const blob = await host.host(plainFile);
    const longer = await refusal(fetchBlob({ ...refOf(blob), size: blob.size + 1 }, policy()));
    assert.equal(longer.code, "wrong_size", "the Content-Length already disagrees");
    // A host that sends no Content-Length: counted while streaming.
    const served = fs.readFileSync(path.join(dir, "blobs", blob.url.slice(blob.url.lastIndexOf("/") + 1)));
    const rogue = await rogueServer((res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.write(served);
      res.end(Buffer.alloc(100));
    });
    try {
      const tooLong = await refusal(fetchBlob({ ...refOf(blob), url: `${rogue.url}/x` }, policy({ allowedHosts: [new URL(rogue.url).host] })));
      assert.equal(tooLong.code, "too_long");
      const shorter = await rogueServer((res) => {
        res.writeHead(200, { "content-type": "application/octet-stream" });
        res.end(served.subarray(0, served.length - 1));
      });
      try {
        const short = await refusal(fetchBlob({ ...refOf(blob), url: `${shorter.url}/x` }, policy({ allowedHosts: [new URL(shorter.url).host] })));
        assert.equal(short.code, "wrong_size");
      } finally {
        await shorter.close();
      }
    } finally {
      await rogue.close();
    }
    assert.deepEqual(leftoverTempFiles(), []);
  });

  it("refuses an expired link: before any request when the message says so, and the host answers 410 after", async () => {
    const blob = await host.host(plainFile, { expiresAt: Date.now() - 1000 });
    const before = requests;
    const early = await refusal(fetchBlob(refOf(blob), policy()));
    assert.equal(early.code, "expired");
    assert.equal(requests, before, "no request was made");
    const res = await fetch(blob.url);
    assert.equal(res.status, 410);
    await res.body?.cancel();
    const late = await refusal(fetchBlob({ ...refOf(blob), expires: 0 }, policy()));
    assert.equal(late.code, "expired", "a host that says the link is gone is believed");
  });

  it("refuses a blob over the limit, an unlisted host and plain HTTP off loopback, all before any request", async () => {
    const blob = await host.host(plainFile);
    const before = requests;
    const tooLarge = await refusal(fetchBlob(refOf(blob), policy({ maxBytes: plain.length - 1 })));
    assert.equal(tooLarge.code, "too_large");
    assert.match(tooLarge.reason, /^it is 1\.0 MB, over this bridge's limit of 1\.0 MB$/);
    const unlisted = await refusal(fetchBlob(refOf(blob), policy({ allowedHosts: ["media.whatsapp.example"] })));
    assert.equal(unlisted.code, "host_not_allowed");
    assert.throws(() => checkBlobRef({ ...refOf(blob), url: "http://media.whatsapp.example/x" }, { maxBytes: 1e9, allowedHosts: ["*"] }), /not HTTPS/);
    assert.throws(() => checkBlobRef({ ...refOf(blob), url: "https://user:pw@media.whatsapp.example/x" }, { maxBytes: 1e9, allowedHosts: ["*"] }), /credentials/);
    assert.ok(
      checkBlobRef({ ...refOf(blob), url: "https://media.whatsapp.example:8443/x" }, { maxBytes: 1e9, allowedHosts: ["media.whatsapp.example"] }),
      "a host entry without a port allows any port",
    );
    assert.equal(requests, before, "no request was made");
  });

  it("does not follow redirects (they could lead outside the allowed hosts)", async () => {
    const blob = await host.host(plainFile);
    const redirector = await rogueServer((res) => {
      res.writeHead(302, { location: blob.url });
      res.end();
    });
    try {
      const refused = await refusal(fetchBlob({ ...refOf(blob), url: `${redirector.url}/x` }, policy({ allowedHosts: ["127.0.0.1"] })));
      assert.equal(refused.code, "unreachable");
    } finally {
      await redirector.close();
    }
  });

  it("serves nothing for unknown tokens and deletes expired blobs when it sweeps", async () => {
    assert.equal((await fetch(`${hostUrl}${MEDIA_PATH_PREFIX}${newMediaToken()}`)).status, 404);
    assert.equal((await fetch(`${hostUrl}${MEDIA_PATH_PREFIX}../bridge.db`)).status, 404);
    assert.equal((await fetch(`${hostUrl}${MEDIA_PATH_PREFIX}${newMediaToken()}`, { method: "DELETE" })).status, 405);
    const expired = await host.host(plainFile, { expiresAt: Date.now() - 1 });
    const alive = await host.host(plainFile);
    const token = (b: HostedBlob) => b.url.slice(b.url.lastIndexOf("/") + 1);
    assert.ok((await host.sweep()) >= 1);
    assert.equal(store.hostedMedia.get(token(expired)), undefined);
    assert.equal(fs.existsSync(path.join(dir, "blobs", token(expired))), false, "the file is gone");
    assert.ok(store.hostedMedia.get(token(alive)));
    assert.equal((await fetch(alive.url)).status, 200);
  });
});

describe("blob encryption", () => {
  it("decrypts what it encrypted, and refuses a wrong key without releasing the output", async () => {
    const src = path.join(dir, "enc-src");
    const enc = path.join(dir, "enc-out");
    fs.writeFileSync(src, Buffer.from("x".repeat(100_000)));
    const key = newBlobKey();
    const digest = await encryptFile(src, enc, key);
    assert.equal(plaintextSize(digest.size), 100_000);
    const out = path.join(dir, "dec-out");
    assert.equal(await decryptToFile(fs.createReadStream(enc), out, digest, key), 100_000);
    assert.equal(fs.readFileSync(out, "utf8"), "x".repeat(100_000));
    const wrong = path.join(dir, "dec-wrong");
    await assert.rejects(decryptToFile(fs.createReadStream(enc), wrong, digest, newBlobKey()), (err: unknown) => err instanceof BlobCheckError && err.code === "bad_tag");
    assert.equal(fs.existsSync(wrong), false, "unverified plaintext is deleted");
  });

  it("handles empty files and chunks smaller than the tag", async () => {
    const src = path.join(dir, "empty");
    const enc = path.join(dir, "empty.enc");
    fs.writeFileSync(src, Buffer.alloc(0));
    const key = newBlobKey();
    const digest = await encryptFile(src, enc, key);
    assert.equal(digest.size, 16);
    const bytes = fs.readFileSync(enc);
    const trickle = (async function* () {
      for (let i = 0; i < bytes.length; i += 3) yield bytes.subarray(i, i + 3);
    })();
    assert.equal(await decryptToFile(trickle, path.join(dir, "empty.out"), digest, key), 0);
  });
});
