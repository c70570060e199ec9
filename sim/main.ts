#!/usr/bin/env node
/**
 * The WhatsApp simulator process (docs/simulator.md).
 *
 *   node dist/sim/main.js --gateway ws://127.0.0.1:8480/v1 --provider whatsapp.example --secret S \
 *        --port 29600 --db sim.db [--media-dir DIR] [--matrix-provider DOMAIN]...
 *
 * Prints exactly one line on stdout once its users are online and the control API listens:
 * "sim: listening on http://127.0.0.1:PORT (gateway ws://…)". Logs go to stderr. SIGTERM and
 * SIGINT shut it down cleanly.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { configureLogging, getLogger, type LogLevel } from "../src/logging.js";
import { isValidProviderDomain } from "../src/protocol/frames.js";
import { ControlApi } from "./http.js";
import { Simulator } from "./simulator.js";
import { SimStore } from "./store.js";

const USAGE = `usage: node dist/sim/main.js --gateway ws://HOST:PORT/v1 --provider DOMAIN --secret SECRET
       --port PORT --db FILE [--media-dir DIR] [--matrix-provider DOMAIN]...
       [--public-url URL] [--send-timeout-ms MS] [--log-level error|warn|info|debug] [--log-format json|pretty]
environment: SIM_SECRET=SECRET (instead of --secret)`;

export interface SimArgs {
  gateway: string;
  provider: string;
  secret: string;
  port: number;
  db: string;
  mediaDir: string;
  matrixProviders: string[];
  publicUrl?: string;
  sendTimeoutMs?: number;
  logLevel?: LogLevel;
  logFormat?: "json" | "pretty";
}

export class UsageError extends Error {}

/** Parses the command line; throws UsageError naming the problem. */
export function parseSimArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): SimArgs {
  let values;
  try {
    values = parseArgs({
      args: argv,
      options: {
        gateway: { type: "string" },
        provider: { type: "string" },
        secret: { type: "string" },
        port: { type: "string" },
        db: { type: "string" },
        "media-dir": { type: "string" },
        "matrix-provider": { type: "string", multiple: true },
        "public-url": { type: "string" },
        "send-timeout-ms": { type: "string" },
        "log-level": { type: "string" },
        "log-format": { type: "string" },
      },
      strict: true,
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const gateway = values.gateway;
  if (!gateway || !/^wss?:\/\/\S+$/.test(gateway)) throw new UsageError("--gateway must be the gateway's ws:// or wss:// URL (with /v1)");
  const provider = values.provider;
  if (!provider || !isValidProviderDomain(provider)) throw new UsageError("--provider must be the home provider's domain, e.g. whatsapp.example");
  const secret = values.secret ?? env.SIM_SECRET;
  if (!secret) throw new UsageError("--secret (or SIM_SECRET) is required");
  const port = Number(values.port ?? "29600");
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535, got ${values.port}`);
  const db = values.db;
  if (!db) throw new UsageError("--db FILE is required: the simulator keeps its users and their keys there");
  const matrixProviders = values["matrix-provider"] ?? [];
  for (const d of matrixProviders) if (!isValidProviderDomain(d)) throw new UsageError(`--matrix-provider ${d} is not a provider domain`);
  const logLevel = values["log-level"];
  if (logLevel !== undefined && !["error", "warn", "info", "debug"].includes(logLevel)) throw new UsageError(`--log-level ${logLevel}?`);
  const logFormat = values["log-format"];
  if (logFormat !== undefined && logFormat !== "json" && logFormat !== "pretty") throw new UsageError(`--log-format ${logFormat}?`);
  const args: SimArgs = {
    gateway,
    provider,
    secret,
    port,
    db,
    mediaDir: values["media-dir"] ?? `${path.resolve(db)}-media`,
    matrixProviders,
  };
  if (values["public-url"]) args.publicUrl = values["public-url"].replace(/\/+$/, "");
  if (values["send-timeout-ms"] !== undefined) {
    const ms = Number(values["send-timeout-ms"]);
    if (!Number.isSafeInteger(ms) || ms < 1) throw new UsageError(`--send-timeout-ms must be a whole number of milliseconds ≥ 1, got ${values["send-timeout-ms"]}`);
    args.sendTimeoutMs = ms;
  }
  if (logLevel) args.logLevel = logLevel as LogLevel;
  if (logFormat) args.logFormat = logFormat;
  return args;
}

/** Runs the simulator until SIGTERM/SIGINT. */
export async function runSimulator(args: SimArgs): Promise<void> {
  if (args.logLevel || args.logFormat) configureLogging({ level: args.logLevel ?? "info", format: args.logFormat ?? "json" });
  const log = getLogger("sim");
  const store = new SimStore(args.db, args.mediaDir);
  // The API listens first: the avatar URLs the simulator hands out need its real port.
  const api = new ControlApi(log);
  const apiUrl = await api.listen(args.port);
  const sim = new Simulator({
    gatewayUrl: args.gateway,
    provider: args.provider,
    secret: args.secret,
    store,
    mediaBaseUrl: args.publicUrl ?? apiUrl,
    matrixProviders: args.matrixProviders,
    ...(args.sendTimeoutMs ? { sendTimeoutMs: args.sendTimeoutMs } : {}),
    logger: log,
  });
  api.attach(sim);

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    void (async () => {
      try {
        await api.close();
        await sim.stop();
        store.close();
        process.exit(0);
      } catch (err) {
        log.error("shutdown failed", { error: (err as Error).message });
        process.exit(1);
      }
    })();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  await sim.start();
  process.stdout.write(`sim: listening on ${apiUrl} (gateway ${args.gateway})\n`);
  log.info("simulator ready", { api: apiUrl, users: store.allUsers().length });
}

if (require.main === module) {
  let args: SimArgs;
  try {
    args = parseSimArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  runSimulator(args).catch((err: unknown) => {
    process.stderr.write(`sim failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
