/**
 * A token bucket per user for bot commands: `burst` commands at once, then one every
 * `refillMs`. The map forgets users whose bucket is full again, so it stays small.
 */
export class CommandRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number; warned: boolean }>();

  constructor(
    private readonly burst = 10,
    private readonly refillMs = 2000,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * "ok" if the user may run a command now; "limited" the first time they may not (answer it
   * once), "silent" for further commands until a token is back (so a flood gets one answer).
   */
  take(user: string): "ok" | "limited" | "silent" {
    const now = this.now();
    const bucket = this.buckets.get(user) ?? { tokens: this.burst, at: now, warned: false };
    bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.at) / this.refillMs);
    bucket.at = now;
    this.buckets.set(user, bucket);
    this.forgetFull(now);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      bucket.warned = false;
      return "ok";
    }
    if (bucket.warned) return "silent";
    bucket.warned = true;
    return "limited";
  }

  /** Milliseconds until the user may run a command again. */
  waitMs(user: string): number {
    const bucket = this.buckets.get(user);
    return bucket ? Math.max(0, Math.ceil((1 - bucket.tokens) * this.refillMs)) : 0;
  }

  private forgetFull(now: number): void {
    if (this.buckets.size < 1000) return;
    for (const [user, b] of this.buckets) if (b.tokens + (now - b.at) / this.refillMs >= this.burst) this.buckets.delete(user);
  }
}
