/**
 * Element Web (the real Matrix client, a production build) for the browser tests and the demo.
 *
 * The build is not on the npm registry and too heavy to build here, so the project takes it as a
 * fixture: a tarball in ../shared/element-web/ (next to the repository), or wherever
 * ELEMENT_WEB_DIR points (that folder, or the tarball itself). It is checked against its SHA-256,
 * unpacked once into ~/.cache/matrix-interop-bridge/element-web-<version>/ and served by a small
 * static server on 127.0.0.1 with a config.json, made per server, that points Element at one
 * homeserver. The config is served from memory rather than written into the shared cache, so
 * parallel runs against different homeservers do not overwrite each other's.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { repoRoot } from "./homeserver";

export const ELEMENT_WEB_VERSION = "v1.12.7";
export const ELEMENT_WEB_TARBALL = `element-web-${ELEMENT_WEB_VERSION}.tar.gz`;
export const ELEMENT_WEB_SHA256 = "cb076f7f6b40f98570c15ae4ce2d93e62f29c1e80cd085b47321de618058c368";

/** Where the tarball is looked for, in order; the first that exists wins. */
export function elementTarballCandidates(): string[] {
  const fromEnv = process.env.ELEMENT_WEB_DIR;
  const candidates: string[] = [];
  if (fromEnv) candidates.push(fromEnv.endsWith(".tar.gz") ? path.resolve(fromEnv) : path.resolve(fromEnv, ELEMENT_WEB_TARBALL));
  candidates.push(path.resolve(repoRoot(), "..", "shared", "element-web", ELEMENT_WEB_TARBALL));
  return candidates;
}

/** The tarball's path, or undefined when no candidate exists (the demo then runs without Element). */
export function findElementTarball(): string | undefined {
  return elementTarballCandidates().find((p) => fs.existsSync(p));
}

function cacheRoot(): string {
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "matrix-interop-bridge");
}

/**
 * The unpacked build's `webapp` folder, unpacking it first if needed. Throws, saying where it
 * looked, when the tarball is missing, and refuses a tarball whose SHA-256 is not the pinned one.
 */
export function ensureElementWeb(): string {
  const target = path.join(cacheRoot(), `element-web-${ELEMENT_WEB_VERSION}`);
  const webapp = path.join(target, "webapp");
  // The marker is written last, so a half-finished unpack (killed run) is never taken for a build.
  const marker = path.join(target, ".sha256");
  if (fs.existsSync(marker) && fs.readFileSync(marker, "utf8").trim() === ELEMENT_WEB_SHA256) return webapp;
  const tarball = findElementTarball();
  if (!tarball) {
    throw new Error(
      `Element Web ${ELEMENT_WEB_VERSION} is missing: looked for ${elementTarballCandidates().join(" and ")}. ` +
        `Set ELEMENT_WEB_DIR to the folder holding ${ELEMENT_WEB_TARBALL} (see docs/testing.md, "Element in a browser").`,
    );
  }
  const sha = createHash("sha256").update(fs.readFileSync(tarball)).digest("hex");
  if (sha !== ELEMENT_WEB_SHA256) throw new Error(`${tarball}: SHA-256 is ${sha}, expected ${ELEMENT_WEB_SHA256}; refusing to serve it`);
  fs.mkdirSync(cacheRoot(), { recursive: true });
  // Unpack beside the target and rename into place: two runs unpacking at once cannot mix files.
  const staging = fs.mkdtempSync(path.join(cacheRoot(), `.element-web-unpack-`));
  try {
    execFileSync("tar", ["-xzf", tarball, "-C", staging], { stdio: "pipe" });
    if (!fs.existsSync(path.join(staging, "webapp", "index.html"))) throw new Error(`${tarball} holds no webapp/index.html`);
    fs.writeFileSync(path.join(staging, ".sha256"), `${ELEMENT_WEB_SHA256}\n`);
    fs.rmSync(target, { recursive: true, force: true });
    try {
      fs.renameSync(staging, target);
    } catch (err) {
      // Another run renamed its copy first; theirs is as good as ours.
      if (!fs.existsSync(marker)) throw err;
    }
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
  return webapp;
}

/** Element's config.json for one homeserver (the settings verified in ../shared/element-web/README.md). */
export function elementConfig(homeserverUrl: string, serverName: string): Record<string, unknown> {
  return {
    default_server_config: { "m.homeserver": { base_url: homeserverUrl, server_name: serverName } },
    disable_custom_urls: false,
    disable_guests: true,
    disable_3pid_login: true,
    brand: "Element",
    show_labs_settings: false,
  };
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".txt": "text/plain; charset=utf-8",
  ".webmanifest": "application/manifest+json",
};

export interface ElementServer {
  /** e.g. http://127.0.0.1:41234/ */
  url: string;
  /** Element's sign-in page. */
  loginUrl: string;
  config: Record<string, unknown>;
  stop(): Promise<void>;
}

/**
 * Serves Element on 127.0.0.1 (a free port unless given), pointed at one homeserver. Only
 * GET/HEAD of files inside the build; `/config.json` is the per-server config.
 */
export async function serveElementWeb(opts: { homeserverUrl: string; serverName: string; port?: number; webapp?: string }): Promise<ElementServer> {
  const webapp = opts.webapp ?? ensureElementWeb();
  const config = elementConfig(opts.homeserverUrl, opts.serverName);
  const configBody = JSON.stringify(config, null, 2);
  const server = http.createServer((req, res) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405).end();
      return;
    }
    let pathname: string;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (pathname === "/config.json") {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : configBody);
      return;
    }
    if (pathname.endsWith("/")) pathname += "index.html";
    const file = path.join(webapp, path.normalize(pathname));
    if (!file.startsWith(webapp + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { "content-type": "text/plain" }).end("not found");
        return;
      }
      res.writeHead(200, { "content-type": TYPES[path.extname(file).toLowerCase()] ?? "application/octet-stream", "content-length": st.size });
      if (req.method === "HEAD") res.end();
      else fs.createReadStream(file).pipe(res);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return {
    url,
    loginUrl: `${url}#/login`,
    config,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
