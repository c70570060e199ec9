/**
 * The one retry-delay policy of the code base: exponential growth from `initialMs` by `factor`,
 * capped at `maxMs`, with optional jitter (a random fraction of each delay taken away, so that
 * many clients retrying after the same outage do not all come back at the same instant).
 * Attempts are counted the same way everywhere: attempt 1 is the first retry after one failure.
 */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** Growth per attempt; default 2. */
  factor?: number;
  /** Fraction of each delay randomised away: 0 none (default), 1 "full jitter". */
  jitter?: number;
  /** Failures after which `exhausted` is true (absent: retry for ever). */
  maxAttempts?: number;
}

export class Backoff {
  private failures = 0;

  constructor(
    readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {
    if (!(policy.initialMs >= 0) || !(policy.maxMs >= policy.initialMs)) throw new RangeError("backoff: need 0 <= initialMs <= maxMs");
    const jitter = policy.jitter ?? 0;
    if (jitter < 0 || jitter > 1) throw new RangeError("backoff: jitter must be within 0..1");
  }

  /** The delay before retry number `attempt` (1 = after the first failure), without changing state. */
  delayFor(attempt: number): number {
    const { initialMs, maxMs, factor = 2, jitter = 0 } = this.policy;
    const exponent = Math.max(0, attempt - 1);
    const base = Math.min(maxMs, initialMs * factor ** exponent);
    return Math.round(base * (1 - jitter * this.random()));
  }

  /** Records one more failure and returns the delay before the next try. */
  next(): number {
    this.failures += 1;
    return this.delayFor(this.failures);
  }

  /** A success: the next failure starts from `initialMs` again. */
  reset(): void {
    this.failures = 0;
  }

  /** Failures since the last success (or since creation). */
  get attempts(): number {
    return this.failures;
  }

  /** True once `maxAttempts` failures were recorded. */
  get exhausted(): boolean {
    return this.exhaustedAt(this.failures);
  }

  /** Whether `failures` counted elsewhere (a stored row's attempts, say) use up `maxAttempts`. */
  exhaustedAt(failures: number): boolean {
    return this.policy.maxAttempts !== undefined && failures >= this.policy.maxAttempts;
  }
}

/** Resolves after `ms`; rejects with the signal's reason when it is aborted first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
