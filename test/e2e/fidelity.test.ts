/**
 * Conversation fidelity, end to end (real Synapse, gateway, WhatsApp simulator and bridge):
 * replies, edits, deletions, reactions, read receipts, typing and delivery status, each in
 * both directions, and edits and reactions on messages bridged before a restart.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, describe, test } from "node:test";
import YAML from "yaml";
import { MatrixEvent, SyncedEvent, TestClient } from "../support/matrix-client";
import { InboxEntry } from "../support/sim-api";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

const STATUS = "com.beeper.message_send_status";
const WAIT = { timeoutMs: 30_000 };

let stack: Stack;

before(async () => {
  // Status events are off by default; the delivery-status tests here read them.
  stack = await Stack.start("fidelity", { bridgeConfig: (c) => void (c.bridge = { ...(c.bridge ?? {}), message_status_events: true }) });
});

after(async () => {
  await stack?.stop();
});

/** One DM between a Matrix user and a simulated WhatsApp user, as both sides see it. */
interface Chat {
  user: TestClient;
  roomId: string;
  phone: string;
  ghost: string;
  /** The Matrix user as the simulator addresses them. */
  to: string;
}

let nextPhone = 4915200000001;

/** A WhatsApp user writes to a new Matrix user, who accepts the chat. */
async function openChat(localpart: string, waName: string, opts: { roomVersion?: string } = {}): Promise<Chat> {
  const phone = `+${nextPhone++}`;
  await stack.sim.createUser(phone, waName);
  const user = await stack.user(localpart);
  await stack.botRoom(user, { enable: true });
  const ghost = stack.ghostId(phone);
  const to = `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`;
  if (opts.roomVersion) {
    // The Matrix user starts the chat in a room of their choosing (here: a given room version).
    const roomId = await user.createRoom({ is_direct: true, invite: [ghost], preset: "trusted_private_chat", room_version: opts.roomVersion });
    await user.waitFor((e) => e.room_id === roomId && e.type === "m.room.member" && e.state_key === ghost && e.content.membership === "join", WAIT);
    await stack.sim.sendText(phone, to, `Hi, this is ${waName}`);
    await user.waitFor((e) => e.room_id === roomId && e.sender === ghost && e.type === "m.room.message", WAIT);
    return { user, roomId, phone, ghost, to };
  }
  await stack.sim.sendText(phone, to, `Hi, this is ${waName}`);
  const invite = await user.waitForInvite((i) => i.inviter === ghost, WAIT);
  await user.joinRoom(invite.roomId);
  await user.waitFor((e) => e.room_id === invite.roomId && e.sender === ghost && e.type === "m.room.message", WAIT);
  return { user, roomId: invite.roomId, phone, ghost, to };
}

/** The WhatsApp user sends text; resolves with its MIMI id and the Matrix event the user got. */
async function fromWhatsApp(chat: Chat, text: string, extra: Record<string, unknown> = {}): Promise<{ id: string; event: SyncedEvent }> {
  const sent = await stack.sim.sendText(chat.phone, chat.to, text, extra);
  const event = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.sender === chat.ghost && e.type === "m.room.message" && e.content.body === text, {
    ...WAIT,
    description: `"${text}" from WhatsApp`,
  });
  return { id: sent.id, event };
}

/** The Matrix user sends a message; resolves with its event id and what WhatsApp received. */
async function fromMatrix(chat: Chat, text: string, extra: Record<string, unknown> = {}): Promise<{ eventId: string; entry: InboxEntry }> {
  const eventId = await chat.user.sendText(chat.roomId, text, extra);
  const entry = await stack.sim.waitForInbox(chat.phone, (e) => e.kind === "text" && e.text === text, 30_000);
  return { eventId, entry };
}

/** Waits until the simulator's user has received an entry matching `match`. */
async function inboxEntry(chat: Chat, match: (e: InboxEntry) => boolean): Promise<InboxEntry> {
  return stack.sim.waitForInbox(chat.phone, match, 30_000);
}

