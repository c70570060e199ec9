/**
 * A transaction the homeserver never sends (real Synapse, gateway, simulator and bridge). Synapse
 * strands a transaction when an event arrives just as its recoverer finishes resending what it
 * held for an appservice that was away (docs/operations.md, "Nothing lost when it crashes"). That
 * race cannot be timed from outside, so a proxy between Synapse and the bridge plays it: after a
 * SIGKILL and restart of the bridge, it answers one transaction itself and drops it. The bridge
 * must still deliver that message, in its place in the chat, once.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";
import { freePort } from "../support/homeserver";
import { PROVIDER_DOMAIN, Stack } from "../support/stack";

const WAIT = { timeoutMs: 120_000 };

/** Forwards every request to the bridge, except a transaction `drop` picks: answered 200, never forwarded. */
class TransactionProxy {
  private server?: http.Server;
  private dropOne?: (body: string) => boolean;
  readonly dropped: string[] = [];

  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks);
        if (req.method === "PUT" && req.url?.includes("/transactions/") && this.dropOne?.(body.toString("utf8"))) {
          this.dropOne = undefined;
          this.dropped.push(req.url);
          res.writeHead(200, { "content-type": "application/json" }).end("{}");
          return;
        }
        const headers = { ...req.headers };
        delete headers["content-length"];
        fetch(`http://127.0.0.1:${this.target}${req.url}`, {
          method: req.method,
          headers: headers as Record<string, string>,
          body: ["GET", "HEAD"].includes(req.method!) ? undefined : body,
        })
          .then(async (answer) => {
            res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "application/json" }).end(Buffer.from(await answer.arrayBuffer()));
          })
          .catch(() => {
            // The bridge is down: as the homeserver would see it, the connection fails.
            req.socket.destroy();
          });
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, "127.0.0.1", resolve));
  }

  /** The next transaction whose body holds `text` is answered here and dropped. */
  drop(text: string): void {
    this.dropOne = (body) => body.includes(text);
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

let stack: Stack;
let proxy: TransactionProxy;

before(async () => {
  const bridgePort = await freePort();
  proxy = new TransactionProxy(await freePort(), bridgePort);
  await proxy.start();
  stack = await Stack.start("strand", { ports: { appservice: bridgePort }, registrationUrl: `http://127.0.0.1:${proxy.port}` });
});

after(async () => {
  await stack?.stop();
  await proxy?.stop();
});

test("after a restart, a transaction the homeserver never sends still reaches WhatsApp, in its place and once, whether later messages follow it or not", async () => {
  const phone = "+4915200009301";
  await stack.sim.createUser(phone, "Stella");
  const user = await stack.user("strand");
  await stack.botRoom(user, { enable: true });
  const ghost = stack.ghostId(phone);
  await stack.sim.sendText(phone, `mimi://${PROVIDER_DOMAIN}/u/${user.userId}`, "Hi, this is Stella");
  const invite = await user.waitForInvite((i) => i.inviter === ghost, WAIT);
  await user.joinRoom(invite.roomId);
  await user.waitFor((e) => e.room_id === invite.roomId && e.sender === ghost && e.type === "m.room.message", WAIT);
  const arrives = (text: string) => stack.sim.waitForInbox(phone, (e) => e.kind === "text" && e.text === text, WAIT.timeoutMs);

  await user.sendText(invite.roomId, "one: before the crash");
  await arrives("one: before the crash");

  // The bridge dies; Synapse holds what is sent meanwhile and resends it when the bridge is back.
  await stack.bridge.stop("SIGKILL");
  await user.sendText(invite.roomId, "two: while the bridge is away");
  await stack.startBridge();
  await arrives("two: while the bridge is away");

  // Stranded, then followed by another message of the same chat.
  proxy.drop("three: stranded");
  await user.sendText(invite.roomId, "three: stranded");
  await user.sendText(invite.roomId, "four: after it");
  await arrives("four: after it");
  assert.equal(proxy.dropped.length, 1, "the proxy dropped the transaction");

  // Stranded, and nothing follows it in its chat.
  proxy.drop("five: stranded, last");
  await user.sendText(invite.roomId, "five: stranded, last");
  await arrives("five: stranded, last");
  assert.equal(proxy.dropped.length, 2);

  const texts = (await stack.sim.inbox(phone)).filter((e) => e.kind === "text").map((e) => e.text);
  assert.deepEqual(texts, ["one: before the crash", "two: while the bridge is away", "three: stranded", "four: after it", "five: stranded, last"]);
  assert.match(stack.logs(), /the homeserver had not pushed some events; taken from the room timelines/);
});
