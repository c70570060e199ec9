/**
 * Runs one request with an abort signal of its own, aborted with `stop`. Handing fetch a
 * long-lived signal leaves a listener on it per request (undici in Node 20): a sync loop or a
 * long poll then warns "MaxListenersExceededWarning" after a few hundred requests.
 */
export async function withOwnSignal<T>(stop: AbortSignal | undefined, request: (signal: AbortSignal | undefined) => Promise<T>): Promise<T> {
  if (!stop) return request(undefined);
  const own = new AbortController();
  const abort = () => own.abort();
  stop.addEventListener("abort", abort, { once: true });
  if (stop.aborted) own.abort();
  try {
    return await request(own.signal);
  } finally {
    stop.removeEventListener("abort", abort);
  }
}
