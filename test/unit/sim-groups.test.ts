/**
 * Groups in the WhatsApp simulator: three simulated users (and a Matrix user on a third-party
 * SecureEndpoint) in one group through the real gateway, driven by the CLI and the control API.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { InteropClient } from "../../src/protocol/client.js";
import { SecureEndpoint, type PayloadEvent } from "../../src/protocol/endpoint.js";
import { FEATURE_GROUPS, isGroupRoom, userUri, type GroupEventFrame } from "../../src/protocol/frames.js";
import { decodeMimi } from "../../src/protocol/mimi.js";
import { MemoryRecordStore } from "../../src/protocol/signal.js";
import { CliError, formatEntry, runCli } from "../../sim/cli.js";
import { GatewayProcess, until } from "../support/gateway-process.js";
import { SimProcess, type Entry } from "../support/sim-process.js";

const HOME = "whatsapp.example";
const THIRD = "matrix.test";
const SECRETS = { [HOME]: "sim-secret", [THIRD]: "bridge-secret" };
const ANA = "+4915100000001";
const BEN = "+4915100000002";
const CEM = "+4915100000003";
const DORA = "+4915100000004"; // Third-Party Chats off
const ALICE = "@alice:matrix.test";
const CAROL = "@carol:matrix.test"; // Third-Party Chats off on the bridge
const alice = userUri(THIRD, ALICE);

describe("groups in the simulator", () => {
  let dir: string;
  let gw: GatewayProcess;
  let sim: SimProcess;
  let bridge: InteropClient;
  const received: PayloadEvent[] = [];
  const groupEvents: GroupEventFrame[] = [];
  let room = "";
  let firstId = "";

  /** Runs a CLI command; resolves with what it printed. */
  const cli = async (...argv: string[]): Promise<string[]> => {
    const lines: string[] = [];
    assert.equal(await runCli(["--api", sim.url, ...argv], { out: (l) => lines.push(l) }), 0);
    return lines;
  };
  const cliRefused = (code: string, ...argv: string[]) =>
    assert.rejects(runCli(["--api", sim.url, ...argv], { out: () => undefined }), (err: unknown) => err instanceof CliError && err.code === code);
  const inbox = (phone: string) => sim.ok<Entry[]>("GET", `/users/${encodeURIComponent(phone)}/inbox?after=0`);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "sim-groups-"));
    gw = new GatewayProcess({ dbPath: path.join(dir, "gateway.db"), recordPath: path.join(dir, "frames.log"), homeProvider: HOME, providers: SECRETS });
    await gw.start(0);
    sim = new SimProcess(["--gateway", gw.url, "--provider", HOME, "--secret", SECRETS[HOME], "--port", "0", "--db", path.join(dir, "sim.db"), "--matrix-provider", THIRD]);
    await sim.start();
    bridge = new InteropClient({ url: gw.url, provider: THIRD, secret: SECRETS[THIRD], features: [FEATURE_GROUPS], reconnect: { initialDelayMs: 50 } });
    const store = new MemoryRecordStore();
    const endpoint = new SecureEndpoint({ client: bridge, openRecords: () => store, onPayload: async (ev) => void received.push(ev) });
    bridge.onGroup(async (f) => void groupEvents.push(f));
    await bridge.connect();
    await endpoint.addUser(alice, { displayName: "Alice" });
    await bridge.enlist(userUri(THIRD, CAROL), "Carol", { thirdPartyChats: false });
    for (const [phone, name] of [
      [ANA, "Ana"],
      [BEN, "Ben"],
      [CEM, "Cem"],
    ])
      await cli("user", "add", phone!, "--name", name!);
    await cli("user", "add", DORA, "--name", "Dora", "--third-party", "off");
  });

  after(async () => {
    await bridge?.close();
    await sim?.stop();
    await gw?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates a group from the CLI, prints its room last, and says who could not be added", async () => {
    const [line] = await cli("group", "create", ANA, "Trip", "--member", BEN, "--member", CEM, "--member", ALICE, "--member", DORA, "--topic", "June");
    room = line!.split(" ").at(-1)!;
    assert.ok(isGroupRoom(room), line);
    assert.match(line!, /^created group "Trip" with 4 member\(s\); not added: \+4915100000004 \(third_party_disabled\) mimi:/);
    // Every member hears of it: the simulated ones in their inbox, the Matrix user as an event.
    for (const phone of [ANA, BEN, CEM]) {
      const e = await sim.waitFor(phone, (x) => x.kind === "group" && x.room === room);
      assert.equal(e.change, "created");
      assert.equal(e.fromId, ANA);
      assert.deepEqual(e.members, [ANA, BEN, CEM, ALICE]);
    }
    await until("alice's created event", () => groupEvents.some((g) => g.room === room && g.change === "created"));
    assert.equal(groupEvents.find((g) => g.room === room)!.group.topic, "June");
    assert.deepEqual(
      (await inbox(DORA)).filter((e) => e.kind === "group"),
      [],
    );
  });

  it("sends to the group: every other member gets it once, with room and sender", async () => {
    const [line] = await cli("send", ANA, room, "hello *group*");
    assert.match(line!, /^sent [0-9a-f]{64} at /);
    firstId = line!.split(" ")[1]!;
    for (const phone of [BEN, CEM]) {
      const e = await sim.waitFor(phone, (x) => x.kind === "text" && x.id === firstId);
      assert.equal(e.room, room);
      assert.equal(e.group, "Trip");
      assert.equal(e.fromId, ANA);
      assert.equal(e.text, "hello *group*");
      assert.match(formatEntry(e), /^#\d+ \S+ \S+ \+4915100000001 in "Trip" \(g-[0-9a-f]{8}…\) \[[0-9a-f]{12}…\]: hello \*group\*$/);
    }
    await until("alice's copy", () => received.some((r) => r.room === room && r.payload.kind === "content"));
    const copy = received.find((r) => r.room === room)!;
    const mimi = decodeMimi((copy.payload as { mimi: Uint8Array }).mimi);
    assert.equal(mimi.extensions.roomUri, room);
    assert.equal(copy.from, userUri(HOME, ANA));
    // Each member has exactly one copy, and the sender none.
    for (const phone of [BEN, CEM]) assert.equal((await inbox(phone)).filter((e) => e.id === firstId).length, 1);
    assert.equal((await inbox(ANA)).filter((e) => e.kind === "text").length, 0);
    // Delivery receipts come back per member.
    await sim.waitFor(ANA, (x) => x.kind === "delivered" && x.fromId === CEM && x.room === room);
  });

  it("carries reactions, edits, deletions, read receipts and typing in the group", async () => {
    const [reacted] = await cli("react", BEN, room, firstId, "👍");
    assert.match(reacted!, /^reacted [0-9a-f]{64} at /);
    for (const phone of [ANA, CEM]) {
      const e = await sim.waitFor(phone, (x) => x.kind === "reaction" && x.target === firstId);
      assert.equal(e.room, room);
      assert.equal(e.fromId, BEN);
    }
    await cli("edit", ANA, room, firstId, "hello everyone");
    await sim.waitFor(CEM, (x) => x.kind === "edit" && x.target === firstId && x.text === "hello everyone");
    await cli("read", CEM, room, firstId);
    const read = await sim.waitFor(ANA, (x) => x.kind === "read" && x.fromId === CEM);
    assert.equal(read.room, room);
    await cli("typing", CEM, room, "on");
    const typing = await sim.waitFor(BEN, (x) => x.kind === "typing" && x.fromId === CEM);
    assert.equal(typing.room, room);
    await cli("delete", ANA, room, firstId);
    await sim.waitFor(BEN, (x) => x.kind === "delete" && x.target === firstId);
  });

  it("refuses to add members whose Third-Party Chats are off, with the reason", async () => {
    await cliRefused("third_party_disabled", "group", "add", ANA, room, DORA);
    await cliRefused("not_opted_in", "group", "add", ANA, room, CAROL);
    await cliRefused("forbidden", "group", "add", BEN, room, DORA); // Ben is no admin
  });

  it("renames, removes and leaves, telling every member; a non-member cannot send", async () => {
    const [renamed] = await cli("group", "rename", ANA, room, "Trip 2026");
    assert.equal(renamed, `renamed ${room} to "Trip 2026"`);
    for (const phone of [BEN, CEM]) await sim.waitFor(phone, (x) => x.kind === "group" && x.change === "name" && x.group === "Trip 2026");
    await until("alice's rename", () => groupEvents.some((g) => g.room === room && g.change === "name"));

    const [removed] = await cli("group", "remove", ANA, room, CEM);
    assert.match(removed!, /^removed \+4915100000003 from "Trip 2026" \(g-[0-9a-f]{8}…\): \+4915100000001\*, \+4915100000002, @alice:matrix\.test$/);
    const gone = await sim.waitFor(CEM, (x) => x.kind === "group" && x.change === "removed");
    assert.equal(gone.subjectId, CEM);
    assert.match(formatEntry(gone), /\+4915100000001 in "Trip 2026" \(g-[0-9a-f]{8}…\) removed \+4915100000003$/);
    await sim.waitFor(BEN, (x) => x.kind === "group" && x.change === "removed");
    await cliRefused("not_member", "send", CEM, room, "still here?");
    await cliRefused("not_member", "send", DORA, room, "let me in");

    const [left] = await cli("group", "leave", BEN, room);
    assert.equal(left, `${BEN} left ${room}`);
    await sim.waitFor(ANA, (x) => x.kind === "group" && x.change === "left" && x.fromId === BEN);
    await until("alice's leave event", () => groupEvents.some((g) => g.room === room && g.change === "left"));

    const [listed] = await cli("group", "list", ANA);
    assert.equal(listed, `${room}  "Trip 2026"  2 member(s): ${ANA}*, ${ALICE}`);
    assert.deepEqual(await cli("group", "list", CEM), ["(no groups)"]);
    // What is left of the group still works.
    await cli("send", ANA, room, "just us now");
    await until("alice's copy", () =>
      received.some(
        (r) =>
          r.room === room &&
          r.payload.kind === "content" &&
          decodeMimi(r.payload.mimi).body.cardinality === "single" &&
          Buffer.from((decodeMimi(r.payload.mimi).body as { content: Uint8Array }).content).toString() === "just us now",
      ),
    );
    const lines = await cli("inbox", BEN);
    assert.ok(
      lines.some((l) => / \+4915100000002 in "Trip 2026" \(g-[0-9a-f]{8}…\) left$/.test(l)),
      lines.join("\n"),
    );
  });
});
