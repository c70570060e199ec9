/**
 * Let no one in, leak nothing: after a whole conversation (bot commands, messages both ways, a
 * restart) no token, provider secret or store key is in any log, even at debug; no message
 * body is in any log at info; the Signal keys in the bridge's database are encrypted; every file
 * the bridge writes is readable by its owner only; the registration claims only the bridge's ids.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { IdentityKeyPair } from "@signalapp/libsignal-client";
import BetterSqlite3 from "better-sqlite3";
import YAML from "yaml";
import { EncryptedRecordStore, deriveStoreKey } from "../../src/protocol/signal.js";
import { PROVIDER_DOMAIN, PROVISIONING_SECRET, Stack } from "../support/stack";

const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;
const stacks: Stack[] = [];

after(async () => {
  // Every stack is stopped even if stopping one fails (a leftover stack would keep this process alive).
  const results = await Promise.allSettled(stacks.map((s) => s.stop()));
  const failure = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failure) throw failure.reason;
});

/** A provisioning call: the secret or a user's access token travels in the Authorization header. */
async function provision(stack: Stack, token: string, path: string, userId?: string): Promise<number> {
  const url = new URL(`${stack.appserviceUrl}/_matrix/provision/v1${path}`);
  if (userId) url.searchParams.set("user_id", userId);
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

/**
 * A conversation touching every path: bot room and commands, the provisioning API with the
 * shared secret and with the user's own access token (and wrong ones), a chat both ways, a
 * restart, more messages. Returns the Matrix users' access tokens.
 */
async function converse(stack: Stack, phone: string, bodies: string[]): Promise<string[]> {
  const alice = await stack.user("alice");
  await stack.sim.createUser(phone, "Sam");
  const botRoom = await stack.botRoom(alice, { enable: true });
  await stack.sim.sendText(phone, uriOf(alice.userId), bodies[0]);
  const invite = await alice.waitForInvite((i) => i.inviter === stack.ghostId(phone));
  await alice.joinRoom(invite.roomId);
  await alice.waitFor((e) => e.room_id === invite.roomId && e.content.body === bodies[0]);
  await alice.sendText(invite.roomId, bodies[1]);
  await stack.sim.waitForInbox(phone, (e) => e.text === bodies[1]);
  await alice.sendText(botRoom, "list");
  await alice.waitFor((e) => e.room_id === botRoom && /Your Third-Party Chats/.test(String(e.content.body)));
  await stack.restartBridge();
  await alice.sendText(invite.roomId, bodies[2]);
  await stack.sim.waitForInbox(phone, (e) => e.text === bodies[2]);
  await stack.sim.sendText(phone, uriOf(alice.userId), bodies[3]);
  await alice.waitFor((e) => e.room_id === invite.roomId && e.content.body === bodies[3]);
  assert.equal(await provision(stack, PROVISIONING_SECRET, "/status", alice.userId), 200);
  assert.equal(await provision(stack, alice.accessToken, "/status"), 200, "the bridge checked the user's token with /whoami");
  assert.equal(await provision(stack, `${PROVISIONING_SECRET}-wrong`, "/status", alice.userId), 401);
  assert.equal(await provision(stack, `${alice.accessToken}x`, "/status"), 401);
  return [alice.accessToken];
}

/** The secrets the bridge holds, in every form they could leak in. */
function secretsOf(stack: Stack, userTokens: string[]): Record<string, string[]> {
  const registration = YAML.parse(fs.readFileSync(stack.registrationPath, "utf8"));
  const key = Buffer.from(deriveStoreKey(stack.secrets.storeKey));
  return {
    as_token: [registration.as_token],
    hs_token: [registration.hs_token],
    "bridge provider secret": [stack.secrets.bridgeProviderSecret],
    "simulator provider secret": [stack.secrets.homeProviderSecret],
    "store key": [stack.secrets.storeKey, key.toString("hex"), key.toString("base64")],
    // A wrong secret or token that merely starts with the real one would leak it too.
    "provisioning shared secret": [PROVISIONING_SECRET],
    "users' access tokens": userTokens,
  };
}

function logsOf(stack: Stack): Record<string, string> {
  return Object.fromEntries(["bridge", "gateway", "sim"].map((name) => [name, fs.readFileSync(path.join(stack.dir, `${name}.log`), "utf8")]));
}

describe("security", () => {
  test("at debug level no log holds a token, a provider secret or the store key; keys are encrypted at rest; files are private", async (t) => {
    const stack = await Stack.start("secdebug", { logLevel: "debug", childLogLevel: "debug" });
    stacks.push(stack);
    const tokens = await converse(stack, "+4915200000101", ["debug one", "debug two", "debug three", "debug four"]);

    const logs = logsOf(stack);
    assert.match(logs.bridge, /"level":"debug"/, "the bridge logged at debug level");
    assert.match(logs.gateway, /"level":"debug"/, "the gateway logged at debug level");
    for (const [what, forms] of Object.entries(secretsOf(stack, tokens))) {
      for (const form of forms) {
        for (const [name, text] of Object.entries(logs)) assert.ok(!text.includes(form), `the ${what} appears in the ${name} log`);
      }
    }
    t.diagnostic(`searched ${Object.values(logs).reduce((n, l) => n + l.length, 0)} bytes of debug logs for ${Object.keys(secretsOf(stack, tokens)).join(", ")}: none found`);

    // Key material: every Signal record decrypts with the store key, and none of the plaintext is in the database files.
    const dbFile = path.join(stack.dir, "bridge.db");
    const db = new BetterSqlite3(dbFile, { readonly: true });
    const rows = db.prepare("SELECT owner, ns, key, value FROM signal_records").all() as Array<{ owner: string; ns: string; key: string; value: Buffer }>;
    db.close();
    const storeKey = deriveStoreKey(stack.secrets.storeKey);
    const secretsAtRest: Array<{ what: string; bytes: Buffer }> = [];
    for (const row of rows) {
      const plain = new EncryptedRecordStore({ get: () => new Uint8Array(row.value), put: () => undefined, delete: () => undefined }, storeKey).get(row.ns, row.key)!;
      if (row.key === "account") {
        const account = JSON.parse(Buffer.from(plain).toString("utf8")) as { identityKeyPair: string };
        const pair = IdentityKeyPair.deserialize(Buffer.from(account.identityKeyPair, "base64"));
        secretsAtRest.push({ what: `identity private key of ${row.owner}`, bytes: Buffer.from(pair.privateKey.serialize()) });
      } else if (plain.length >= 32) {
        secretsAtRest.push({ what: `${row.ns}/${row.key}`, bytes: Buffer.from(plain.subarray(0, 32)) });
      }
    }
    assert.ok(
      secretsAtRest.some((s) => s.what.startsWith("identity private key")),
      "the database holds the users' identities",
    );
    assert.ok(
      secretsAtRest.some((s) => s.what.includes("session/")),
      "and sessions",
    );
    const files = ["bridge.db", "bridge.db-wal"].map((f) => path.join(stack.dir, f)).filter((f) => fs.existsSync(f));
    const raw = Buffer.concat(files.map((f) => fs.readFileSync(f)));
    for (const s of secretsAtRest) assert.equal(raw.indexOf(s.bytes), -1, `${s.what} is in the database files in plaintext`);
    assert.equal(raw.indexOf(Buffer.from(storeKey)), -1, "the store key is not in the database");
    t.diagnostic(`${rows.length} Signal records, ${secretsAtRest.length} key/session plaintexts: none found in ${raw.length} bytes of database files`);

    // Every file the bridge wrote, and the registration (both tokens), are owner-only.
    const bridgeFiles = fs.readdirSync(stack.dir).filter((f) => f.startsWith("bridge.db"));
    assert.ok(bridgeFiles.includes("bridge.db"));
    for (const f of [...bridgeFiles, "registration.yaml"]) {
      const mode = fs.statSync(path.join(stack.dir, f)).mode & 0o777;
      assert.equal(mode & 0o077, 0, `${f} is mode ${mode.toString(8)}, readable by others`);
    }
    t.diagnostic(`file modes: ${[...bridgeFiles, "registration.yaml"].map((f) => `${f} ${(fs.statSync(path.join(stack.dir, f)).mode & 0o777).toString(8)}`).join(", ")}`);

    // Only the bridge's own namespace: the registration claims the ghosts and the bot, nothing else.
    const registration = YAML.parse(fs.readFileSync(stack.registrationPath, "utf8"));
    const claims = (registration.namespaces.users as Array<{ regex: string; exclusive: boolean }>).map((n) => new RegExp(n.regex));
    const claimed = (id: string) => claims.some((re) => re.test(id));
    assert.deepEqual(registration.namespaces.aliases ?? [], []);
    assert.deepEqual(registration.namespaces.rooms ?? [], []);
    for (const id of [stack.ghostId("+4915200000101"), stack.botId]) assert.ok(claimed(id), `${id} is claimed`);
    for (const id of [
      "@alice_secdebug:localhost",
      "@whatsapp_12a:localhost",
      "@whatsapp_1:localhost.evil.example",
      "@xwhatsapp_1:localhost",
      "@interopbot2:localhost",
      "@whatsapp_:localhost",
    ]) {
      assert.ok(!claimed(id), `${id} is not claimed`);
    }
  });

  test("at info level no log holds a message body (nor any secret)", async () => {
    const stack = await Stack.start("secinfo", { logLevel: "info", childLogLevel: "info" });
    stacks.push(stack);
    const bodies = ["aubergine 7781 from WhatsApp", "butterscotch 2214 from Matrix", "cardamom 9906 from Matrix", "dandelion 3345 from WhatsApp"];
    const tokens = await converse(stack, "+4915200000102", bodies);
    const logs = logsOf(stack);
    for (const body of bodies) {
      for (const [name, text] of Object.entries(logs)) {
        assert.ok(!text.includes(body) && !text.includes(body.split(" ")[0]), `"${body}" appears in the ${name} log at info level`);
        assert.ok(!text.includes(createHash("sha256").update(body).digest("hex")), "nor its hash");
      }
    }
    for (const [what, forms] of Object.entries(secretsOf(stack, tokens))) {
      for (const form of forms) for (const [name, text] of Object.entries(logs)) assert.ok(!text.includes(form), `the ${what} appears in the ${name} log`);
    }
  });
});
