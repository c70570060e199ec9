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
  // What the operators' /health showed during the run: each link's states and the largest outbound queue.
  const seen = { homeserver: new Set<string>(), network: new Set<string>(), maxQueue: 0 };
  const poller = setInterval(() => {
    fetch(`${stack.metricsUrl}/health`)
      .then((res) => res.json() as Promise<{ links?: { homeserver?: { state: string }; network: { state: string }; outbound_queue: number } }>)
      .then(({ links }) => {
        if (links?.homeserver) seen.homeserver.add(links.homeserver.state);
        if (links) seen.network.add(links.network.state);
        seen.maxQueue = Math.max(seen.maxQueue, links?.outbound_queue ?? 0);
      })
      .catch(() => undefined);
  }, 500);
  const summary = await runChaos(stack, { chats: 4, messages: 80, kills: 0, outageMs: 10_000, durationMs: 40_000, chatsPerUser: 2, log: (line) => t.diagnostic(line) });
  for (const line of formatSummary(summary).split("\n")) t.diagnostic(line);
  clearInterval(poller);
  t.diagnostic(`/health during the run: homeserver ${[...seen.homeserver].join("/")}, network ${[...seen.network].join("/")}, outbound queue up to ${seen.maxQueue}`);
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
  assert.ok(seen.homeserver.has("down") && seen.network.has("down"), "/health showed each outage while it lasted");
  assert.ok(seen.maxQueue > 0, "/health showed Matrix messages waiting during the gateway outage");
  const settled = (await (await fetch(`${stack.metricsUrl}/health`)).json()) as {
    links: { homeserver: { state: string; outages: number }; network: { state: string; outages: number }; outbound_queue: number };
  };
  assert.deepEqual(
    {
      homeserver: [settled.links.homeserver.state, settled.links.homeserver.outages],
      network: [settled.links.network.state, settled.links.network.outages],
      queue: settled.links.outbound_queue,
    },
    { homeserver: ["up", 1], network: ["up", 1], queue: 0 },
    "afterwards both links are up, each had one outage, nothing waits",
  );
  const metrics = await stack.metrics();
  assert.match(metrics, /^bridge_link_outages\{link="homeserver"\} 1$/m);
  assert.match(metrics, /^bridge_link_state\{link="network",state="up"\} 1$/m);
  for (const [what, entries] of Object.entries(summary.bridgeLogDuringOutages)) {
    const others = entries.filter((line) => !/unreachable;/.test(line));
    assert.deepEqual(others, [], `no other warnings or errors during the ${what} outage`);
  }
});
