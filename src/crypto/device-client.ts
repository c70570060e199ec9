/**
 * Client-server requests made by the appservice as one of its users' devices: the appservice
 * token, `user_id` (identity assertion) and `device_id` / `org.matrix.msc3202.device_id` (MSC3202
 * device masquerading), so key uploads, claims and to-device messages come from that device.
 */
import { Backoff, sleep } from "../util/backoff";

export class MatrixRequestError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = "MatrixRequestError";
  }
}

export interface DeviceClientOptions {
  homeserverUrl: string;
  asToken: string;
  /** Attempts for 429 and 5xx answers and network errors (default 5). */
  attempts?: number;
}

export class DeviceClient {
  private readonly base: string;

  constructor(private readonly opts: DeviceClientOptions) {
    this.base = opts.homeserverUrl.replace(/\/+$/, "");
  }

  /** `path` is below /_matrix/client/; `deviceId` undefined acts as the user without a device. */
  async request<T = Record<string, unknown>>(method: string, path: string, as: { userId: string; deviceId?: string }, body?: unknown): Promise<T> {
    const url = new URL(`${this.base}/_matrix/client/${path}`);
    url.searchParams.set("user_id", as.userId);
    if (as.deviceId) {
      url.searchParams.set("device_id", as.deviceId);
      url.searchParams.set("org.matrix.msc3202.device_id", as.deviceId);
    }
    const backoff = new Backoff({ initialMs: 200, maxMs: 5000, jitter: 0.3, maxAttempts: this.opts.attempts ?? 5 });
    for (;;) {
      let status: number;
      let text: string;
      try {
        const response = await fetch(url, {
          method,
          headers: { authorization: `Bearer ${this.opts.asToken}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(30_000),
        });
        status = response.status;
        text = await response.text();
      } catch (err) {
        backoff.next();
        if (backoff.exhausted) throw err;
        await sleep(backoff.delayFor(backoff.attempts));
        continue;
      }
      if (status >= 200 && status < 300) return (text ? JSON.parse(text) : {}) as T;
      let errcode: string | undefined;
      let error = "";
      try {
        const parsed = JSON.parse(text) as { errcode?: string; error?: string; retry_after_ms?: number };
        errcode = parsed.errcode;
        error = parsed.error ?? "";
      } catch {
        // not JSON: keep the status only
      }
      const retriable = status === 429 || status >= 500;
      if (!retriable) throw new MatrixRequestError(status, errcode, `${method} ${path.split("?")[0]}: ${status} ${errcode ?? ""} ${error}`.trim());
      backoff.next();
      if (backoff.exhausted) throw new MatrixRequestError(status, errcode, `${method} ${path.split("?")[0]}: ${status} after ${backoff.attempts} attempts`);
      await sleep(backoff.delayFor(backoff.attempts));
    }
  }
}
