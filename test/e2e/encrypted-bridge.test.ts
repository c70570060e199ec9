/**
 * The whole bridge in encrypted rooms: a Synapse that encrypts every new room
 * (encryption_enabled_by_default_for_room_type: all), the bridge with encryption on, the real
 * gateway and a simulated WhatsApp user, and matrix-nio (libolm) as the Matrix user's client.
 * The bot's DM, the portal the ghost creates, text both ways, a reply, an edit, a reaction and a
 * deletion from Matrix, a SIGKILL of the bridge mid-conversation, and the homeserver's database
 * searched for every bridged text.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { registerUser, type TestClient } from "../support/matrix-client";
import { makePhoto } from "../support/media-files";
import { NioPeer } from "../support/nio";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

let stack: Stack;
let alice: TestClient;
let nio: NioPeer;
const PHONE = "+4915100000071";
let ghost: string;
let portal: string;
/** The WhatsApp user's first message, as the network names it. */
let firstId: string;
/** Every text bridged in this file (both directions): none may be in the homeserver's database. */
const texts: string[] = [];

const unique = (label: string): string => {
  const text = `${label} ${randomBytes(4).toString("hex")}`;
  texts.push(text);
  return text;
};
const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const uri = (mxid: string): string => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

/** The spec's EncryptedFile, as the test reads it. */
interface EncryptedFileJson {
  url: string;
  v: string;
  key: { alg: string; k: string };
  iv: string;
  hashes: { sha256: string };
}

interface NioMessage {
  event_id: string;
  sender: string;
  text: string;
  decrypted: boolean;
  sender_key: string;
  content: Record<string, unknown>;
}

/** Waits until nio has the ghost's message with exactly this body; checks it arrived encrypted, from the ghost's cross-signed device. */
async function fromGhost(text: string): Promise<NioMessage> {
  const message = await nio.ask<NioMessage>({ cmd: "wait_body", room: portal, sender: ghost, pattern: `^${escape(text)}$` });
  assert.equal(message.decrypted, true, "it arrived encrypted and nio decrypted it");
  const keys = await nio.ask<{ devices: Record<string, { cross_signed: boolean; curve25519: string }> }>({ cmd: "cross_signing", user: ghost });
  const devices = Object.values(keys.devices);
  assert.equal(devices.length, 1, "the ghost has one device");
  assert.equal(devices[0].cross_signed, true, "signed by its owner's cross-signing identity");
  assert.equal(message.sender_key, devices[0].curve25519, "sent from that device (no 'sender does not match')");
  return message;
}

before(async () => {
  stack = await Stack.start("e2ee", {
    encryptByDefault: "all",
    logLevel: "info",
    bridgeConfig: (c) => {
      c.encryption = { allow: true, default: true };
    },
  });
  alice = await registerUser(stack.hs, "alice_e2ee");
  nio = NioPeer.start(stack.hs, alice, stack.dir);
  ghost = stack.ghostId(PHONE);
});

after(async () => {
  nio?.stop();
  await stack?.stop();
});

