/**
 * Fails when a Matrix library changes under src/matrix/library-internals.ts: another installed
 * version, a second copy of a library the bridge patches, or private members that moved.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, describe, it } from "node:test";
import { MatrixClient } from "@vector-im/matrix-bot-sdk";
import { AppService } from "matrix-appservice";
import { replaceAppServiceHandlers, type RequestFn, WRITTEN_FOR, wrapMatrixRequests } from "../../src/matrix/library-internals";
import { freePort } from "../support/homeserver";

/** The folder of the package `name` as Node finds it from `fromDir`. */
function packageDir(name: string, fromDir = __dirname): string {
  let dir = path.dirname(require.resolve(name, { paths: [fromDir] }));
  while (!fs.existsSync(path.join(dir, "package.json")) || JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).name !== name) {
    const parent = path.dirname(dir);
    assert.notEqual(parent, dir, `no package.json of ${name} above its entry point`);
    dir = parent;
  }
  return dir;
}

const versionOf = (dir: string): string => JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;

const closers: (() => Promise<void>)[] = [];
after(async () => {
  for (const close of closers) await close();
});

describe("the Matrix library internals the bridge relies on", () => {
  it("are those of the library versions library-internals.ts was written for", () => {
    for (const [name, version] of Object.entries(WRITTEN_FOR)) {
      assert.equal(versionOf(packageDir(name)), version, `${name} changed: read library-internals.ts against its new source, then update WRITTEN_FOR`);
    }
  });

  it("are patched in the one copy matrix-appservice-bridge itself loads", () => {
    const bridgeDir = packageDir("matrix-appservice-bridge");
    for (const name of ["@vector-im/matrix-bot-sdk", "matrix-appservice"]) {
      assert.equal(packageDir(name, bridgeDir), packageDir(name), `matrix-appservice-bridge loads its own copy of ${name}: a patch of ours would not reach it`);
    }
  });

  it("route matrix-appservice's transaction route and token checks to the replacements", async () => {
    assert.equal(typeof (AppService.prototype as unknown as Record<string, unknown>).onTransaction, "function");
    assert.equal(typeof (AppService.prototype as unknown as Record<string, unknown>).isInvalidToken, "function");
    const calls: string[] = [];
    class Replaced extends AppService {}
    replaceAppServiceHandlers(Replaced, {
      onTransaction(req, res) {
        calls.push(`transaction ${req.params.txnId}`);
        res.status(200).json({});
      },
      isInvalidToken(req, res) {
        calls.push(`token ${req.params.userId}`);
        res.status(401).json({ errcode: "M_UNAUTHORIZED" });
        return true;
      },
    });
    const appservice = new Replaced({ homeserverToken: "hs-token" });
    const port = await freePort();
    await appservice.listen(port, "127.0.0.1", 10);
    closers.push(() => appservice.close());
    const base = `http://127.0.0.1:${port}/_matrix/app/v1`;
    const put = await fetch(`${base}/transactions/t1`, { method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ events: [] }) });
    assert.equal(put.status, 200);
    const users = await fetch(`${base}/users/${encodeURIComponent("@someone:hs")}`);
    assert.equal(users.status, 401, "the library's user query asked the replaced token check");
    assert.deepEqual(calls, ["transaction t1", "token @someone:hs"]);
  });

  it("send every matrix-bot-sdk request through the wrapped request function", async () => {
    const server = http.createServer((req, res) => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ versions: ["v1.11"] }));
    });
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    closers.push(() => new Promise((resolve) => server.close(() => resolve())));
    const seen: string[] = [];
    wrapMatrixRequests((inner): RequestFn => (params, callback) => {
      seen.push(`${params.method} ${params.uri ?? params.url}`);
      return inner(params, callback);
    });
    const client = new MatrixClient(`http://127.0.0.1:${port}`, "as-token");
    const answer = (await client.doRequest("GET", "/_matrix/client/versions")) as { versions: string[] };
    assert.deepEqual(answer.versions, ["v1.11"]);
    assert.deepEqual(seen, [`GET http://127.0.0.1:${port}/_matrix/client/versions`]);
  });
});
