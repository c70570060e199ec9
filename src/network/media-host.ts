/**
 * The media host (docs/protocol.md §17): the encrypted blobs our users send, served over HTTP to
 * whoever holds the URL, until they expire. A URL's path carries 256 random bits (or bits
 * derived from a secret, for a retried send), so it cannot be guessed; the key to the bytes
 * travels only inside the Signal-encrypted message.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { noteStreamed } from "../gc-pacing";
import { getLogger, type Logger } from "../logging";
import { encryptFile, newBlobKey, type BlobKey } from "../protocol/media-crypto";

/** Where the host keeps track of its blobs (the bridge: SQLite table hosted_media; the simulator: its own). */
export interface HostedBlobIndex {
  save(row: { token: string; size: number; expiresAt: number; createdAt: number }): void;
  get(token: string): { token: string; size: number; expiresAt: number } | undefined;
  expired(now: number): { token: string }[];
  remove(token: string): void;
}

export interface HostedBlob {
  url: string;
  /** Seconds since the epoch (MIMI `expires`). */
  expires: number;
  key: Uint8Array;
  nonce: Uint8Array;
  /** Ciphertext bytes, tag included. */
  size: number;
  sha256: Uint8Array;
}

export interface HostOptions {
  /** The URL token (43 base64url characters); random by default. */
  token?: string;
  /** Random by default. A caller that derives it must never use one key and nonce for two different files. */
  blobKey?: BlobKey;
  /** When the URL stops working (ms since the epoch); now + lifetime by default. */
  expiresAt?: number;
}

export interface MediaHostOptions {
  /** Folder of the blob files (created if missing). */
  dir: string;
  index: HostedBlobIndex;
  /** Base URL receivers reach this host under; defaults to the address `listen` bound. */
  publicUrl?: string;
  /** How long a URL works (ms). */
  lifetimeMs: number;
  logger?: Logger;
}

export const MEDIA_PATH_PREFIX = "/media/v1/";
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;

/** A fresh URL token: 32 random bytes, base64url. */
export function newMediaToken(): string {
  return randomBytes(32).toString("base64url");
}

export class MediaHost {
  private server?: http.Server;
  private sweeper?: NodeJS.Timeout;
  private publicUrl?: string;
  private readonly log: Logger;

  constructor(private readonly opts: MediaHostOptions) {
    this.publicUrl = opts.publicUrl?.replace(/\/+$/, "");
    this.log = opts.logger ?? getLogger("media-host");
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    // Leftovers of a host interrupted while writing a blob.
    for (const name of fs.readdirSync(opts.dir)) if (name.endsWith(".partial")) fs.rmSync(path.join(opts.dir, name), { force: true });
  }

  private fileOf(token: string): string {
    return path.join(this.opts.dir, token);
  }

  /** Encrypts a plaintext file into a new blob and returns how receivers fetch and open it. */
  async host(plaintext: string, options: HostOptions = {}): Promise<HostedBlob> {
    if (!this.publicUrl) throw new Error("the media host has no public URL yet (call listen first or configure one)");
    const token = options.token ?? newMediaToken();
    if (!TOKEN_RE.test(token)) throw new Error("a media token must be 43 base64url characters");
    const blobKey = options.blobKey ?? newBlobKey();
    const expiresAt = options.expiresAt ?? Date.now() + this.opts.lifetimeMs;
    // Written aside and renamed, so a URL never serves a half-written blob.
    const partial = `${this.fileOf(token)}.${randomBytes(6).toString("hex")}.partial`;
    let digest;
    try {
      digest = await encryptFile(plaintext, partial, blobKey);
      await fs.promises.rename(partial, this.fileOf(token));
    } catch (err) {
      await fs.promises.rm(partial, { force: true });
      throw err;
    }
    this.opts.index.save({ token, size: digest.size, expiresAt, createdAt: Date.now() });
    this.log.debug("hosting a media blob", { size: digest.size, expiresAt });
    return {
      url: `${this.publicUrl}${MEDIA_PATH_PREFIX}${token}`,
      expires: Math.floor(expiresAt / 1000),
      key: blobKey.key,
      nonce: blobKey.nonce,
      size: digest.size,
      sha256: digest.sha256,
    };
  }

  /** Answers GET/HEAD under /media/v1/; returns false (touching nothing) for any other path. */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const pathname = new URL(req.url ?? "/", "http://host").pathname;
    if (!pathname.startsWith(MEDIA_PATH_PREFIX)) return false;
    const reply = (status: number, message: string) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end(message);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      reply(405, "method not allowed\n");
      return true;
    }
    const token = pathname.slice(MEDIA_PATH_PREFIX.length);
    const row = TOKEN_RE.test(token) ? this.opts.index.get(token) : undefined;
    if (!row) {
      reply(404, "no such media\n");
      return true;
    }
    if (row.expiresAt <= Date.now()) {
      reply(410, "this media link has expired\n");
      return true;
    }
    const stream = fs.createReadStream(this.fileOf(token));
    stream.once("error", (err: NodeJS.ErrnoException) => {
      if (!res.headersSent) reply(err.code === "ENOENT" ? 404 : 500, err.code === "ENOENT" ? "no such media\n" : "read error\n");
      else res.destroy();
    });
    stream.once("open", () => {
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-length": String(row.size),
        "cache-control": "private, no-store",
        "x-content-type-options": "nosniff",
      });
      if (req.method === "HEAD") {
        stream.destroy();
        res.end();
      } else {
        stream.on("data", (chunk: string | Buffer) => noteStreamed(chunk.length));
        stream.pipe(res);
      }
    });
    return true;
  }

  /** Serves on its own HTTP server (the bridge); returns the bound base URL. */
  async listen(hostname: string, port: number): Promise<string> {
    const server = http.createServer((req, res) => {
      if (!this.handle(req, res)) {
        res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
        res.end("not found\n");
      }
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, hostname, () => resolve());
    });
    const addr = server.address() as AddressInfo;
    const bound = `http://${addr.family === "IPv6" ? `[${addr.address}]` : addr.address}:${addr.port}`;
    this.publicUrl ??= bound;
    return bound;
  }

  /** Deletes expired blobs (rows and files); returns how many. */
  async sweep(now = Date.now()): Promise<number> {
    let removed = 0;
    for (const row of this.opts.index.expired(now)) {
      await fs.promises.rm(this.fileOf(row.token), { force: true });
      this.opts.index.remove(row.token);
      removed++;
    }
    if (removed > 0) this.log.info("deleted expired media blobs", { count: removed });
    return removed;
  }

  /** Sweeps now and then every `intervalMs`. */
  startSweeping(intervalMs = 60 * 60 * 1000): void {
    const run = () => void this.sweep().catch((err: Error) => this.log.warn("media sweep failed", { error: err.message }));
    run();
    this.sweeper = setInterval(run, intervalMs);
    this.sweeper.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
