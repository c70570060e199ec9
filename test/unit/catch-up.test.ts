/**
 * Events the homeserver never pushed (catch-up.ts): Synapse can strand an appservice transaction
 * at the end of its recovery. A homeserver is played here by a room timeline and transactions
 * PUT to a real DurableAppService over HTTP, with a real store; one event is left out of the
 * transactions, as Synapse leaves it.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { CatchUp, type RawEvent } from "../../src/matrix/catch-up";
import { DurableAppService } from "../../src/matrix/durable-appservice";
import { BridgeStore } from "../../src/store";
import { freePort } from "../support/homeserver";

const HS_TOKEN = "hs-token-for-catch-up-tests";
const ROOM = "!portal:hs";
const OTHER = "!other:hs";
const GHOST = "@whatsapp_491:hs";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const at = Date.now();
const message = (n: number, room = ROOM, sender = "@alice:hs", ts = at + n): RawEvent => ({
  event_id: `$m${n}`,
  room_id: room,
  sender,
  type: "m.room.message",
  origin_server_ts: ts,
  content: { msgtype: "m.text", body: `message ${n}` },
  // Synapse says how long it has held each event it pushes; these are pushed as they happen.
  unsigned: { age: 0 },
});

/** A homeserver's rooms (their timelines, oldest first), a bridge with the catch-up, and what the bridge was handed. */
async function setUp(opts: { windowMs?: number; pauseMs?: number; open?: boolean; now?: () => number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mib-catchup-"));
  dirs.push(dir);
  const store = BridgeStore.open(path.join(dir, "bridge.db"));
  const rooms = new Map<string, RawEvent[]>([
    [ROOM, []],
    [OTHER, []],
  ]);
  const reads: string[] = [];
  const isOwnUser = (mxid: string) => mxid === GHOST;
  let catchUp: CatchUp;
  const appservice = new DurableAppService({
    homeserverToken: HS_TOKEN,
    journal: store.journal,
    maxBodyBytes: 1024 * 1024,
    isOwnUser,
    missedBefore: (txnId, events) => catchUp.missedBefore(txnId, events),
  });
  catchUp = new CatchUp({
    journal: store.journal,
    activeRooms: () => [],
    recentEvents: async (roomId, limit) => {
      reads.push(roomId);
      return (rooms.get(roomId) ?? []).slice(-limit);
    },
    isOwnUser,
    journalMissed: (events) => appservice.journalMissed(events),
    windowMs: opts.windowMs ?? 60_000,
    pauseMs: opts.pauseMs ?? 60_000,
    now: opts.now,
  });
  const handed: string[] = [];
  appservice.on("event", (e: Record<string, unknown>) => {
    handed.push(String(e.event_id));
  });
  const port = await freePort();
  await appservice.listen(port, "127.0.0.1", 10);
  appservice.startDispatching();
  if (opts.open !== false) catchUp.open("test");
  let txn = 0;
  /** The homeserver: the events join their rooms' timelines; pushed only when `push` says so. */
  const happen = (...events: RawEvent[]) => events.forEach((e) => rooms.get(e.room_id as string)!.push(e));
  const push = async (events: RawEvent[], txnId = String(++txn)) => {
    const res = await fetch(`http://127.0.0.1:${port}/_matrix/app/v1/transactions/${txnId}`, {
      method: "PUT",
      headers: { "content-type": "application/json", authorization: `Bearer ${HS_TOKEN}` },
      body: JSON.stringify({ events }),
    });
    assert.equal(res.status, 200);
  };
  const stop = async () => {
    catchUp.stop();
    appservice.stopDispatching();
    await appservice.close();
    store.close();
  };
  return { store, catchUp, handed, reads, happen, push, stop };
}

describe("catching up on events the homeserver did not push", () => {
  it("a stranded event is handed to the bridge before the next event of its room, once", async () => {
    const hs = await setUp();
    try {
      const [m1, m2, m3, m4] = [message(1), message(2), message(3), message(4)];
      hs.happen(m1);
      await hs.push([m1]);
      hs.happen(m2, m3); // m2's transaction is stranded
      await hs.push([m3]);
      hs.happen(m4);
      await hs.push([m4]);
      await hs.push([m2], "stranded"); // delivered at the homeserver's next recovery
      assert.deepEqual(hs.handed, ["$m1", "$m2", "$m3", "$m4"]);
    } finally {
      await hs.stop();
    }
  });

  it("skips the bridge's own echo and events of other rooms, and takes state events of its own users", async () => {
    const hs = await setUp();
    try {
      const echo = message(2, ROOM, GHOST);
      const ghostJoin = { ...message(3, ROOM, GHOST), type: "m.room.member", state_key: GHOST, content: { membership: "join" }, event_id: "$join" };
      const elsewhere = message(4, OTHER);
      hs.happen(message(1));
      await hs.push([message(1)]);
      hs.happen(echo, ghostJoin, elsewhere, message(5));
      await hs.push([message(5)]);
      assert.deepEqual(hs.handed, ["$m1", "$join", "$m5"], "the ghost's join is taken, its message and the other room's event are not");
      const reads = hs.reads.length;
      hs.happen(message(6, ROOM, GHOST));
      await hs.push([message(6, ROOM, GHOST)]);
      assert.equal(hs.reads.length, reads, "a transaction holding only the bridge's echo costs no homeserver request");
    } finally {
      await hs.stop();
    }
  });

  it("reads back only to the last journaled event: what lies before it is the room's past", async () => {
    const hs = await setUp({ open: false });
    try {
      // m0 was never pushed (say, it came before the bridge's journal knew the room); m1 was, before the window.
      hs.happen(message(0), message(1));
      await hs.push([message(1)]);
      hs.catchUp.open("test");
      hs.happen(message(2), message(3));
      await hs.push([message(3)]);
      assert.deepEqual(hs.handed, ["$m1", "$m2", "$m3"]);
    } finally {
      await hs.stop();
    }
  });

  it("never takes events from before the window's lookback, and reads nothing once the window has closed", async () => {
    const old = await setUp();
    try {
      const ancient = { ...message(1, ROOM, "@alice:hs", at - 24 * 3600_000), unsigned: { age: 24 * 3600_000 } };
      old.happen(ancient, message(2));
      await old.push([message(2)]);
      assert.deepEqual(old.handed, ["$m2"], "a day-old event the journal does not know is history, not a stranded event");
    } finally {
      await old.stop();
    }
    const closed = await setUp({ open: false });
    try {
      closed.happen(message(1), message(2));
      await closed.push([message(2)]);
      assert.deepEqual(closed.handed, ["$m2"]);
      assert.deepEqual(closed.reads, [], "outside the window transactions cost no homeserver request");
    } finally {
      await closed.stop();
    }
  });

  it("soon after the start, events the homeserver held from before it open the window; live events alone do not", async () => {
    const hs = await setUp({ open: false });
    try {
      hs.happen(message(1), message(2));
      await hs.push([{ ...message(2), unsigned: { age: 5 } }]);
      assert.equal(hs.catchUp.active, false, "an event sent after the start is no sign of a recovery");
      assert.deepEqual(hs.reads, []);
      hs.happen(message(3), message(4));
      await hs.push([{ ...message(4), unsigned: { age: 60_000 } }]);
      assert.equal(hs.catchUp.active, true, "an event a minute old was held by the homeserver while the bridge was away");
      assert.deepEqual(hs.handed, ["$m2", "$m3", "$m4"], "m1 is before the last journaled event (m2): the room's past");
    } finally {
      await hs.stop();
    }
  });

  it("long after the start, an event the homeserver held back for 30 s opens the window", async () => {
    let later = 0;
    const hs = await setUp({ open: false, now: () => Date.now() + later });
    try {
      later = 3600_000; // an hour after the start
      hs.happen(message(1), message(2));
      await hs.push([{ ...message(2), unsigned: { age: 20 } }]);
      assert.equal(hs.catchUp.active, false);
      hs.happen(message(3), message(4));
      await hs.push([{ ...message(4), unsigned: { age: 30_000 } }]);
      assert.equal(hs.catchUp.active, true);
      assert.deepEqual(hs.handed, ["$m2", "$m3", "$m4"]);
    } finally {
      await hs.stop();
    }
  });

  it("a resent transaction opens the window (the homeserver is recovering)", async () => {
    const hs = await setUp({ open: false });
    try {
      hs.happen(message(1));
      await hs.push([message(1)], "7");
      await hs.push([message(1)], "7");
      assert.equal(hs.catchUp.active, true);
      hs.happen(message(2), message(3));
      await hs.push([message(3)]);
      assert.deepEqual(hs.handed, ["$m1", "$m2", "$m3"]);
    } finally {
      await hs.stop();
    }
  });

  it("a sweep finds a stranded event after which its room saw nothing", async () => {
    const hs = await setUp();
    try {
      hs.happen(message(1), message(10, OTHER));
      await hs.push([message(1), message(10, OTHER)]);
      hs.happen(message(2), message(3)); // the last two of the room, stranded
      hs.happen(message(4, ROOM, GHOST)); // then only the ghost spoke
      hs.reads.length = 0;
      await hs.catchUp.sweep("test");
      assert.deepEqual(hs.handed, ["$m1", "$m10", "$m2", "$m3"]);
      assert.deepEqual(hs.reads.sort(), [OTHER, ROOM], "the rooms with journaled events were read");
      await hs.catchUp.sweep("again");
      assert.deepEqual(hs.handed, ["$m1", "$m10", "$m2", "$m3"], "a second sweep finds nothing new");
    } finally {
      await hs.stop();
    }
  });

  it("sweeps by itself when transactions pause", async () => {
    const hs = await setUp({ pauseMs: 50 });
    try {
      hs.happen(message(1));
      await hs.push([message(1)]);
      hs.happen(message(2));
      const deadline = Date.now() + 10_000;
      while (!hs.handed.includes("$m2") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(hs.handed, ["$m1", "$m2"]);
    } finally {
      await hs.stop();
    }
  });
});
