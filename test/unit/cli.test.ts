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

function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "buffer", input, env: { ...process.env, LOG_LEVEL: "warn" } });
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
  assert.equal(reg.sender_localpart, "interopbot");
  assert.equal(reg.rate_limited, false);
  assert.equal(reg["de.sorunome.msc2409.push_ephemeral"], true);
  assert.match(reg.as_token, /^[0-9a-f]{64}$/);
  assert.match(reg.hs_token, /^[0-9a-f]{64}$/);
  assert.notEqual(reg.as_token, reg.hs_token);
  assert.deepEqual(reg.namespaces.users[0], { exclusive: true, regex: "@whatsapp_[0-9]+:localhost" });
  const again = path.join(dir, "again.yaml");
  run(["-r", "-u", "http://127.0.0.1:29400", "-c", sample, "-f", again]);
  assert.notEqual(YAML.parse(fs.readFileSync(again, "utf8")).as_token, reg.as_token, "tokens are random per registration");
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
