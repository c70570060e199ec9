/**
 * Files a Matrix user sends are fetched from the homeserver before they go on. What the
 * homeserver answers decides what happens: a 404 is final, a server error is tried again, and a
 * file the homeserver keeps failing is given up with a notice so that it cannot hold the chat.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { BridgeCore } from "../../src/bridge/core";
import { MatrixEvent } from "../../src/bridge/matrix-port";
import { Permissions } from "../../src/bridge/permissions";
import { HomeserverLink } from "../../src/matrix/homeserver-link";
import { MatrixMedia } from "../../src/matrix/media";
import { LocalMedia, MediaError, OutboundMessage } from "../../src/network/connector";
import { BridgeStore } from "../../src/store";
import { fakeMatrixPort, fakeNetwork } from "../support/fakes";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-hs-media-"));
const servers: http.Server[] = [];
after(() => {
  for (const s of servers) s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const refusal = (download: Promise<unknown>): Promise<MediaError> =>
  download.then(
    () => assert.fail("expected a refusal"),
    (err: unknown) => (err instanceof MediaError ? err : assert.fail(`expected a MediaError, got ${String(err)}`)),
  );

describe("downloading a file from the homeserver", () => {
  /** A homeserver whose media repository answers each media id as the table says. */
  async function homeserver(answers: Record<string, { status: number; body: string; type?: string }>) {
    const server = http.createServer((req, res) => {
      const answer = answers[decodeURIComponent(String(req.url).split("/").pop()!)] ?? { status: 200, body: "file bytes", type: "application/octet-stream" };
      res.writeHead(answer.status, { "content-type": answer.type ?? "application/json" });
      res.end(answer.body);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const link = new HomeserverLink(url, { initialMs: 10, maxMs: 20 });
    return { link, media: new MatrixMedia({ homeserverUrl: url, asToken: "as-token", homeserver: link, tempDir: path.join(dir, "tmp") }) };
  }

  it("takes a 404 as final, a server error as worth another attempt, and neither as an outage", async () => {
    const { link, media } = await homeserver({
      gone: { status: 404, body: JSON.stringify({ errcode: "M_NOT_FOUND", error: "Not found" }) },
      pending: { status: 504, body: JSON.stringify({ errcode: "M_NOT_YET_UPLOADED", error: "not uploaded yet" }) },
      broken: { status: 500, body: JSON.stringify({ errcode: "M_UNKNOWN", error: "Internal server error" }) },
      quarantined: { status: 403, body: JSON.stringify({ errcode: "M_FORBIDDEN", error: "quarantined" }) },
    });
    const gone = await refusal(media.download("mxc://hs/gone", 1024));
    assert.deepEqual(
      { code: gone.code, retryable: gone.retryable, reason: gone.reason },
      { code: "not_found", retryable: false, reason: "it could not be fetched from the homeserver, which has no such file (HTTP 404 M_NOT_FOUND)" },
    );
    const pending = await refusal(media.download("mxc://hs/pending", 1024));
    assert.deepEqual(
      { code: pending.code, retryable: pending.retryable, reason: pending.reason },
      { code: "http_error", retryable: true, reason: "it could not be fetched from the homeserver (HTTP 504 M_NOT_YET_UPLOADED)" },
      "a 504 with a Matrix error is the homeserver's own answer, not a proxy's",
    );
    assert.equal((await refusal(media.download("mxc://hs/broken", 1024))).retryable, true);
    assert.equal((await refusal(media.download("mxc://hs/quarantined", 1024))).retryable, false);
    const file = await media.download("mxc://hs/fine", 1024);
    assert.equal(fs.readFileSync(file.path, "utf8"), "file bytes");
    await file.release();
    assert.deepEqual({ state: link.health.snapshot().state, outages: link.health.snapshot().outages }, { state: "up", outages: 0 });
  });
});

