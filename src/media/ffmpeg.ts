/**
 * ffprobe and ffmpeg (Debian's packages; scripts/setup.sh and the Dockerfile install them) as
 * child processes: what a file is, thumbnails, a few raw pixels for a blurhash, loudness peaks
 * for a voice note's waveform, and conversion of a voice note to Ogg/Opus. Files go in and out
 * by path, so nothing large passes through this process's memory.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import { parseFfprobe, type MediaProbe } from "./probe";

const FFPROBE = process.env.FFPROBE_PATH ?? "ffprobe";
const FFMPEG = process.env.FFMPEG_PATH ?? "ffmpeg";
const DEFAULT_TIMEOUT_MS = 120_000;

export class FfmpegError extends Error {
  override readonly name = "FfmpegError";
}

interface RunOptions {
  timeoutMs?: number;
  /** Receives stdout as it comes; without it stdout is collected up to maxStdout bytes. */
  onStdout?: (chunk: Buffer) => void;
  maxStdout?: number;
}

function run(command: string, args: string[], options: RunOptions = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = "";
    let failed: Error | undefined;
    const timer = setTimeout(() => {
      failed = new FfmpegError(`${command} took longer than ${options.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`);
      child.kill("SIGKILL");
    }, options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.stdout.on("data", (chunk: Buffer) => {
      if (options.onStdout) return options.onStdout(chunk);
      outBytes += chunk.length;
      if (outBytes > (options.maxStdout ?? 1024 * 1024)) {
        failed = new FfmpegError(`${command} wrote more output than expected`);
        child.kill("SIGKILL");
        return;
      }
      out.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => {
      stderr = (stderr + chunk.toString("utf8")).slice(-2000);
    });
    child.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new FfmpegError(err.code === "ENOENT" ? `${command} is not installed (install the Debian package ffmpeg)` : err.message));
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      if (failed) reject(failed);
      else if (code !== 0) reject(new FfmpegError(`${command} failed (exit ${code}): ${stderr.trim().split("\n").pop() ?? ""}`));
      else resolve(Buffer.concat(out));
    });
  });
}

/** What the file is; null when ffprobe finds no picture or sound in it (a document). */
export async function probeMedia(file: string): Promise<MediaProbe | null> {
  let output: Buffer;
  try {
    output = await run(FFPROBE, ["-v", "error", "-print_format", "json", "-show_format", "-show_streams", "--", file], { timeoutMs: 30_000 });
  } catch (err) {
    if (err instanceof FfmpegError && /exit \d+/.test(err.message)) return null;
    throw err;
  }
  try {
    return parseFfprobe(JSON.parse(output.toString("utf8")));
  } catch {
    return null;
  }
}

export interface ThumbnailResult {
  width: number;
  height: number;
  size: number;
}

/**
 * A picture of at most maxWidth × maxHeight (aspect kept) from an image, or from a video's
 * frame at `atMs`, written to `dest` as JPEG or PNG.
 */
export async function makeThumbnail(
  file: string,
  dest: string,
  opts: { mimetype: "image/jpeg" | "image/png"; maxWidth: number; maxHeight: number; atMs?: number },
): Promise<ThumbnailResult> {
  const seek = opts.atMs ? ["-ss", (opts.atMs / 1000).toFixed(3)] : [];
  const scale = `scale=w='min(${opts.maxWidth},iw)':h='min(${opts.maxHeight},ih)':force_original_aspect_ratio=decrease`;
  const codec = opts.mimetype === "image/png" ? ["-c:v", "png", "-f", "image2"] : ["-c:v", "mjpeg", "-q:v", "4", "-pix_fmt", "yuvj420p", "-f", "image2"];
  await run(FFMPEG, ["-nostdin", "-v", "error", "-y", ...seek, "-i", file, "-frames:v", "1", "-vf", scale, ...codec, dest]);
  const probe = await probeMedia(dest);
  if (!probe?.video) throw new FfmpegError("the thumbnail ffmpeg wrote is not a picture");
  return { width: probe.video.width, height: probe.video.height, size: (await fs.promises.stat(dest)).size };
}

/** The first picture of a file scaled to width × height, as RGBA bytes (for a blurhash). */
export async function rawRgba(file: string, width: number, height: number): Promise<Uint8ClampedArray> {
  const expected = width * height * 4;
  const out = await run(
    FFMPEG,
    ["-nostdin", "-v", "error", "-i", file, "-frames:v", "1", "-vf", `scale=${width}:${height}:flags=area`, "-f", "rawvideo", "-pix_fmt", "rgba", "-"],
    { maxStdout: expected },
  );
  if (out.length !== expected) throw new FfmpegError(`expected ${expected} bytes of pixels, got ${out.length}`);
  return new Uint8ClampedArray(out.buffer, out.byteOffset, out.length);
}

/** Peak loudness of every 1/perSecond of a second of the file's sound (16-bit scale), streamed. */
export async function audioPeaks(file: string, perSecond = 10): Promise<number[]> {
  const rate = 8000;
  const block = Math.max(1, Math.round(rate / perSecond));
  const peaks: number[] = [];
  let peak = 0;
  let inBlock = 0;
  let carry: Buffer | null = null;
  await run(FFMPEG, ["-nostdin", "-v", "error", "-i", file, "-vn", "-ac", "1", "-ar", String(rate), "-f", "s16le", "-"], {
    onStdout: (chunk) => {
      const data: Buffer = carry ? Buffer.concat([carry, chunk]) : chunk;
      const whole = data.length - (data.length % 2);
      carry = whole < data.length ? Buffer.from(data.subarray(whole)) : null;
      for (let i = 0; i < whole; i += 2) {
        peak = Math.max(peak, Math.abs(data.readInt16LE(i)));
        if (++inBlock === block) {
          peaks.push(peak);
          peak = 0;
          inBlock = 0;
        }
      }
    },
  });
  if (inBlock > 0) peaks.push(peak);
  return peaks;
}

/** Converts any sound to Ogg/Opus, the format of voice notes. */
export async function transcodeToOggOpus(source: string, dest: string): Promise<void> {
  await run(
    FFMPEG,
    ["-nostdin", "-v", "error", "-y", "-i", source, "-vn", "-map_metadata", "-1", "-c:a", "libopus", "-b:a", "32k", "-ac", "1", "-ar", "48000", "-f", "ogg", dest],
    {
      timeoutMs: 10 * 60_000,
    },
  );
}
