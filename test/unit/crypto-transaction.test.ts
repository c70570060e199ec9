import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { AppServiceRegistration } from "matrix-appservice-bridge";
import YAML from "yaml";
import { ConfigError, validateConfig } from "../../src/config";
import { readTransactionExtensions } from "../../src/crypto/transaction-extensions";
import { fillRegistration } from "../../src/matrix/registration";

/** The sample config with real secrets in place of its placeholders (which the bridge refuses). */
const sample = () => {
  const c = YAML.parse(fs.readFileSync(path.resolve(__dirname, "../../../config/config.sample.yaml"), "utf8"));
  c.network.provider_secret = "a-provider-secret-for-tests";
  c.network.store_key = "a-store-key-for-tests-only";
  if (c.provisioning) c.provisioning.shared_secret = "a-provisioning-secret-for-tests";
  return c;
};

describe("encrypted appservice transactions", () => {
  it("to-device events, device lists and key counts are grouped by the bridged user and device they are for (Synapse 1.160's unstable names)", () => {
    const ext = readTransactionExtensions({
      events: [],
      "de.sorunome.msc2409.to_device": [
        { type: "m.room.encrypted", sender: "@u:hs", to_user_id: "@ghost_1:hs", to_device_id: "DEV1", content: { ciphertext: {} } },
        { type: "m.room_key_request", sender: "@u:hs", to_user_id: "@ghost_2:hs", to_device_id: "DEV2", content: {} },
        { type: "broken, no recipient", content: {} },
      ],
      "org.matrix.msc3202.device_lists": { changed: ["@u:hs", 7], left: ["@gone:hs"] },
      "org.matrix.msc3202.device_one_time_keys_count": { "@ghost_1:hs": { DEV1: { signed_curve25519: 12 } } },
      "org.matrix.msc3202.device_unused_fallback_key_types": { "@ghost_1:hs": { DEV1: ["signed_curve25519"] } },
    });
    assert.deepEqual(ext.changed, ["@u:hs"]);
    assert.deepEqual(ext.left, ["@gone:hs"]);
    const one = ext.devices.get("@ghost_1:hs")?.get("DEV1");
    assert.deepEqual(one?.toDevice, [{ type: "m.room.encrypted", sender: "@u:hs", content: { ciphertext: {} } }], "the routing fields are taken off");
    assert.deepEqual(one?.oneTimeKeyCounts, { signed_curve25519: 12 });
    assert.deepEqual(one?.unusedFallbackKeyTypes, ["signed_curve25519"]);
    assert.equal(ext.devices.get("@ghost_2:hs")?.get("DEV2")?.toDevice.length, 1);
    assert.equal(ext.devices.size, 2, "the event without a recipient is dropped");
  });

  it("the stable names of MSC2409/MSC3202 are read too, and a transaction without them is empty", () => {
    const ext = readTransactionExtensions({
      to_device: [{ type: "x", to_user_id: "@g:hs", to_device_id: "D", content: {} }],
      device_lists: { changed: ["@a:hs"] },
      device_one_time_keys_count: { "@g:hs": { D: { signed_curve25519: 1 } } },
    });
    assert.equal(ext.devices.get("@g:hs")?.get("D")?.toDevice.length, 1);
    assert.deepEqual(ext.changed, ["@a:hs"]);
    const empty = readTransactionExtensions({ events: [] });
    assert.equal(empty.devices.size, 0);
  });

  it("the registration -r writes asks for MSC4190 devices and MSC3202 masquerading", () => {
    const config = validateConfig(sample(), "/tmp");
    const output = fillRegistration(new AppServiceRegistration("http://127.0.0.1:1"), config, "http://127.0.0.1:1").getOutput() as unknown as Record<string, unknown>;
    assert.equal(output["io.element.msc4190"], true);
    assert.equal(output["org.matrix.msc3202"], true);
    assert.equal(output["de.sorunome.msc2409.push_ephemeral"], true, "to-device events come with ephemeral ones");
  });

  it("encryption config: on by default, the crypto store beside the database, require needs allow", () => {
    const config = validateConfig(sample(), "/tmp/cfg");
    assert.equal(config.encryption.allow, true);
    assert.equal(config.encryption.default, true);
    assert.equal(config.encryption.require, false);
    assert.equal(config.encryption.store_path, path.join(path.dirname(config.database.path), "crypto.db"));
    assert.deepEqual(config.encryption.delete_keys, { delete_previous_on_new_session: true, delete_on_forget_room: true });
    const bare = sample();
    delete bare.encryption;
    assert.equal(validateConfig(bare, "/tmp/cfg").encryption.allow, true, "an old config without the section gets the defaults");
    const wrong = sample();
    wrong.encryption = { allow: false, require: true };
    assert.throws(
      () => validateConfig(wrong, "/tmp/cfg"),
      (err: unknown) => err instanceof ConfigError && err.field === "encryption.require",
    );
  });
});
