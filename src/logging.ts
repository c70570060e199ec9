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
