/**
 * Prometheus histograms read from the bridge's /metrics text: one series, the difference
 * between two readings (what a phase of the benchmark added), its mean and an estimated
 * quantile. Pure functions, unit-tested (test/unit/bench-stats.test.ts).
 */

export interface HistogramReading {
  /** Cumulative counts by upper bound (seconds), ascending, +Inf last. */
  buckets: Array<{ le: number; count: number }>;
  sum: number;
  count: number;
}

function labelsOf(text: string | undefined): Record<string, string> {
  return Object.fromEntries([...(text ?? "").matchAll(/([a-zA-Z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
}

/**
 * The series of histogram `name` whose labels include `labels` (besides `le`); an empty reading
 * when the series does not exist yet (nothing was observed).
 */
export function parseHistogram(exposition: string, name: string, labels: Record<string, string> = {}): HistogramReading {
  const reading: HistogramReading = { buckets: [], sum: 0, count: 0 };
  const matches = (have: Record<string, string>) => Object.entries(labels).every(([k, v]) => have[k] === v);
  for (const line of exposition.split("\n")) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line.trim());
    if (!m || !m[1].startsWith(name)) continue;
    const have = labelsOf(m[2]);
    if (!matches(have)) continue;
    const value = Number(m[3]);
    if (m[1] === `${name}_bucket`) reading.buckets.push({ le: have.le === "+Inf" ? Infinity : Number(have.le), count: value });
    else if (m[1] === `${name}_sum`) reading.sum = value;
    else if (m[1] === `${name}_count`) reading.count = value;
  }
  reading.buckets.sort((a, b) => a.le - b.le);
  return reading;
}

/** What was observed between two readings of the same series. */
export function histogramDelta(after: HistogramReading, before: HistogramReading): HistogramReading {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/** Mean of the observations (in the histogram's unit); throws when there are none. */
export function histogramMean(h: HistogramReading): number {
  if (!(h.count > 0)) throw new RangeError("the mean of no observations");
  return h.sum / h.count;
}

/**
 * The q-quantile (0..1) estimated from the buckets as Prometheus' histogram_quantile does:
 * linear within the bucket it falls in, the lower bound of the first bucket being 0. A quantile
 * in the +Inf bucket is the largest finite bound. Throws when there are no observations.
 */
export function histogramQuantile(h: HistogramReading, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile ${q} is outside 0..1`);
  const total = h.buckets.length ? h.buckets[h.buckets.length - 1].count : 0;
  if (!(total > 0)) throw new RangeError("a quantile of no observations");
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const b of h.buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lowerLe;
      return lowerLe + ((b.le - lowerLe) * (rank - lowerCount)) / (b.count - lowerCount || 1);
    }
    lowerLe = b.le;
    lowerCount = b.count;
  }
  return lowerLe;
}
