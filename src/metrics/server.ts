import http from "node:http";
import type { AddressInfo } from "node:net";
import { getLogger } from "../logging";
import { BridgeMetrics } from "./metrics";

const log = getLogger("metrics");

export interface HealthReport {
  /** Ready to bridge: every check is "ok" (or "connected"). */
  ready: boolean;
  checks: Record<string, string>;
  /** The links the bridge depends on and its outbound queue (BridgeCore.health()): an outage shows here. */
  links?: Record<string, unknown>;
}

/**
 * The operators' listener: `GET /metrics` (Prometheus text format), `GET /health` (liveness:
 * 200 while the process serves requests, with readiness detail) and `GET /ready` (200 when
 * ready to bridge, else 503). It has no authentication: bind it to a private address.
 */
export class MetricsServer {
  private server?: http.Server;
  private readonly started = Date.now();

  constructor(
    private readonly metrics: BridgeMetrics,
    private readonly health: () => HealthReport,
    private readonly version: string,
  ) {}

  /** Listens; resolves with the port (useful with port 0). */
  async listen(port: number, hostname: string): Promise<number> {
    const server = http.createServer((req, res) => void this.serve(req, res));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, hostname, () => resolve());
    });
    const actual = (server.address() as AddressInfo).port;
    log.info("metrics and health listening", { hostname, port: actual });
    return actual;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return this.send(res, 405, "application/json", JSON.stringify({ error: "only GET" }));
    try {
      if (path === "/metrics") {
        const { contentType, body } = await this.metrics.exposition();
        return this.send(res, 200, contentType, body);
      }
      if (path === "/health" || path === "/ready") {
        const report = this.health();
        const body = JSON.stringify({
          status: "ok",
          ready: report.ready,
          checks: report.checks,
          ...(report.links ? { links: report.links } : {}),
          version: this.version,
          uptime_seconds: Math.round((Date.now() - this.started) / 1000),
        });
        return this.send(res, path === "/ready" && !report.ready ? 503 : 200, "application/json", body);
      }
      this.send(res, 404, "application/json", JSON.stringify({ error: "not found; try /metrics, /health or /ready" }));
    } catch (err) {
      log.error("metrics request failed", { path, error: (err as Error).message });
      this.send(res, 500, "application/json", JSON.stringify({ error: "internal error" }));
    }
  }

  private send(res: http.ServerResponse, status: number, contentType: string, body: string): void {
    res.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
    res.end(body);
  }
}
