/**
 * The only place where the bridge reaches into its Matrix libraries' internals. Everything here
 * was written for, and is checked against (test/unit/library-internals.test.ts), these versions:
 *
 *   matrix-appservice-bridge 11.2.0, matrix-appservice 3.0.0, @vector-im/matrix-bot-sdk 0.8.0-element.2
 *
 * Before moving any of them to another version, read what is used below in the new version's
 * source; the test fails on a version change so that this is not forgotten.
 */
import type { Request, Response } from "express";
import { getRequestFn, setRequestFn } from "@vector-im/matrix-bot-sdk";
import { AppService } from "matrix-appservice";

/** The library versions this file was written for (the test compares them with the installed ones). */
export const WRITTEN_FOR = {
  "matrix-appservice-bridge": "11.2.0",
  "matrix-appservice": "3.0.0",
  "@vector-im/matrix-bot-sdk": "0.8.0-element.2",
} as const;

/** The callback of the `request`-compatible function the matrix-bot-sdk makes every HTTP request with. */
export type RequestCallback = (err: (Error & { code?: string }) | null, res?: { statusCode: number }, body?: unknown) => void;
/** What the matrix-bot-sdk passes to its request function (only the fields the bridge reads). */
export type RequestFn = (params: { uri?: string; url?: string; method?: string; body?: unknown }, callback: RequestCallback) => unknown;

/**
 * Wraps the matrix-bot-sdk's process-wide request function, which every request of
 * matrix-appservice-bridge's intents goes through (the bridge uses the same copy of the sdk:
 * the versions above pin it exactly). The sdk documents setRequestFn for unit testing only.
 */
export function wrapMatrixRequests(wrap: (inner: RequestFn) => RequestFn): void {
  const inner = getRequestFn() as unknown as RequestFn;
  setRequestFn(wrap(inner));
}

/** The two handlers of matrix-appservice's AppService that the bridge replaces. */
export interface AppServiceHandlers {
  /** PUT /_matrix/app/v1/transactions/:txnId. */
  onTransaction(req: Request, res: Response): void;
  /** Answers the refusal and returns true when a request lacks the homeserver token (every route of the library asks it). */
  isInvalidToken(req: Request, res: Response): boolean;
}

/**
 * Makes `subclass`'s instances answer the AppService's transaction route and token check with
 * `handlers`. Both are private in the library's typings; its constructor binds
 * `this.onTransaction` to the route and its other routes call `this.isInvalidToken`, so the
 * subclass's prototype is where they are found.
 */
export function replaceAppServiceHandlers<T extends AppService>(
  subclass: abstract new (...args: never[]) => T,
  handlers: { [K in keyof AppServiceHandlers]: (this: T, ...args: Parameters<AppServiceHandlers[K]>) => ReturnType<AppServiceHandlers[K]> },
): void {
  for (const name of ["onTransaction", "isInvalidToken"] as const) {
    Object.defineProperty(subclass.prototype, name, { value: handlers[name], writable: true, configurable: true });
  }
}
