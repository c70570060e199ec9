/**
 * `npm run chaos` — the full chaos run: 2,000 messages over 50 chats, both directions, while
 * the bridge is SIGKILLed 20 times. `npm run chaos -- --outages`: Synapse stopped for 60 s,
 * then the gateway for 60 s, while both sides keep sending. Prints a summary and exits 1 on
 * any lost, duplicated or reordered message. `npm run chaos -- --encrypted`: the same with every
 * portal in an encrypted room (Synapse encrypts every room, the bridge has encryption on) and the
 * Matrix users on real end-to-end encrypting clients (matrix-nio); it also counts what could not
 * be decrypted at either end, and exits 1 on any.
 *
 *   --encrypted --chats N --messages N --kills N --outage-seconds N --duration-seconds N --seed N --quiet-seconds N --keep --help
 *
 * --seed replays a run's kill schedule and pacing (every run prints its seed); --quiet-seconds
 * (at least 10) is how long nothing may move before the final count.
 */
import { parseArgs } from "node:util";
import { Stack } from "../support/stack";
import { failed, formatSummary, runChaos } from "./chaos";
import { encryptedStackOptions } from "./ends";

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      outages: { type: "boolean", default: false },
      encrypted: { type: "boolean", default: false },
      chats: { type: "string" },
      messages: { type: "string" },
      kills: { type: "string" },
      "outage-seconds": { type: "string" },
      "duration-seconds": { type: "string" },
      seed: { type: "string" },
      "quiet-seconds": { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(
      "usage: npm run chaos -- [--outages] [--encrypted] [--chats N] [--messages N] [--kills N] [--outage-seconds N] [--duration-seconds N] [--seed N] [--quiet-seconds N (>= 10)] [--keep]\n",
    );
    return 0;
  }
  const num = (v: string | undefined, fallback: number) => (v === undefined ? fallback : Number(v));
  const outageMs = values.outages ? num(values["outage-seconds"], 60) * 1000 : 0;
  const kills = num(values.kills, values.outages ? 0 : 20);
  const opts = {
    chats: num(values.chats, 50),
    messages: num(values.messages, 2000),
    kills,
    outageMs,
    // Kills: about 6 s per kill and restart; outages: both outages plus time on either side.
    durationMs: num(values["duration-seconds"], outageMs ? (2 * outageMs) / 1000 + 40 : Math.max(30, kills * 6)) * 1000,
    seed: values.seed === undefined ? undefined : Number(values.seed),
    quietMs: num(values["quiet-seconds"], 10) * 1000,
    encrypted: values.encrypted,
    log: (line: string) => process.stdout.write(`[chaos] ${line}\n`),
  };
  if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) throw new Error("--seed must be a whole number");
  process.stdout.write(`[chaos] starting a stack (Synapse, gateway, simulator, bridge${values.encrypted ? "; encrypted rooms" : ""})\n`);
  const stack = await Stack.start("chaos", { logLevel: "info", simArgs: ["--send-timeout-ms", "600000"], ...(values.encrypted ? encryptedStackOptions() : {}) });
  try {
    const summary = await runChaos(stack, opts);
    process.stdout.write(`${formatSummary(summary)}\n`);
    if (values.keep) process.stdout.write(`logs and databases kept in ${stack.dir}\n`);
    return failed(summary) ? 1 : 0;
  } finally {
    await stack.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`chaos run failed: ${err.stack ?? err.message}\n`);
    process.exit(2);
  },
);