/**
 * Sends a marker behind what came before and waits for it: each chat is bridged in order, so
 * whatever the earlier actions caused has arrived by then (this is how a test sees that nothing came).
 */
async function markerFromWhatsApp(chat: Chat, label: string): Promise<void> {
  await fromWhatsApp(chat, `marker ${label}`);
}

async function markerFromMatrix(chat: Chat, label: string): Promise<InboxEntry[]> {
  await fromMatrix(chat, `marker ${label}`);
  return stack.sim.inbox(chat.phone);
}

function relatesTo(e: MatrixEvent): Record<string, any> | undefined {
  return e.content["m.relates_to"] as Record<string, any> | undefined;
}

function redactsOf(e: MatrixEvent): string | undefined {
  return (e.content.redacts as string | undefined) ?? e.redacts;
}

function statusOf(chat: Chat, eventId: string, match: (content: Record<string, any>) => boolean, description: string): Promise<SyncedEvent> {
  return chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === STATUS && relatesTo(e)?.event_id === eventId && match(e.content), {
    ...WAIT,
    description,
  });
}

describe("replies", () => {
  test("a WhatsApp reply is a Matrix reply to the right message, with no fallback text", async () => {
    const chat = await openChat("replyin", "Ana");
    const question = await fromWhatsApp(chat, "Are we still on for lunch");
    const mine = await fromMatrix(chat, "I think so");
    const toQuestion = await fromWhatsApp(chat, "Great see you at noon", { inReplyTo: question.id });
    assert.deepEqual(relatesTo(toQuestion.event), { "m.in_reply_to": { event_id: question.event.event_id } });
    assert.equal(toQuestion.event.content.body, "Great see you at noon", "no reply fallback in the body (spec v1.13)");
    assert.ok(!String(toQuestion.event.content.formatted_body ?? "").includes("mx-reply"), "no fallback in the HTML either");
    const toMine = await fromWhatsApp(chat, "Replying to your message", { inReplyTo: mine.entry.id });
    assert.equal(relatesTo(toMine.event)?.["m.in_reply_to"]?.event_id, mine.eventId);
  });

  test("a Matrix reply reaches WhatsApp as a reply to the right message; the fallback of older clients is stripped", async () => {
    const chat = await openChat("replyout", "Ben");
    const question = await fromWhatsApp(chat, "Did you get the tickets");
    const answer = await fromMatrix(chat, "Yes two of them", { "m.relates_to": { "m.in_reply_to": { event_id: question.event.event_id } } });
    assert.equal(answer.entry.inReplyTo, question.id);
    // An older client's reply: quoted fallback in body and formatted_body.
    const fallback = `> <${chat.ghost}> Did you get the tickets\n\nFront row too`;
    const html = `<mx-reply><blockquote><a href="https://matrix.to/#/${chat.roomId}/${question.event.event_id}">In reply to</a> <a href="https://matrix.to/#/${chat.ghost}">${chat.ghost}</a><br>Did you get the tickets</blockquote></mx-reply>Front row too`;
    await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: fallback,
      format: "org.matrix.custom.html",
      formatted_body: html,
      "m.relates_to": { "m.in_reply_to": { event_id: question.event.event_id } },
    });
    const old = await inboxEntry(chat, (e) => e.kind === "text" && String(e.text).includes("Front row too"));
    assert.equal(old.text, "Front row too");
    assert.equal(old.inReplyTo, question.id);
    const own = await fromMatrix(chat, "About my own message", { "m.relates_to": { "m.in_reply_to": { event_id: answer.eventId } } });
    assert.equal(own.entry.inReplyTo, answer.entry.id, "a reply to one's own message points at it too");
  });

  test("a reply to a message the other side never saw goes as a plain message", async () => {
    const chat = await openChat("replyunknown", "Cleo");
    const create = (await chat.user.messages(chat.roomId, { limit: 100 })).find((e) => e.type === "m.room.create");
    assert.ok(create?.event_id);
    const out = await fromMatrix(chat, "Replying to the room creation", { "m.relates_to": { "m.in_reply_to": { event_id: create.event_id } } });
    assert.equal(out.entry.inReplyTo, undefined);
    const inbound = await fromWhatsApp(chat, "Replying to something you never got", { inReplyTo: "01" + "ab".repeat(31) });
    assert.equal(relatesTo(inbound.event), undefined);
  });
});

