/**
 * Media on the Matrix side: streamed downloads through the authenticated media API
 * (`/_matrix/client/v1/media/download`) and streamed uploads (`POST /_matrix/media/v3/upload`),
 * both with the appservice token, plus what Element needs to show media natively: dimensions,
 * durations, thumbnails, blurhashes and voice-note waveforms.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { encode as encodeBlurhash } from "blurhash";
import {
  blurhashComponents,
  blurhashSampleSize,
  needsThumbnail,
  overLimitReason,
  parseMxc,
  remoteMediaToMatrix,
  settledMimetype,
  THUMBNAIL_MAX,
  thumbnailMimetype,
  waveformFromPeaks,
  type UploadedThumbnail,
} from "../convert/media";
import { attachmentDecryptor, attachmentEncryptor, EncryptedFile } from "../crypto/attachments";
import { noteStreamed, pacedPassThrough } from "../gc-pacing";
import { getLogger } from "../logging";
import { audioPeaks, makeThumbnail, probeMedia, rawRgba } from "../media/ffmpeg";
import { probedFacts, settleMediaKind } from "../media/probe";
import { AttachmentKeys, LocalMedia, MediaError, RemoteMedia } from "../network/connector";
import { errcodeOf, HomeserverLink, HomeserverUnreachable, isProxyRefusal } from "./homeserver-link";

const log = getLogger("matrix-media");

export interface MatrixMediaOptions {
  homeserverUrl: string;
  /** The appservice's as_token: downloads and (with user_id) uploads as any of its users. */
  asToken: string;
  /** Media requests wait out a homeserver outage and count in it, like the appservice's own requests. */
  homeserver: HomeserverLink;
  /** Folder for temporary files (emptied at start). */
  tempDir: string;
  timeoutMs?: number;
}

export class MatrixMedia {
  private readonly base: string;

  constructor(private readonly opts: MatrixMediaOptions) {
    this.base = opts.homeserverUrl.replace(/\/+$/, "");
    fs.rmSync(opts.tempDir, { recursive: true, force: true });
    fs.mkdirSync(opts.tempDir, { recursive: true, mode: 0o700 });
  }

  private tempFile(prefix: string): string {
    return path.join(this.opts.tempDir, `${prefix}-${randomBytes(12).toString("hex")}`);
  }

  private local(file: string, size: number): LocalMedia {
    return { path: file, size, release: () => fs.promises.rm(file, { force: true }) };
  }

