/** The user's end-to-end encrypting Matrix client in tests: test/support/nio-peer.py (matrix-nio with libolm), one JSON command a line. */
import { ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { repoRoot } from "./homeserver";
import type { TestClient } from "./matrix-client";

export const PYTHON = "/usr/bin/python3";

/** A line-protocol child: send a JSON command, read its JSON answer. */
export class NioPeer {
  private readonly answers: ((line: string) => void)[] = [];
  private stderr = "";
  constructor(readonly proc: ChildProcess) {
    readline.createInterface({ input: proc.stdout! }).on("line", (l) => this.answers.shift()?.(l));
    proc.stderr!.on("data", (d) => (this.stderr += d));
  }

  /**
   * Starts nio as the (registered) user, its store in a new folder under `dir`. `timelineLimit`:
   * events per room each sync asks for (busy rooms then sync without gaps).
   */
  static start(hs: { url: string }, user: TestClient, dir: string, opts: { timelineLimit?: number } = {}): NioPeer {
    const store = fs.mkdtempSync(path.join(dir, "nio-"));
    const args = JSON.stringify({ hs: hs.url, user_id: user.userId, device_id: user.deviceId, token: user.accessToken, store, timeline_limit: opts.timelineLimit });
    return new NioPeer(spawn(PYTHON, [path.join(repoRoot(), "test/support/nio-peer.py"), args], { stdio: ["pipe", "pipe", "pipe"] }));
  }

  /** Asks one command; a command that waits for something fails after timeoutMs (the peer is then out of step: stop it). */
  ask<T = Record<string, unknown>>(cmd: Record<string, unknown>, timeoutMs = 90_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const onExit = (): void => reject(new Error(`nio peer exited: ${this.stderr.slice(-2000)}`));
      this.proc.once("exit", onExit);
      const timer = setTimeout(() => {
        this.proc.off("exit", onExit);
        reject(new Error(`nio peer: no answer to ${JSON.stringify(cmd)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.answers.push((line) => {
        clearTimeout(timer);
        this.proc.off("exit", onExit);
        const parsed = JSON.parse(line);
        if (parsed.error) reject(new Error(`nio peer: ${parsed.error}`));
        else resolve(parsed);
      });
      this.proc.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  }

  stop(): void {
    this.proc.stdin?.end();
    this.proc.kill();
  }
}
