/**
 * The WhatsApp simulator (node dist/sim/main.js) as a child process, driven through its
 * control API, for tests that run it against the real gateway.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";

const SIM_MAIN = path.resolve(__dirname, "../../sim/main.js");

/** An inbox entry as the control API answers it. */
export type Entry = { n: number; kind: string; from: string; fromId?: string; id?: string; text?: string } & Record<string, unknown>;

export class SimProcess {
  private child?: ChildProcess;
  url = "";
  constructor(private readonly args: string[]) {}

  async start(): Promise<void> {
    const child = spawn(process.execPath, [SIM_MAIN, ...this.args], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn" },
    });
    this.child = child;
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once("line", resolve);
      child.once("exit", (code) => reject(new Error(`sim exited with ${code} before it was ready`)));
    });
    const m = /^sim: listening on (http:\/\/\S+) \(gateway ws:\/\/\S+\)$/.exec(line);
    assert.ok(m, `unexpected first line from the sim: ${line}`);
    this.url = m[1]!;
  }

  /** SIGTERM; resolves with the exit code. */
  async stop(): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill("SIGTERM");
    return exited;
  }

  async call<T = unknown>(method: string, route: string, body?: unknown): Promise<{ status: number; json: T }> {
    const res = await fetch(this.url + route, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: (text ? JSON.parse(text) : undefined) as T };
  }

  async ok<T = unknown>(method: string, route: string, body?: unknown): Promise<T> {
    const { status, json } = await this.call<T>(method, route, body);
    assert.ok(status >= 200 && status < 300, `${method} ${route} → ${status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Long-polls the inbox until an entry matches. */
  async waitFor(phone: string, match: (e: Entry) => boolean, timeoutMs = 10_000): Promise<Entry> {
    const deadline = Date.now() + timeoutMs;
    let afterN = 0;
    const seen: Entry[] = [];
    while (Date.now() < deadline) {
      const wait = Math.max(1, Math.min(2000, deadline - Date.now()));
      const batch = await this.ok<Entry[]>("GET", `/users/${encodeURIComponent(phone)}/inbox/wait?after=${afterN}&timeoutMs=${wait}`);
      for (const e of batch) {
        seen.push(e);
        afterN = Math.max(afterN, e.n);
        if (match(e)) return e;
      }
    }
    throw new Error(`no matching inbox entry; saw ${JSON.stringify(seen)}`);
  }
}
