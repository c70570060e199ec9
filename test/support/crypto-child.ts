/**
 * A child process for test/unit/crypto-store.test.ts: two OlmMachines ("alice" the bridge's user,
 * "bob" a peer) over one durable crypto store, talking without a homeserver (the requests' answers
 * are built from the other machine's uploads). Prints one JSON line per step on stdout.
 *
 *   node crypto-child.js FILE SECRET create   set up keys, a room key, one message; then waits to be killed
 *   node crypto-child.js FILE SECRET reopen CIPHERTEXT_JSON   reopen and check both directions
 *   node crypto-child.js FILE SECRET forget-room CIPHERTEXT_JSON   delete bob's keys of the room (key hygiene)
 *   node crypto-child.js FILE SECRET try-decrypt CIPHERTEXT_JSON   can bob still decrypt?
 */
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { MachineStore } from "../../src/crypto/store/machine-store";

const ALICE = "@alice:test.invalid";
const BOB = "@bob:test.invalid";
const ROOM = "!room:test.invalid";

function say(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Answers the machine's key uploads (returns their bodies) and nothing else. */
async function uploadKeys(machine: sdk.OlmMachine): Promise<Record<string, unknown>[]> {
  const bodies: Record<string, unknown>[] = [];
  for (const request of await machine.outgoingRequests()) {
    if (request instanceof sdk.KeysUploadRequest) {
      const body = JSON.parse(request.body) as { one_time_keys?: Record<string, unknown> };
      bodies.push(body);
      const count = Object.keys(body.one_time_keys ?? {}).length;
      await machine.markRequestAsSent(request.id!, request.type, JSON.stringify({ one_time_key_counts: { signed_curve25519: count } }));
    }
  }
  return bodies;
}

async function main(): Promise<void> {
  const [file, secret, phase, payload] = process.argv.slice(2);
  const store = await MachineStore.open(file, secret);
  const aliceDevice = store.deviceOf(ALICE) ?? "ALICEDEV";
  const bobDevice = store.deviceOf(BOB) ?? "BOBDEV";
  const alice = await store.openMachine(ALICE, aliceDevice);
  const bob = await store.openMachine(BOB, bobDevice);
  const identity = { alice: alice.identityKeys.curve25519.toBase64(), bob: bob.identityKeys.curve25519.toBase64(), aliceEd: alice.identityKeys.ed25519.toBase64() };

  if (phase === "create") {
    const aliceUploads = await uploadKeys(alice);
    const bobUploads = await uploadKeys(bob);
    const bobKeys = bobUploads[0] as { device_keys: unknown; one_time_keys: Record<string, unknown> };
    const aliceKeys = aliceUploads[0] as { device_keys: unknown };
    // Alice learns Bob's device (keys/query) and claims one of his one-time keys (keys/claim).
    await alice.updateTrackedUsers([new sdk.UserId(BOB)]);
    for (const request of await alice.outgoingRequests()) {
      if (request instanceof sdk.KeysQueryRequest) {
        await alice.markRequestAsSent(request.id!, request.type, JSON.stringify({ device_keys: { [BOB]: { [bobDevice]: bobKeys.device_keys } } }));
      }
    }
    const claim = await alice.getMissingSessions([new sdk.UserId(BOB)]);
    if (!claim) throw new Error("no key claim for bob");
    const [otkId, otk] = Object.entries(bobKeys.one_time_keys)[0];
    await alice.markRequestAsSent(claim.id!, claim.type, JSON.stringify({ one_time_keys: { [BOB]: { [bobDevice]: { [otkId]: otk } } } }));
    // Bob learns Alice's device too, so her messages are not "from an unknown device".
    await bob.updateTrackedUsers([new sdk.UserId(ALICE)]);
    for (const request of await bob.outgoingRequests()) {
      if (request instanceof sdk.KeysQueryRequest) {
        await bob.markRequestAsSent(request.id!, request.type, JSON.stringify({ device_keys: { [ALICE]: { [aliceDevice]: aliceKeys.device_keys } } }));
      }
    }
    const toDevice = await alice.shareRoomKey(new sdk.RoomId(ROOM), [new sdk.UserId(BOB)], new sdk.EncryptionSettings());
    const events: unknown[] = [];
    for (const request of toDevice) {
      const body = JSON.parse(request.body) as { messages: Record<string, Record<string, unknown>> };
      events.push({ type: request.event_type, sender: ALICE, content: body.messages[BOB][bobDevice] });
      await alice.markRequestAsSent(request.id, request.type, "{}");
    }
    await bob.receiveSyncChanges(JSON.stringify(events), new sdk.DeviceLists(), new Map(), new Set());
    const content = await alice.encryptRoomEvent(new sdk.RoomId(ROOM), "m.room.message", JSON.stringify({ msgtype: "m.text", body: "before the kill" }));
    const event = { type: "m.room.encrypted", sender: ALICE, event_id: "$one", origin_server_ts: Date.now(), room_id: ROOM, content: JSON.parse(content) };
    const decrypted = await bob.decryptRoomEvent(JSON.stringify(event), new sdk.RoomId(ROOM), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
    say({ step: "created", identity, aliceDevice, bobDevice, event, bobRead: JSON.parse(decrypted.event).content.body });
    // Stay alive until the test kills us: the state must already be on disk.
    setInterval(() => undefined, 1000);
    return;
  }

  if (phase === "forget-room" || phase === "try-decrypt") {
    await hygiene(phase, payload, store, bob);
    alice.close();
    bob.close();
    store.close();
    return;
  }

  if (phase === "reopen") {
    const pendingUploads = (await alice.outgoingRequests())
      .filter((r) => r instanceof sdk.KeysUploadRequest)
      .map((r) => JSON.parse((r as sdk.KeysUploadRequest).body) as { device_keys?: unknown });
    const event = JSON.parse(payload) as Record<string, unknown>;
    const old = await bob.decryptRoomEvent(JSON.stringify(event), new sdk.RoomId(ROOM), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
    // The outbound session survived too: sharing again sends nothing, and Bob reads the next message.
    const reshare = await alice.shareRoomKey(new sdk.RoomId(ROOM), [new sdk.UserId(BOB)], new sdk.EncryptionSettings());
    const content = await alice.encryptRoomEvent(new sdk.RoomId(ROOM), "m.room.message", JSON.stringify({ msgtype: "m.text", body: "after the kill" }));
    const next = { type: "m.room.encrypted", sender: ALICE, event_id: "$two", origin_server_ts: Date.now(), room_id: ROOM, content: JSON.parse(content) };
    const fresh = await bob.decryptRoomEvent(JSON.stringify(next), new sdk.RoomId(ROOM), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
    say({
      step: "reopened",
      identity,
      aliceDevice,
      bobDevice,
      deviceKeysUploadedAgain: pendingUploads.some((b) => b.device_keys !== undefined),
      reshareRequests: reshare.length,
      bobReadOld: JSON.parse(old.event).content.body,
      bobReadNew: JSON.parse(fresh.event).content.body,
    });
    alice.close();
    bob.close();
    store.close();
  }
}

async function hygiene(phase: string, payload: string, store: MachineStore, bob: sdk.OlmMachine): Promise<void> {
  const event = JSON.parse(payload) as Record<string, unknown>;
  let deleted = 0;
  if (phase === "forget-room") {
    deleted = await store.deleteInboundSessions(BOB, (roomId) => roomId === ROOM);
    // Another room's keys, if any, are not touched: the predicate sees each key's room.
    await store.deleteInboundSessions(BOB, (roomId) => roomId === "!other:test.invalid");
  }
  let decrypted: string | undefined;
  let error: string | undefined;
  try {
    const result = await bob.decryptRoomEvent(JSON.stringify(event), new sdk.RoomId(ROOM), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
    decrypted = JSON.parse(result.event).content.body;
  } catch (err) {
    error = err instanceof sdk.MegolmDecryptionError ? sdk.DecryptionErrorCode[err.code] : (err as Error).message;
  }
  say({ step: phase, deleted, decrypted, error });
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
