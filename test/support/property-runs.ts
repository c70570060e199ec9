/**
 * How many cases a fast-check property test runs. Normally the number the test names.
 * Mutation testing (`npm run mutate`, stryker.config.mjs) sets PROPERTY_RUNS_SCALE to a
 * fraction, because every surviving mutant costs one whole run of the test file: with it the
 * property tests of formatting and deterministic-cbor run a twentieth of their cases there
 * (docs/testing.md, "Mutation testing"). The examples and the huge-input tests are not scaled.
 */
export function propertyRuns(runs: number): number {
  const raw = process.env.PROPERTY_RUNS_SCALE;
  if (raw === undefined || raw === "") return runs;
  const scale = Number(raw);
  if (!(scale > 0 && scale <= 1)) throw new Error(`PROPERTY_RUNS_SCALE must be a number in (0, 1], got ${JSON.stringify(raw)}`);
  return Math.max(1, Math.round(runs * scale));
}
