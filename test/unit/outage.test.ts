/**
 * Outages below the core: a homeserver that goes away makes requests wait (not fail) and is
 * logged once; a gateway connection that flaps while reconnecting is one outage.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { doHttpRequest } from "@vector-im/matrix-bot-sdk";
import Transport from "winston-transport";
import { BridgeCore } from "../../src/bridge/core";
import { LinkHealth } from "../../src/bridge/link-health";
import { Permissions } from "../../src/bridge/permissions";
import { getLogger } from "../../src/logging";
import { HomeserverLink, isAmbiguousFailure } from "../../src/matrix/homeserver-link";
import { MatrixMedia } from "../../src/matrix/media";
import { BridgeStore } from "../../src/store";
import { fakeMatrixPort, fakeNetwork } from "../support/fakes";
import { freePort } from "../support/homeserver";

/** Collects what a logger writes. */
function capture(module: string) {
  const lines: Array<{ level: string; message: string; [k: string]: unknown }> = [];
  const logger = getLogger(module);
  const transport = new Transport({ level: "debug" });
  transport.log = (info: { level: string; message: string }, next: () => void) => {
    lines.push(info);
    next();
  };
  logger.add(transport);
  return { logger, lines };
}

const servers: http.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

function serve(port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ versions: ["v1.11"], path: req.url }));
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

