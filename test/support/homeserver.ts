/**
 * The Synapse homeserver an end-to-end test talks to.
 *
 * By default each test file starts its own named Synapse instance with scripts/synapse.sh
 * (a Debian sid chroot; needs root, the first run on a machine builds the chroot in about
 * three minutes). Contributors who cannot run the chroot point the tests at an existing
 * homeserver instead:
 *
 *   MATRIX_HOMESERVER_URL=http://127.0.0.1:8008
 *   MATRIX_SERVER_NAME=localhost
 *   MATRIX_REGISTRATION_SHARED_SECRET=...   (its registration_shared_secret, for test users)
 *
 * In that mode nothing is started or stopped, and the appservice registration a test asks
 * for is NOT installed by us: it must already be listed in that homeserver's
 * app_service_config_files (with the same tokens and a url the test's bridge listens on),
 * and the homeserver restarted, before the tests run. Rate limits must be raised as in
 * scripts/synapse.sh, or tests that send quickly will see M_LIMIT_EXCEEDED.
 */
import { execFile, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";

export interface TestHomeserver {
  /** Client-server API base URL, e.g. http://127.0.0.1:8008 (no trailing slash). */
  url: string;
  /** The homeserver's server_name: the part after ":" in user ids. */
  serverName: string;
  /** registration_shared_secret, for creating users through the admin API. */
  sharedSecret: string;
  /** Synapse's log file when we started the instance; undefined for an existing homeserver. */
  logPath?: string;
  /** The instance directory (homeserver.db lives there) when we started it. */
  dataDir?: string;
  /** True when this process started the homeserver (and stop() ends it). */
  managed: boolean;
  /** Stops an instance we started; a no-op for an existing homeserver. Safe to call twice. */
  stop(): Promise<void>;
  /** Stops the instance but keeps its data (an outage); resume() starts it again on the same port. */
  pause(): Promise<void>;
  resume(): Promise<void>;
}

export interface StartTestHomeserverOptions {
  /** Appservice registration file(s) to load. Ignored (see above) for an existing homeserver. */
  registrationPath?: string | string[];
  /** Instance name; test files running in parallel need different names. Default "test". */
  name?: string;
  /** Port on 127.0.0.1; default: a free port chosen now. */
  port?: number;
  /** Start from an empty database and media store. Default true, so runs don't see each other. */
  fresh?: boolean;
  serverName?: string;
  /** Delete the instance's data when it stops (for instance names unique to one run). */
  purge?: boolean;
  /** Synapse's max_upload_size, e.g. "200M" (the script's default). */
  maxUploadSize?: string;
  /** Synapse's encryption_enabled_by_default_for_room_type (default "off"). */
  encryptByDefault?: "all" | "invite" | "off";
}

/** The repository root, found from this file whether it runs from test/ or dist/test/. */
export function repoRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, "scripts", "synapse.sh"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find scripts/synapse.sh above ${__dirname}`);
    dir = parent;
  }
  return dir;
}

export async function startTestHomeserver(options: StartTestHomeserverOptions = {}): Promise<TestHomeserver> {
  const existing = existingHomeserverFromEnv();
  if (existing) return existing;

  const name = options.name ?? "test";
  const port = options.port ?? (await freePort());
  const script = path.join(repoRoot(), "scripts", "synapse.sh");
  // --owner-pid: the script stops the instance if this process dies without cleaning up.
  const args = ["start", "--name", name, "--port", String(port), "--owner-pid", String(process.pid)];
  if (options.fresh ?? true) args.push("--fresh");
  if (options.serverName) args.push("--server-name", options.serverName);
  if (options.maxUploadSize) args.push("--max-upload-size", options.maxUploadSize);
  if (options.encryptByDefault) args.push("--encrypt-by-default", options.encryptByDefault);
  const registrations = options.registrationPath === undefined ? [] : [options.registrationPath].flat();
  for (const file of registrations) args.push("--registration", path.resolve(file));

  // Generous: the first run on a machine builds the chroot (about three minutes).
  const runScript = (scriptArgs: string[]) =>
    new Promise<string>((resolve, reject) => {
      execFile("bash", [script, ...scriptArgs], { timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, out, err) => {
        if (error) reject(new Error(`scripts/synapse.sh ${scriptArgs.join(" ")} failed (${error.message.split("\n")[0]}):\n${err}`));
        else resolve(out);
      });
    });
  const stdout = await runScript(args);
  const vars = parseKeyValueLines(stdout);
  const url = vars.SYNAPSE_URL;
  const serverName = vars.SYNAPSE_SERVER_NAME;
  const sharedSecret = vars.SYNAPSE_SHARED_SECRET;
  if (!url || !serverName || !sharedSecret) {
    throw new Error(`scripts/synapse.sh start printed no SYNAPSE_URL/SYNAPSE_SERVER_NAME/SYNAPSE_SHARED_SECRET:\n${stdout}`);
  }

  let stopped = false;
  const stopSync = () => {
    if (stopped) return;
    stopped = true;
    process.removeListener("exit", stopSync);
    spawnSync("bash", [script, "stop", "--name", name, ...(options.purge ? ["--purge"] : [])], { stdio: "ignore", timeout: 60_000 });
  };
  // A test that crashes before its after() hook must not leave Synapse running.
  process.on("exit", stopSync);

  return {
    url,
    serverName,
    sharedSecret,
    logPath: vars.SYNAPSE_LOG,
    dataDir: vars.SYNAPSE_DATA,
    managed: true,
    pause: async () => {
      await runScript(["stop", "--name", name]);
    },
    resume: async () => {
      await runScript(args.filter((a) => a !== "--fresh"));
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      process.removeListener("exit", stopSync);
      await new Promise<void>((resolve, reject) => {
        // As long as a start may take: stop waits for the chroot's mount lock, which other stacks
        // starting on a loaded machine can hold for over a minute (60 s failed teardowns here),
        // and Synapse itself may be slow to exit there.
        execFile("bash", [script, "stop", "--name", name, ...(options.purge ? ["--purge"] : [])], { timeout: 10 * 60_000 }, (error, _out, err) => {
          if (error) reject(new Error(`scripts/synapse.sh stop --name ${name} failed: ${err || error.message}`));
          else resolve();
        });
      });
    },
  };
}

function existingHomeserverFromEnv(): TestHomeserver | undefined {
  const url = process.env.MATRIX_HOMESERVER_URL;
  if (!url) return undefined;
  const serverName = process.env.MATRIX_SERVER_NAME;
  const sharedSecret = process.env.MATRIX_REGISTRATION_SHARED_SECRET;
  const missing = [serverName ? undefined : "MATRIX_SERVER_NAME", sharedSecret ? undefined : "MATRIX_REGISTRATION_SHARED_SECRET"].filter(Boolean);
  if (missing.length > 0) {
    throw new Error(`MATRIX_HOMESERVER_URL is set, so the tests use that homeserver, but ${missing.join(" and ")} ${missing.length > 1 ? "are" : "is"} not set`);
  }
  return {
    url: url.replace(/\/+$/, ""),
    serverName: serverName!,
    sharedSecret: sharedSecret!,
    managed: false,
    stop: async () => {},
    pause: async () => {
      throw new Error("cannot stop a homeserver these tests did not start (MATRIX_HOMESERVER_URL is set)");
    },
    resume: async () => {},
  };
}

function parseKeyValueLines(text: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (match) vars[match[1]] = match[2];
  }
  return vars;
}

/** A port that was free a moment ago; fine for tests on a machine we control. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
