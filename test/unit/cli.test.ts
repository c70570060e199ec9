/** The command line as an admin meets it: registration, config errors, the MIMI codec. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import YAML from "yaml";

const root = path.resolve(__dirname, "../../..");
const cli = path.join(root, "dist", "src", "cli.js");
const sample = path.join(root, "config", "config.sample.yaml");
const vectors = process.env.MIMI_VECTORS_DIR ?? path.resolve(root, "../shared/vectors/mimi");

/** Real secrets through the environment overrides: the sample's own placeholders are refused. */
const SECRETS_ENV = { BRIDGE_PROVIDER_SECRET: "provider-secret-0123456789", BRIDGE_STORE_KEY: "store-key-0123456789abcdef" };

function run(args: string[], input?: string, env: Record<string, string | undefined> = SECRETS_ENV) {
  const merged: Record<string, string | undefined> = {
    ...process.env,
    LOG_LEVEL: "warn",
    BRIDGE_PROVIDER_SECRET: undefined,
    BRIDGE_STORE_KEY: undefined,
    BRIDGE_PROVISIONING_SECRET: undefined,
    ...env,
  };
  for (const k of Object.keys(merged)) if (merged[k] === undefined) delete merged[k];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "buffer", input, env: merged as NodeJS.ProcessEnv });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

test("-r writes a registration with random tokens, the exclusive ghost namespace and ephemeral events", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-cli-"));
  const file = path.join(dir, "registration.yaml");
  const r = run(["-r", "-u", "http://127.0.0.1:29400", "-c", sample, "-f", file]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout.toString(), /Writing the appservice registration to/);
  const reg = YAML.parse(fs.readFileSync(file, "utf8"));
  assert.equal(reg.url, "http://127.0.0.1:29400");
  // A random sender nobody sees; the bot is an ordinary user of the namespace (Synapse keeps no profile for the sender).
  assert.match(reg.sender_localpart, /^interop-as-[0-9a-f]{24}$/);
  assert.ok(
    reg.namespaces.users.some((n: { exclusive: boolean; regex: string }) => n.exclusive && n.regex === "^@interopbot:localhost$"),
    "the bot is in the exclusive namespace",
  );
  assert.equal(reg.rate_limited, false);
  assert.equal(reg["de.sorunome.msc2409.push_ephemeral"], true);
  assert.match(reg.as_token, /^[0-9a-f]{64}$/);
  assert.match(reg.hs_token, /^[0-9a-f]{64}$/);
  assert.notEqual(reg.as_token, reg.hs_token);
  assert.deepEqual(reg.namespaces.users[0], { exclusive: true, regex: "^@whatsapp_[0-9]+:localhost$" });
  assert.equal(fs.statSync(file).mode & 0o777, 0o600, "the tokens are readable by the owner only");
  const again = path.join(dir, "again.yaml");
  run(["-r", "-u", "http://127.0.0.1:29400", "-c", sample, "-f", again]);
  assert.notEqual(YAML.parse(fs.readFileSync(again, "utf8")).as_token, reg.as_token, "tokens are random per registration");
  assert.notEqual(YAML.parse(fs.readFileSync(again, "utf8")).sender_localpart, reg.sender_localpart, "so is the sender");
});

test("a bad config stops the bridge with one line naming the field, exit code 1, no stack trace", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-cli-"));
  const config = YAML.parse(fs.readFileSync(sample, "utf8"));
  config.appservice.port = "eighty";
  fs.writeFileSync(path.join(dir, "bad.yaml"), YAML.stringify(config));
  const r = run(["-c", path.join(dir, "bad.yaml"), "-f", path.join(dir, "registration.yaml")]);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, "matrix-interop-bridge: config error: appservice.port: must be integer\n");
  const missing = run(["-c", path.join(dir, "nope.yaml"), "-f", path.join(dir, "registration.yaml")]);
  assert.equal(missing.status, 1);
  assert.equal(missing.stderr.trim().split("\n").length, 1);
  assert.doesNotMatch(missing.stderr, /\n\s+at /, "no stack trace");
});

