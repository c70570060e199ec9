import { ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";

/** A child process of a test stack whose output goes to a log file we can show on failure. */
export class ManagedProcess {
  private child?: ChildProcess;
  private output = "";
  private exited?: Promise<number | null>;
  private readonly watchers = new Set<(chunk: string) => void>();
  /** Put before `args` on the next start, e.g. node flags such as --cpu-prof for a benchmark run. */
  leadingArgs: string[] = [];

  constructor(
    readonly name: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly logFile: string,
    private readonly env: Record<string, string> = {},
  ) {}

  /** Starts the process and waits until a line of its output matches `ready`. */
  async start(ready: RegExp, timeoutMs = 30_000): Promise<void> {
    const log = fs.createWriteStream(this.logFile, { flags: "a" });
    this.output = "";
    const child = spawn(this.command, [...this.leadingArgs, ...this.args], { env: { ...process.env, ...this.env }, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name} not ready after ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
      const onData = (chunk: Buffer) => {
        log.write(chunk);
        for (const watch of this.watchers) watch(chunk.toString());
        this.output = (this.output + chunk.toString()).slice(-20_000);
        if (ready.test(this.output)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited with ${code} before it was ready:\n${this.tail()}`));
      });
    });
    // Keep logging after readiness (the listeners above stay attached).
  }

  /**
   * Watches the output from now on (across restarts): `until(match)` resolves with the first
   * line since the call to watch() that matches, or rejects after timeoutMs listing none.
   */
  watch(): { until(match: (line: string) => boolean, timeoutMs?: number): Promise<string>; stop(): void } {
    let text = "";
    const wakers = new Set<() => void>();
    const watcher = (chunk: string) => {
      text += chunk;
      for (const wake of wakers) wake();
    };
    this.watchers.add(watcher);
    return {
      until: (match, timeoutMs = 30_000) =>
        new Promise<string>((resolve, reject) => {
          const check = () => {
            const line = text.split("\n").find(match);
            if (line === undefined) return;
            clearTimeout(timer);
            wakers.delete(check);
            resolve(line);
          };
          const timer = setTimeout(() => {
            wakers.delete(check);
            reject(new Error(`${this.name}: no matching output line within ${timeoutMs} ms`));
          }, timeoutMs);
          wakers.add(check);
          check();
        }),
      stop: () => this.watchers.delete(watcher),
    };
  }

  tail(lines = 40): string {
    return this.output.split("\n").slice(-lines).join("\n");
  }

  /** The OS process id while it runs (e.g. to read its memory use from /proc). */
  get pid(): number | undefined {
    return this.running ? this.child!.pid : undefined;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM (or the given signal) and wait for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (!this.running) return;
    this.child!.kill(signal);
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
