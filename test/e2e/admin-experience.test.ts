/**
 * What a new admin meets first, end to end (real Synapse, gateway, simulator and bridge): the
 * bot has its name and avatar on the homeserver, the log is one format (with `logging.format:
 * json`, every line the bridge prints is a JSON object, the Matrix libraries' lines included),
 * and a gateway that refuses the bridge's credentials stops it with one line naming the settings
 * to check.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import YAML from "yaml";
import { repoRoot } from "../support/homeserver";
import { Stack } from "../support/stack";

const BOT_AVATAR = "mxc://localhost/interopbotavatar";

let stack: Stack;

before(async () => {
  stack = await Stack.start("admin", {
    logLevel: "debug",
    bridgeConfig: (c) => {
      c.appservice.bot = { displayname: "Third-Party Chats", avatar: BOT_AVATAR };
    },
  });
});

after(async () => {
  await stack?.stop();
});

/** Every line of a log, parsed; a line that is not one JSON object fails with the line shown. */
function jsonLines(text: string, what: string): Array<Record<string, unknown>> {
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      let parsed: unknown;
      assert.doesNotThrow(() => (parsed = JSON.parse(line)), `${what}: not JSON: ${line}`);
      assert.ok(parsed !== null && typeof parsed === "object" && !Array.isArray(parsed), `${what}: not a JSON object: ${line}`);
      const entry = parsed as Record<string, unknown>;
      assert.equal(typeof entry.level, "string", `${what}: no level: ${line}`);
      assert.equal(typeof entry.message, "string", `${what}: no message: ${line}`);
      return entry;
    });
}

/** Runs the bridge's command line to its exit; stdout and stderr apart. */
function runBridge(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot(), "dist", "src", "cli.js"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    // A bridge that does not give up on a refusing gateway would keep running: the test's own timeout ends it.
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("a new admin's first start", { timeout: 5 * 60_000 }, () => {
  test("the bot is a namespaced user with its display name and avatar from the config", async (t) => {
    const alice = await stack.user("alice");
    const profile = (await alice.getProfile(stack.botId)) as { displayname?: string; avatar_url?: string };
    assert.equal(profile.displayname, "Third-Party Chats");
    assert.equal(profile.avatar_url, BOT_AVATAR);
    t.diagnostic(`GET /profile/${stack.botId} → ${JSON.stringify(profile)}`);
    // The registration's sender is a random user nobody talks to; the bot is not it.
    const registration = YAML.parse(fs.readFileSync(stack.registrationPath, "utf8"));
    assert.notEqual(`@${registration.sender_localpart}:${stack.domain}`, stack.botId);
    // And users see the name where it matters: on the bot's membership in their DM.
    const room = await stack.botRoom(alice);
    const members = await alice.getRoomMembers(room, "join");
    const bot = members.find((m) => m.state_key === stack.botId);
    assert.equal(bot?.content.displayname, "Third-Party Chats");
  });

  test("with logging.format json every line the bridge printed is one JSON object, the Matrix libraries' included", async () => {
    // By now the bridge has started, registered the bot, answered a DM: the libraries have logged.
    const entries = jsonLines(fs.readFileSync(path.join(stack.dir, "bridge.log"), "utf8"), "bridge.log");
    const modules = new Set(entries.map((e) => String(e.module)));
    assert.ok(
      [...modules].some((m) => m.startsWith("matrix-sdk:")),
      `matrix-appservice-bridge / matrix-bot-sdk lines are in the log, in its format (modules: ${[...modules].join(", ")})`,
    );
    assert.ok(entries.some((e) => e.message === "bridge ready"));
  });

  test("a gateway that refuses the bridge's credentials stops it with one line naming the settings, exit 1, no stack trace", async (t) => {
    await stack.bridge.stop();
    const config = YAML.parse(fs.readFileSync(stack.configPath, "utf8"));
    config.network.provider_secret = crypto.randomBytes(24).toString("hex"); // not the one the gateway knows
    config.logging = { level: "info", format: "json" };
    const wrong = path.join(stack.dir, "config-wrong-secret.yaml");
    fs.writeFileSync(wrong, YAML.stringify(config));
    const r = await runBridge(["-c", wrong, "-f", stack.registrationPath]);
    assert.equal(r.code, 1, `exit code; stderr:\n${r.stderr}`);
    const entries = jsonLines(r.stdout + r.stderr, "output");
    const errors = entries.filter((e) => e.level === "error");
    assert.equal(errors.length, 1, `one error line:\n${r.stderr}`);
    assert.match(
      String(errors[0].message),
      /^the gateway at ws:\/\/127\.0\.0\.1:\d+\/v1 refused this bridge's credentials \(provider matrix\.localhost: .*\); check network\.provider_domain and network\.provider_secret \(or BRIDGE_PROVIDER_SECRET\)/,
    );
    assert.doesNotMatch(r.stdout + r.stderr, /\bat .*\.js:\d+|"stack"/, "no stack trace");
    assert.ok(!r.stderr.includes(config.network.provider_secret), "the secret is not printed");
    t.diagnostic(`exit ${r.code}; the error line: ${JSON.stringify(errors[0])}`);
  });
});