test("the sample config's placeholder secrets are refused with one line naming the field and its environment variable, exit 1", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-cli-"));
  const reg = path.join(dir, "registration.yaml");
  const asIs = run(["-c", sample, "-f", reg], undefined, {});
  assert.equal(asIs.status, 1);
  assert.match(
    asIs.stderr,
    /^matrix-interop-bridge: config error: network\.provider_secret \(or environment variable BRIDGE_PROVIDER_SECRET\): is a placeholder from the sample config: set .*\n$/,
  );
  assert.equal(asIs.stderr.split("\n").length, 2, "one line");
  // -r refuses it too: a registration is made for a config that can run.
  assert.equal(run(["-r", "-u", "http://127.0.0.1:29400", "-c", sample, "-f", reg], undefined, {}).status, 1);
  assert.equal(fs.existsSync(reg), false);
  const storeKey = run(["-c", sample, "-f", reg], undefined, { BRIDGE_PROVIDER_SECRET: SECRETS_ENV.BRIDGE_PROVIDER_SECRET });
  assert.match(storeKey.stderr, /^matrix-interop-bridge: config error: network\.store_key \(or environment variable BRIDGE_STORE_KEY\): is a placeholder/);
  const short = run(["-c", sample, "-f", reg], undefined, { ...SECRETS_ENV, BRIDGE_STORE_KEY: "only-15-chars.." });
  assert.match(short.stderr, /^matrix-interop-bridge: config error: network\.store_key \(or environment variable BRIDGE_STORE_KEY\): is shorter than 16 characters/);
  assert.equal(short.status, 1);
  const provisioning = YAML.parse(fs.readFileSync(sample, "utf8"));
  provisioning.provisioning.shared_secret = "change-me-to-a-long-random-string";
  fs.writeFileSync(path.join(dir, "p.yaml"), YAML.stringify(provisioning));
  const p = run(["-c", path.join(dir, "p.yaml"), "-f", reg]);
  assert.match(p.stderr, /^matrix-interop-bridge: config error: provisioning\.shared_secret \(or environment variable BRIDGE_PROVISIONING_SECRET\): is a placeholder/);
  assert.equal(p.status, 1);
  assert.doesNotMatch(asIs.stderr + storeKey.stderr + short.stderr + p.stderr, /\n\s+at /, "no stack trace");
});

test("the repository's registration.yaml template is refused until -r overwrites it with real tokens", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-cli-"));
  const reg = path.join(dir, "registration.yaml");
  fs.copyFileSync(path.join(root, "registration.yaml"), reg);
  const template = YAML.parse(fs.readFileSync(reg, "utf8"));
  const refused = run(["-c", sample, "-f", reg]);
  assert.equal(refused.status, 1);
  assert.match(
    refused.stderr,
    /^matrix-interop-bridge: .*registration\.yaml: as_token is a placeholder \(the repository's template\); generate it with: matrix-interop-bridge -r .*\n$/,
  );
  assert.equal(refused.stderr.split("\n").length, 2, "one line");
  assert.equal(run(["-r", "-u", "http://127.0.0.1:29400", "-c", sample, "-f", reg]).status, 0);
  const written = YAML.parse(fs.readFileSync(reg, "utf8"));
  assert.match(written.as_token, /^[0-9a-f]{64}$/);
  assert.notEqual(written.as_token, template.as_token);
  assert.notEqual(written.sender_localpart, template.sender_localpart);
});

test("a missing registration file is explained", () => {
  const r = run(["-c", sample, "-f", path.join(os.tmpdir(), "does-not-exist-registration.yaml")]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no such file \(generate a registration with -r\)/);
});

test("`mimi decode` then `mimi encode` gives back every published example byte for byte", () => {
  const files = fs.readdirSync(vectors).filter((f) => f.endsWith(".cbor"));
  assert.ok(files.length >= 10, `found the examples in ${vectors}`);
  for (const file of files) {
    const original = fs.readFileSync(path.join(vectors, file));
    const decoded = run(["mimi", "decode", path.join(vectors, file)]);
    assert.equal(decoded.status, 0, decoded.stderr);
    const json = JSON.parse(decoded.stdout.toString());
    const edn = fs.readFileSync(path.join(vectors, file.replace(/\.cbor$/, ".edn")), "utf8");
    const idHex = /message ID = h'([0-9a-f]+)\s*#?\s*\n#\s+([0-9a-f]+)'/.exec(edn);
    assert.ok(idHex, `${file}: id in the .edn header`);
    assert.equal(json.messageId, idHex[1] + idHex[2], `${file}: message id`);
    const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-mimi-")), "m.json");
    fs.writeFileSync(tmp, decoded.stdout);
    const encoded = run(["mimi", "encode", tmp]);
    assert.equal(encoded.status, 0, encoded.stderr);
    assert.ok(Buffer.compare(encoded.stdout, original) === 0, `${file}: identical bytes`);
  }
});

test("`mimi decode` refuses a file that is not MIMI with one line", () => {
  const tmp = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-mimi-")), "junk.cbor");
  fs.writeFileSync(tmp, Buffer.from([0x83, 0x01, 0x02]));
  const r = run(["mimi", "decode", tmp]);
  assert.equal(r.status, 1);
  assert.equal(r.stderr.trim().split("\n").length, 1);
});
