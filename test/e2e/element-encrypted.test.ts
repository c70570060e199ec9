/**
 * Element in an encrypted bridged chat (issue 14): the real client (Element Web v1.12.7 in
 * headless Chromium) as the Matrix user, on a Synapse that encrypts every new room
 * (encryption_enabled_by_default_for_room_type: all), with the bridge's encryption on. A fresh
 * account receives a WhatsApp user's chat and the test asserts what a person sees: no
 * "encryption isn't enabled" banner, a composer for encrypted messages, no shield on the
 * ghost's messages, the ghost's text, an image and a voice note decrypted and shown, and a
 * message typed in Element reaching the WhatsApp user. The screenshot of the chat is kept as
 * docs/screenshots/element-encrypted-chat.png (docs/encryption.md says what it shows).
 *
 * Without the Element build (../shared/element-web or ELEMENT_WEB_DIR) or Chromium, the test
 * fails, saying what is missing.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser } from "playwright-core";
import { ElementSession, launchChromium, type ElementUser } from "../support/element";
import { ensureElementWeb, serveElementWeb, type ElementServer } from "../support/element-web";
import { repoRoot } from "../support/homeserver";
import { registerUser } from "../support/matrix-client";
import { makePhoto, makeVoice } from "../support/media-files";
import { PROVIDER_DOMAIN, PROVISIONING_SECRET, Stack } from "../support/stack";

const PHONE = "+4915200000901";
const SCREENSHOT = path.join(repoRoot(), "docs", "screenshots", "element-encrypted-chat.png");

let stack: Stack;
let element: ElementServer;
let browser: Browser;
let dir: string;
let setupError: Error | undefined;

before(async () => {
  try {
    const webapp = ensureElementWeb();
    browser = await launchChromium();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-element-e2ee-files-"));
    stack = await Stack.start("element-e2ee", {
      encryptByDefault: "all",
      logLevel: "info",
      bridgeConfig: (c) => {
        c.encryption = { allow: true, default: true };
      },
    });
    element = await serveElementWeb({ homeserverUrl: stack.hs.url, serverName: stack.hs.serverName, webapp });
  } catch (err) {
    setupError = err as Error;
  }
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await element?.stop();
  await stack?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A fresh account with Third-Party Chats turned on through the provisioning API (as an integration would). */
async function freshAccount(localpart: string): Promise<ElementUser> {
  const password = `pw-${localpart}-${process.pid}`;
  const client = await registerUser(stack.hs, localpart, { password });
  const url = new URL(`${stack.appserviceUrl}/_matrix/provision/v1/settings`);
  url.searchParams.set("user_id", client.userId);
  const res = await fetch(url, {
    method: "PUT",
    headers: { authorization: `Bearer ${PROVISIONING_SECRET}`, "content-type": "application/json" },
    body: JSON.stringify({ third_party_chats: true }),
  });
  assert.equal(res.status, 200, await res.text());
  return { userId: client.userId, localpart, password };
}

/** Polls `condition` until it holds; fails after `timeoutMs` naming what it waited for. */
async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

