/**
 * What a media file is, from ffprobe's answer (pure): the kind it really has, its dimensions and
 * duration. src/media/ffmpeg.ts runs ffprobe; both directions of the bridge decide with this.
 */
import type { MediaKind, RemoteMedia } from "../network/connector";

/** The parts of an ffprobe answer the bridge decides on. */
export interface MediaProbe {
  /** ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "png_pipe", "ogg". */
  container: string;
  durationMs?: number;
  /** The first real picture stream (cover art is not one). */
  video?: { codec: string; width: number; height: number };
  audio?: { codec: string };
  /** A single picture (PNG, JPEG, WebP, GIF …) rather than a moving video. */
  still: boolean;
}

const STILL_CONTAINERS = /(^|,)(image2|gif|[a-z0-9]+_pipe)(,|$)/;

function num(v: unknown): number | undefined {
  const n = typeof v === "string" ? Number(v) : typeof v === "number" ? v : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/** ffprobe `-show_format -show_streams -print_format json` output → MediaProbe (null when it found no media). */
export function parseFfprobe(json: unknown): MediaProbe | null {
  if (typeof json !== "object" || json === null) return null;
  const { format, streams } = json as { format?: Record<string, unknown>; streams?: Record<string, unknown>[] };
  if (!format || typeof format.format_name !== "string" || !Array.isArray(streams) || streams.length === 0) return null;
  const container = format.format_name;
  const still = STILL_CONTAINERS.test(container);
  const probe: MediaProbe = { container, still };
  for (const s of streams) {
    const disposition = (s.disposition ?? {}) as Record<string, unknown>;
    if (s.codec_type === "video" && !probe.video && disposition.attached_pic !== 1) {
      const width = num(s.width);
      const height = num(s.height);
      if (width && height) {
        const rotation = rotationOf(s);
        const turned = Math.abs(rotation) % 180 === 90;
        probe.video = { codec: String(s.codec_name ?? ""), width: turned ? height : width, height: turned ? width : height };
      }
    }
    if (s.codec_type === "audio" && !probe.audio) probe.audio = { codec: String(s.codec_name ?? "") };
  }
  const seconds = num(format.duration);
  if (seconds !== undefined && seconds > 0 && !still) probe.durationMs = Math.round(seconds * 1000);
  return probe;
}

/** Phone videos are often stored sideways with a rotation to apply on display. */
function rotationOf(stream: Record<string, unknown>): number {
  const sideData = Array.isArray(stream.side_data_list) ? (stream.side_data_list as Record<string, unknown>[]) : [];
  for (const d of sideData) {
    const r = num(d.rotation);
    if (r !== undefined) return r;
  }
  return num((stream.tags as Record<string, unknown> | undefined)?.rotate) ?? 0;
}

/**
 * The kind a file really gets: the kind claimed by the sender if the file is that (a picture
 * for an image, moving pictures for a video, sound for audio and voice notes), else a file.
 * A file stays a file whatever it contains: the sender chose to send a document.
 */
export function settleMediaKind(claimed: MediaKind, probe: MediaProbe | null): MediaKind {
  if (!probe) return "file";
  switch (claimed) {
    case "image":
      return probe.still && probe.video ? "image" : "file";
    case "video":
      return !probe.still && probe.video ? "video" : "file";
    case "voice":
    case "audio":
      return probe.audio ? claimed : "file";
    case "file":
      return "file";
  }
}

/** Dimensions and duration of a file of `kind`, as the probe found them. */
export function probedFacts(kind: MediaKind, probe: MediaProbe | null): Pick<RemoteMedia, "width" | "height" | "durationMs"> {
  if (!probe) return {};
  const facts: Pick<RemoteMedia, "width" | "height" | "durationMs"> = {};
  if ((kind === "image" || kind === "video") && probe.video) {
    facts.width = probe.video.width;
    facts.height = probe.video.height;
  }
  if ((kind === "video" || kind === "audio" || kind === "voice") && probe.durationMs !== undefined) facts.durationMs = probe.durationMs;
  return facts;
}

/** Voice notes travel as Ogg/Opus (what WhatsApp records); anything else is converted first. */
export function isOggOpus(probe: MediaProbe | null): boolean {
  return !!probe && probe.container === "ogg" && probe.audio?.codec === "opus" && !probe.video;
}