describe("edits", () => {
  test("a WhatsApp edit replaces the text in Matrix (m.replace with m.new_content and a * fallback)", async () => {
    const chat = await openChat("editin", "Dora");
    const original = await fromWhatsApp(chat, "Meet at the statoin");
    await stack.sim.sendEdit(chat.phone, chat.to, original.id, "Meet at the station");
    const edit = await chat.user.waitFor((e) => e.room_id === chat.roomId && relatesTo(e)?.rel_type === "m.replace", { ...WAIT, description: "the edit" });
    assert.equal(edit.sender, chat.ghost);
    assert.deepEqual(relatesTo(edit), { rel_type: "m.replace", event_id: original.event.event_id });
    assert.equal(edit.content["m.new_content"].body, "Meet at the station");
    assert.equal(edit.content["m.new_content"].msgtype, "m.text");
    assert.equal(edit.content["m.new_content"]["m.relates_to"], undefined);
    assert.equal(edit.content.body, "* Meet at the station");
  });

  test("a Matrix edit reaches WhatsApp as an edit of the original", async () => {
    const chat = await openChat("editout", "Emil");
    const original = await fromMatrix(chat, "See you tomorow");
    const editId = await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "* See you tomorrow",
      "m.new_content": { msgtype: "m.text", body: "See you tomorrow" },
      "m.relates_to": { rel_type: "m.replace", event_id: original.eventId },
    });
    const edit = await inboxEntry(chat, (e) => e.kind === "edit");
    assert.equal(edit.target, original.entry.id);
    assert.equal(edit.text, "See you tomorrow");
    // Delivery status covers edits as well.
    await statusOf(chat, editId, (c) => c.status === "SUCCESS", "the edit's sent status");
  });

  test("only the sender edits: an edit of the other side's message is refused in both directions", async () => {
    const chat = await openChat("editother", "Finn");
    const theirs = await fromWhatsApp(chat, "A message by Finn");
    const mine = await fromMatrix(chat, "A message by the Matrix user");
    const editId = await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "* Changed by someone else",
      "m.new_content": { msgtype: "m.text", body: "Changed by someone else" },
      "m.relates_to": { rel_type: "m.replace", event_id: theirs.event.event_id },
    });
    const failed = await statusOf(chat, editId, (c) => c.status === "FAIL_PERMANENT", "the refused edit's status");
    assert.equal(failed.content.reason, "m.no_permission");
    const notice = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.content.msgtype === "m.notice" && /Your edit was not sent/.test(String(e.content.body)), WAIT);
    assert.match(String(notice.content.body), /only the sender can edit/);
    const inbox = await markerFromMatrix(chat, "after the refused edit");
    assert.equal(inbox.filter((e) => e.kind === "edit").length, 0, "WhatsApp got no edit");
    // The WhatsApp user edits the Matrix user's message: nothing changes in Matrix.
    await stack.sim.sendEdit(chat.phone, chat.to, mine.entry.id!, "Hijacked");
    await markerFromWhatsApp(chat, "after the foreign edit");
    assert.equal(chat.user.eventsIn(chat.roomId).filter((e) => relatesTo(e)?.rel_type === "m.replace" && e.sender === chat.ghost).length, 0);
  });
});

