#!/usr/bin/env node
/**
 * Gateway process entry point.
 *
 *   node dist/gateway/main.js --config gateway.yaml
 *   node dist/gateway/main.js --port 8480 --db gateway.db --home-provider whatsapp.example \
 *        --provider whatsapp.example=s3cret --provider matrix.example.org=0th3r
 *
 * Flags override the config file. Prints exactly one line on stdout once
 * listening: "gateway listening on ws://HOST:PORT/v1". SIGTERM/SIGINT shut it
 * down cleanly (connections closed with 1001, database closed).
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import YAML from "yaml";
import { configureLogging, getLogger, type LogLevel } from "../src/logging.js";
import type { Limits } from "../src/protocol/frames.js";
import { GatewayServer, type GatewayConfig, type ProviderConfig } from "./server.js";

const USAGE = `usage: node dist/gateway/main.js [--config FILE] [--host HOST] [--port PORT] [--db FILE]
       [--home-provider DOMAIN] [--provider DOMAIN=SECRET]... [--room-domain DOMAIN]
       [--max-frame-bytes N] [--record-frames FILE] [--log-level LEVEL] [--log-format json|pretty]
environment: GATEWAY_RECORD_FRAMES=FILE (same as --record-frames)`;

/** Shape of gateway.yaml (every key optional; flags fill or override). */
interface FileConfig {
  host?: string;
  port?: number;
  database?: string;
  homeProvider?: string;
  roomDomain?: string;
  providers?: ProviderConfig[];
  limits?: Partial<Limits>;
  pingIntervalMs?: number;
  idleTimeoutMs?: number;
  keysLowThreshold?: number;
  deliveryWindow?: number;
  maxQueuePerUser?: number;
  retentionDays?: number;
  rateLimit?: { perSecond: number; burst: number };
  recordFrames?: string;
  synchronous?: "FULL" | "NORMAL";
  logging?: { level?: LogLevel; format?: "json" | "pretty" };
}

function fail(message: string): never {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function buildConfig(argv: string[]): { config: GatewayConfig; logging: NonNullable<FileConfig["logging"]> } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        db: { type: "string" },
        "home-provider": { type: "string" },
        provider: { type: "string", multiple: true },
        "room-domain": { type: "string" },
        "max-frame-bytes": { type: "string" },
        "record-frames": { type: "string" },
        "log-level": { type: "string" },
        "log-format": { type: "string" },
        help: { type: "boolean" },
      },
      strict: true,
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const flags = parsed.values;
  if (flags.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const file: FileConfig = flags.config ? (YAML.parse(readFileSync(flags.config, "utf8")) ?? {}) : {};

  const providers = new Map<string, string>((file.providers ?? []).map((p) => [p.name, p.secret]));
  for (const spec of flags.provider ?? []) {
    const eq = spec.indexOf("=");
    if (eq <= 0) fail(`--provider expects DOMAIN=SECRET, got ${spec.replace(/=.*/, "=…")}`);
    providers.set(spec.slice(0, eq), spec.slice(eq + 1));
  }
  const port = Number(flags.port ?? file.port ?? 8480);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${flags.port ?? file.port}`);
  const homeProvider = flags["home-provider"] ?? file.homeProvider;
  if (!homeProvider) fail("no home provider (--home-provider or homeProvider:)");
  const dbPath = flags.db ?? file.database;
  if (!dbPath) fail("no database (--db or database:)");
  const limits: Partial<Limits> = { ...file.limits };
  if (flags["max-frame-bytes"]) {
    limits.maxFrameBytes = Number(flags["max-frame-bytes"]);
    limits.maxBodyBytes ??= limits.maxFrameBytes - 4096;
  }

  const config: GatewayConfig = {
    host: flags.host ?? file.host ?? "127.0.0.1",
    port,
    dbPath,
    homeProvider,
    providers: [...providers].map(([name, secret]) => ({ name, secret })),
    limits,
  };
  const roomDomain = flags["room-domain"] ?? file.roomDomain;
  if (roomDomain) config.roomDomain = roomDomain;
  const recordFrames = flags["record-frames"] ?? process.env.GATEWAY_RECORD_FRAMES ?? file.recordFrames;
  if (recordFrames) config.recordFramesPath = recordFrames;
  if (file.pingIntervalMs !== undefined) config.pingIntervalMs = file.pingIntervalMs;
  if (file.idleTimeoutMs !== undefined) config.idleTimeoutMs = file.idleTimeoutMs;
  if (file.keysLowThreshold !== undefined) config.keysLowThreshold = file.keysLowThreshold;
  if (file.deliveryWindow !== undefined) config.deliveryWindow = file.deliveryWindow;
  if (file.maxQueuePerUser !== undefined) config.maxQueuePerUser = file.maxQueuePerUser;
  if (file.retentionDays !== undefined) config.retentionMs = file.retentionDays * 24 * 60 * 60 * 1000;
  if (file.rateLimit !== undefined) config.rateLimit = file.rateLimit;
  if (file.synchronous !== undefined) config.synchronous = file.synchronous;
  const logging = { ...file.logging };
  if (flags["log-level"]) logging.level = flags["log-level"] as LogLevel;
  if (flags["log-format"]) logging.format = flags["log-format"] as "json" | "pretty";
  return { config, logging };
}

async function main(): Promise<void> {
  const { config, logging } = buildConfig(process.argv.slice(2));
  if (logging.level || logging.format) configureLogging({ level: logging.level ?? "info", format: logging.format ?? "json" });
  const log = getLogger("gateway");
  let server: GatewayServer;
  try {
    server = new GatewayServer(config, log);
  } catch (err) {
    fail((err as Error).message);
  }
  const url = await server.start();
  process.stdout.write(`gateway listening on ${url}\n`);
  log.info("gateway listening", { url, providers: config.providers.map((p) => p.name), home: config.homeProvider });

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { signal });
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error("shutdown failed", { error: (err as Error).message });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

main().catch((err: unknown) => {
  process.stderr.write(`gateway failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
