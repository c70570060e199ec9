/**
 * Media files for end-to-end tests, made by ffmpeg: real encodings, so that the bridge's probing,
 * conversion and thumbnails work on them as on a user's files.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";

export function ffmpeg(...args: string[]): void {
  execFileSync("ffmpeg", ["-v", "error", "-y", ...args], { stdio: "pipe" });
}

/** A 1280×960 PNG (large enough for a thumbnail). */
export function makePhoto(dir: string): string {
  const file = path.join(dir, "photo.png");
  ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x960", "-frames:v", "1", file);
  return file;
}

/** A 640×480 H.264/AAC MP4 of 2 s. */
export function makeClip(dir: string): string {
  const file = path.join(dir, "clip.mp4");
  const video = ["-f", "lavfi", "-i", "testsrc=size=640x480:rate=25"];
  const audio = ["-f", "lavfi", "-i", "sine=frequency=440"];
  ffmpeg(...video, ...audio, "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-movflags", "+faststart", file);
  return file;
}

/** A 3 s Ogg/Opus voice note: loud, then `quietVolume` for a second, then loud, so its waveform has a dip. */
export function makeVoice(dir: string, quietVolume: number): string {
  const file = path.join(dir, "voice.ogg");
  ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-af", `volume='if(between(t,1,2),${quietVolume},1)':eval=frame`, "-c:a", "libopus", "-b:a", "24k", file);
  return file;
}