describe("the bridge in encrypted rooms", { timeout: 10 * 60_000 }, () => {
  test("the bridge checks the homeserver at start and turns encryption on", () => {
    const log = fs.readFileSync(path.join(stack.dir, "bridge.log"), "utf8");
    assert.match(log, /encryption: on/);
    assert.doesNotMatch(log, /running unencrypted/);
  });

  test("the bot reads and answers in its DM, which Synapse encrypts", async () => {
    const created = await nio.ask<{ room_id: string; encrypted: boolean }>({ cmd: "create_room", invite: stack.botId });
    assert.equal(created.encrypted, true);
    const welcome = await nio.ask<NioMessage>({ cmd: "wait_body", room: created.room_id, sender: stack.botId, pattern: "start <phone>" });
    assert.equal(welcome.decrypted, true, "the welcome was encrypted by the bot's device");
    await nio.ask({ cmd: "send", room: created.room_id, text: "enable" });
    const on = await nio.ask<NioMessage>({ cmd: "wait_body", room: created.room_id, sender: stack.botId, pattern: "Third-Party Chats (are \\*\\*on\\*\\*|were already on)" });
    assert.equal(on.decrypted, true);
  });

  test("the WhatsApp user writes first: the ghost opens an encrypted DM and nio decrypts the message", async () => {
    await stack.sim.createUser(PHONE, "Ana");
    const first = unique("hello from WhatsApp");
    firstId = (await stack.sim.sendText(PHONE, uri(alice.userId), first)).id;
    portal = (await nio.ask<{ room_id: string }>({ cmd: "wait_invite", inviter: ghost })).room_id;
    const joined = await nio.ask<{ encrypted: boolean }>({ cmd: "join", room: portal });
    assert.equal(joined.encrypted, true, "the portal is encrypted (encryption.default)");
    await fromGhost(first);
  });

  test("text, a reply, an edit, a reaction and a deletion from Matrix arrive at the WhatsApp user", async () => {
    assert.ok(portal, "needs the portal of the test before");
    const answer = unique("nio answers");
    await nio.ask({ cmd: "send", room: portal, text: answer });
    const sent = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === answer, 60_000);

    const theirs = await fromGhost(texts[0]);
    const reply = unique("a reply");
    await nio.ask({
      cmd: "send_content",
      room: portal,
      type: "m.room.message",
      content: { msgtype: "m.text", body: reply, "m.relates_to": { "m.in_reply_to": { event_id: theirs.event_id } } },
    });
    const replied = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === reply, 60_000);
    assert.equal(replied.inReplyTo, firstId, "it arrived as a reply to the WhatsApp user's first message");

    const typo = unique("see you tomorow");
    const typoId = (await nio.ask<{ event_id: string }>({ cmd: "send", room: portal, text: typo })).event_id;
    const typoEntry = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === typo, 60_000);
    const fixed = unique("see you tomorrow");
    await nio.ask({
      cmd: "send_content",
      room: portal,
      type: "m.room.message",
      content: { msgtype: "m.text", body: `* ${fixed}`, "m.new_content": { msgtype: "m.text", body: fixed }, "m.relates_to": { rel_type: "m.replace", event_id: typoId } },
    });
    const edit = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "edit" && e.text === fixed, 60_000);
    assert.equal(edit.target, typoEntry.id);

    await nio.ask({ cmd: "send_content", room: portal, type: "m.reaction", content: { "m.relates_to": { rel_type: "m.annotation", event_id: theirs.event_id, key: "👍" } } });
    const reaction = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "reaction" && e.emoji === "👍", 60_000);
    assert.equal(reaction.target, firstId);

    const mistake = unique("sent by mistake");
    const mistakeId = (await nio.ask<{ event_id: string }>({ cmd: "send", room: portal, text: mistake })).event_id;
    const mistakeEntry = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === mistake, 60_000);
    await nio.ask({ cmd: "redact", room: portal, event_id: mistakeId });
    const deleted = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "delete" && e.target === mistakeEntry.id, 60_000);
    assert.ok(deleted);
    assert.ok(sent.id);

    const back = unique("WhatsApp answers");
    await stack.sim.sendText(PHONE, uri(alice.userId), back);
    await fromGhost(back);
  });

  test("a photo from WhatsApp arrives as an encrypted attachment with an encrypted thumbnail; the homeserver keeps neither in the clear", async () => {
    assert.ok(portal, "needs the portal");
    const photo = makePhoto(stack.dir);
    const plainSha = createHash("sha256").update(fs.readFileSync(photo)).digest("hex");
    const caption = unique("a photo caption");
    await stack.sim.sendMedia(PHONE, uri(alice.userId), { file: photo, mimetype: "image/png", caption });
    const message = await fromGhost(caption);
    const content = message.content as {
      msgtype: string;
      url?: string;
      file?: EncryptedFileJson;
      info: { thumbnail_url?: string; thumbnail_file?: EncryptedFileJson; thumbnail_info: { size: number } };
    };
    assert.equal(content.msgtype, "m.image");
    assert.equal(content.url, undefined, "no plain url");
    assert.ok(content.file, "the file is an encrypted attachment");
    assert.equal(content.file.v, "v2");
    assert.equal(content.file.key.alg, "A256CTR");
    const file = await nio.ask<{ sha256: string; size: number }>({ cmd: "download_decrypt", file: content.file });
    assert.equal(file.sha256, plainSha, "nio decrypts (hash checked) the very photo the WhatsApp user sent");
    assert.equal(content.info.thumbnail_url, undefined, "no plain thumbnail url");
    assert.ok(content.info.thumbnail_file, "the thumbnail is an encrypted attachment");
    const thumbnail = await nio.ask<{ size: number }>({ cmd: "download_decrypt", file: content.info.thumbnail_file });
    assert.equal(thumbnail.size, content.info.thumbnail_info.size);
    // Every file the homeserver keeps: none is the photo.
    const found: string[] = [];
    const walk = (dir: string): void => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (entry.isFile() && createHash("sha256").update(fs.readFileSync(full)).digest("hex") === plainSha) found.push(full);
      }
    };
    if (!process.env.MATRIX_HOMESERVER_URL) walk(stack.hs.dataDir!);
    assert.deepEqual(found, [], "the homeserver's files hold no plaintext copy of the photo");
  });

  test("a file the Matrix user sends as an encrypted attachment reaches the WhatsApp user decrypted, byte for byte", async () => {
    assert.ok(portal, "needs the portal");
    const file = path.join(stack.dir, "notes.bin");
    fs.writeFileSync(file, randomBytes(200_000));
    const plainSha = createHash("sha256").update(fs.readFileSync(file)).digest("hex");
    await nio.ask({ cmd: "send_encrypted_file", room: portal, path: file, msgtype: "m.file", mimetype: "application/octet-stream", body: "notes.bin" });
    const entry = await stack.sim.waitForInbox(PHONE, (e) => e.kind === "media" && e.filename === "notes.bin", 60_000);
    assert.equal(entry.sha256, plainSha, "the WhatsApp user got the plaintext the Matrix user encrypted");
  });

  test("a SIGKILL of the bridge mid-conversation: after the restart both directions decrypt, nothing is lost", async () => {
    assert.ok(portal, "needs the portal");
    const beforeKill = unique("nio just before the crash");
    await nio.ask({ cmd: "send", room: portal, text: beforeKill });
    await stack.bridge.stop("SIGKILL");
    const whileDown = unique("nio while the bridge is down");
    await nio.ask({ cmd: "send", room: portal, text: whileDown });
    const simWhileDown = unique("WhatsApp while the bridge is down");
    await stack.sim.sendText(PHONE, uri(alice.userId), simWhileDown);
    await stack.startBridge();
    for (const text of [beforeKill, whileDown]) await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === text, 90_000);
    await fromGhost(simWhileDown);

    const after1 = unique("nio after the restart");
    await nio.ask({ cmd: "send", room: portal, text: after1 });
    await stack.sim.waitForInbox(PHONE, (e) => e.kind === "text" && e.text === after1, 60_000);
    const after2 = unique("WhatsApp after the restart");
    await stack.sim.sendText(PHONE, uri(alice.userId), after2);
    await fromGhost(after2);

    // Each text reached WhatsApp once.
    const inbox = await stack.sim.inbox(PHONE);
    for (const text of [beforeKill, whileDown, after1]) assert.equal(inbox.filter((e) => e.kind === "text" && e.text === text).length, 1, `${text} once`);
    assert.deepEqual(await nio.ask({ cmd: "undecryptable" }), { count: 0 }, "nio saw no undecryptable event");
    const ghostMessages = (await nio.ask<{ messages: NioMessage[] }>({ cmd: "messages", room: portal })).messages.filter((m) => m.sender === ghost);
    assert.ok(
      ghostMessages.every((m) => m.decrypted),
      "every ghost message arrived encrypted",
    );
    const log = fs.readFileSync(path.join(stack.dir, "bridge.log"), "utf8");
    assert.doesNotMatch(log, /could not decrypt a Matrix event/);
    assert.doesNotMatch(log, /running unencrypted/, "the check after the restart did not turn encryption off");
  });

  test("an event the bridge cannot decrypt is answered with a notice, never dropped silently", async () => {
    assert.ok(portal, "needs the portal");
    // Encrypted with a room key the bridge never got (none exists: the session id is made up).
    const sent = await nio.ask<{ event_id: string }>({
      cmd: "send_raw",
      room: portal,
      type: "m.room.encrypted",
      content: {
        algorithm: "m.megolm.v1.aes-sha2",
        ciphertext: "AwgAEhAAAAAAAAAAAAAAAAAAAAAA",
        session_id: "bm8gc3VjaCBzZXNzaW9uIGV4aXN0cyBoZXJlIGF0IGFsbA",
        sender_key: "x",
        device_id: alice.deviceId,
      },
    });
    const notice = await nio.ask<NioMessage>({ cmd: "wait_body", room: portal, sender: ghost, pattern: "^Your message was not sent: the bridge could not decrypt it" });
    assert.equal(notice.decrypted, true, "the notice itself is encrypted");
    assert.equal((notice.content["m.relates_to"] as { "m.in_reply_to": { event_id: string } })["m.in_reply_to"].event_id, sent.event_id, "it answers the event");
  });

  test("the homeserver's database holds none of the bridged texts", { skip: process.env.MATRIX_HOMESERVER_URL ? "uses an existing homeserver" : false }, () => {
    assert.ok(texts.length >= 10, `all texts were exchanged (${texts.length})`);
    const dir = stack.hs.dataDir!;
    const files = fs.readdirSync(dir).filter((f) => f.startsWith("homeserver.db"));
    assert.ok(files.includes("homeserver.db"));
    const bytes = Buffer.concat(files.map((f) => fs.readFileSync(path.join(dir, f))));
    assert.deepEqual(
      texts.filter((t) => bytes.includes(Buffer.from(t, "utf8"))),
      [],
      "no bridged text in homeserver.db*",
    );
    assert.ok(bytes.includes(Buffer.from(portal, "utf8")), "the search finds what is stored in the clear (the room id)");
  });
});