  /**
   * Streams a Matrix file into a temporary file, refusing it once it passes `maxBytes`. While
   * the homeserver cannot be reached this waits for it, like every Matrix request; a failure
   * it answers is retryable if it is a server error, final otherwise (404 included). An
   * encrypted attachment (`encryption`) is decrypted as it streams, its hash checked at the end.
   */
  async download(mxc: string, maxBytes: number, encryption?: AttachmentKeys): Promise<LocalMedia> {
    const m = parseMxc(mxc);
    if (!m) throw new MediaError("bad_url", "the attachment's URL is not an mxc:// URI");
    const url = `${this.base}/_matrix/client/v1/media/download/${encodeURIComponent(m.serverName)}/${encodeURIComponent(m.mediaId)}`;
    const notFetched = (why: string) => `it could not be fetched from the homeserver (${why})`;
    let answer: { response: Response; error?: string };
    try {
      answer = await this.opts.homeserver.untilReachable("media download", async () => {
        const response = await fetch(url, { headers: { authorization: `Bearer ${this.opts.asToken}` }, signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10 * 60_000) });
        if (response.ok && response.body) return { response };
        // An error answer is small: read now, to tell a proxy's refusal from the homeserver's own.
        const error = await response.text();
        if (isProxyRefusal(response.status, error, true)) throw new HomeserverUnreachable(`HTTP ${response.status}`);
        return { response, error };
      });
    } catch (err) {
      const timedOut = (err as Error).name === "TimeoutError";
      throw new MediaError(timedOut ? "timeout" : "unreachable", notFetched(timedOut ? "it did not answer in time" : `the request failed: ${(err as Error).message}`), true);
    }
    const { response } = answer;
    if (answer.error !== undefined) {
      const errcode = errcodeOf(answer.error);
      const status = `HTTP ${response.status}${errcode ? ` ${errcode}` : ""}`;
      if (response.status === 404) throw new MediaError("not_found", `it could not be fetched from the homeserver, which has no such file (${status})`);
      throw new MediaError("http_error", notFetched(status), response.status >= 500 || response.status === 429);
    }
    const announced = Number(response.headers.get("content-length") ?? NaN);
    if (Number.isFinite(announced) && announced > maxBytes) {
      await response.body!.cancel();
      throw new MediaError("too_large", overLimitReason(announced, maxBytes));
    }
    const dest = this.tempFile("download");
    let size = 0;
    const limit = new Transform({
      transform(chunk: Buffer, _enc, done) {
        noteStreamed(chunk.length);
        size += chunk.length;
        if (size > maxBytes) done(new MediaError("too_large", overLimitReason(size, maxBytes)));
        else done(null, chunk);
      },
    });
    try {
      const body = Readable.fromWeb(response.body! as import("node:stream/web").ReadableStream<Uint8Array>);
      const out = fs.createWriteStream(dest, { mode: 0o600 });
      if (encryption) {
        const corrupt = () => new MediaError("bad_hash", "the encrypted file does not match its hash (it is corrupt or was replaced)");
        await pipeline(body, limit, attachmentDecryptor(encryption, corrupt), out);
      } else await pipeline(body, limit, out);
    } catch (err) {
      await fs.promises.rm(dest, { force: true });
      if (err instanceof MediaError) throw err;
      throw new MediaError("unreachable", notFetched(`the download broke off: ${(err as Error).message}`), true);
    }
    return this.local(dest, size);
  }

  /**
   * Encrypts a file (an encrypted attachment) into a temporary file, uploads that as `asMxid`
   * and returns the EncryptedFile for the event's `file` / `thumbnail_file`. The homeserver
   * sees neither the bytes nor the name nor the type.
   */
  async uploadEncrypted(asMxid: string, file: string): Promise<EncryptedFile> {
    const sealed = this.tempFile("sealed");
    try {
      const encryptor = attachmentEncryptor();
      await pipeline(fs.createReadStream(file), encryptor.stream, fs.createWriteStream(sealed, { mode: 0o600 }));
      const keys = encryptor.keys();
      const url = await this.upload(asMxid, sealed, "application/octet-stream", "");
      return { ...keys, url };
    } finally {
      await fs.promises.rm(sealed, { force: true });
    }
  }

  /** Streams a file to the media repository as `asMxid`; returns its mxc URI. */
  async upload(asMxid: string, file: string, mimetype: string, filename: string): Promise<string> {
    const size = (await fs.promises.stat(file)).size;
    const url = new URL(`${this.base}/_matrix/media/v3/upload`);
    if (filename) url.searchParams.set("filename", filename);
    url.searchParams.set("user_id", asMxid);
    const post = () =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = (url.protocol === "https:" ? https : http).request(
          url,
          {
            method: "POST",
            headers: { authorization: `Bearer ${this.opts.asToken}`, "content-type": mimetype, "content-length": String(size) },
            timeout: this.opts.timeoutMs ?? 10 * 60_000,
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8").slice(0, 4096) }));
            res.on("error", reject);
          },
        );
        req.on("timeout", () => req.destroy(new Error("upload timed out")));
        req.on("error", reject);
        pipeline(fs.createReadStream(file), pacedPassThrough(), req).catch(reject);
      });
    // Repeating an upload is harmless: at worst the media repository keeps an unused copy.
    const { status, body } = await this.opts.homeserver
      .untilReachable("media upload", async () => {
        const answer = await post();
        if (isProxyRefusal(answer.status, answer.body, true)) throw new HomeserverUnreachable(`HTTP ${answer.status}`);
        return answer;
      })
      .catch((err: Error) => {
        throw new MediaError("unreachable", `the upload to the homeserver failed (${err.message})`, true);
      });
    let json: { content_uri?: string; errcode?: string; error?: string } = {};
    try {
      json = JSON.parse(body);
    } catch {
      // not JSON: reported below
    }
    if (status === 413 || json.errcode === "M_TOO_LARGE")
      throw new MediaError("too_large", "the homeserver refused it as too large (its upload limit is lower than this bridge's)");
    if (status < 200 || status >= 300 || typeof json.content_uri !== "string") {
      throw new MediaError("http_error", `the homeserver refused the upload (HTTP ${status}${json.errcode ? ` ${json.errcode}` : ""})`, status >= 500 || status === 429);
    }
    return json.content_uri;
  }

  /**
   * Uploads received media as `asMxid` and returns its m.room.message content. The probe
   * settles the kind and measures the file (the sender's figures fill only gaps); thumbnails,
   * blurhash and waveform are extras: if making one fails the message goes without it.
   */
  async prepareMessage(asMxid: string, file: LocalMedia, claimed: RemoteMedia, caption?: string, encrypted = false): Promise<Record<string, unknown>> {
    const probe = await probeMedia(file.path).catch((err: Error) => {
      log.warn("could not probe received media", { error: err.message });
      return null;
    });
    const kind = settleMediaKind(claimed.kind, probe);
    const media: RemoteMedia = { ...claimed, kind, mimetype: settledMimetype(claimed.kind, kind, claimed.mimetype), ...probedFacts(kind, probe) };
    if (kind !== claimed.kind) log.debug("received media kind settled by probing", { claimed: claimed.kind, kind });
    const temporary: string[] = [];
    // In an encrypted room the file and its thumbnail are encrypted attachments (the event itself is encrypted when sent).
    let thumbnailFile: EncryptedFile | undefined;
    let mainFile: EncryptedFile | undefined;
    try {
      if (kind === "voice" && !media.waveform?.length) {
        media.waveform = await audioPeaks(file.path)
          .then((peaks) => waveformFromPeaks(peaks))
          .catch((err: Error) => {
            log.warn("could not compute a voice note's waveform", { error: err.message });
            return undefined;
          });
      }
      let thumbnail: UploadedThumbnail | undefined;
      let thumbnailPath: string | undefined;
      if (needsThumbnail(kind, media.width, media.height)) {
        const mimetype = kind === "video" ? "image/jpeg" : thumbnailMimetype(media.mimetype);
        const dest = this.tempFile("thumb") + (mimetype === "image/png" ? ".png" : ".jpg");
        temporary.push(dest);
        try {
          const atMs = kind === "video" && media.durationMs ? Math.min(1000, Math.floor(media.durationMs / 2)) : undefined;
          const made = await makeThumbnail(file.path, dest, { mimetype, maxWidth: THUMBNAIL_MAX.width, maxHeight: THUMBNAIL_MAX.height, atMs });
          let mxc: string;
          if (encrypted) {
            thumbnailFile = await this.uploadEncrypted(asMxid, dest);
            mxc = thumbnailFile.url;
          } else mxc = await this.upload(asMxid, dest, mimetype, `thumbnail.${mimetype === "image/png" ? "png" : "jpg"}`);
          thumbnail = { mxc, mimetype, size: made.size, width: made.width, height: made.height };
          thumbnailPath = dest;
        } catch (err) {
          log.warn("could not make a thumbnail", { kind, error: (err as Error).message });
        }
      }
      let blurhash: string | undefined;
      const picture = kind === "image" ? file.path : kind === "video" ? thumbnailPath : undefined;
      const pictureSize = kind === "video" && thumbnail ? thumbnail : media;
      if (picture && pictureSize.width && pictureSize.height) {
        const sample = blurhashSampleSize(pictureSize.width, pictureSize.height);
        const components = blurhashComponents(sample.width, sample.height);
        blurhash = await rawRgba(picture, sample.width, sample.height)
          .then((pixels) => encodeBlurhash(pixels, sample.width, sample.height, components.x, components.y))
          .catch((err: Error) => {
            log.warn("could not compute a blurhash", { error: err.message });
            return undefined;
          });
      }
      if (encrypted) mainFile = await this.uploadEncrypted(asMxid, file.path);
      const mxc = mainFile ? mainFile.url : await this.upload(asMxid, file.path, media.mimetype.split(";")[0]!.trim(), media.filename);
      const content = remoteMediaToMatrix({ media, mxc, size: file.size, thumbnail, blurhash, caption });
      return mainFile ? asEncryptedAttachment(content, mainFile, thumbnailFile) : content;
    } finally {
      for (const f of temporary) await fs.promises.rm(f, { force: true });
    }
  }
}

/** Media content with its file (and thumbnail) as encrypted attachments: `file` replaces `url`, `thumbnail_file` replaces `thumbnail_url`. */
function asEncryptedAttachment(content: Record<string, unknown>, file: EncryptedFile, thumbnail: EncryptedFile | undefined): Record<string, unknown> {
  const { url: _url, ...rest } = content;
  const info = { ...(rest.info as Record<string, unknown>) };
  if (thumbnail) {
    delete info.thumbnail_url;
    info.thumbnail_file = thumbnail;
  }
  return { ...rest, info, file };
}
