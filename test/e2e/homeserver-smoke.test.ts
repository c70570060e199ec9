/**
 * The test homeserver itself works: Synapse starts with an appservice registration loaded,
 * two real users talk through it, and media round-trips. If this fails, every other e2e
 * test would fail for reasons that have nothing to do with the bridge.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { stringify } from "yaml";
import { freePort, startTestHomeserver, type TestHomeserver } from "../support/homeserver";
import { registerUser, type TestClient } from "../support/matrix-client";

describe("test homeserver", { timeout: 5 * 60_000 }, () => {
  let hs: TestHomeserver;
  let alice: TestClient;
  let bob: TestClient;
  let roomId: string;
  let tmp: string;
  const asToken = randomBytes(16).toString("hex");

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), "hs-smoke-"));
    const registrationPath = path.join(tmp, "registration.yaml");
    // Nothing listens on this port: Synapse's transaction pushes fail and are retried, harmlessly.
    const unusedPort = await freePort();
    writeFileSync(
      registrationPath,
      stringify({
        id: "smoketest",
        url: `http://127.0.0.1:${unusedPort}`,
        as_token: asToken,
        hs_token: randomBytes(16).toString("hex"),
        sender_localpart: "smoketest_bot",
        rate_limited: false,
        namespaces: { users: [{ exclusive: true, regex: "@smoketest_.*" }], aliases: [], rooms: [] },
      }),
    );
    const started = Date.now();
    hs = await startTestHomeserver({ registrationPath, name: "smoke" });
    console.log(`homeserver ${hs.url} (${hs.serverName}) ready in ${Date.now() - started} ms${hs.managed ? "" : " (existing)"}`);
  });

  after(async () => {
    await alice?.stopSync();
    await bob?.stopSync();
    await hs?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("loaded the appservice registration", { skip: process.env.MATRIX_HOMESERVER_URL ? "uses an existing homeserver" : false }, async () => {
    const response = await fetch(`${hs.url}/_matrix/client/v3/account/whoami`, { headers: { authorization: `Bearer ${asToken}` } });
    assert.equal(response.status, 200, await response.clone().text());
    assert.equal(((await response.json()) as { user_id: string }).user_id, `@smoketest_bot:${hs.serverName}`);
  });

  it("registers users, and logs in when they already exist", async () => {
    alice = await registerUser(hs, "alice", { admin: true });
    bob = await registerUser(hs, "bob");
    assert.equal(alice.userId, `@alice:${hs.serverName}`);
    assert.equal(bob.userId, `@bob:${hs.serverName}`);
    const again = await registerUser(hs, "bob");
    assert.equal(again.userId, bob.userId);
    assert.notEqual(again.accessToken, bob.accessToken);
  });

  it("delivers an invite and a message between two users", async () => {
    await alice.startSync();
    await bob.startSync();
    roomId = await alice.createRoom({ preset: "private_chat", name: "smoke", invite: [bob.userId], is_direct: true });
    const invite = await bob.waitForInvite((i) => i.roomId === roomId, { description: "alice's invite" });
    assert.equal(invite.inviter, alice.userId);
    assert.equal(invite.isDirect, true);
    assert.equal(await bob.joinRoom(roomId), roomId);

    const eventId = await alice.sendText(roomId, "hello from alice");
    const seen = await bob.waitFor((e) => e.event_id === eventId, { description: "alice's message" });
    assert.equal(seen.room_id, roomId);
    assert.equal(seen.sender, alice.userId);
    assert.equal(seen.content.body, "hello from alice");
    assert.ok(bob.eventsIn(roomId).some((e) => e.event_id === eventId));
    const history = await bob.messages(roomId, { limit: 10 });
    assert.equal(history[0].event_id, eventId, "newest first");
  });

  it("round-trips media through upload and authenticated download", async () => {
    const blob = randomBytes(1024);
    const mxc = await alice.uploadMedia(blob, "application/octet-stream", "blob.bin");
    assert.match(mxc, new RegExp(`^mxc://${hs.serverName.replace(/\./g, "\\.")}/`));
    const downloaded = await bob.downloadMedia(mxc);
    assert.equal(downloaded.data.length, 1024);
    assert.ok(downloaded.data.equals(blob), "downloaded bytes differ from the upload");
  });

  it("reports API errors with method, path, status and errcode", async () => {
    await assert.rejects(bob.getState(roomId, "m.room.topic"), (error: Error) => {
      assert.match(error.message, /^GET \/_matrix\/client\/v3\/rooms\/.+\/state\/m\.room\.topic\/ \(as @bob:.+\) → 404 M_NOT_FOUND/);
      return true;
    });
  });
});
