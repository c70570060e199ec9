import assert from "node:assert/strict";
import { test } from "node:test";
import { CommandRateLimiter } from "../../src/matrix/command-rate-limit";

test("a user gets a burst of commands, one answer when over it, then one command per refill", () => {
  let now = 0;
  const limiter = new CommandRateLimiter(3, 1000, () => now);
  assert.deepEqual(
    [1, 2, 3].map(() => limiter.take("@a:hs")),
    ["ok", "ok", "ok"],
  );
  assert.equal(limiter.take("@a:hs"), "limited", "the first refused command is answered");
  assert.equal(limiter.take("@a:hs"), "silent", "a flood gets no more answers");
  assert.equal(limiter.waitMs("@a:hs"), 1000);
  assert.equal(limiter.take("@b:hs"), "ok", "users have their own buckets");
  now += 999;
  assert.equal(limiter.take("@a:hs"), "silent");
  now += 1;
  assert.equal(limiter.take("@a:hs"), "ok", "a token is back after the refill time");
  assert.equal(limiter.take("@a:hs"), "limited", "and a new refusal is answered again");
  now += 10_000;
  assert.deepEqual(
    [1, 2, 3, 4].map(() => limiter.take("@a:hs")),
    ["ok", "ok", "ok", "limited"],
    "the bucket never holds more than the burst",
  );
});
