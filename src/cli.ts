#!/usr/bin/env node
import fs from "node:fs";
import path from "node:path";
import { AppServiceRegistration, Cli } from "matrix-appservice-bridge";
import { BridgeConfig, ConfigError, loadConfig, validateConfig } from "./config";
import { configureLogging, getLogger, routeProcessWarnings } from "./logging";
import { runBridge } from "./main";
import { routeLibraryLogs } from "./matrix/library-logging";
import { checkRegistration, fillRegistration } from "./matrix/registration";
import { ProtocolError } from "./protocol/frames";
import { runMimiCommand } from "./protocol/mimi-cli";
import { DatabaseError } from "./store";

const log = getLogger("main");

/** Prints one line for an admin and exits 1: no stack trace for a problem they can fix. */
function fail(message: string): never {
  process.stderr.write(`matrix-interop-bridge: ${message}\n`);
  process.exit(1);
}

/**
 * The gateway closing the connection for good at start (a wrong provider secret or domain, or a
 * protocol version it does not speak), worded for the admin with the settings to check.
 */
function gatewayRefusal(err: Error, config: BridgeConfig): string | null {
  if (!(err instanceof ProtocolError)) return null;
  const at = `the gateway at ${config.network.gateway_url}`;
  if (err.code === "unauthorized") {
    return (
      `${at} refused this bridge's credentials (provider ${config.network.provider_domain}: "${err.message}"); ` +
      `check network.provider_domain and network.provider_secret (or BRIDGE_PROVIDER_SECRET) against what the gateway's operator registered`
    );
  }
  if (err.code === "unsupported_version") {
    return `${at} does not speak this bridge's protocol version ("${err.message}"); check network.gateway_url, or upgrade the bridge`;
  }
  return null;
}

function argValue(args: string[], short: string, long: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === short || args[i] === long) return args[i + 1];
    if (args[i].startsWith(`${long}=`)) return args[i].slice(long.length + 1);
  }
  return undefined;
}

function main(args: string[]): void {
  // Before any warning is emitted (Node emits them on the next tick).
  routeProcessWarnings();
  // matrix-appservice-bridge and matrix-bot-sdk log through the bridge's logger, in its format.
  routeLibraryLogs();
  if (args[0] === "mimi") {
    void runMimiCommand(args.slice(1), process.stdout, process.stderr).then((code) => process.exit(code));
    return;
  }
  // Validate the config ourselves first: one line naming the field beats a stack trace.
  const configPath = argValue(args, "-c", "--config");
  if (configPath) {
    try {
      loadConfig(configPath);
    } catch (err) {
      if (err instanceof ConfigError) fail(`config error: ${err.message}`);
      throw err;
    }
  }
  const asConfig = (raw: unknown): BridgeConfig => {
    try {
      return validateConfig(raw, configPath ? path.dirname(path.resolve(configPath)) : process.cwd());
    } catch (err) {
      if (err instanceof ConfigError) fail(`config error: ${err.message}`);
      throw err;
    }
  };
  const cli = new Cli<Record<string, unknown>>({
    registrationPath: "registration.yaml",
    enableRegistration: true,
    // An empty schema: validation is ours (validateConfig), for one-line errors.
    bridgeConfig: { affectsRegistration: true, schema: {}, defaults: {} },
    generateRegistration(reg: AppServiceRegistration, callback: (r: AppServiceRegistration) => void) {
      const config = asConfig(cli.getConfig());
      const file = cli.getRegistrationFilePath();
      const filled = fillRegistration(reg, config, reg.getAppServiceUrl() ?? "");
      // It holds both tokens: readable by its owner only (the library writes it without a mode; an existing file keeps its mode).
      fs.closeSync(fs.openSync(file, "w", 0o600));
      fs.chmodSync(file, 0o600);
      process.stdout.write(
        `Writing the appservice registration to ${file} (random tokens and sender, exclusive namespace for the ghosts and the bot @${config.appservice.bot.localpart}:${config.homeserver.domain}).\n` +
          `Add it to your homeserver (Synapse: app_service_config_files in homeserver.yaml), restart the homeserver,\n` +
          `then start the bridge: matrix-interop-bridge -c ${configPath} -f ${file}\n`,
      );
      callback(filled);
    },
    run(_port: number | null, rawConfig: Record<string, unknown> | null, registration: AppServiceRegistration | null) {
      const config = asConfig(rawConfig);
      configureLogging(config.logging);
      const registrationFile = cli.getRegistrationFilePath();
      if (!registration) fail(`${registrationFile}: no registration; generate one with -r`);
      const checked = checkRegistration(registration!, config, registrationFile);
      if (checked.error) fail(checked.error);
      if (checked.warning) log.warn(checked.warning);
      runBridge(config, registration!)
        .then((bridge) => {
          const shutdown = (signal: string) => {
            log.info(`received ${signal}, shutting down`);
            void bridge.stop().then(() => process.exit(0));
          };
          process.once("SIGTERM", () => shutdown("SIGTERM"));
          process.once("SIGINT", () => shutdown("SIGINT"));
        })
        .catch((err: Error) => {
          if (err instanceof DatabaseError || err instanceof ConfigError) fail(err.message);
          const refused = gatewayRefusal(err, config);
          if (refused) {
            // A log line (the log is configured by now, so it is JSON where the admin asked for JSON), one line, no stack.
            log.error(refused);
            process.exit(1);
          }
          log.error("the bridge failed to start", { error: err.message, stack: err.stack });
          process.exit(1);
        });
    },
  });
  try {
    cli.run();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOENT") fail(`cannot read ${e.path}: no such file (generate a registration with -r)`);
    fail(e.message.split("\n")[0]);
  }
}

main(process.argv.slice(2));
