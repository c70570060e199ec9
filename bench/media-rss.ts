/**
 * Streaming proof: a 100 MB video is bridged each way while the bridge process's resident
 * memory (VmRSS in /proc/<pid>/status) is sampled. The growth over the idle level before the
 * transfer is what holding media in memory would show; streamed media keeps it small.
 *
 *   node dist/bench/media-rss.js          starts its own stack, prints JSON lines, stops it
 *
 * `measureMediaRss(stack)` runs the same on a stack someone else started (npm run bench).
 * Output lines: {"metric":"rss_growth_mb_100mb_video_remote_to_matrix","value":N,"unit":"MB"},
 * the same for matrix_to_remote, and rss_growth_mb_100mb_video (the larger of the two).
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { PROVIDER_DOMAIN, Stack } from "../test/support/stack";

export interface MediaRssResult {
  remoteToMatrixMb: number;
  matrixToRemoteMb: number;
  maxMb: number;
  videoBytes: number;
}

export interface MetricLine {
  metric: string;
  value: number;
  unit: string;
}

export const VIDEO_BYTES = 100_000_000;

export function rssKb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for process ${pid}`);
  return Number(m[1]);
}

/** Samples a process's RSS every `everyMs` until stopped; reports the peak. */
export function sampleRss(pid: number, everyMs = 10): { stop(): number } {
  let peak = rssKb(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssKb(pid));
    } catch {
      // the process is gone; the run fails elsewhere
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssKb(pid));
    },
  };
}