describe("Element in an encrypted bridged chat", () => {
  test("a fresh account sees a WhatsApp user's encrypted chat without banner or shields, media decrypted, and answers", { timeout: 300_000 }, async (t) => {
    if (setupError) throw setupError;
    const user = await freshAccount("el_e2ee");
    const session = await ElementSession.open(browser, element.url, "encrypted");
    try {
      const s = session;
      await s.login(user);
      const phone = PHONE;
      await stack.sim.createUser(phone, "Eva Krause");
      const uri = `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`;
      const greeting = "Hallo from WhatsApp, this chat is encrypted";
      await stack.sim.sendText(phone, uri, greeting);
      const roomName = "Eva Krause (WhatsApp)";
      await s.acceptInvite(roomName);
      await s.dismissPopovers();

      // The room is encrypted as Element holds it, and Element says so: no red banner, and the
      // composer offers an encrypted message.
      assert.equal(await s.roomIsEncrypted(roomName), true, "the portal has m.room.encryption");
      const text = s.tile(greeting);
      await text.waitFor({ timeout: 60_000 });
      assert.equal(await s.page.getByText(/encryption isn't enabled/i).count(), 0, 'no "End-to-end encryption isn\'t enabled" banner');
      assert.equal(await s.page.getByText(/Enable encryption in settings/i).count(), 0, "no link to turn encryption on");
      // Element names the composer before it has read the room's encryption ("Send an unencrypted
      // message…" for a moment); what it settles on is what a person sees.
      let placeholder: string | null = null;
      await waitUntil(async () => (placeholder = await s.composer().getAttribute("aria-label")) === "Send a message…", 15_000, "the composer of an encrypted room").catch(() =>
        assert.fail(`the composer offers an encrypted message (it says "${placeholder}")`),
      );
      t.diagnostic(`composer: "${placeholder}"`);

      // Media from the WhatsApp user: an image and a voice note, decrypted by Element and shown.
      const photo = makePhoto(dir);
      const voice = makeVoice(dir, 0.05);
      await stack.sim.sendMedia(phone, uri, { file: photo, mimetype: "image/png", caption: "The view from here" });
      await stack.sim.sendMedia(phone, uri, { file: voice, mimetype: "audio/ogg", kind: "voice" });
      const img = s.page.locator(".mx_EventTile_image img.mx_MImageBody_thumbnail").last();
      await img.waitFor({ timeout: 60_000 });
      await s.page.waitForFunction((el) => (el as any).complete && (el as any).naturalWidth > 0, await img.elementHandle(), { timeout: 30_000 });
      const drawn = await img.boundingBox();
      assert.ok(drawn && drawn.width > 100 && drawn.height > 75, `the decrypted image is drawn (${JSON.stringify(drawn)})`);
      assert.match(String(await img.getAttribute("src")), /^blob:/, "Element shows it from a blob it decrypted, not a plain media URL");
      const voicePlayer = s.page.locator(".mx_MVoiceMessageBody").last();
      await voicePlayer.waitFor({ timeout: 60_000 });
      assert.equal(await voicePlayer.locator("time").innerText(), "00:03", "the voice message player shows its duration");

      // What Element received: every message of the ghost arrived as m.room.encrypted and decrypted.
      const events = await s.page.evaluate((name) => {
        const client = (globalThis as any).mxMatrixClientPeg.get();
        const room = client.getRooms().find((r: any) => r.name === name);
        return room
          .getLiveTimeline()
          .getEvents()
          .filter((e: any) => e.getWireType() === "m.room.encrypted" || e.getType() === "m.room.message")
          .map((e: any) => ({ sender: e.getSender(), wire: e.getWireType(), type: e.getType(), msgtype: e.getContent().msgtype, failed: e.isDecryptionFailure() }));
      }, roomName);
      const ghostEvents = events.filter((e: { sender: string }) => e.sender === stack.ghostId(phone));
      t.diagnostic(`ghost's events in Element: ${JSON.stringify(ghostEvents)}`);
      assert.ok(ghostEvents.length >= 3, "the greeting, the image and the voice note");
      for (const e of ghostEvents) {
        assert.equal(e.wire, "m.room.encrypted", "sent encrypted");
        assert.equal(e.failed, false, "decrypted");
        assert.equal(e.type, "m.room.message");
      }

      // No shield of any kind on the ghost's messages: Element draws .mx_EventTile_e2eIcon (with
      // _warning, _normal, _decryption_failure…) beside a message it has doubts about.
      const ghostTiles = s.page.locator(".mx_RoomView_body .mx_EventTile").filter({ has: s.page.locator(".mx_EventTile_body, .mx_MImageBody, .mx_MVoiceMessageBody") });
      await waitUntil(async () => (await ghostTiles.count()) >= 3, 30_000, "three message tiles");
      const shields = await s.page
        .locator(".mx_RoomView_body .mx_EventTile_e2eIcon")
        .evaluateAll((els) => els.map((el) => `${el.className} ${el.getAttribute("aria-label") ?? ""}`));
      assert.deepEqual(shields, [], "no shield beside any message");
      assert.equal(await s.page.getByText(/Unable to decrypt|Waiting for this message/i).count(), 0, "nothing undecryptable");

      // Element's own verdict on the ghost's device and identity, as its crypto holds it.
      const trust = await s.page.evaluate(async (ghost) => {
        const crypto = (globalThis as any).mxMatrixClientPeg.get().getCrypto();
        const devices = await crypto.getUserDeviceInfo([ghost]);
        const ids = [...(devices.get(ghost)?.keys() ?? [])];
        const verdicts = await Promise.all(ids.map((id: string) => crypto.getDeviceVerificationStatus(ghost, id)));
        return ids.map((id: string, i: number) => ({ device: id, signedByOwner: verdicts[i]?.signedByOwner, crossSigned: verdicts[i]?.crossSigningVerified }));
      }, stack.ghostId(phone));
      t.diagnostic(`Element's view of the ghost's devices: ${JSON.stringify(trust)}`);
      assert.equal(trust.length, 1, "the ghost has one device");
      assert.equal(trust[0].signedByOwner, true, "signed by its owner's cross-signing identity");

      // A message typed in Element reaches the WhatsApp user.
      await s.send("Hi Eva, I can read all of it");
      const got = await stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "Hi Eva, I can read all of it", 60_000);
      assert.equal(got.fromId, user.userId);
      const mine = s.tile("Hi Eva, I can read all of it");
      await mine.waitFor();

      // "Set up recovery" comes up while the chat loads: dismissed, as a person would, before the picture.
      await s.dismissPopovers();
      await text.scrollIntoViewIfNeeded();
      fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
      await s.page.screenshot({ path: SCREENSHOT });
      t.diagnostic(`screenshot: ${SCREENSHOT}`);
    } catch (err) {
      t.diagnostic(`Element at the failure: ${await session.screenshot("failure").catch(() => "(no screenshot)")}`);
      for (const line of session.console.slice(-20)) t.diagnostic(line);
      throw err;
    } finally {
      await session.close();
    }
  });
});