describe("deletions", () => {
  test("a WhatsApp deletion redacts the message in Matrix", async () => {
    const chat = await openChat("deletein", "Gus");
    const message = await fromWhatsApp(chat, "Oops wrong chat");
    await stack.sim.sendDeletion(chat.phone, chat.to, message.id);
    const redaction = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.redaction" && redactsOf(e) === message.event.event_id, {
      ...WAIT,
      description: "the redaction",
    });
    assert.equal(redaction.sender, chat.ghost);
    const history = await chat.user.messages(chat.roomId);
    const redacted = history.find((e) => e.event_id === message.event.event_id)!;
    assert.deepEqual(redacted.content, {}, "the homeserver serves the message without its content");
  });

  test("a Matrix redaction deletes the message for the WhatsApp user (room version 11: redacts inside content)", async () => {
    const chat = await openChat("deleteout", "Hana", { roomVersion: "11" });
    const create = await chat.user.getState(chat.roomId, "m.room.create");
    assert.equal(create.room_version, "11");
    const message = await fromMatrix(chat, "Sent by mistake");
    const redactionId = await chat.user.redact(chat.roomId, message.eventId);
    const own = await chat.user.waitFor((e) => e.event_id === redactionId, WAIT);
    assert.equal(own.content.redacts, message.eventId, "the homeserver put redacts inside content");
    const deleted = await inboxEntry(chat, (e) => e.kind === "delete");
    assert.equal(deleted.target, message.entry.id);
  });

  test("deleting the WhatsApp user's message removes it here only, with a notice saying so", async () => {
    const chat = await openChat("deleteother", "Ida");
    const theirs = await fromWhatsApp(chat, "Ida's own words");
    const redactionId = await chat.user.redact(chat.roomId, theirs.event.event_id!);
    const notice = await chat.user.waitFor((e) => e.room_id === chat.roomId && /Your deletion was not sent/.test(String(e.content.body)), WAIT);
    assert.match(String(notice.content.body), /only the sender delete a message for everyone/);
    const failed = await statusOf(chat, redactionId, (c) => c.status === "FAIL_PERMANENT", "the deletion's failed status");
    assert.equal(failed.content.reason, "m.no_permission");
    const inbox = await markerFromMatrix(chat, "after the local deletion");
    assert.equal(inbox.filter((e) => e.kind === "delete").length, 0);
  });
});

describe("reactions", () => {
  test("WhatsApp reactions: one per person (a new one replaces the old), and withdrawing one removes it", async () => {
    const chat = await openChat("reactin", "Jon");
    const mine = await fromMatrix(chat, "Dinner is ready");
    const thumbs = await stack.sim.sendReaction(chat.phone, chat.to, mine.entry.id!, "👍");
    const first = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.reaction", { ...WAIT, description: "the 👍 reaction" });
    assert.equal(first.sender, chat.ghost);
    assert.deepEqual(relatesTo(first), { rel_type: "m.annotation", event_id: mine.eventId, key: "👍" });
    assert.ok(thumbs.id);
    const heart = await stack.sim.sendReaction(chat.phone, chat.to, mine.entry.id!, "❤️");
    const second = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.reaction" && relatesTo(e)?.key === "❤️", WAIT);
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.redaction" && redactsOf(e) === first.event_id, {
      ...WAIT,
      description: "the replaced 👍 removed",
    });
    await stack.sim.withdrawReaction(chat.phone, chat.to, mine.entry.id!, heart.id);
    const removed = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.redaction" && redactsOf(e) === second.event_id, {
      ...WAIT,
      description: "the withdrawn ❤️ removed",
    });
    assert.equal(removed.sender, chat.ghost);
  });

  test("Matrix reactions reach WhatsApp; a second one replaces the first, and redacting it is an unlike", async () => {
    const chat = await openChat("reactout", "Kim");
    const theirs = await fromWhatsApp(chat, "Passed my exam");
    const partyId = await chat.user.sendEvent(chat.roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: theirs.event.event_id, key: "🎉" } });
    const party = await inboxEntry(chat, (e) => e.kind === "reaction");
    assert.equal(party.target, theirs.id);
    assert.equal(party.emoji, "🎉");
    const heartId = await chat.user.sendEvent(chat.roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: theirs.event.event_id, key: "❤️" } });
    const heart = await inboxEntry(chat, (e) => e.kind === "reaction" && e.emoji === "❤️");
    assert.equal(heart.target, theirs.id);
    // WhatsApp keeps one reaction per person, so Matrix shows one too: the 🎉 is taken back.
    const replaced = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.redaction" && redactsOf(e) === partyId, {
      ...WAIT,
      description: "the replaced 🎉 removed",
    });
    assert.equal(replaced.sender, chat.ghost);
    await chat.user.redact(chat.roomId, heartId);
    const unlike = await inboxEntry(chat, (e) => e.kind === "unreaction");
    assert.equal(unlike.target, theirs.id);
    assert.equal(unlike.reaction, heart.id);
  });
});