/** The idle level: the median of a second of samples. */
export async function idleRssKb(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < 20; i++) {
    samples.push(rssKb(pid));
    await new Promise((r) => setTimeout(r, 50));
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/** A real H.264/AAC MP4 of just under `bytes` (ffmpeg stops writing at the size). */
export function makeVideo(file: string, bytes: number): void {
  execFileSync(
    "ffmpeg",
    [
      "-v",
      "error",
      "-y",
      "-f",
      "lavfi",
      "-i",
      "testsrc2=size=1280x720:rate=30",
      "-f",
      "lavfi",
      "-i",
      "anoisesrc=color=white:amplitude=0.5",
      "-t",
      "120",
      "-c:v",
      "libx264",
      "-preset",
      "ultrafast",
      "-qp",
      "0",
      "-c:a",
      "aac",
      "-b:a",
      "128k",
      "-fs",
      String(bytes),
      "-movflags",
      "+faststart",
      file,
    ],
    { stdio: "pipe" },
  );
}

export function sha256OfFile(file: string): string {
  return createHash("sha256").update(fs.readFileSync(file)).digest("hex");
}

function bridgePid(stack: Stack): number {
  const pid = stack.bridge.pid;
  if (!pid) throw new Error("the bridge is not running");
  return pid;
}

export const toMb = (kb: number) => Math.round((kb / 1024) * 10) / 10;

/**
 * Bridges a 100 MB video WhatsApp → Matrix and then Matrix → WhatsApp on a running stack and
 * returns how far the bridge's RSS rose above its idle level in each direction. It restarts
 * the bridge (stack.restartBridge) before each direction.
 */
export async function measureMediaRss(stack: Stack, opts: { workDir?: string } = {}): Promise<MediaRssResult> {
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "mib-bench-media-"));
  const video = path.join(workDir, "big-video.mp4");
  const warmup = path.join(workDir, "warmup.mp4");
  makeVideo(video, VIDEO_BYTES);
  makeVideo(warmup, 2_000_000);
  const videoBytes = fs.statSync(video).size;
  const videoSha = sha256OfFile(video);

  const phone = "+4915100077001";
  await stack.sim.createUser(phone, "Bench Sender");
  const client = await stack.user("benchmedia");
  await stack.botRoom(client, { enable: true });
  const uri = `mimi://${PROVIDER_DOMAIN}/u/${client.userId}`;
  await stack.sim.sendText(phone, uri, "bench");
  const invite = await client.waitForInvite((i) => i.inviter === stack.ghostId(phone), { timeoutMs: 60_000 });
  await client.joinRoom(invite.roomId);
  const ghost = stack.ghostId(phone);
  const fromGhost = (filename: string) =>
    client.waitFor(
      (e) => e.room_id === invite.roomId && e.sender === ghost && e.type === "m.room.message" && (e.content.filename === filename || e.content.msgtype === "m.notice"),
      {
        timeoutMs: 10 * 60_000,
        description: `the ghost's ${filename}`,
      },
    );

  // Each direction is measured in a freshly started bridge, after a small warm-up transfer the
  // same way, so neither code loaded on first use nor memory kept from the other direction counts.
  await stack.restartBridge();
  await stack.sim.sendMedia(phone, uri, { file: warmup, mimetype: "video/mp4", filename: "warmup.mp4" });
  await fromGhost("warmup.mp4");
  let pid = bridgePid(stack);
  let idle = await idleRssKb(pid);
  let sampler = sampleRss(pid);
  await stack.sim.sendMedia(phone, uri, { file: video, mimetype: "video/mp4", filename: "big-video.mp4" });
  const event = await fromGhost("big-video.mp4");
  const remoteToMatrixMb = toMb(sampler.stop() - idle);
  if (event.content.msgtype !== "m.video" || event.content.info?.size !== videoBytes) throw new Error(`the video did not arrive as m.video: ${JSON.stringify(event.content)}`);

  // Matrix → WhatsApp. The uploads to Synapse happen before sampling starts: they are the client's work.
  const bytes = fs.readFileSync(video);
  const mxc = await client.uploadMedia(bytes, "video/mp4", "big-video-back.mp4");
  const warmupBytes = fs.readFileSync(warmup);
  const warmupMxc = await client.uploadMedia(warmupBytes, "video/mp4", "warmup-back.mp4");
  await stack.restartBridge();
  await client.sendEvent(invite.roomId, "m.room.message", {
    msgtype: "m.video",
    body: "warmup-back.mp4",
    url: warmupMxc,
    info: { mimetype: "video/mp4", size: warmupBytes.length },
  });
  await stack.sim.waitForInbox(phone, (e) => e.kind === "media" && e.filename === "warmup-back.mp4", 120_000);
  pid = bridgePid(stack);
  idle = await idleRssKb(pid);
  sampler = sampleRss(pid);
  await client.sendEvent(invite.roomId, "m.room.message", { msgtype: "m.video", body: "big-video-back.mp4", url: mxc, info: { mimetype: "video/mp4", size: bytes.length } });
  const entry = await stack.sim.waitForInbox(phone, (e) => e.kind === "media" && e.filename === "big-video-back.mp4", 10 * 60_000);
  const matrixToRemoteMb = toMb(sampler.stop() - idle);
  if (entry.sha256 !== videoSha) throw new Error(`the video arrived changed or not at all: ${JSON.stringify(entry)}`);

  if (!opts.workDir) fs.rmSync(workDir, { recursive: true, force: true });
  return { remoteToMatrixMb, matrixToRemoteMb, maxMb: Math.max(remoteToMatrixMb, matrixToRemoteMb), videoBytes };
}

/** The result as the bench harness's JSON lines. */
export function mediaRssMetrics(result: MediaRssResult): MetricLine[] {
  return [
    { metric: "rss_growth_mb_100mb_video_remote_to_matrix", value: result.remoteToMatrixMb, unit: "MB" },
    { metric: "rss_growth_mb_100mb_video_matrix_to_remote", value: result.matrixToRemoteMb, unit: "MB" },
    { metric: "rss_growth_mb_100mb_video", value: result.maxMb, unit: "MB" },
  ];
}

async function main(): Promise<void> {
  const stack = await Stack.start("bench-media", { logLevel: "info" });
  try {
    const result = await measureMediaRss(stack);
    for (const line of mediaRssMetrics(result)) process.stdout.write(`${JSON.stringify(line)}\n`);
  } finally {
    await stack.stop();
  }
}

if (require.main === module) {
  main().catch((err: Error) => {
    process.stderr.write(`media-rss: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