describe("a file the homeserver will not give", () => {
  const receiver = "@alice:hs";
  const roomId = "!chat:hs";
  const ghost = "@whatsapp_491:hs";
  let n = 0;
  const event = (content: Record<string, unknown>): MatrixEvent => ({
    event_id: `$e${++n}`,
    room_id: roomId,
    sender: receiver,
    type: "m.room.message",
    origin_server_ts: Date.now(),
    content,
  });
  const file = (mxc: string, name: string) => ({ msgtype: "m.file", body: name, url: mxc, info: { mimetype: "application/pdf", size: 10 } });

  /** A core whose homeserver answers each mxc as `download` says, with one opted-in user and one chat. */
  function bridge(download: (mxc: string) => Promise<LocalMedia>, attempts?: number) {
    const store = BridgeStore.open(":memory:");
    store.users.getOrCreate(receiver, { thirdPartyEnabled: true });
    const portal = store.portals.getOrCreate("mimi://whatsapp.example/r/dm", receiver, "dm", ["+491"]);
    store.portals.setRoom(portal.id, roomId);
    const downloads: string[] = [];
    const notices: Array<{ text: string; replyTo?: string }> = [];
    const matrix = fakeMatrixPort({
      ghostMxid: () => ghost,
      downloadMedia: (mxc: string) => {
        downloads.push(mxc);
        return download(mxc);
      },
      notice: async (_as: string, _room: string, text: string, _txnId?: string, replyTo?: string) => {
        notices.push({ text, replyTo });
      },
      send: async () => "$status",
    });
    const sent: OutboundMessage[] = [];
    const network = fakeNetwork({
      ensureUser: async () => undefined,
      sendMessage: async (_user: string, _chat: unknown, message: OutboundMessage) => {
        sent.push(message);
        return { remoteId: `r${sent.length}`, timestamp: Date.now() };
      },
    });
    const core = new BridgeCore(store, matrix, network, {
      thirdPartyDefault: true,
      permissions: new Permissions({ hs: "user" }),
      retryDelayMs: 1,
      maxRetryDelayMs: 2,
      mediaDownloadAttempts: attempts,
    });
    return { core, store, downloads, notices, sent };
  }

  const until = async (cond: () => boolean, what: string) => {
    const deadline = Date.now() + 10_000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };

  it("is given up after the configured attempts when the homeserver keeps answering a server error; the user is told, later messages go", async () => {
    const b = bridge(async () => {
      throw new MediaError("http_error", "it could not be fetched from the homeserver (HTTP 500 M_UNKNOWN)", true);
    }, 3);
    const sentFile = event(file("mxc://hs/broken", "report.pdf"));
    await b.core.onMatrixMessage(sentFile);
    await b.core.onMatrixMessage(event({ msgtype: "m.text", body: "after the file" }));
    await until(() => b.sent.length === 1, "the text behind the file to be sent");
    assert.deepEqual(b.downloads, ["mxc://hs/broken", "mxc://hs/broken", "mxc://hs/broken"], "three attempts, then no more");
    assert.deepEqual(b.notices, [
      { text: "Your file (report.pdf) was not sent: it could not be fetched from the homeserver (HTTP 500 M_UNKNOWN) after 3 attempts.", replyTo: sentFile.event_id },
    ]);
    assert.equal(b.sent[0].content.type, "text");
    assert.equal(b.store.outbound.depth(), 0, "the file left the queue");
    assert.match(await b.core.metrics.registry.getSingleMetricAsString("bridge_message_failures_total"), /\{direction="to_network",reason="http_error"\} 1$/m);
  });

  it("is given up at once when the homeserver has no such file", async () => {
    const b = bridge(async () => {
      throw new MediaError("not_found", "it could not be fetched from the homeserver, which has no such file (HTTP 404 M_NOT_FOUND)");
    });
    await b.core.onMatrixMessage(event(file("mxc://hs/gone", "gone.pdf")));
    await b.core.onMatrixMessage(event({ msgtype: "m.text", body: "after the missing file" }));
    await until(() => b.sent.length === 1, "the text behind the file to be sent");
    assert.equal(b.downloads.length, 1);
    assert.deepEqual(
      b.notices.map((x) => x.text),
      ["Your file (gone.pdf) was not sent: it could not be fetched from the homeserver, which has no such file (HTTP 404 M_NOT_FOUND)."],
    );
  });

  it("is sent when the homeserver gives it on a later attempt", async () => {
    const local = path.join(dir, "late.pdf");
    fs.writeFileSync(local, "%PDF-late");
    let failures = 2;
    const b = bridge(async () => {
      if (failures-- > 0) throw new MediaError("http_error", "it could not be fetched from the homeserver (HTTP 502 M_UNKNOWN)", true);
      return { path: local, size: 9, release: async () => undefined };
    }, 3);
    await b.core.onMatrixMessage(event(file("mxc://hs/late", "late.pdf")));
    await until(() => b.sent.length === 1, "the file to be sent");
    assert.equal(b.downloads.length, 3);
    assert.deepEqual(b.notices, []);
    assert.equal(b.sent[0].content.type, "media");
  });
});
