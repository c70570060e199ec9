import assert from "node:assert/strict";
import { after, describe, it, test } from "node:test";
import { describeDuration } from "../../src/bridge/outbound-sender";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BridgeCore } from "../../src/bridge/core";
import type { MatrixEvent, MatrixPort } from "../../src/bridge/matrix-port";
import { Permissions } from "../../src/bridge/permissions";
import { ChatCapabilities, ChatRef, maxMediaSize, mimetypeAccepted, NetworkConnector } from "../../src/network/connector";
import { BridgeStore } from "../../src/store";

test("limits are stated in the largest whole unit", () => {
  assert.equal(describeDuration(15 * 60_000), "15 minutes");
  assert.equal(describeDuration(60_000), "1 minute");
  assert.equal(describeDuration(2000), "2 seconds");
  assert.equal(describeDuration(90_000), "90 seconds");
  assert.equal(describeDuration(2 * 86_400_000), "2 days");
  assert.equal(describeDuration(1500), "2 seconds");
});

describe("a chat's media table", () => {
  it("matches content types exactly, by major type or by */*", () => {
    assert.equal(mimetypeAccepted("image/png", ["image/png"]), true);
    assert.equal(mimetypeAccepted("IMAGE/PNG", ["image/*"]), true);
    assert.equal(mimetypeAccepted("video/mp4", ["image/*"]), false);
    assert.equal(mimetypeAccepted("application/x-anything", ["*/*"]), true);
    assert.equal(mimetypeAccepted("image/png", []), false);
  });

  it("bounds what may be fetched by its largest kind", () => {
    const caps = { media: { image: { mimetypes: ["image/*"], maxSize: 5 }, file: { mimetypes: ["*/*"], maxSize: 9 } } } as unknown as ChatCapabilities;
    assert.equal(maxMediaSize(caps), 9);
    assert.equal(maxMediaSize({ media: {} } as unknown as ChatCapabilities), 0);
  });
});

describe("the core asks the connector per chat, once, before anything is queued", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  /** Two chats: "dm:+491" takes everything, "dm:+492" takes text only (no media, no reactions, no edits). */
  function bridge() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-caps-"));
    dirs.push(dir);
    const store = BridgeStore.open(path.join(dir, "bridge.db"));
    store.users.getOrCreate("@u:hs", { thirdPartyEnabled: true });
    const rooms: Record<string, string> = {};
    for (const remote of ["+491", "+492"]) {
      const portal = store.portals.getOrCreate(`dm:${remote}`, "@u:hs", "dm", [remote]);
      store.portals.setRoom(portal.id, `!${remote}:hs`);
      rooms[remote] = `!${remote}:hs`;
    }
    const full: ChatCapabilities = {
      text: { maxLength: 1000 },
      media: { image: { mimetypes: ["image/*"], maxSize: 1000 } },
      replies: true,
      reactions: { maxPerUser: 1 },
      edits: { maxAgeMs: 0 },
      readReceipts: true,
      typing: true,
      deliveryReceipts: false,
    };
    const textOnly: ChatCapabilities = { text: { maxLength: 1000 }, media: {}, replies: false, readReceipts: false, typing: false, deliveryReceipts: false };
    const asked: string[] = [];
    const calls: string[] = [];
    const network: Partial<NetworkConnector> = {
      networkName: "TestNet",
      getCapabilities: (chat: ChatRef) => {
        asked.push(chat.id);
        return chat.id === "dm:+491" ? full : textOnly;
      },
      ensureUser: async () => undefined,
      sendMessage: async (_u, _c, m) => {
        calls.push(`message ${m.txnId}`);
        return { remoteId: `r${calls.length}`, timestamp: Date.now() };
      },
      sendChange: async (_u, _c, c) => {
        calls.push(`change ${c.txnId}`);
        return { remoteId: `r${calls.length}`, timestamp: Date.now() };
      },
      sendTyping: () => {
        calls.push("typing");
        return true;
      },
    };
    const notices: string[] = [];
    const matrix: Partial<MatrixPort> = {
      botMxid: "@bot:hs",
      ghostMxid: (id) => `@t_${id}:hs`,
      send: async () => "$status",
      notice: async (_as, _room, text) => {
        notices.push(text);
      },
      downloadMedia: async () => ({ path: "/dev/null", size: 0, release: async () => undefined }),
    };
    const core = new BridgeCore(store, matrix as MatrixPort, network as NetworkConnector, {
      thirdPartyDefault: true,
      permissions: new Permissions({ hs: "user" }),
      retryDelayMs: 1,
    });
    let n = 0;
    const event = (remote: string, type: string, content: Record<string, unknown>): MatrixEvent => ({
      event_id: `$${++n}`,
      room_id: rooms[remote]!,
      sender: "@u:hs",
      type,
      origin_server_ts: Date.now(),
      content,
    });
    return { store, core, asked, calls, notices, event };
  }

  const image = { msgtype: "m.image", body: "cat.png", url: "mxc://hs/cat", info: { mimetype: "image/png", size: 10 } };

  it("an image goes to the chat that takes images and is refused, unqueued, in the chat that does not", async () => {
    const b = bridge();
    await b.core.onMatrixMessage(b.event("+492", "m.room.message", image));
    assert.equal(b.store.outbound.depth(), 0, "nothing was queued for the text-only chat");
    assert.deepEqual(b.asked, ["dm:+492"], "asked once, for that chat");
    assert.match(b.notices[0] ?? "", /cat\.png.* was not sent: TestNet does not take this kind of file here/);
    const ok = b.event("+491", "m.room.message", image);
    await b.core.onMatrixMessage(ok);
    for (let i = 0; i < 200 && b.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(b.calls, [`message ${ok.event_id}`]);
    b.core.stop();
  });

  it("a reaction in a chat without reactions is refused before it is queued; typing is not sent where the chat has none", async () => {
    const b = bridge();
    b.store.messages.insert({ portalId: b.store.portals.byRoom("!+492:hs")!.id, remoteId: "m1", part: 0, eventId: "$target", sender: "@u:hs", timestamp: Date.now() });
    await b.core.onMatrixReaction(b.event("+492", "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: "$target", key: "👍" } }));
    assert.equal(b.store.outbound.depth(), 0);
    assert.deepEqual(b.notices, ["Your reaction was not sent: TestNet does not support reactions here."]);
    b.core.onMatrixTyping("!+492:hs", ["@u:hs"]);
    b.core.onMatrixTyping("!+491:hs", ["@u:hs"]);
    assert.deepEqual(b.calls, ["typing"], "typing only where the chat has it");
    b.core.onMatrixTyping("!+491:hs", []);
    b.core.stop();
  });
});