describe("read receipts, typing and delivery status", () => {
  test("read receipts both ways", async () => {
    const chat = await openChat("receipts", "Lea");
    const theirs = await fromWhatsApp(chat, "Read me");
    await chat.user.sendReceipt(chat.roomId, theirs.event.event_id!);
    const read = await inboxEntry(chat, (e) => e.kind === "read" && (e.ids as string[]).includes(theirs.id));
    assert.equal(read.fromId, chat.user.userId);
    const mine = await fromMatrix(chat, "Did you read this");
    await stack.sim.sendRead(chat.phone, chat.to, [mine.entry.id!]);
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.receipt" && e.content[mine.eventId]?.["m.read"]?.[chat.ghost] !== undefined, {
      ...WAIT,
      description: "the ghost's read receipt on the Matrix user's message",
    });
  });

  test("typing both ways", async () => {
    const chat = await openChat("typing", "Max");
    await stack.sim.sendTyping(chat.phone, chat.to, "on");
    const typing = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.typing" && e.content.user_ids.includes(chat.ghost), {
      ...WAIT,
      description: "the ghost typing",
    });
    await stack.sim.sendTyping(chat.phone, chat.to, "off");
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.typing" && e !== typing && !e.content.user_ids.includes(chat.ghost), {
      ...WAIT,
      description: "the ghost stopped typing",
    });
    await chat.user.sendTyping(chat.roomId, true);
    const on = await inboxEntry(chat, (e) => e.kind === "typing" && e.state === "on");
    assert.equal(on.fromId, chat.user.userId);
    await chat.user.sendTyping(chat.roomId, false);
    const off = await inboxEntry(chat, (e) => e.kind === "typing" && e.state === "off" && e.n > on.n);
    assert.equal(off.fromId, chat.user.userId);
  });

  test("delivery status: delivered to the WhatsApp user, in one status event when they are online", async () => {
    const chat = await openChat("delivered", "Nia");
    const mine = await fromMatrix(chat, "Is this delivered");
    const delivered = await statusOf(chat, mine.eventId, (c) => c.delivered_to_users?.length > 0, "the delivered status");
    assert.deepEqual(relatesTo(delivered), { rel_type: "m.reference", event_id: mine.eventId });
    assert.equal(delivered.sender, chat.ghost);
    assert.equal(delivered.content.status, "SUCCESS");
    assert.deepEqual(delivered.content.delivered_to_users, [chat.ghost]);
    // The simulated user is online, so its receipt normally beats bridge.sent_status_delay_ms; on
    // a loaded machine a "sent" status may still come first, never after.
    const statuses = chat.user.eventsIn(chat.roomId).filter((e) => e.type === STATUS && relatesTo(e)?.event_id === mine.eventId);
    const sent = statuses.filter((e) => Array.isArray(e.content.delivered_to_users) && e.content.delivered_to_users.length === 0);
    assert.ok(sent.length <= 1, "at most one sent status");
    if (sent.length === 1) assert.ok(statuses.indexOf(sent[0]) < statuses.indexOf(delivered), "sent, then delivered");
  });

  test("a message the network refuses gets a failed status and a notice with the reason", async () => {
    const chat = await openChat("refused", "Ole");
    await stack.sim.setThirdPartyChats(chat.phone, false);
    const eventId = await chat.user.sendText(chat.roomId, "Will this arrive");
    const failed = await statusOf(chat, eventId, (c) => c.status === "FAIL_PERMANENT", "the failed status");
    assert.equal(failed.content.reason, "m.foreign_network_error");
    assert.match(String(failed.content.message), /Third-Party Chats off/);
    const notice = await chat.user.waitFor((e) => e.room_id === chat.roomId && /Your message was not delivered/.test(String(e.content.body)), WAIT);
    assert.equal(notice.content.msgtype, "m.notice");
    assert.match(String(notice.content.body), /turned Third-Party Chats off/);
    await stack.sim.setThirdPartyChats(chat.phone, true);
  });
});

