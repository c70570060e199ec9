/**
 * The few statistics the benchmark reports: percentiles of latency samples, rates and the
 * bridged/direct ratios. Pure functions, unit-tested (test/unit/bench-stats.test.ts).
 */

/**
 * The p-th percentile (0..100) by linear interpolation between closest ranks (the method of
 * numpy's default and of most spreadsheets), so p50 of [1, 2, 3, 4] is 2.5. Throws on no samples.
 */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) throw new RangeError("percentile of no samples");
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside 0..100`);
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const below = Math.floor(rank);
  const above = Math.ceil(rank);
  return sorted[below] + (sorted[above] - sorted[below]) * (rank - below);
}

export interface LatencySummary {
  count: number;
  p50: number;
  p99: number;
  mean: number;
  max: number;
}

export function summarize(samples: readonly number[]): LatencySummary {
  if (samples.length === 0) throw new RangeError("summary of no samples");
  return {
    count: samples.length,
    p50: percentile(samples, 50),
    p99: percentile(samples, 99),
    mean: samples.reduce((a, b) => a + b, 0) / samples.length,
    max: Math.max(...samples),
  };
}

/** Messages per second for `count` messages in `ms` milliseconds. */
export function rate(count: number, ms: number): number {
  if (!(ms > 0)) throw new RangeError(`a rate needs a positive duration, got ${ms} ms`);
  return (count * 1000) / ms;
}

/** bridged / direct, e.g. of two throughputs; 1 means the bridge costs nothing. */
export function ratio(bridged: number, direct: number): number {
  if (!(direct > 0)) throw new RangeError(`a ratio needs a positive baseline, got ${direct}`);
  return bridged / direct;
}

/**
 * What the bridged path adds over the direct one at each percentile: p50(bridged) − p50(direct)
 * and the same for p99. Negative values are kept (noise can make the direct path the slower one).
 */
export function addedLatency(bridged: readonly number[], direct: readonly number[]): { p50: number; p99: number } {
  return {
    p50: percentile(bridged, 50) - percentile(direct, 50),
    p99: percentile(bridged, 99) - percentile(direct, 99),
  };
}

/** Rounds for display and JSON: enough digits to compare runs, no false precision. */
export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