describe("a portal where the user turns encryption on later (encryption.default off, a homeserver that does not encrypt by default)", { timeout: 10 * 60_000 }, () => {
  let later: Stack;
  let bob: TestClient;
  let bobNio: NioPeer;
  const phone = "+4915100000072";
  let room: string;
  let laterGhost: string;

  before(async () => {
    later = await Stack.start("e2eelater", {
      bridgeConfig: (c) => {
        c.encryption = { allow: true, default: false };
      },
    });
    bob = await registerUser(later.hs, "bob_e2ee");
    bobNio = NioPeer.start(later.hs, bob, later.dir);
    laterGhost = later.ghostId(phone);
  });

  after(async () => {
    bobNio?.stop();
    await later?.stop();
  });

  test("the portal starts unencrypted and works; once the user turns encryption on, both directions are encrypted", async () => {
    const botRoom = await bobNio.ask<{ room_id: string; encrypted: boolean }>({ cmd: "create_room", invite: later.botId });
    assert.equal(botRoom.encrypted, false);
    await bobNio.ask({ cmd: "wait_body", room: botRoom.room_id, sender: later.botId, pattern: "start <phone>" });
    await bobNio.ask({ cmd: "send", room: botRoom.room_id, text: "enable" });
    await bobNio.ask({ cmd: "wait_body", room: botRoom.room_id, sender: later.botId, pattern: "Third-Party Chats (are \\*\\*on\\*\\*|were already on)" });

    await later.sim.createUser(phone, "Ben");
    await later.sim.sendText(phone, uri(bob.userId), "plain hello");
    room = (await bobNio.ask<{ room_id: string }>({ cmd: "wait_invite", inviter: laterGhost })).room_id;
    assert.equal((await bobNio.ask<{ encrypted: boolean }>({ cmd: "join", room })).encrypted, false, "encryption.default off: the portal starts unencrypted");
    const plain = await bobNio.ask<NioMessage>({ cmd: "wait_body", room, sender: laterGhost, pattern: "^plain hello$" });
    assert.equal(plain.decrypted, false);
    await bobNio.ask({ cmd: "send", room, text: "plain answer" });
    await later.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === "plain answer", 60_000);

    await bobNio.ask({ cmd: "enable_encryption", room });
    const secret = `now encrypted ${randomBytes(4).toString("hex")}`;
    await bobNio.ask({ cmd: "send", room, text: secret });
    await later.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === secret, 60_000);
    const back = `encrypted answer ${randomBytes(4).toString("hex")}`;
    await later.sim.sendText(phone, uri(bob.userId), back);
    const answer = await bobNio.ask<NioMessage>({ cmd: "wait_body", room, sender: laterGhost, pattern: `^${escape(back)}$` });
    assert.equal(answer.decrypted, true, "the ghost encrypts once the room is encrypted");
    const notices = (await bobNio.ask<{ messages: NioMessage[] }>({ cmd: "messages", room })).messages.filter(
      (m) => m.sender === laterGhost && /cannot read encrypted/.test(m.text),
    );
    assert.deepEqual(notices, [], "no 'the bridge cannot read encrypted messages' notice any more");
    assert.deepEqual(await bobNio.ask({ cmd: "undecryptable" }), { count: 0 });
  });
});
