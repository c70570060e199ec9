/**
 * The Matrix user is Element: the real client (Element Web v1.12.7, a production build) in
 * headless Chromium, against the whole stack (real Synapse, our gateway, the WhatsApp simulator
 * and the bridge). WhatsApp users are the simulator's, driven through its HTTP API, and what
 * they receive is read from their inboxes. Assertions are on what Element rendered (the DOM),
 * as a person would see it. Screenshots go to test-artifacts/element/ (printed at the start).
 *
 * Each test signs in with a fresh account in a fresh browser context. Without the Element build
 * (../shared/element-web or ELEMENT_WEB_DIR) or Chromium, every test fails, saying what is missing.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import type { Browser } from "playwright-core";
import { artifactsDir, ElementSession, launchChromium, type ElementUser } from "../support/element";
import { ensureElementWeb, serveElementWeb, type ElementServer } from "../support/element-web";
import { registerUser } from "../support/matrix-client";
import { makeClip, makePhoto, makeVoice } from "../support/media-files";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

const TEST_TIMEOUT = 240_000;

let stack: Stack;
let element: ElementServer;
let browser: Browser;
let dir: string;
const files = { photo: "", voice: "", clip: "", report: "" };

function makeFiles(): void {
  files.photo = makePhoto(dir);
  // Loud, quiet, loud: the waveform Element draws has a dip in the middle.
  files.voice = makeVoice(dir, 0.05);
  files.clip = makeClip(dir);
  files.report = path.join(dir, "report.pdf");
  fs.writeFileSync(files.report, "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n");
}

/** Polls `condition` (a DOM count, say) until it holds; fails after `timeoutMs` naming what it waited for. */
async function waitUntil(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

let accounts = 0;
let phones = 0;
const nextPhone = () => `+4915200000${String(++phones).padStart(3, "0")}`;

/**
 * A fresh Matrix account with a password Element can sign in with. With `enable`, it has
 * already talked to the bot and turned Third-Party Chats on (through the API: the bot test does
 * this in Element), so WhatsApp users can reach it.
 */
async function freshAccount(label: string, opts: { enable?: boolean } = {}): Promise<ElementUser> {
  if (setupError) throw setupError;
  const localpart = `el_${label}_${++accounts}`;
  const password = `pw-${localpart}-${process.pid}`;
  const client = await registerUser(stack.hs, localpart, { password });
  if (opts.enable) {
    await client.startSync();
    await stack.botRoom(client, { enable: true });
    await client.stopSync();
  }
  return { userId: client.userId, localpart, password };
}

/**
 * Runs `body` with a fresh Element session signed in as `user`. On failure it saves a
 * screenshot and prints Element's unexpected console errors, then fails as the body did.
 */
async function inElement(t: TestContext, name: string, user: ElementUser, body: (s: ElementSession) => Promise<void>): Promise<void> {
  const session = await ElementSession.open(browser, element.url, name);
  try {
    await session.login(user);
    await body(session);
  } catch (err) {
    const shot = await session.screenshot("failure").catch(() => "(no screenshot)");
    t.diagnostic(`Element at the failure: ${shot}`);
    for (const line of session.console.slice(-20)) t.diagnostic(line);
    throw err;
  } finally {
    await session.close();
  }
}

/** A WhatsApp user who writes first to `user`; Element shows the invite, which is accepted. */
async function chatFromWhatsApp(
  s: ElementSession,
  user: ElementUser,
  name: string,
  greeting: string,
): Promise<{ phone: string; uri: string; greetingId: string; roomName: string }> {
  const phone = nextPhone();
  await stack.sim.createUser(phone, name);
  const uri = `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`;
  const sent = await stack.sim.sendText(phone, uri, greeting);
  const roomName = `${name} (WhatsApp)`;
  await s.acceptInvite(roomName);
  return { phone, uri, greetingId: sent.id, roomName };
}

/** Why the set-up failed (no Element build, no Chromium…): every test then fails with it, rather than being cancelled unnamed. */
let setupError: Error | undefined;

before(async () => {
  try {
    // What the browser tests need beyond the stack comes first, so a missing build fails at once.
    const webapp = ensureElementWeb();
    browser = await launchChromium();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-element-files-"));
    makeFiles();
    stack = await Stack.start("element");
    element = await serveElementWeb({ homeserverUrl: stack.hs.url, serverName: stack.hs.serverName, webapp });
    console.log(`Element ${element.url} (pointed at ${stack.hs.url}); screenshots in ${artifactsDir()}`);
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

describe("Element in a browser, chatting with WhatsApp users through the bridge", () => {
  test("a fresh account signs in, accepts a WhatsApp user's invite and sees the greeting formatted", { timeout: TEST_TIMEOUT }, async (t) => {
    const user = await freshAccount("greeting", { enable: true });
    await inElement(t, "greeting", user, async (s) => {
      // Signed in: the room list shows, with the DM the account opened with the bot, under the
      // bot's display name (appservice.bot.displayname), not its bare user id.
      await s
        .roomTile(/Third-Party Chats/)
        .first()
        .waitFor();
      const chat = await chatFromWhatsApp(s, user, "Anna Schmidt", "Hi, this is **Anna** on _WhatsApp_ and *this* is italic");
      const body = s.tile("Hi, this is").locator(".mx_EventTile_body");
      await body.waitFor();
      assert.equal(await body.innerText(), "Hi, this is Anna on WhatsApp and this is italic", "no asterisks or underscores left");
      assert.equal(await body.locator("strong").innerText(), "Anna", "bold is rendered bold");
      assert.deepEqual(await body.locator("em").allInnerTexts(), ["WhatsApp", "this"], "both italic forms are rendered italic");
      await assert.doesNotReject(s.page.locator(".mx_RoomHeader").getByText(chat.roomName).waitFor(), "the room is named after the WhatsApp user");
      t.diagnostic(`composer: "${await s.composer().getAttribute("aria-label")}"; m.room.encryption: ${await s.roomIsEncrypted(chat.roomName)}`);
      t.diagnostic(`screenshot: ${await s.screenshot("formatted-greeting")}`);
    });
  });

  test("an image with its thumbnail and caption, a voice message with its waveform and duration, a video and a file show in Element", { timeout: TEST_TIMEOUT }, async (t) => {
    const user = await freshAccount("media", { enable: true });
    await inElement(t, "media", user, async (s) => {
      const chat = await chatFromWhatsApp(s, user, "Media Friend", "Some files for you");
      await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.photo, mimetype: "image/png", caption: "Look **here**" });
      await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.voice, mimetype: "audio/ogg", kind: "voice" });
      await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.clip, mimetype: "video/mp4" });
      await stack.sim.sendMedia(chat.phone, chat.uri, { file: files.report, mimetype: "application/pdf" });

      // The image: its thumbnail has loaded and is drawn, with the caption formatted under it.
      const image = s.page.locator(".mx_EventTile_image").last();
      const img = image.locator("img.mx_MImageBody_thumbnail");
      await img.waitFor({ timeout: 60_000 });
      await s.page.waitForFunction((el) => (el as any).complete && (el as any).naturalWidth > 0, await img.elementHandle(), { timeout: 30_000 });
      const drawn = await img.boundingBox();
      assert.ok(drawn && drawn.width > 100 && drawn.height > 75, `the thumbnail is drawn (${JSON.stringify(drawn)})`);
      const natural = await img.evaluate((el) => [(el as any).naturalWidth, (el as any).naturalHeight]);
      assert.equal(natural[0] * 3, natural[1] * 4, `the thumbnail keeps the 4:3 picture's shape (${natural.join("×")})`);
      const caption = image.locator(".mx_EventTile_caption .mx_EventTile_body");
      assert.equal(await caption.innerText(), "Look here");
      assert.equal(await caption.locator("strong").innerText(), "here");

      // The voice message: Element's voice player with its waveform and the 3 s duration. Element
      // computes both from the audio when an event lacks them, so the event Element received is
      // checked too: the waveform and duration it draws from are the bridge's.
      const voice = s.page.locator(".mx_MVoiceMessageBody").last();
      await voice.waitFor({ timeout: 60_000 });
      const voiceEvent = (await s.timeline(chat.roomName)).find((e) => e.content.msgtype === "m.audio" && "org.matrix.msc3245.voice" in e.content);
      assert.ok(voiceEvent, "Element received the voice message as an MSC3245 voice message");
      const audio = voiceEvent.content["org.matrix.msc1767.audio"] ?? {};
      assert.ok(Array.isArray(audio.waveform) && audio.waveform.length >= 10, `the event carries a waveform (${JSON.stringify(audio.waveform)})`);
      assert.ok(Math.abs(audio.duration - 3000) <= 100, `the event carries the duration (${audio.duration} ms)`);
      assert.equal(await voice.locator("time").getAttribute("datetime"), "PT3S");
      assert.equal(await voice.locator("time").innerText(), "00:03");
      // Element draws a placeholder first and its waveform once the audio is decoded: wait for the shape.
      let bars: number[] = [];
      const dipInTheMiddle = () => bars.length >= 10 && bars[Math.floor(bars.length / 2)] < Math.max(...bars) / 3 && bars[1] > Math.max(...bars) / 2;
      await waitUntil(
        async () => {
          bars = await voice.locator(".mx_Waveform_bar").evaluateAll((els) => els.map((el) => (el as any).getBoundingClientRect().height));
          return dipInTheMiddle();
        },
        30_000,
        "a waveform, loud at the start, with the quiet middle second as a dip",
      ).catch((err: Error) => assert.fail(`${err.message} (bars ${bars.map((h) => h.toFixed(0)).join(",")})`));

      // The video: Element's player, with the bridge's thumbnail as its poster.
      const video = s.page.locator("video.mx_MVideoBody").last();
      await video.waitFor({ timeout: 60_000 });
      assert.equal(await video.getAttribute("title"), "clip.mp4");
      const videoEvent = (await s.timeline(chat.roomName)).find((e) => e.content.msgtype === "m.video");
      const thumbnail = String(videoEvent?.content.info?.thumbnail_url ?? "");
      assert.match(thumbnail, /^mxc:\/\//, "the bridge gave the video a thumbnail");
      const mediaId = thumbnail.split("/").pop()!;
      // Element shows a blurhash placeholder (a data: URL) until the thumbnail has loaded: wait, bounded.
      const poster = new RegExp(`/download/[^/]+/${mediaId}(\\?|$)`);
      await s.page
        .waitForFunction(([el, source]) => new RegExp(source).test(String((el as any).getAttribute("poster"))), [await video.elementHandle(), poster.source] as const, {
          timeout: 30_000,
        })
        .catch(async () => assert.fail(`Element shows that thumbnail as the video's poster (poster: ${String(await video.getAttribute("poster")).slice(0, 80)})`));

      // The file: its name and size, to download.
      const file = s.page.locator(".mx_MFileBody_info_filename").last();
      await file.waitFor({ timeout: 60_000 });
      assert.equal(await file.innerText(), `report.pdf (${fs.statSync(files.report).size} B)`);

      await image.scrollIntoViewIfNeeded();
      t.diagnostic(`screenshot: ${await s.screenshot("media")}`);
    });
  });

  test("a reply, a reaction and an edit made in Element reach the WhatsApp user", { timeout: TEST_TIMEOUT }, async (t) => {
    const user = await freshAccount("relations", { enable: true });
    await inElement(t, "relations", user, async (s) => {
      const chat = await chatFromWhatsApp(s, user, "Reply Friend", "What do you think?");
      const greeting = s.tile("What do you think?");
      await greeting.waitFor();

      await s.messageAction(greeting, "Reply");
      await s.send("Sounds **good**");
      const reply = s.tile("Sounds good");
      await reply.locator(".mx_ReplyChain", { hasText: "What do you think?" }).waitFor();
      const replied = await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "text" && e.text === "Sounds **good**");
      t.diagnostic(`WhatsApp inbox: ${JSON.stringify(replied)}`);
      assert.equal(replied.inReplyTo, chat.greetingId, "a reply to the greeting");

      await s.messageAction(greeting, "React");
      await s.page.locator(".mx_EmojiPicker_quick .mx_EmojiPicker_item", { hasText: "🎉" }).click();
      await greeting
        .locator(".mx_ReactionsRow")
        .getByRole("button", { name: /reacted with 🎉/ })
        .waitFor();
      const reaction = await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "reaction");
      t.diagnostic(`WhatsApp inbox: ${JSON.stringify(reaction)}`);
      assert.equal(reaction.emoji, "🎉");
      assert.equal(reaction.target, chat.greetingId, "the reaction is on the greeting");

      await s.messageAction(reply, "Edit");
      const editor = s.page.locator(".mx_EditMessageComposer").getByRole("textbox");
      await editor.press("ControlOrMeta+a");
      await editor.pressSequentially("Sounds great, see you at 8");
      await editor.press("Enter");
      const edited = s.tile("Sounds great, see you at 8");
      await edited.locator(".mx_EventTile_edited").waitFor();
      const edit = await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "edit");
      t.diagnostic(`WhatsApp inbox: ${JSON.stringify(edit)}`);
      assert.equal(edit.text, "Sounds great, see you at 8");
      assert.equal(edit.target, replied.id, "the edit replaces the reply");
      t.diagnostic(`screenshot: ${await s.screenshot("reply-react-edit")}`);
    });
  });

  test('"Start chat" with a ghost\'s id opens a bridged chat: the ghost joins and the two talk', { timeout: TEST_TIMEOUT }, async (t) => {
    const user = await freshAccount("startchat", { enable: true });
    const phone = nextPhone();
    await stack.sim.createUser(phone, "Ben Weber");
    const ghost = stack.ghostId(phone);
    await inElement(t, "startchat", user, async (s) => {
      await s.startChat(ghost);
      // Element creates the room, and invites the ghost, with the first message.
      await s.send("Hallo Ben, from Element");
      const got = await stack.sim.waitForInbox(phone, (e) => e.kind === "text", 60_000);
      t.diagnostic(`WhatsApp inbox: ${JSON.stringify(got)}`);
      assert.equal(got.text, "Hallo Ben, from Element");
      assert.equal(got.fromId, user.userId);
      // The ghost joined under the WhatsApp user's name, and the answer lands in the same room.
      await s.page.locator(".mx_RoomHeader").getByText("Ben Weber (WhatsApp)").waitFor({ timeout: 30_000 });
      await stack.sim.sendText(phone, `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`, "Hallo zurück!");
      await s.tile("Hallo zurück!").waitFor({ timeout: 60_000 });
      assert.equal(await s.roomTile(/Ben Weber/).count(), 1, "one room for the chat");
      // What the bridge does today: ghosts have no devices, so Element made the DM unencrypted.
      const encrypted = await s.roomIsEncrypted("Ben Weber (WhatsApp)");
      t.diagnostic(`Element's "Start chat" DM with the ghost: m.room.encryption ${encrypted ? "present" : "absent"}`);
      assert.equal(encrypted, false, "Element creates an unencrypted DM with a ghost that has no devices");
      t.diagnostic(`screenshot: ${await s.screenshot("start-chat")}`);
    });
  });

  test("talking to the bot in Element: help, enable, and start <phone> opens a chat", { timeout: TEST_TIMEOUT }, async (t) => {
    const user = await freshAccount("bot");
    const phone = nextPhone();
    await stack.sim.createUser(phone, "Clara Vogel");
    await inElement(t, "bot", user, async (s) => {
      await s.startChat(stack.botId);
      // The first message creates the room and invites the bot, who joins and welcomes the user.
      await s.send("Hello bot");
      const commandLists = s.page.locator(".mx_RoomView_body .mx_EventTile_body", { hasText: "Commands:" });
      await commandLists.first().waitFor({ timeout: 60_000 });
      const before = await commandLists.count();
      await s.send("help");
      await waitUntil(async () => (await commandLists.count()) > before, 60_000, "the bot's answer to help");
      const help = commandLists.last();
      assert.ok((await help.locator("code").allInnerTexts()).includes("start <phone>"), "commands are shown as code, not backticks");

      await s.send("enable");
      const enabled = s.tile(/Third-Party Chats are on/);
      await enabled.waitFor({ timeout: 60_000 });
      assert.equal(await enabled.locator("strong").first().innerText(), "on");

      await s.send(`start ${phone}`);
      const started = s.tile(/Started a chat with Clara Vogel/);
      await started.waitFor({ timeout: 60_000 });
      t.diagnostic(`bot: ${await started.locator(".mx_EventTile_body").innerText()}`);
      t.diagnostic(`screenshot: ${await s.screenshot("bot")}`);

      await s.acceptInvite("Clara Vogel (WhatsApp)");
      await s.send("Hi Clara");
      const got = await stack.sim.waitForInbox(phone, (e) => e.kind === "text", 60_000);
      assert.equal(got.text, "Hi Clara");
      t.diagnostic(`screenshot: ${await s.screenshot("started-chat")}`);
    });
  });
});
