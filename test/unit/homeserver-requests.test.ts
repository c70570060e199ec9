/**
 * The bridge counts what it asks of the homeserver (bridge_homeserver_requests_total by kind,
 * bridge_homeserver_events_total by event type): every request of the Matrix libraries and of
 * the media streams goes through HomeserverLink, which counts each once.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { doHttpRequest, MatrixClient } from "@vector-im/matrix-bot-sdk";
import { HomeserverLink } from "../../src/matrix/homeserver-link";
import { classifyHomeserverRequest, roomCreationEvents } from "../../src/matrix/homeserver-requests";
import { MatrixMedia } from "../../src/matrix/media";
import { BridgeMetrics } from "../../src/metrics/metrics";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-hs-requests-"));
const servers: http.Server[] = [];
after(() => {
  for (const s of servers) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The values of a counter of `metrics`, by the value of its one label. */
async function counts(metrics: BridgeMetrics, name: string): Promise<Record<string, number>> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric, `${name} is registered`);
  const { values } = await metric.get();
  return Object.fromEntries(values.map((v) => [String(Object.values(v.labels)[0]), v.value]));
}

describe("classifying homeserver requests", () => {
  const cases: Array<[string, string, string, Array<{ type: string; count: number }>]> = [
    ["PUT", "/_matrix/client/v3/rooms/!r%3Ahs/send/m.room.message/t1", "send", [{ type: "m.room.message", count: 1 }]],
    ["PUT", "/_matrix/client/v3/rooms/!r%3Ahs/send/com.beeper.message_send_status/t2", "send", [{ type: "com.beeper.message_send_status", count: 1 }]],
    ["PUT", "/_matrix/client/v3/rooms/!r%3Ahs/redact/%24e/t3", "send", [{ type: "m.room.redaction", count: 1 }]],
    ["PUT", "/_matrix/client/v3/rooms/!r%3Ahs/state/m.space.child/!c%3Ahs", "state", [{ type: "m.space.child", count: 1 }]],
    ["POST", "/_matrix/client/v3/rooms/!r%3Ahs/leave", "membership", [{ type: "m.room.member", count: 1 }]],
    ["POST", "/_matrix/client/v3/rooms/!r%3Ahs/kick", "membership", [{ type: "m.room.member", count: 1 }]],
    ["POST", "/_matrix/client/v3/join/!r%3Ahs", "membership", [{ type: "m.room.member", count: 1 }]],
    ["PUT", "/_matrix/client/v3/rooms/!r%3Ahs/typing/%40g%3Ahs", "typing", []],
    ["POST", "/_matrix/client/v3/rooms/!r%3Ahs/receipt/m.read/%24e", "receipt", []],
    ["POST", "/_matrix/client/v3/rooms/!r%3Ahs/read_markers", "receipt", []],
    ["PUT", "/_matrix/client/v3/profile/%40g%3Ahs/displayname", "profile", []],
    ["POST", "/_matrix/media/v3/upload?filename=a.jpg", "media", []],
    ["GET", "/_matrix/client/v1/media/download/hs/abc", "media", []],
    ["GET", "/_matrix/client/v3/rooms/!r%3Ahs/messages?dir=b", "query", []],
    ["GET", "/_matrix/client/v3/joined_rooms", "query", []],
    ["POST", "/_matrix/client/v3/register", "other", []],
    ["POST", "/_matrix/client/v1/appservice/x/ping", "other", []],
  ];
  for (const [method, url, kind, events] of cases) {
    it(`${method} ${url.split("?")[0]} is ${kind}`, () => {
      assert.deepEqual(classifyHomeserverRequest(method, `http://hs.example:8008${url}`), { kind, events });
    });
  }

  it("counts the events Synapse stores for a new room from the createRoom body", () => {
    // create, creator's join, power levels; private presets: join rules, history visibility, guest access; name; one invite.
    assert.equal(roomCreationEvents({ preset: "trusted_private_chat", is_direct: true, invite: ["@u:hs"], name: "Pia" }), 8);
    assert.equal(roomCreationEvents({ preset: "public_chat", topic: "t", initial_state: [{}, {}] }), 8);
    assert.deepEqual(classifyHomeserverRequest("POST", "http://hs/_matrix/client/v3/createRoom", JSON.stringify({ preset: "private_chat", invite: ["@a:hs", "@b:hs"] })), {
      kind: "create_room",
      events: [{ type: "room_creation", count: 8 }],
    });
  });
});

