import { Writable } from "node:stream";
import { Logger as LibraryLogger } from "matrix-appservice-bridge";
import { getLogger, Logger, LogLevel } from "../logging";

/** One line of matrix-appservice-bridge's JSON log format (its `json: true` formatter). */
interface LibraryLine {
  level?: string;
  module?: string;
  message?: string;
  error?: string;
  requestId?: string;
}

/**
 * The bot-sdk's HTTP client reports every failed request as an error, with the response body.
 * The bridge handles those failures itself and logs them in its own words (an outage once, a
 * refusal with its reason), so the client's own lines are detail: debug.
 */
const DETAIL_MODULES = /^Matrix(Http|Lite)Client/;

const LEVELS: ReadonlySet<string> = new Set<LogLevel>(["error", "warn", "info", "debug"]);

/**
 * Routes the logging of matrix-appservice-bridge and of the matrix-bot-sdk under it into the
 * bridge's logger, so `logging.format: json` gives one JSON object a line and `logging.level`
 * applies to them too. Without this the bot-sdk prints raw lines such as
 * `MatrixHttpClient (REQ-1) { errcode: 'M_UNKNOWN', ... }` on stdout, and the library's own
 * Logger prints nothing at all.
 *
 * It uses the library's documented hook: Logger.configure's debug stream, which also points the
 * bot-sdk's LogService at the library's logger (trace, the bot-sdk's request and response
 * bodies, stays out: the stream takes debug and above). Each of its JSON lines is re-logged
 * here with the module prefixed by "matrix-sdk:".
 */
export function routeLibraryLogs(): void {
  const loggers = new Map<string, Logger>();
  const loggerFor = (module: string) => {
    let log = loggers.get(module);
    if (!log) loggers.set(module, (log = getLogger(`matrix-sdk:${module}`)));
    return log;
  };
  let pending = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      const lines = (pending + chunk.toString("utf8")).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) relay(line);
      done();
    },
  });
  const relay = (line: string) => {
    if (!line.trim()) return;
    let entry: LibraryLine;
    try {
      entry = JSON.parse(line) as LibraryLine;
    } catch {
      entry = { level: "info", module: "unknown", message: line };
    }
    const module = entry.module ?? "unknown";
    let level = LEVELS.has(entry.level ?? "") ? (entry.level as LogLevel) : "debug";
    if (DETAIL_MODULES.test(module)) level = "debug";
    const meta: Record<string, unknown> = {};
    if (entry.error && entry.error !== entry.message) meta.error = entry.error;
    if (entry.requestId) meta.requestId = entry.requestId;
    loggerFor(module).log(level, entry.message ?? "", meta);
  };
  // No console transport: the library writes nowhere but this stream.
  LibraryLogger.root.configureLogging({ json: true }, sink);
}
