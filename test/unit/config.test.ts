import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import YAML from "yaml";
import { ConfigError, loadConfig, validateConfig } from "../../src/config";

const SAMPLE = path.resolve(__dirname, "../../../config/config.sample.yaml");

const PROVIDER_SECRET = "provider-secret-0123456789";
const STORE_KEY = "store-key-0123456789abcdef";

/** The sample with real secrets in place of its placeholders (refused as they are). */
function sample(): Record<string, any> {
  const c = YAML.parse(fs.readFileSync(SAMPLE, "utf8"));
  c.network.provider_secret = PROVIDER_SECRET;
  c.network.store_key = STORE_KEY;
  return c;
}

/** Runs `fn` with environment variables set (undefined: unset), restoring them after. */
function withEnv<T>(vars: Record<string, string | undefined>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(vars))
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
}

function problem(mutate: (c: Record<string, any>) => void): string {
  const c = sample();
  mutate(c);
  try {
    validateConfig(c);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    return err.message;
  }
  assert.fail("the config was accepted");
}

test("the sample config, with real secrets, is valid and defaults are filled", () => {
  const config = withEnv({ BRIDGE_PROVIDER_SECRET: PROVIDER_SECRET, BRIDGE_STORE_KEY: STORE_KEY }, () => loadConfig(SAMPLE));
  assert.equal(config.homeserver.domain, "localhost");
  assert.equal(config.appservice.ghosts.localpart_template, "whatsapp_{phone}");
  assert.ok(path.isAbsolute(config.database.path), "database path is resolved against the config's folder");
  const minimal = validateConfig({
    homeserver: { url: "http://hs:8008", domain: "hs" },
    appservice: { port: 1234 },
    database: { path: "/tmp/x.db" },
    network: { gateway_url: "ws://gw/v1", provider_domain: "m.hs", provider_secret: PROVIDER_SECRET, home_domain: "wa.example", store_key: STORE_KEY },
  });
  assert.equal(minimal.logging.level, "info");
  assert.equal(minimal.bridge.third_party_chats_default, false, "Third-Party Chats are opt-in");
  assert.equal(minimal.bridge.media_download_attempts, 10);
  assert.deepEqual(minimal.bridge.permissions, { hs: "user" }, "without rules, the homeserver's own users may use the bridge");
  assert.deepEqual(minimal.metrics, { enabled: true, hostname: "127.0.0.1", port: 29402 });
  assert.equal(minimal.provisioning.enabled, true);
  assert.equal(minimal.provisioning.shared_secret, undefined);
  assert.equal(minimal.network.media.public_url, "http://127.0.0.1:29401");
});

test("each kind of bad value names its field", () => {
  assert.equal(
    problem((c) => delete c.homeserver.url),
    "homeserver.url: is missing",
  );
  assert.equal(
    problem((c) => (c.homeserver.url = "localhost:8008")),
    "homeserver.url: must be an http(s) URL",
  );
  assert.equal(
    problem((c) => (c.appservice.port = "eighty")),
    "appservice.port: must be integer",
  );
  assert.equal(
    problem((c) => (c.appservice.port = 70000)),
    "appservice.port: must be <= 65535",
  );
  assert.equal(
    problem((c) => (c.logging.level = "loud")),
    'logging.level: must be one of "error", "warn", "info", "debug"',
  );
  assert.match(
    problem((c) => (c.homeserver.urll = "x")),
    /^homeserver\.urll: is not a known setting/,
  );
  assert.equal(
    problem((c) => (c.network.gateway_url = "http://x")),
    "network.gateway_url: must be a ws:// or wss:// URL",
  );
  assert.equal(
    problem((c) => (c.appservice.ghosts.localpart_template = "whatsapp")),
    "appservice.ghosts.localpart_template: must be a lowercase localpart containing {phone}",
  );
  assert.equal(
    problem((c) => (c.appservice.bot.localpart = "whatsapp_123")),
    "appservice.bot.localpart: must not fall inside the ghost namespace",
  );
  assert.equal(
    problem((c) => delete c.network),
    "network: is missing",
  );
  assert.equal(
    problem((c) => (c.bridge.permissions = { "*": "owner" })),
    'bridge.permissions.*: must be one of "none", "user", "admin"',
  );
  assert.equal(
    problem((c) => (c.bridge.permissions = { "@alice": "user" })),
    'bridge.permissions.@alice: "@alice" is not a Matrix user id (@localpart:server)',
  );
  assert.match(
    problem((c) => (c.provisioning = { shared_secret: "short" })),
    /^provisioning\.shared_secret \(or environment variable BRIDGE_PROVISIONING_SECRET\): is shorter than 16 characters/,
  );
  assert.equal(
    problem((c) => (c.bridge.media_download_attempts = 0)),
    "bridge.media_download_attempts: must be >= 1",
  );
});

