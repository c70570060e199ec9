import assert from "node:assert/strict";
import { test } from "node:test";
import { describeDuration } from "../../src/bridge/outbound-sender";

test("limits are stated in the largest whole unit", () => {
  assert.equal(describeDuration(15 * 60_000), "15 minutes");
  assert.equal(describeDuration(60_000), "1 minute");
  assert.equal(describeDuration(2000), "2 seconds");
  assert.equal(describeDuration(90_000), "90 seconds");
  assert.equal(describeDuration(2 * 86_400_000), "2 days");
  assert.equal(describeDuration(1500), "2 seconds");
});
