/** A portal's life: the ghost's avatar, and what happens after the user leaves the room. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { roomsOf, waitUntilOut } from "../support/room-census";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

let stack: Stack;
const uriOf = (mxid: string) => `mimi://${PROVIDER_DOMAIN}/u/${mxid}`;

/** A real 64×64 PNG made by ffmpeg. */
function makePng(): Buffer {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "mib-avatar-")), "a.png");
  execFileSync("ffmpeg", ["-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1", file]);
  return fs.readFileSync(file);
}

before(async () => {
  stack = await Stack.start("lifecycle");
});

after(async () => {
  await stack?.stop();
});

describe("portal lifecycle", () => {
  test("the ghost shows the WhatsApp user's profile picture, byte for byte", async () => {
    const png = makePng();
    const phone = "+4915300000001";
    await stack.sim.createUser(phone, "Pia", { mimetype: "image/png", base64: png.toString("base64") });
    const alice = await stack.user("alice");
    await stack.botRoom(alice, { enable: true });
    await stack.sim.sendText(phone, uriOf(alice.userId), "look at my picture");
    const invite = await alice.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await alice.joinRoom(invite.roomId);
    await alice.waitFor((e) => e.room_id === invite.roomId && e.content.body === "look at my picture");
    const profile = await alice.getProfile(stack.ghostId(phone));
    assert.match(String(profile.avatar_url), /^mxc:\/\//);
    const media = await alice.downloadMedia(String(profile.avatar_url));
    assert.equal(createHash("sha256").update(media.data).digest("hex"), createHash("sha256").update(png).digest("hex"));
  });

  test("after the user leaves, the ghost leaves too; the next message from WhatsApp opens a fresh room and nothing is lost", async () => {
    const phone = "+4915300000002";
    await stack.sim.createUser(phone, "Quinn");
    const bob = await stack.user("bob");
    await stack.botRoom(bob, { enable: true });
    await stack.sim.sendText(phone, uriOf(bob.userId), "first chat");
    const first = await bob.waitForInvite((i) => i.inviter === stack.ghostId(phone));
    await bob.joinRoom(first.roomId);
    await bob.waitFor((e) => e.room_id === first.roomId && e.content.body === "first chat");
    await bob.leaveRoom(first.roomId);
    // The bridge closes the portal: its ghost leaves too (seen through the admin API, as bob is gone).
    const admin = await stack.admin();
    await waitUntilOut(admin, first.roomId, stack.ghostId(phone));
    await stack.sim.sendText(phone, uriOf(bob.userId), "are you there?");
    const second = await bob.waitForInvite((i) => i.inviter === stack.ghostId(phone) && i.roomId !== first.roomId);
    await bob.joinRoom(second.roomId);
    const msg = await bob.waitFor((e) => e.room_id === second.roomId && e.content.body === "are you there?");
    assert.equal(msg.sender, stack.ghostId(phone));
    await bob.sendText(second.roomId, "yes, here");
    await stack.sim.waitForInbox(phone, (e) => e.text === "yes, here");
    assert.deepEqual(await roomsOf(admin, stack.ghostId(phone)), [second.roomId], "the ghost is in the fresh room only");
  });
});
