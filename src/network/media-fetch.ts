/**
 * The receiving half of the media transport (docs/protocol.md §17): fetches a blob another
 * provider hosts, refusing it before the first byte when the link or its announced size is
 * unacceptable, and streams it through length, SHA-256 and AES-GCM checks into a temporary
 * file that is handed out only once every check passed.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { BlobCheckError, decryptToFile, plaintextSize } from "../protocol/media-crypto";
import { MediaError } from "./connector";

/** A blob as an external part announces it. */
export interface BlobRef {
  url: string;
  /** Seconds since the epoch after which the URL is dead; 0 = never. */
  expires: number;
  /** Ciphertext bytes, tag included. */
  size: number;
  sha256: Uint8Array;
  key: Uint8Array;
  nonce: Uint8Array;
}

export interface FetchPolicy {
  /** Largest plaintext accepted, in bytes. */
  maxBytes: number;
  /** Hosts media may come from: "host" (any port) or "host:port"; "*" allows any host. */
  allowedHosts: readonly string[];
  /** Folder for the temporary file (the caller deletes it when done). */
  tempDir: string;
  /** Whole transfer (default 10 min). */
  timeoutMs?: number;
  /** Longest silence while the body streams (default 60 s). */
  idleTimeoutMs?: number;
  /** Attempts for transient failures: connection errors, 5xx (default 3). */
  attempts?: number;
}

export interface FetchedBlob {
  /** The verified plaintext; the caller owns (and deletes) it. */
  path: string;
  size: number;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "[::1]", "localhost"]);

function megabytes(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

/** Refusals that need no network: a bad, unlisted or expired link, or a blob over the limit. */
export function checkBlobRef(ref: BlobRef, policy: Pick<FetchPolicy, "maxBytes" | "allowedHosts">, now = Date.now()): URL {
  let url: URL;
  try {
    url = new URL(ref.url);
  } catch {
    throw new MediaError("bad_url", "the sender's media link is not a valid URL");
  }
  const loopback = LOOPBACK.has(url.hostname) || /^127\./.test(url.hostname);
  if (url.protocol !== "https:" && !(url.protocol === "http:" && loopback)) {
    throw new MediaError("bad_url", "the sender's media link is not HTTPS");
  }
  if (url.username || url.password) throw new MediaError("bad_url", "the sender's media link carries credentials");
  const allowed = policy.allowedHosts.some((entry) => entry === "*" || entry.toLowerCase() === url.host.toLowerCase() || entry.toLowerCase() === url.hostname.toLowerCase());
  if (!allowed) throw new MediaError("host_not_allowed", `the media is hosted on ${url.host}, which this bridge does not fetch from (network.media.allowed_hosts)`);
  if (ref.expires !== 0 && ref.expires * 1000 <= now) throw new MediaError("expired", "the sender's media link has expired");
  const plain = plaintextSize(ref.size);
  if (plain > policy.maxBytes) {
    throw new MediaError("too_large", `it is ${megabytes(plain)}, over this bridge's limit of ${megabytes(policy.maxBytes)}`);
  }
  return url;
}

/** Fetches, verifies and decrypts one blob into a new temporary file. */
export async function fetchBlob(ref: BlobRef, policy: FetchPolicy): Promise<FetchedBlob> {
  const url = checkBlobRef(ref, policy);
  const attempts = Math.max(1, policy.attempts ?? 3);
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetchOnce(url, ref, policy);
    } catch (err) {
      if (!(err instanceof MediaError) || !err.retryable || attempt >= attempts) throw err;
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
}

async function fetchOnce(url: URL, ref: BlobRef, policy: FetchPolicy): Promise<FetchedBlob> {
  const idle = new AbortController();
  const signal = AbortSignal.any([idle.signal, AbortSignal.timeout(policy.timeoutMs ?? 10 * 60_000)]);
  let response: Response;
  try {
    // Redirects are refused: following one could lead outside the allowed hosts.
    response = await fetch(url, { signal, redirect: "error", headers: { accept: "application/octet-stream" } });
  } catch (err) {
    throw new MediaError("unreachable", `the sender's media host could not be reached (${describeFetchError(err)})`, true);
  }
  if (response.status === 404 || response.status === 410) {
    await response.body?.cancel();
    throw new MediaError("expired", "the sender's media link has expired or the file was deleted");
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new MediaError("http_error", `the sender's media host answered HTTP ${response.status}`, response.status >= 500);
  }
  const announced = response.headers.get("content-length");
  if (announced !== null && Number(announced) !== ref.size) {
    await response.body.cancel();
    throw new MediaError("wrong_size", "the file the sender's host serves does not have the announced size");
  }
  fs.mkdirSync(policy.tempDir, { recursive: true });
  const dest = path.join(policy.tempDir, `in-${randomBytes(12).toString("hex")}`);
  const idleMs = policy.idleTimeoutMs ?? 60_000;
  let timer = setTimeout(() => idle.abort(), idleMs);
  // Every chunk re-arms the idle timer; an error of the body ends the loop and so the pipeline.
  async function* watched(body: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of body) {
      clearTimeout(timer);
      timer = setTimeout(() => idle.abort(), idleMs);
      yield chunk;
    }
  }
  try {
    const body = Readable.fromWeb(response.body as import("node:stream/web").ReadableStream<Uint8Array>);
    const size = await decryptToFile(watched(body), dest, { size: ref.size, sha256: ref.sha256 }, { key: ref.key, nonce: ref.nonce });
    return { path: dest, size };
  } catch (err) {
    await fs.promises.rm(dest, { force: true });
    if (err instanceof BlobCheckError) throw new MediaError(err.code, BLOB_CHECK_REASONS[err.code]);
    if (signal.aborted) throw new MediaError("timeout", "the download from the sender's media host took too long", true);
    throw new MediaError("unreachable", `the download from the sender's media host broke off (${describeFetchError(err)})`, true);
  } finally {
    clearTimeout(timer);
  }
}

const BLOB_CHECK_REASONS: Record<BlobCheckError["code"], string> = {
  too_long: "the file the sender's host serves is larger than announced",
  wrong_size: "the file the sender's host serves does not have the announced size",
  bad_hash: "the file the sender's host serves is not the one the message names (hash mismatch)",
  bad_tag: "the file failed its integrity check (it was altered or the key is wrong)",
};

function describeFetchError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  return cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
}
