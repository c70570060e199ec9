import winston from "winston";

/** Log levels, most severe first; "debug" is where message bodies may appear, never "info". */
export type LogLevel = "error" | "warn" | "info" | "debug";

export interface LoggingConfig {
  level: LogLevel;
  /** "json" for production (one JSON object a line), "pretty" for a terminal. */
  format: "json" | "pretty";
}

const root = winston.createLogger({
  level: process.env.LOG_LEVEL ?? "info",
  format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
  transports: [new winston.transports.Console({ stderrLevels: ["error", "warn", "info", "debug"] })],
});

/** Reconfigures every logger handed out so far (they are children of one root). */
export function configureLogging(config: LoggingConfig): void {
  const format =
    config.format === "json"
      ? winston.format.combine(winston.format.timestamp(), winston.format.json())
      : winston.format.combine(
          winston.format.timestamp({ format: "HH:mm:ss.SSS" }),
          winston.format.printf(({ timestamp, level, message, module, ...rest }) => {
            const extra = Object.keys(rest).length ? " " + JSON.stringify(rest) : "";
            return `${timestamp} ${level.toUpperCase().padEnd(5)} [${module ?? "main"}] ${message}${extra}`;
          }),
        );
  root.configure({
    level: config.level,
    format,
    transports: [new winston.transports.Console({ stderrLevels: ["error", "warn", "info", "debug"] })],
  });
}

export type Logger = winston.Logger;

/** A logger whose lines carry the module name, e.g. getLogger("portal"). */
export function getLogger(module: string): Logger {
  return root.child({ module });
}

/**
 * Node's process warnings go through the log, in its format, instead of Node's own raw stderr
 * lines (which break `logging.format: json` and one-line errors). Deprecations come from
 * dependencies (DEP0060: matrix-bot-sdk's htmlencode uses util._extend on Node 24) and are not
 * the admin's to fix: debug. Any other warning: warn.
 */
export function routeProcessWarnings(): void {
  process.removeAllListeners("warning"); // Node's default printer
  const log = getLogger("node");
  process.on("warning", (warning: Error & { code?: string }) => {
    const meta = { warning: warning.name, ...(warning.code ? { code: warning.code } : {}) };
    if (warning.name === "DeprecationWarning") log.debug(warning.message, meta);
    else log.warn(warning.message, meta);
  });
}