describe("transcript", () => {
  test("a conversation with a reply, an edit, a reaction and a deletion, as a Matrix client sees it", async (t) => {
    const chat = await openChat("transcript", "Sara");
    const question = await fromWhatsApp(chat, "Are we still on for lunch at noon");
    const answer = await fromMatrix(chat, "Yes see you there", { "m.relates_to": { "m.in_reply_to": { event_id: question.event.event_id } } });
    await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "* Yes see you at half past twelve",
      "m.new_content": { msgtype: "m.text", body: "Yes see you at half past twelve" },
      "m.relates_to": { rel_type: "m.replace", event_id: answer.eventId },
    });
    const edited = await inboxEntry(chat, (e) => e.kind === "edit");
    assert.equal(edited.inReplyTo, question.id, "an edited reply stays a reply on WhatsApp");
    await stack.sim.sendReaction(chat.phone, chat.to, answer.entry.id!, "👍");
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.reaction", WAIT);
    const booked = await fromWhatsApp(chat, "Perfect I booked a table", { inReplyTo: answer.entry.id });
    await stack.sim.sendEdit(chat.phone, chat.to, booked.id, "Perfect I booked a table for two");
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.sender === chat.ghost && relatesTo(e)?.rel_type === "m.replace", WAIT);
    const oops = await fromWhatsApp(chat, "Sorry wrong chat");
    await stack.sim.sendDeletion(chat.phone, chat.to, oops.id);
    await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.room.redaction", WAIT);

    const shown = new Set(["m.room.message", "m.reaction", "m.room.redaction"]);
    const timeline = (await chat.user.messages(chat.roomId)).reverse().filter((e) => shown.has(e.type));
    const names: Record<string, string> = { [chat.user.userId]: "matrix-user", [chat.ghost]: "whatsapp-ghost" };
    t.diagnostic(`transcript of ${chat.roomId} (${names[chat.user.userId]} = ${chat.user.userId}, ${names[chat.ghost]} = ${chat.ghost})`);
    for (const e of timeline) {
      const shownEvent: Record<string, unknown> = { type: e.type, sender: names[e.sender!] ?? e.sender, event_id: e.event_id, content: e.content };
      if (e.redacts) shownEvent.redacts = e.redacts;
      if (e.unsigned?.redacted_because) shownEvent.redacted_because = e.unsigned.redacted_because.event_id;
      t.diagnostic(JSON.stringify(shownEvent));
    }
    const reply = timeline.find((e) => e.event_id === answer.eventId)!;
    assert.equal(relatesTo(reply)?.["m.in_reply_to"]?.event_id, question.event.event_id);
    assert.ok(timeline.some((e) => relatesTo(e)?.rel_type === "m.replace" && e.content["m.new_content"]?.body === "Yes see you at half past twelve"));
    assert.ok(timeline.some((e) => e.type === "m.reaction" && relatesTo(e)?.key === "👍" && relatesTo(e)?.event_id === answer.eventId));
    assert.equal(relatesTo(timeline.find((e) => e.event_id === booked.event.event_id)!)?.["m.in_reply_to"]?.event_id, answer.eventId);
    const bridgedEdit = timeline.find((e) => e.sender === chat.ghost && relatesTo(e)?.rel_type === "m.replace")!;
    assert.deepEqual(relatesTo(bridgedEdit), { rel_type: "m.replace", event_id: booked.event.event_id });
    assert.equal(bridgedEdit.content["m.new_content"].body, "Perfect I booked a table for two");
    assert.ok(timeline.some((e) => e.event_id === oops.event.event_id && Object.keys(e.content).length === 0 && e.unsigned?.redacted_because));
  });
});

