/** The appservice registration: what -r writes, and what the bridge says about a file it is given. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AppServiceRegistration } from "matrix-appservice-bridge";
import { validateConfig } from "../../src/config";
import { checkRegistration, fillRegistration } from "../../src/matrix/registration";

const config = () =>
  validateConfig({
    homeserver: { url: "http://hs:8008", domain: "hs.example" },
    appservice: { port: 1234 },
    database: { path: "/tmp/x.db" },
    network: {
      gateway_url: "ws://gw/v1",
      provider_domain: "m.hs",
      provider_secret: "provider-secret-0123456789",
      home_domain: "wa.example",
      store_key: "store-key-0123456789abcdef",
    },
  });

test("a fresh registration passes; its sender is random and not the bot, the bot is in the exclusive namespace", () => {
  const reg = fillRegistration(new AppServiceRegistration("http://127.0.0.1:1"), config(), "http://127.0.0.1:1");
  assert.deepEqual(checkRegistration(reg, config(), "reg.yaml"), {});
  assert.notEqual(reg.getSenderLocalpart(), "interopbot");
  assert.ok(reg.isUserMatch("@interopbot:hs.example", true));
  assert.ok(!reg.isUserMatch(`@${reg.getSenderLocalpart()}:hs.example`, true) || reg.getSenderLocalpart() !== "interopbot");
});

test("a registration from an earlier version (sender = the bot) keeps working, with one warning saying what to change", () => {
  const reg = fillRegistration(new AppServiceRegistration("http://127.0.0.1:1"), config(), "http://127.0.0.1:1");
  reg.setSenderLocalpart("interopbot");
  const checked = checkRegistration(reg, config(), "reg.yaml");
  assert.equal(checked.error, undefined);
  assert.match(
    checked.warning!,
    /^reg\.yaml: sender_localpart is the bot's own localpart "interopbot" .*set sender_localpart to a random string .* or regenerate the file with -r/,
  );
  assert.ok(!checked.warning!.includes("\n"), "one line");
});

test("placeholder or missing tokens, and a namespace without the bot, are refused with one line", () => {
  const fresh = () => fillRegistration(new AppServiceRegistration("http://127.0.0.1:1"), config(), "http://127.0.0.1:1");
  const template = fresh();
  template.setAppServiceToken("CHANGE-ME-generate-with-r");
  assert.match(
    checkRegistration(template, config(), "registration.yaml").error!,
    /^registration\.yaml: as_token is a placeholder \(the repository's template\); generate it with: matrix-interop-bridge -r /,
  );
  const hs = fresh();
  hs.setHomeserverToken("short");
  assert.match(checkRegistration(hs, config(), "r.yaml").error!, /^r\.yaml: hs_token is a placeholder/);
  const otherBot = config();
  otherBot.appservice.bot.localpart = "otherbot";
  assert.match(
    checkRegistration(fresh(), otherBot, "r.yaml").error!,
    /^r\.yaml: its exclusive user namespace does not contain the bot @otherbot:hs\.example \(appservice\.bot\.localpart\)/,
  );
});
