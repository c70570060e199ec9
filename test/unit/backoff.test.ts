import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, sleep } from "../../src/util/backoff";

test("backoff grows by its factor from the initial delay and stops at the cap", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, factor: 3 });
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((n) => b.delayFor(n)),
    [100, 300, 900, 1000, 1000],
  );
});

test("backoff counts failures, resets on success and says when the attempts are used up", () => {
  const b = new Backoff({ initialMs: 10, maxMs: 1000, maxAttempts: 3 });
  assert.deepEqual([b.next(), b.next()], [10, 20]);
  assert.equal(b.exhausted, false);
  assert.equal(b.next(), 40);
  assert.equal(b.attempts, 3);
  assert.equal(b.exhausted, true);
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 10);
});

test("backoff jitter takes away at most its fraction of the delay", () => {
  const low = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.5 }, () => 0.999999);
  const high = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.5 }, () => 0);
  assert.equal(low.delayFor(1), 500);
  assert.equal(high.delayFor(1), 1000);
});

test("backoff refuses a policy that makes no sense", () => {
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 5 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 10, maxMs: 50, jitter: 2 }), RangeError);
});

test("sleep ends early with the abort reason", async () => {
  const controller = new AbortController();
  const pending = sleep(60_000, controller.signal);
  controller.abort(new Error("stopping"));
  await assert.rejects(pending, /stopping/);
});

test("backoff says whether failures counted elsewhere use up its attempts", () => {
  const b = new Backoff({ initialMs: 10, maxMs: 1000, maxAttempts: 3 });
  assert.deepEqual(
    [1, 2, 3, 4].map((n) => b.exhaustedAt(n)),
    [false, false, true, true],
  );
  assert.equal(new Backoff({ initialMs: 10, maxMs: 1000 }).exhaustedAt(1_000_000), false, "no maxAttempts: never");
});
