/**
 * The chaos run in short (the full one is `npm run chaos`): messages flow both ways over ten
 * chats while the bridge is killed with SIGKILL three times; every message arrives once, in order.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Stack } from "../support/stack";
import { formatSummary, resendBound, runChaos } from "../chaos/chaos";

let stack: Stack;

before(async () => {
  stack = await Stack.start("chaosshort", { logLevel: "info", simArgs: ["--send-timeout-ms", "600000"] });
});

after(async () => {
  await stack?.stop();
});

test("the bridge is SIGKILLed three times while 200 messages flow over 10 chats: each arrives exactly once, in order, counted after 10 s of quiet", async (t) => {
  const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : undefined;
  const summary = await runChaos(stack, { chats: 10, messages: 200, kills: 3, durationMs: 15_000, chatsPerUser: 2, seed, quietMs: 10_000, log: (line) => t.diagnostic(line) });
  for (const line of formatSummary(summary).split("\n")) t.diagnostic(line);
  assert.equal(summary.kills, 3);
  assert.ok(summary.quietMs >= 10_000, "the final count came after at least 10 s without movement");
  for (const [name, d] of Object.entries({ "Matrix → WhatsApp": summary.matrixToWhatsApp, "WhatsApp → Matrix": summary.whatsAppToMatrix })) {
    assert.equal(d.sent, 100, `${name}: sent`);
    assert.equal(d.lost, 0, `${name}: nothing lost`);
    assert.equal(d.duplicated, 0, `${name}: nothing duplicated`);
    assert.equal(d.outOfOrder, 0, `${name}: nothing out of order`);
    assert.equal(d.received, 100, `${name}: received`);
  }
  assert.ok(
    summary.matrixToWhatsApp.redelivered.resent <= resendBound(summary),
    `the bridge re-sent ${summary.matrixToWhatsApp.redelivered.resent} messages under the same id; ${summary.kills} kills can explain at most ${resendBound(summary)}`,
  );
});
