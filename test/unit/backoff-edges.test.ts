import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { test } from "node:test";
import { Backoff, sleep } from "../../src/util/backoff";

test("backoff doubles by default and treats attempt 0 or below like the first retry", () => {
  const b = new Backoff({ initialMs: 5, maxMs: 10_000 });
  assert.deepEqual(
    [0, -3, 1, 2, 3].map((n) => b.delayFor(n)),
    [5, 5, 5, 10, 20],
  );
});

test("backoff accepts the edges of a sensible policy: zero delays and full jitter", () => {
  const zero = new Backoff({ initialMs: 0, maxMs: 0 });
  assert.equal(zero.next(), 0);
  const flat = new Backoff({ initialMs: 7, maxMs: 7 });
  assert.equal(flat.delayFor(4), 7);
  const full = new Backoff({ initialMs: 100, maxMs: 100, jitter: 1 }, () => 0.25);
  assert.equal(full.delayFor(1), 75);
  const none = new Backoff({ initialMs: 100, maxMs: 100, jitter: 0 }, () => 0.9);
  assert.equal(none.delayFor(1), 100);
});

test("backoff refuses a negative initial delay, a negative jitter and a missing number", () => {
  assert.throws(() => new Backoff({ initialMs: -1, maxMs: 5 }), /initialMs/);
  assert.throws(() => new Backoff({ initialMs: Number.NaN, maxMs: 5 }), /initialMs/);
  assert.throws(() => new Backoff({ initialMs: 1, maxMs: Number.NaN }), /initialMs/);
  assert.throws(() => new Backoff({ initialMs: 1, maxMs: 5, jitter: -0.1 }), /jitter/);
  assert.throws(() => new Backoff({ initialMs: 1, maxMs: 5, jitter: 1.1 }), /jitter/);
});

test("backoff without maxAttempts is never exhausted, and with one only once it is reached", () => {
  const forever = new Backoff({ initialMs: 1, maxMs: 1 });
  for (let i = 0; i < 50; i++) forever.next();
  assert.equal(forever.exhausted, false);
  const two = new Backoff({ initialMs: 1, maxMs: 1, maxAttempts: 2 });
  assert.equal(two.exhausted, false);
  two.next();
  assert.equal(two.exhausted, false);
  two.next();
  assert.equal(two.exhausted, true);
  two.next();
  assert.equal(two.exhausted, true, "past the limit stays exhausted");
});

test("backoff rounds a jittered delay to whole milliseconds", () => {
  const b = new Backoff({ initialMs: 3, maxMs: 3, jitter: 0.5 }, () => 0.5);
  assert.equal(b.delayFor(1), 2); // 3 * 0.75 = 2.25
});

test("sleep resolves after its time when nothing aborts it", async () => {
  const controller = new AbortController();
  await sleep(1, controller.signal);
  await sleep(0);
  assert.equal(getEventListeners(controller.signal, "abort").length, 0, "a finished sleep leaves no listener on the signal");
});

test("sleep on an already aborted signal rejects at once with its reason, without waiting", async () => {
  const controller = new AbortController();
  controller.abort(new Error("already stopped"));
  const pending = sleep(2_000, controller.signal);
  let settled = false;
  pending.catch(() => {
    settled = true;
  });
  // One turn of the event loop, far shorter than the sleep: only an immediate rejection settles.
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(settled, true);
  await assert.rejects(pending, /already stopped/);
});

test("sleep stops its timer when aborted, so the process is not kept alive", async () => {
  const controller = new AbortController();
  const pending = sleep(10 * 60_000, controller.signal);
  controller.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
  assert.equal(getEventListeners(controller.signal, "abort").length, 0, "the abort listener is gone");
  const timers = (process as unknown as { getActiveResourcesInfo(): string[] }).getActiveResourcesInfo();
  assert.equal(timers.filter((r) => r === "Timeout").length, 0, `active: ${timers.join(", ")}`);
});