describe("counting the bridge's requests to the homeserver", () => {
  it("counts each request of the Matrix client and of the media streams once, and the events of those that succeeded", async () => {
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.method} ${String(req.url).split("?")[0]}`);
      req.resume().on("end", () => {
        if (req.url?.includes("/send/refused/")) {
          res.writeHead(403, { "content-type": "application/json" });
          return res.end(JSON.stringify({ errcode: "M_FORBIDDEN", error: "not in the room" }));
        }
        if (req.url?.includes("/media/v1/download/") || req.url?.includes("/v1/media/download/")) {
          res.writeHead(200, { "content-type": "application/octet-stream" });
          return res.end("file bytes");
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ event_id: "$e", room_id: "!new:hs", joined_rooms: [], content_uri: "mxc://hs/up" }));
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const metrics = new BridgeMetrics();
    const link = new HomeserverLink(url, { initialMs: 10, maxMs: 20 }, metrics);
    link.install();
    const client = new MatrixClient(url, "as-token");
    const media = new MatrixMedia({ homeserverUrl: url, asToken: "as-token", homeserver: link, tempDir: path.join(dir, "tmp") });

    await client.sendMessage("!r:hs", { msgtype: "m.text", body: "one" });
    await client.sendEvent("!r:hs", "com.beeper.message_send_status", { status: "SUCCESS" });
    await client.sendStateEvent("!r:hs", "m.space.parent", "!s:hs", {});
    await client.setTyping("!r:hs", true, 1000);
    await client.sendReadReceipt("!r:hs", "$e");
    await client.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: ["@u:hs"], name: "Pia" });
    await client.joinRoom("!r:hs");
    await client.getJoinedRooms();
    await assert.rejects(client.sendEvent("!r:hs", "refused", {}), (err: { statusCode?: number }) => err.statusCode === 403);
    const file = await media.download("mxc://hs/abc", 1024);
    await file.release();
    const upload = path.join(dir, "photo.jpg");
    fs.writeFileSync(upload, "jpeg bytes");
    assert.equal(await media.upload("@g:hs", upload, "image/jpeg", "photo.jpg"), "mxc://hs/up");
    // Another server's requests are not the homeserver's.
    const other = http.createServer((_req, res) => res.end("{}"));
    servers.push(other);
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", () => r()));
    await doHttpRequest(`http://127.0.0.1:${(other.address() as AddressInfo).port}`, "GET", "/_matrix/client/v3/joined_rooms");

    assert.equal(seen.length, 13, `the homeserver saw ${seen.join(", ")}`);
    assert.deepEqual(await counts(metrics, "bridge_homeserver_requests_total"), {
      send: 3,
      state: 1,
      typing: 1,
      receipt: 1,
      create_room: 1,
      membership: 1,
      // joined_rooms, and the whoami a plain client (not the appservice's intents) asks before typing and joining.
      query: 3,
      media: 2,
    });
    const total = Object.values(await counts(metrics, "bridge_homeserver_requests_total")).reduce((a, b) => a + b, 0);
    assert.equal(total, seen.length, "one count per request the homeserver saw");
    assert.deepEqual(await counts(metrics, "bridge_homeserver_events_total"), {
      "m.room.message": 1,
      "com.beeper.message_send_status": 1,
      "m.space.parent": 1,
      room_creation: 8,
      "m.room.member": 1,
    });
  });
});
