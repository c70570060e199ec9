/**
 * Outages in short (the full one is `npm run chaos -- --outages`): Synapse is stopped, then the
 * gateway, while both sides keep sending. Afterwards every message has arrived exactly once, in
 * order, and the bridge logged each outage once (when it began and when it ended), not once per
 * message that had to wait.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { formatSummary, runChaos } from "../chaos/chaos";
import { Stack } from "../support/stack";

let stack: Stack;

before(async () => {
  stack = await Stack.start("outage", { logLevel: "info", simArgs: ["--send-timeout-ms", "600000"] });
});

after(async () => {
  await stack?.stop();
});

interface LogEntry {
  level: string;
  message: string;
  module?: string;
  timestamp: string;
  [key: string]: unknown;
}

function bridgeLog(): LogEntry[] {
  return fs
    .readFileSync(path.join(stack.dir, "bridge.log"), "utf8")
    .split("\n")
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as LogEntry];
      } catch {
        return [];
      }
    });
}

test("Synapse away for 10 s, then the gateway for 10 s, while both sides send: everything arrives once, in order; each outage is logged once", async (t) => {
  const summary = await runChaos(stack, { chats: 4, messages: 80, kills: 0, outageMs: 10_000, durationMs: 40_000, chatsPerUser: 2, log: (line) => t.diagnostic(line) });
  for (const line of formatSummary(summary).split("\n")) t.diagnostic(line);
  for (const [name, d] of Object.entries({ "Matrix → WhatsApp": summary.matrixToWhatsApp, "WhatsApp → Matrix": summary.whatsAppToMatrix })) {
    assert.deepEqual({ lost: d.lost, duplicated: d.duplicated, outOfOrder: d.outOfOrder, received: d.received }, { lost: 0, duplicated: 0, outOfOrder: 0, received: d.sent }, name);
  }

  const log = bridgeLog();
  const lines = (re: RegExp) => log.filter((e) => re.test(e.message));
  assert.equal(lines(/^homeserver unreachable/).length, 1, "the homeserver outage is announced once");
  assert.equal(lines(/^homeserver reachable again/).length, 1, "and its end once");
  assert.ok(Number(lines(/^homeserver reachable again/)[0].held) > 0, "messages waited for the homeserver");
  assert.equal(lines(/^network gateway unreachable/).length, 1, "the gateway outage is announced once");
  assert.equal(lines(/^network gateway reachable again/).length, 1, "and its end once");
  for (const [what, entries] of Object.entries(summary.bridgeLogDuringOutages)) {
    const others = entries.filter((line) => !/unreachable;/.test(line));
    assert.deepEqual(others, [], `no other warnings or errors during the ${what} outage`);
  }
});