describe("the homeserver link", () => {
  it("holds requests while the homeserver is down, lets them through when it is back, and logs the outage once", async () => {
    const port = await freePort();
    const link = new HomeserverLink(`http://127.0.0.1:${port}`, { initialMs: 50, maxMs: 200 });
    link.install();
    const { lines } = capture("homeserver");
    const requests = [1, 2, 3, 4, 5].map((n) => doHttpRequest(`http://127.0.0.1:${port}`, "PUT", `/_matrix/client/v3/x/${n}`, null, { n }));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(link.health.snapshot().state, "down");
    assert.equal(link.health.snapshot().held, 5);
    await serve(port);
    const answers = await Promise.all(requests);
    assert.deepEqual(
      answers.map((a: { path: string }) => a.path),
      [1, 2, 3, 4, 5].map((n) => `/_matrix/client/v3/x/${n}`),
    );
    assert.equal(link.health.snapshot().state, "up");
    assert.equal(link.health.snapshot().outages, 1);
    assert.deepEqual(
      lines.filter((l) => l.module === "homeserver" && l.level !== "debug").map((l) => `${l.level} ${l.message}`),
      ["warn homeserver unreachable; Matrix-bound messages wait until it is back", "info homeserver reachable again"],
    );
  });

  it("passes on the homeserver's own 502 (a Matrix error), but waits out a proxy's 502 while the homeserver is down", async () => {
    const port = await freePort();
    const link = new HomeserverLink(`http://127.0.0.1:${port}`, { initialMs: 20, maxMs: 50 });
    link.install();
    let proxyErrors = 2;
    const server = http.createServer((req, res) => {
      if (req.url?.includes("ping")) {
        res.writeHead(502, { "content-type": "application/json" });
        return res.end(JSON.stringify({ errcode: "M_CONNECTION_FAILED", error: "could not reach the appservice" }));
      }
      if (proxyErrors-- > 0) {
        res.writeHead(502, { "content-type": "text/html" });
        return res.end("<html>Bad Gateway</html>");
      }
      res.end(JSON.stringify({ ok: true }));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
    await assert.rejects(
      doHttpRequest(`http://127.0.0.1:${port}`, "POST", "/_matrix/client/v1/appservice/x/ping", null, {}),
      (err: { errcode?: string }) => err.errcode === "M_CONNECTION_FAILED",
    );
    assert.equal(link.health.snapshot().outages, 0, "a Matrix error is an answer, not an outage");
    assert.deepEqual(await doHttpRequest(`http://127.0.0.1:${port}`, "GET", "/_matrix/client/v3/x"), { ok: true });
    assert.equal(link.health.snapshot().outages, 1, "the proxy's 502s were one outage, waited out");
  });

  it("holds media downloads and uploads through an outage too, in the same outage, logged once", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const link = new HomeserverLink(url, { initialMs: 20, maxMs: 100 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-outage-media-"));
    const media = new MatrixMedia({ homeserverUrl: url, asToken: "as-token", homeserver: link, tempDir: path.join(dir, "tmp") });
    const upload = path.join(dir, "photo.jpg");
    fs.writeFileSync(upload, "jpeg bytes");
    const { lines } = capture("homeserver");
    const download = media.download("mxc://hs/abc", 1024);
    const uploaded = media.upload("@whatsapp_491:hs", upload, "image/jpeg", "photo.jpg");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual({ state: link.health.snapshot().state, held: link.health.snapshot().held }, { state: "down", held: 2 });
    // Back behind a proxy that still refuses a few requests with its own 502/504 page.
    let proxyErrors = 3;
    const server = http.createServer((req, res) => {
      if (proxyErrors-- > 0) {
        res.writeHead(proxyErrors % 2 ? 502 : 504, { "content-type": "text/html" });
        return res.end("<html>Bad Gateway</html>");
      }
      if (req.method === "GET") return res.end("file bytes");
      req.resume().on("end", () => res.end(JSON.stringify({ content_uri: "mxc://hs/uploaded" })));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
    const file = await download;
    assert.equal(fs.readFileSync(file.path, "utf8"), "file bytes");
    assert.equal(await uploaded, "mxc://hs/uploaded");
    assert.deepEqual({ state: link.health.snapshot().state, outages: link.health.snapshot().outages, held: link.health.snapshot().held }, { state: "up", outages: 1, held: 2 });
    assert.deepEqual(
      lines.filter((l) => l.module === "homeserver" && l.level !== "debug").map((l) => `${l.level} ${l.message}`),
      ["warn homeserver unreachable; Matrix-bound messages wait until it is back", "info homeserver reachable again"],
    );
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("leaves a request the homeserver may have acted on to its caller", () => {
    assert.equal(isAmbiguousFailure(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })), true);
    assert.equal(isAmbiguousFailure(Object.assign(new Error("refused"), { code: "ECONNREFUSED" })), false);
    assert.equal(isAmbiguousFailure({ statusCode: 500 }), false);
  });
});

describe("link health", () => {
  it("counts an outage once however often the state flaps inside it", () => {
    const { logger, lines } = capture("link-test");
    const link = new LinkHealth("thing", logger, "work waits");
    link.up();
    for (let i = 0; i < 5; i++) link.down(`attempt ${i}`);
    link.up();
    link.up();
    assert.deepEqual(
      lines.filter((l) => l.module === "link-test").map((l) => `${l.level} ${l.message}`),
      ["warn thing unreachable; work waits", "info thing reachable again"],
    );
    assert.equal(link.snapshot().outages, 1);
    assert.equal(link.snapshot().lastError, "attempt 4");
  });

  it("the core reports the gateway connection as one outage across reconnect attempts, in its health object", () => {
    const store = BridgeStore.open(":memory:");
    const core = new BridgeCore(store, fakeMatrixPort(), fakeNetwork(), { thirdPartyDefault: true, permissions: new Permissions({}) });
    core.onConnectionState({ state: "connected" });
    assert.equal(core.health().network.state, "up");
    for (let i = 0; i < 4; i++) {
      core.onConnectionState({ state: "disconnected", reason: "connection refused", retryInMs: 100 });
      core.onConnectionState({ state: "connecting" });
    }
    const during = core.health();
    assert.equal(during.network.state, "down");
    assert.equal(during.network.lastError, "connection refused");
    assert.equal(during.outboundQueue, 0);
    core.onConnectionState({ state: "connected" });
    assert.deepEqual({ state: core.health().network.state, outages: core.health().network.outages }, { state: "up", outages: 1 });
    store.close();
  });
});
