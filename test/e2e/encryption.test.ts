/**
 * A ghost with its own end-to-end encrypting device (src/crypto) and a Matrix user on a real,
 * independent E2EE client (matrix-nio with libolm) talk in a room that Synapse encrypts by
 * default. Both directions decrypt, the user's client sees the ghost's device cross-signed by
 * its owner, the ghost's process is SIGKILLed and restarted and both directions still decrypt,
 * and the homeserver's database holds none of the texts.
 */
import assert from "node:assert/strict";
import { ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { after, before, describe, it } from "node:test";
import { stringify } from "yaml";
import { MISSING } from "../../src/crypto/homeserver-check";
import { ENCRYPTION_REGISTRATION_KEYS } from "../../src/matrix/registration";
import { freePort, repoRoot, startTestHomeserver, type TestHomeserver } from "../support/homeserver";
import { registerUser, type TestClient } from "../support/matrix-client";
import { NioPeer } from "../support/nio";

describe("encrypted rooms: a ghost's own device and a real E2EE client", { timeout: 8 * 60_000 }, () => {
  let hs: TestHomeserver;
  let alice: TestClient;
  let nio: NioPeer;
  let ghostProc: ChildProcess | undefined;
  let tmp: string;
  let controlUrl: string;
  let asConfig: Record<string, unknown>;
  let roomId: string;
  let ghost: string;
  let ghostDevice: string;
  const texts: string[] = [];

  /** Starts the ghost's appservice process; resolves with its device id once it is up. */
  function startGhost(): Promise<string> {
    const proc = spawn(process.execPath, [path.join(repoRoot(), "dist/test/support/crypto-appservice.js"), JSON.stringify(asConfig)], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn" },
    });
    ghostProc = proc;
    let stderr = "";
    proc.stderr!.on("data", (d) => (stderr += d));
    return new Promise((resolve, reject) => {
      readline.createInterface({ input: proc.stdout! }).on("line", (l) => {
        const m = /^READY (\S+)$/.exec(l);
        if (m) resolve(m[1]);
      });
      proc.once("exit", (code) => reject(new Error(`ghost appservice exited (${code}): ${stderr.slice(-3000)}`)));
    });
  }

  async function control<T = Record<string, any>>(method: string, p: string, body?: unknown): Promise<T> {
    const response = await fetch(`${controlUrl}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
    const parsed = (await response.json()) as T & { error?: string };
    if (!response.ok) throw new Error(`${p}: ${parsed.error}`);
    return parsed;
  }

  /** Waits (the ghost's process answers once it happened) until the ghost has decrypted `text`. */
  async function ghostReceives(text: string): Promise<{ sender: string }> {
    const { messages, failures } = await control<{ messages: { text: string; sender: string }[]; failures: string[] }>("GET", `/control/received?text=${encodeURIComponent(text)}`);
    assert.deepEqual(failures, [], "nothing failed to decrypt on the ghost's side");
    const found = messages.find((m) => m.text === text);
    assert.ok(found, `the ghost decrypted ${JSON.stringify(text)}`);
    return found;
  }

  before(async () => {
    tmp = fs.mkdtempSync(path.join(tmpdir(), "e2e-crypto-"));
    const port = await freePort();
    const hsToken = randomBytes(16).toString("hex");
    const asToken = randomBytes(16).toString("hex");
    const registrationPath = path.join(tmp, "registration.yaml");
    fs.writeFileSync(
      registrationPath,
      stringify({
        id: "cryptotest",
        url: `http://127.0.0.1:${port}`,
        as_token: asToken,
        hs_token: hsToken,
        sender_localpart: `cryptobot_${randomBytes(3).toString("hex")}`,
        rate_limited: false,
        "de.sorunome.msc2409.push_ephemeral": true,
        ...ENCRYPTION_REGISTRATION_KEYS,
        namespaces: { users: [{ exclusive: true, regex: "@cryptoghost_.*" }], aliases: [], rooms: [] },
      }),
    );
    hs = await startTestHomeserver({ registrationPath, name: `crypto${process.pid}`, purge: true, encryptByDefault: "all" });
    ghost = `@cryptoghost_4915100000001:${hs.serverName}`;
    controlUrl = `http://127.0.0.1:${port}`;
    asConfig = {
      hs: hs.url,
      asToken,
      hsToken,
      port,
      storeFile: path.join(tmp, "crypto.db"),
      storeKey: "e2e test store key, 32+ characters",
      ghost,
      bot: `@cryptoghost_bot:${hs.serverName}`,
    };
    alice = await registerUser(hs, "alice");
    nio = NioPeer.start(hs, alice, tmp);
    ghostDevice = await startGhost();
  });

  after(async () => {
    ghostProc?.kill("SIGKILL");
    nio?.stop();
    await hs?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it("the start-up check finds everything encryption needs on this homeserver", async () => {
    assert.deepEqual(await control("GET", "/control/check"), { ok: true, missing: [], summary: "" });
  });

  it("the start-up check says in one line what a homeserver does not deliver (transactions without the extensions)", async () => {
    const answer = await control<{ ok: boolean; missing: string[]; summary: string }>("GET", "/control/check?drop=1");
    assert.equal(answer.ok, false);
    assert.deepEqual(answer.missing, [MISSING.toDevice, MISSING.keyCounts]);
    assert.match(
      answer.summary,
      /^encryption: the homeserver does not provide to-device events in transactions .*msc2409_to_device_messages_enabled.*one-time-key counts.*msc3202_transaction_extensions/,
    );
    assert.doesNotMatch(answer.summary, /\n/);
  });

  it("the user's client decrypts the ghost's message, and the ghost decrypts the user's, in a room encrypted by default", async () => {
    const created = await nio.ask<{ room_id: string; encrypted: boolean }>({ cmd: "create_room", invite: ghost });
    roomId = created.room_id;
    assert.equal(created.encrypted, true, "Synapse made the new room encrypted");
    await nio.ask({ cmd: "wait_joined", room: roomId, user: ghost });

    const fromUser = `nio says hello ${randomBytes(4).toString("hex")}`;
    texts.push(fromUser);
    await nio.ask({ cmd: "send", room: roomId, text: fromUser });
    const got = await ghostReceives(fromUser);
    assert.equal(got.sender, alice.userId);

    const fromGhost = `the ghost answers ${randomBytes(4).toString("hex")}`;
    texts.push(fromGhost);
    await control("POST", "/control/send", { room: roomId, text: fromGhost });
    const seen = await nio.ask<{ sender: string; decrypted: boolean; sender_key: string }>({ cmd: "wait_message", room: roomId, text: fromGhost });
    assert.equal(seen.sender, ghost);
    assert.equal(seen.decrypted, true, "it arrived encrypted and nio decrypted it");

    const keys = await nio.ask<{ devices: Record<string, { cross_signed: boolean; curve25519: string }>; ssk_signed_by_master: boolean }>({ cmd: "cross_signing", user: ghost });
    assert.deepEqual(Object.keys(keys.devices), [ghostDevice], "the ghost has exactly one device, the bridge's");
    assert.equal(keys.ssk_signed_by_master, true, "the ghost's self-signing key is signed by its master key");
    assert.equal(keys.devices[ghostDevice].cross_signed, true, "the ghost's device is signed by its owner's self-signing key");
    assert.equal(seen.sender_key, keys.devices[ghostDevice].curve25519, "the message came from that device");
    assert.deepEqual(await control("GET", "/control/cross-signed"), { crossSigned: true }, "the ghost's own machine agrees");
  });

  it("after a SIGKILL of the ghost's process and a restart, both directions still decrypt on the same device", async () => {
    assert.ok(roomId, "needs the room of the first test");
    const exited = new Promise((r) => ghostProc!.once("exit", r));
    ghostProc!.kill("SIGKILL");
    await exited;
    const deviceAfter = await startGhost();
    assert.equal(deviceAfter, ghostDevice, "the same device, no new one");

    const fromUser = `nio after the crash ${randomBytes(4).toString("hex")}`;
    texts.push(fromUser);
    await nio.ask({ cmd: "send", room: roomId, text: fromUser });
    await ghostReceives(fromUser);

    const fromGhost = `the ghost after the crash ${randomBytes(4).toString("hex")}`;
    texts.push(fromGhost);
    await control("POST", "/control/send", { room: roomId, text: fromGhost });
    const seen = await nio.ask<{ decrypted: boolean }>({ cmd: "wait_message", room: roomId, text: fromGhost });
    assert.equal(seen.decrypted, true);
    assert.deepEqual(await nio.ask({ cmd: "undecryptable" }), { count: 0 }, "the user's client saw no undecryptable event");
    const keys = await nio.ask<{ devices: Record<string, unknown> }>({ cmd: "cross_signing", user: ghost });
    assert.deepEqual(Object.keys(keys.devices), [ghostDevice], "still one device");
  });

  it("forgetting a user deletes its crypto state here and its device on the homeserver", async () => {
    const bot = asConfig.bot as string;
    const devices = async () =>
      (await (await fetch(`${hs.url}/_matrix/client/v3/devices?user_id=${encodeURIComponent(bot)}`, { headers: { authorization: `Bearer ${asConfig.asToken}` } })).json()) as {
        devices: { device_id: string }[];
      };
    assert.equal((await devices()).devices.length, 1, "the bot has its device (from the start-up check)");
    assert.deepEqual(await control("POST", "/control/forget", { user: bot }), { deviceInStore: null, databasesInStore: 0 });
    assert.deepEqual((await devices()).devices, [], "its device is gone from the homeserver");
  });

  it("the homeserver's database holds none of the texts", { skip: process.env.MATRIX_HOMESERVER_URL ? "uses an existing homeserver" : false }, async () => {
    assert.ok(texts.length > 0);
    assert.ok(hs.dataDir, "the instance directory is known");
    const files = fs.readdirSync(hs.dataDir!).filter((f) => f.startsWith("homeserver.db"));
    assert.ok(files.includes("homeserver.db"));
    const bytes = Buffer.concat(files.map((f) => fs.readFileSync(path.join(hs.dataDir!, f))));
    const hits = texts.filter((t) => bytes.includes(Buffer.from(t, "utf8")));
    assert.deepEqual(hits, [], "no plaintext in homeserver.db*");
    assert.equal(texts.length, 4, "all four texts were exchanged and searched for");
    // The search can find things: the room id is stored in the clear.
    assert.ok(bytes.includes(Buffer.from(roomId, "utf8")));
  });
});