test("unreadable and non-YAML files are explained", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-config-"));
  assert.throws(() => loadConfig(path.join(dir, "nope.yaml")), /does not exist/);
  fs.writeFileSync(path.join(dir, "bad.yaml"), "homeserver: [unclosed\n");
  assert.throws(
    () => loadConfig(path.join(dir, "bad.yaml")),
    (e: Error) => e instanceof ConfigError && /not valid YAML/.test(e.message),
  );
  fs.writeFileSync(path.join(dir, "list.yaml"), "- a\n- b\n");
  assert.throws(() => loadConfig(path.join(dir, "list.yaml")), /must be a YAML mapping/);
});

test("media settings: a folder next to the database by default, 30-day links, only listed hosts", () => {
  const config = validateConfig({
    homeserver: { url: "http://hs:8008", domain: "hs" },
    appservice: { port: 1234 },
    database: { path: "/srv/bridge/bridge.db" },
    network: { gateway_url: "ws://gw/v1", provider_domain: "m.hs", provider_secret: PROVIDER_SECRET, home_domain: "wa.example", store_key: STORE_KEY },
  });
  assert.equal(config.network.media.directory, "/srv/bridge/media");
  assert.equal(config.network.media.expiry_days, 30);
  assert.deepEqual(config.network.media.allowed_hosts, []);
  assert.equal(config.network.media.max_size, 100 * 1024 * 1024);
  const relative = sample();
  relative.network.media.directory = "./blobs";
  assert.equal(validateConfig(relative, "/etc/bridge").network.media.directory, "/etc/bridge/blobs", "relative to the config's folder");
  assert.equal(
    problem((c) => (c.network.media.allowed_hosts = ["https://media.example"])),
    'network.media.allowed_hosts.0: must be a host name, host:port or "*"',
  );
  assert.match(
    problem((c) => (c.network.media.expiry_days = 0)),
    /^network\.media\.expiry_days: must be > 0/,
  );
  for (const ok of ["media.whatsapp.example", "127.0.0.1:29600", "[::1]:8080", "*"]) {
    const c = sample();
    c.network.media.allowed_hosts = [ok];
    assert.doesNotThrow(() => validateConfig(c), ok);
  }
});

test("known placeholders and short secrets are refused, naming the field and its environment variable", () => {
  const unset = { BRIDGE_PROVIDER_SECRET: undefined, BRIDGE_STORE_KEY: undefined, BRIDGE_PROVISIONING_SECRET: undefined };
  withEnv(unset, () => {
    // The sample as published: its placeholders.
    assert.throws(
      () => loadConfig(SAMPLE),
      (e: Error) =>
        e instanceof ConfigError && /^network\.provider_secret \(or environment variable BRIDGE_PROVIDER_SECRET\): is a placeholder from the sample config/.test(e.message),
    );
    for (const placeholder of ["change-me", "change-me-too", "CHANGE-ME-please-0123456789", "a-long-random-secret-string"]) {
      assert.match(
        problem((c) => (c.network.store_key = placeholder)),
        /^network\.store_key \(or environment variable BRIDGE_STORE_KEY\): is a placeholder/,
        placeholder,
      );
    }
    assert.match(
      problem((c) => (c.network.provider_secret = "fifteen-chars.."))!,
      /^network\.provider_secret \(or environment variable BRIDGE_PROVIDER_SECRET\): is shorter than 16 characters/,
    );
    assert.match(
      problem((c) => delete c.network.store_key),
      /^network\.store_key \(or environment variable BRIDGE_STORE_KEY\): is missing/,
    );
    assert.match(
      problem((c) => (c.provisioning.shared_secret = "change-me-to-a-long-random-string")),
      /^provisioning\.shared_secret \(or environment variable BRIDGE_PROVISIONING_SECRET\): is a placeholder/,
    );
    assert.doesNotThrow(() => validateConfig(sample()), "16 characters and more, not a placeholder: accepted");
  });
  // The environment overrides the file, and is held to the same rule.
  withEnv({ BRIDGE_STORE_KEY: "short" }, () =>
    assert.match(
      problem(() => undefined),
      /^network\.store_key \(or environment variable BRIDGE_STORE_KEY\): is shorter than 16/,
    ),
  );
  withEnv({ BRIDGE_PROVIDER_SECRET: "from-the-environment-0123" }, () => {
    const c = sample();
    c.network.provider_secret = "change-me";
    assert.equal(validateConfig(c).network.provider_secret, "from-the-environment-0123");
  });
});