describe("across a bridge restart", () => {
  test("edits and reactions on messages bridged before a restart, both directions", async () => {
    const chat = await openChat("restart", "Pia");
    const theirs = await fromWhatsApp(chat, "Before the restart from WhatsApp");
    const mine = await fromMatrix(chat, "Before the restart from Matrix");
    await stack.restartBridge();
    await stack.sim.sendEdit(chat.phone, chat.to, theirs.id, "Edited after the restart");
    const edit = await chat.user.waitFor((e) => e.room_id === chat.roomId && relatesTo(e)?.rel_type === "m.replace", WAIT);
    assert.equal(relatesTo(edit)?.event_id, theirs.event.event_id);
    await stack.sim.sendReaction(chat.phone, chat.to, mine.entry.id!, "😂");
    const reaction = await chat.user.waitFor((e) => e.room_id === chat.roomId && e.type === "m.reaction", WAIT);
    assert.equal(relatesTo(reaction)?.event_id, mine.eventId);
    await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "* Edited from Matrix after the restart",
      "m.new_content": { msgtype: "m.text", body: "Edited from Matrix after the restart" },
      "m.relates_to": { rel_type: "m.replace", event_id: mine.eventId },
    });
    const outEdit = await inboxEntry(chat, (e) => e.kind === "edit");
    assert.equal(outEdit.target, mine.entry.id);
    await chat.user.sendEvent(chat.roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: theirs.event.event_id, key: "👌" } });
    const outReaction = await inboxEntry(chat, (e) => e.kind === "reaction");
    assert.equal(outReaction.target, theirs.id);
  });

  test("an edit after WhatsApp's edit window is not sent; the user is told why", async () => {
    const config = YAML.parse(fs.readFileSync(stack.configPath, "utf8"));
    (config.bridge ??= {}).edit_window_seconds = 2;
    fs.writeFileSync(stack.configPath, YAML.stringify(config));
    await stack.restartBridge();
    const chat = await openChat("editlate", "Rui");
    const mine = await fromMatrix(chat, "Written in haste");
    await statusOf(chat, mine.eventId, (c) => c.status === "SUCCESS", "the sent status");
    // Not a timed assertion: the window is measured between the two events' own timestamps.
    await new Promise((r) => setTimeout(r, 3000));
    const editId = await chat.user.sendEvent(chat.roomId, "m.room.message", {
      msgtype: "m.text",
      body: "* Written at leisure",
      "m.new_content": { msgtype: "m.text", body: "Written at leisure" },
      "m.relates_to": { rel_type: "m.replace", event_id: mine.eventId },
    });
    const failed = await statusOf(chat, editId, (c) => c.status === "FAIL_PERMANENT", "the late edit's status");
    assert.equal(failed.content.reason, "m.event_too_old");
    const notice = await chat.user.waitFor((e) => e.room_id === chat.roomId && /Your edit was not sent/.test(String(e.content.body)), WAIT);
    assert.match(String(notice.content.body), /only within 2 seconds of sending it/);
    const inbox = await markerFromMatrix(chat, "after the late edit");
    assert.equal(inbox.filter((e) => e.kind === "edit").length, 0);
  });
});
