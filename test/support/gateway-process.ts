/**
 * The real gateway (node dist/gateway/main.js) as a child process on a random port with a
 * temporary database and its frame recorder on, for tests of what runs over it.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { decodeFrame, type Frame } from "../../src/protocol/frames.js";

const MAIN = path.resolve(__dirname, "../../gateway/main.js");

export interface GatewayProcessOptions {
  dbPath: string;
  /** Every frame in and out is appended here (GATEWAY_RECORD_FRAMES). */
  recordPath: string;
  homeProvider: string;
  /** Provider domain → secret; must include the home provider. */
  providers: Record<string, string>;
}

export class GatewayProcess {
  private child?: ChildProcess;
  url = "";
  port = 0;

  constructor(readonly opts: GatewayProcessOptions) {}

  async start(port = this.port): Promise<void> {
    const args = [MAIN, "--port", String(port), "--db", this.opts.dbPath, "--home-provider", this.opts.homeProvider];
    for (const [name, secret] of Object.entries(this.opts.providers)) args.push("--provider", `${name}=${secret}`);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
      GATEWAY_RECORD_FRAMES: this.opts.recordPath,
    };
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"], env });
    this.child = child;
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.once("line", resolve);
      child.once("exit", (code) => reject(new Error(`gateway exited with ${code} before listening`)));
    });
    const m = /^gateway listening on (ws:\/\/\S+)$/.exec(line);
    assert.ok(m, `unexpected first line from the gateway: ${line}`);
    this.url = m[1]!;
    this.port = Number(new URL(this.url).port);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    await exited;
  }

  /** The recorded frames so far, raw, as "in|out <ts> <hex>" lines. */
  recordedLines(): string[] {
    if (!existsSync(this.opts.recordPath)) return [];
    return readFileSync(this.opts.recordPath, "utf8").split("\n").filter(Boolean);
  }

  /** The recorded frames so far, decoded. */
  recordedFrames(): Array<{ direction: "in" | "out"; frame: Frame }> {
    return this.recordedLines().map((line) => {
      const [direction, , hex] = line.split(" ");
      return { direction: direction as "in" | "out", frame: decodeFrame(Buffer.from(hex!, "hex")) };
    });
  }

  /** Whether any recorded frame holds these bytes anywhere (plaintext must never appear). */
  recordingContains(bytes: Uint8Array): boolean {
    const needle = Buffer.from(bytes).toString("hex");
    // Hex of whole bytes: a match must start at an even offset to be a byte match.
    return this.recordedLines().some((line) => {
      const hex = line.split(" ")[2] ?? "";
      for (let at = hex.indexOf(needle); at >= 0; at = hex.indexOf(needle, at + 1)) if (at % 2 === 0) return true;
      return false;
    });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function until(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
