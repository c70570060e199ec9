import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  EncryptedRecordStore,
  MemoryRecordStore,
  SignalLayerError,
  SignalMessageType,
  SignalParty,
  deriveStoreKey,
  type PreKeyBundleData,
  type PublishedKeys,
  type SignalCiphertext,
  type SignalLayerErrorCode,
  type SignalRecordStore,
} from "../../src/protocol/signal.js";

const ALICE = "mimi://matrix.example.org/u/@alice:example.org";
const BOB = "mimi://whatsapp.example/u/+4915123456789";
const CAROL = "mimi://whatsapp.example/u/+4915199999999";

/** Stand-in for the gateway's key directory: hands out each one-time key once. */
class Directory {
  private readonly published = new Map<string, PublishedKeys>();
  fetches = 0;

  publish(party: SignalParty, opts?: { oneTimeCount?: number }): PublishedKeys {
    const keys = party.prepareKeys(opts);
    this.published.set(party.address, { ...keys, oneTimePreKeys: [...keys.oneTimePreKeys] });
    return keys;
  }

  fetcher(address: string): () => Promise<PreKeyBundleData> {
    return async () => {
      this.fetches++;
      const keys = this.published.get(address);
      if (!keys) throw new Error(`no keys for ${address}`);
      const oneTimePreKey = keys.oneTimePreKeys.shift();
      return {
        registrationId: keys.registrationId,
        deviceId: 1,
        identityKey: keys.identityKey,
        signedPreKey: keys.signedPreKey,
        kyberPreKey: keys.kyberPreKey,
        ...(oneTimePreKey ? { oneTimePreKey } : {}),
      };
    };
  }
}

const noFetch = async (): Promise<PreKeyBundleData> => {
  throw new Error("unexpected bundle fetch");
};

const bytes = (s: string) => new Uint8Array(Buffer.from(s, "utf8"));
const text = (b: Uint8Array) => Buffer.from(b).toString("utf8");
const contains = (hay: Uint8Array, needle: Uint8Array) => Buffer.from(hay).includes(Buffer.from(needle));

async function rejectsWith(promise: Promise<unknown>, code: SignalLayerErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SignalLayerError, `expected SignalLayerError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

async function send(from: SignalParty, to: SignalParty, body: string, fetch = noFetch): Promise<SignalCiphertext> {
  const message = await from.encrypt(to.address, bytes(body), fetch);
  assert.equal(text(await to.decrypt(from.address, message)), body);
  return message;
}

/** Alice has fetched Bob's bundle and they exchanged one message each way. */
async function pair(aliceStore: SignalRecordStore = new MemoryRecordStore(), bobStore: SignalRecordStore = new MemoryRecordStore()) {
  const dir = new Directory();
  const alice = SignalParty.open(ALICE, aliceStore);
  const bob = SignalParty.open(BOB, bobStore);
  dir.publish(alice, { oneTimeCount: 5 });
  dir.publish(bob, { oneTimeCount: 5 });
  await send(alice, bob, "hi bob", dir.fetcher(BOB));
  await send(bob, alice, "hi alice");
  return { dir, alice, bob };
}

describe("SignalParty messaging", () => {
  it("exchanges messages both ways: PreKey first, Whisper after a reply, plaintext hidden", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(alice);
    dir.publish(bob);

    const first = "Hello Bob, this is Alice writing from Matrix";
    const m1 = await alice.encrypt(BOB, bytes(first), dir.fetcher(BOB));
    assert.equal(m1.type, SignalMessageType.PreKey);
    assert.ok(!contains(m1.body, bytes(first)));
    const m2 = await alice.encrypt(BOB, bytes("second before any reply"), noFetch);
    assert.equal(m2.type, SignalMessageType.PreKey, "unacknowledged session keeps sending PreKey messages");
    assert.equal(text(await bob.decrypt(ALICE, m1)), first);
    assert.equal(text(await bob.decrypt(ALICE, m2)), "second before any reply");

    const reply = "Hi Alice, Bob from WhatsApp here";
    const r1 = await bob.encrypt(ALICE, bytes(reply), noFetch);
    assert.equal(r1.type, SignalMessageType.Whisper);
    assert.ok(!contains(r1.body, bytes(reply)));
    assert.equal(text(await alice.decrypt(BOB, r1)), reply);

    for (let i = 0; i < 5; i++) {
      const a = await send(alice, bob, `alice ${i}`);
      assert.equal(a.type, SignalMessageType.Whisper);
      const b = await send(bob, alice, `bob ${i}`);
      assert.equal(b.type, SignalMessageType.Whisper);
    }
    assert.equal(dir.fetches, 1);
    assert.ok(alice.hasSession(BOB) && bob.hasSession(ALICE));
  });

  it("gives both ends the same safety number", async () => {
    const { alice, bob } = await pair();
    const fromAlice = alice.identityFingerprint(BOB);
    assert.match(fromAlice ?? "", /^(\d{5} ){11}\d{5}$/);
    assert.equal(fromAlice, bob.identityFingerprint(ALICE));
    assert.equal(alice.identityFingerprint(CAROL), undefined);
    assert.deepEqual(alice.peerIdentityKey(BOB), bob.identityKey);
  });

  for (const variant of ["plain", "encrypted"] as const) {
    it(`keeps talking after both parties are reopened from their stores (${variant})`, async () => {
      const innerA = new MemoryRecordStore();
      const innerB = new MemoryRecordStore();
      const key = randomBytes(32);
      const wrap = (inner: MemoryRecordStore): SignalRecordStore => (variant === "plain" ? inner : new EncryptedRecordStore(inner, key));
      const { alice, bob } = await pair(wrap(innerA), wrap(innerB));
      await send(alice, bob, "before restart");
      const inFlight = await alice.encrypt(BOB, bytes("sent just before the restart"), noFetch);

      const alice2 = SignalParty.open(ALICE, wrap(innerA));
      const bob2 = SignalParty.open(BOB, wrap(innerB));
      assert.deepEqual(alice2.identityKey, alice.identityKey);
      assert.equal(alice2.registrationId, alice.registrationId);
      assert.deepEqual(bob2.identityKey, bob.identityKey);

      assert.equal(text(await bob2.decrypt(ALICE, inFlight)), "sent just before the restart");
      for (let i = 0; i < 3; i++) {
        await send(bob2, alice2, `after restart ${i}`);
        await send(alice2, bob2, `and back ${i}`);
      }
    });
  }

  it("decrypts messages delivered out of order, and flags a redelivery as duplicate", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(bob);

    const pre: SignalCiphertext[] = [];
    for (let i = 0; i < 4; i++) pre.push(await alice.encrypt(BOB, bytes(`pre ${i}`), dir.fetcher(BOB)));
    for (const i of [2, 0, 3, 1]) assert.equal(text(await bob.decrypt(ALICE, pre[i]!)), `pre ${i}`);

    await send(bob, alice, "ack");
    const whisper: SignalCiphertext[] = [];
    for (let i = 0; i < 5; i++) whisper.push(await alice.encrypt(BOB, bytes(`w ${i}`), noFetch));
    assert.ok(whisper.every((m) => m.type === SignalMessageType.Whisper));
    for (const i of [4, 1, 0, 3, 2]) assert.equal(text(await bob.decrypt(ALICE, whisper[i]!)), `w ${i}`);

    await rejectsWith(bob.decrypt(ALICE, whisper[3]!), "duplicate_message");
    await rejectsWith(bob.decrypt(ALICE, pre[1]!), "duplicate_message");
    await send(alice, bob, "still fine");
  });

  it("handles both sides sending a first message at the same time", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(alice);
    dir.publish(bob);

    const [fromAlice, fromBob] = await Promise.all([alice.encrypt(BOB, bytes("alice first"), dir.fetcher(BOB)), bob.encrypt(ALICE, bytes("bob first"), dir.fetcher(ALICE))]);
    assert.equal(fromAlice.type, SignalMessageType.PreKey);
    assert.equal(fromBob.type, SignalMessageType.PreKey);
    assert.equal(text(await alice.decrypt(BOB, fromBob)), "bob first");
    assert.equal(text(await bob.decrypt(ALICE, fromAlice)), "alice first");

    for (let i = 0; i < 4; i++) {
      await send(alice, bob, `a${i}`);
      await send(alice, bob, `a${i} again`);
      await send(bob, alice, `b${i}`);
    }
    assert.equal((await send(alice, bob, "settled")).type, SignalMessageType.Whisper);
    assert.equal((await send(bob, alice, "settled")).type, SignalMessageType.Whisper);
    assert.equal(dir.fetches, 2);
  });

  it("serializes concurrent operations on one peer (one bundle fetch, ordered counters)", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(bob);

    const sent = await Promise.all(Array.from({ length: 20 }, (_, i) => alice.encrypt(BOB, bytes(`burst ${i}`), dir.fetcher(BOB))));
    assert.equal(dir.fetches, 1, "only the first encrypt may fetch a bundle");
    const received = await Promise.all(sent.map((m) => bob.decrypt(ALICE, m)));
    assert.deepEqual(
      received.map(text),
      sent.map((_, i) => `burst ${i}`),
    );

    const replies: SignalCiphertext[] = [];
    for (let i = 0; i < 10; i++) replies.push(await bob.encrypt(ALICE, bytes(`reply ${i}`), noFetch));
    const order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4];
    const decrypted = await Promise.all(order.map((i) => alice.decrypt(BOB, replies[i]!)));
    assert.deepEqual(
      decrypted.map(text),
      order.map((i) => `reply ${i}`),
    );
  });
});

describe("SignalParty identity changes", () => {
  it("accepts a re-registered peer's PreKey message and reports the change once", async () => {
    const changes: Array<[string, Uint8Array, Uint8Array]> = [];
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore(), {
      onIdentityChange: (peer, oldKey, newKey) => changes.push([peer, oldKey, newKey]),
    });
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(alice);
    dir.publish(bob);
    await send(alice, bob, "hello", dir.fetcher(BOB));
    await send(bob, alice, "hello back");
    const safetyBefore = alice.identityFingerprint(BOB);
    assert.equal(changes.length, 0, "first contact is trust on first use, not a change");

    const newBob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(newBob);
    assert.notDeepEqual(newBob.identityKey, bob.identityKey);
    await send(newBob, alice, "new phone, who dis", dir.fetcher(ALICE));
    assert.equal(changes.length, 1);
    assert.equal(changes[0]![0], BOB);
    assert.deepEqual(changes[0]![1], bob.identityKey);
    assert.deepEqual(changes[0]![2], newBob.identityKey);

    await send(alice, newBob, "welcome back");
    await send(newBob, alice, "thanks");
    assert.equal(changes.length, 1, "reported once, not on every message");
    assert.notEqual(alice.identityFingerprint(BOB), safetyBefore);
    assert.equal(alice.identityFingerprint(BOB), newBob.identityFingerprint(ALICE));
  });

  it("accepts a re-registered peer's new bundle after resetSession and reports the change once", async () => {
    const changes: string[] = [];
    const dir = new Directory();
    const carol = SignalParty.open(CAROL, new MemoryRecordStore(), {
      onIdentityChange: (peer) => {
        changes.push(peer);
        throw new Error("a failing callback must not break decryption");
      },
    });
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(bob);
    await send(carol, bob, "hi", dir.fetcher(BOB));
    await send(bob, carol, "hey");

    const newBob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(newBob);
    const stale = await carol.encrypt(BOB, bytes("to the old session"), noFetch);
    await rejectsWith(newBob.decrypt(CAROL, stale), "no_session");

    await carol.resetSession(BOB);
    assert.equal(carol.hasSession(BOB), false);
    const fresh = await carol.encrypt(BOB, bytes("to the new Bob"), dir.fetcher(BOB));
    assert.equal(fresh.type, SignalMessageType.PreKey);
    assert.deepEqual(changes, [BOB]);
    assert.equal(text(await newBob.decrypt(CAROL, fresh)), "to the new Bob");
    await send(newBob, carol, "got it");
    await send(carol, newBob, "great");
    assert.deepEqual(changes, [BOB]);
  });
});

describe("SignalParty prekeys", () => {
  it("deletes a used one-time prekey and never reissues an id", async () => {
    const bobStore = new MemoryRecordStore();
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, bobStore);
    const keys = dir.publish(bob, { oneTimeCount: 3 });
    const issued = new Set(keys.oneTimePreKeys.map((k) => k.id));
    assert.equal(issued.size, 3);
    assert.deepEqual(
      bob.prepareKeys({ oneTimeCount: 3 }).oneTimePreKeys.map((k) => k.id),
      keys.oneTimePreKeys.map((k) => k.id),
      "prepareKeys tops up, it does not regenerate",
    );

    const m1 = await alice.encrypt(BOB, bytes("uses a one-time key"), dir.fetcher(BOB));
    assert.equal(text(await bob.decrypt(ALICE, m1)), "uses a one-time key");
    assert.equal(bob.oneTimeKeyCount(), 2);
    const left = bob.prepareKeys({ oneTimeCount: 0 }).oneTimePreKeys.map((k) => k.id);
    assert.equal(left.length, 2);
    assert.ok(!left.includes(keys.oneTimePreKeys[0]!.id), "the consumed key is gone");

    // With the session gone, the consumed key cannot be used again.
    await bob.resetSession(ALICE);
    await rejectsWith(bob.decrypt(ALICE, m1), "bad_message");

    const more = bob.replenishOneTimeKeys(2);
    assert.equal(more.length, 2);
    for (const k of more) {
      assert.ok(!issued.has(k.id));
      issued.add(k.id);
    }
    const reopened = SignalParty.open(BOB, bobStore);
    const again = reopened.replenishOneTimeKeys(3);
    for (const k of again) {
      assert.ok(!issued.has(k.id), "id counter survives reopening");
      issued.add(k.id);
    }
    assert.equal(reopened.oneTimeKeyCount(), 7);
    assert.deepEqual(reopened.replenishOneTimeKeys(0), []);
  });

  it("works without a one-time key and refuses a replayed last-resort PreKey message", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(bob, { oneTimeCount: 0 });
    const m1 = await alice.encrypt(BOB, bytes("no one-time key left"), dir.fetcher(BOB));
    assert.equal(text(await bob.decrypt(ALICE, m1)), "no one-time key left");
    await bob.resetSession(ALICE);
    await rejectsWith(bob.decrypt(ALICE, m1), "duplicate_message");
  });

  it("keeps the previous signed and Kyber prekeys across one rotation, not two", async () => {
    const dir = new Directory();
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const carol = SignalParty.open(CAROL, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    const old = dir.publish(bob, { oneTimeCount: 0 });
    const fromAlice = await alice.encrypt(BOB, bytes("built on the old keys"), dir.fetcher(BOB));
    const fromCarol = await carol.encrypt(BOB, bytes("also old keys"), dir.fetcher(BOB));

    const rotated = bob.rotateSignedPreKeys();
    assert.notEqual(rotated.signedPreKey.id, old.signedPreKey.id);
    assert.notEqual(rotated.kyberPreKey.id, old.kyberPreKey.id);
    assert.equal(bob.prepareKeys({ oneTimeCount: 0 }).signedPreKey.id, rotated.signedPreKey.id);
    assert.equal(text(await bob.decrypt(ALICE, fromAlice)), "built on the old keys");

    bob.rotateSignedPreKeys();
    await rejectsWith(bob.decrypt(CAROL, fromCarol), "bad_message");
  });

  it("refuses malformed or badly signed bundles without creating a session", async () => {
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    const keys = bob.prepareKeys({ oneTimeCount: 1 });
    const good: PreKeyBundleData = { ...keys, oneTimePreKey: keys.oneTimePreKeys[0]! };
    const flip = (b: Uint8Array) => {
      const copy = Uint8Array.from(b);
      copy[10]! ^= 0x01;
      return copy;
    };
    const bad: PreKeyBundleData[] = [
      { ...good, signedPreKey: { ...good.signedPreKey, signature: flip(good.signedPreKey.signature) } },
      { ...good, kyberPreKey: { ...good.kyberPreKey, signature: flip(good.kyberPreKey.signature) } },
      { ...good, identityKey: SignalParty.open(CAROL, new MemoryRecordStore()).identityKey },
      { ...good, identityKey: new Uint8Array(5) },
      { ...good, deviceId: 2 as unknown as 1 },
      { ...good, kyberPreKey: { ...good.kyberPreKey, publicKey: good.kyberPreKey.publicKey.subarray(0, 100) } },
    ];
    for (const bundle of bad) {
      await rejectsWith(
        alice.encrypt(BOB, bytes("x"), async () => bundle),
        "bad_bundle",
      );
      assert.equal(alice.hasSession(BOB), false);
    }
    await assert.rejects(
      alice.encrypt(BOB, bytes("x"), async () => {
        throw new Error("directory unreachable");
      }),
      /directory unreachable/,
      "fetch errors propagate unchanged",
    );
    const ok = await alice.encrypt(BOB, bytes("good bundle"), async () => good);
    assert.equal(text(await bob.decrypt(ALICE, ok)), "good bundle");
  });
});

describe("SignalParty errors and forgetting", () => {
  it("turns garbage ciphertext into SignalLayerError and keeps the session usable", async () => {
    const { alice, bob } = await pair();
    const valid = await alice.encrypt(BOB, bytes("the real one"), noFetch);
    const tampered = Uint8Array.from(valid.body);
    tampered[tampered.length - 12]! ^= 0xff;

    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.Whisper, body: randomBytes(80) }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.PreKey, body: randomBytes(200) }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.Whisper, body: new Uint8Array(0) }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: 7, body: valid.body }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.Whisper, body: tampered }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.PreKey, body: valid.body }), "bad_message");
    await rejectsWith(bob.decrypt(ALICE, { type: SignalMessageType.Whisper, body: "nope" as unknown as Uint8Array }), "bad_message");
    await rejectsWith(bob.decrypt(CAROL, valid), "no_session");

    assert.equal(text(await bob.decrypt(ALICE, valid)), "the real one");
    await send(bob, alice, "all good");
  });

  it("forget() deletes every record of the party and nothing of others", async () => {
    const shared = new MemoryRecordStore();
    const { alice, bob } = await pair(shared, shared);
    const aliceNs = `signal/${ALICE}`;
    assert.ok(shared.entries().some(([ns]) => ns === aliceNs));
    const bobRecords = shared.entries().filter(([ns]) => ns !== aliceNs);

    await alice.forget();
    assert.deepEqual(
      shared.entries().filter(([ns]) => ns === aliceNs),
      [],
    );
    assert.deepEqual(shared.entries(), bobRecords, "Bob's records are untouched");
    await rejectsWith(alice.encrypt(BOB, bytes("x"), noFetch), "forgotten");
    assert.throws(
      () => alice.prepareKeys(),
      (err: unknown) => err instanceof SignalLayerError && err.code === "forgotten",
    );

    const reborn = SignalParty.open(ALICE, shared);
    assert.notDeepEqual(reborn.identityKey, alice.identityKey, "a forgotten party starts from scratch");
    assert.equal(bob.hasSession(ALICE), true);
  });

  it("forget() waits for an operation already running", async () => {
    const dir = new Directory();
    const store = new MemoryRecordStore();
    const alice = SignalParty.open(ALICE, store);
    const bob = SignalParty.open(BOB, new MemoryRecordStore());
    dir.publish(bob);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const fetch = dir.fetcher(BOB);
    const pending = alice.encrypt(BOB, bytes("slow"), async () => {
      await gate;
      return fetch();
    });
    const forgetting = alice.forget();
    release();
    await rejectsWith(pending, "forgotten");
    await forgetting;
    assert.equal(store.size, 0);
  });
});

describe("SignalParty over EncryptedRecordStore", () => {
  it("stores nothing in clear and refuses a wrong key", async () => {
    const plainInner = new MemoryRecordStore();
    const encInner = new MemoryRecordStore();
    const key = deriveStoreKey("correct horse battery staple");
    const { alice, bob } = await pair(plainInner, new EncryptedRecordStore(encInner, key));
    // Session records hold the remote identity key verbatim; at rest it must not appear.
    assert.ok(plainInner.entries().some(([, , v]) => contains(v, bob.identityKey)));
    assert.ok(encInner.entries().length > 0);
    assert.ok(!encInner.entries().some(([, , v]) => contains(v, alice.identityKey)));

    assert.throws(
      () => SignalParty.open(BOB, new EncryptedRecordStore(encInner, deriveStoreKey("wrong secret"))),
      (err: unknown) => err instanceof SignalLayerError && err.code === "bad_store_key",
    );
  });

  it("reports a store failure inside libsignal as the store's error, not as a bad message", async () => {
    const inner = new MemoryRecordStore();
    const key = randomBytes(32);
    const alice = SignalParty.open(ALICE, new MemoryRecordStore());
    const bob = SignalParty.open(BOB, new EncryptedRecordStore(inner, key));
    const keys = bob.prepareKeys({ oneTimeCount: 1 });
    const message = await alice.encrypt(BOB, bytes("x"), async () => ({ ...keys, oneTimePreKey: keys.oneTimePreKeys[0]! }));
    // Account readable, everything else under another key: the failure happens in a libsignal store callback.
    const good = new EncryptedRecordStore(inner, key);
    const wrong = new EncryptedRecordStore(inner, randomBytes(32));
    const mixed: SignalRecordStore = {
      get: (ns, k) => (k === "account" ? good.get(ns, k) : wrong.get(ns, k)),
      // Writes are dropped so the real store stays intact for the check below.
      put: () => undefined,
      delete: () => undefined,
    };
    await rejectsWith(SignalParty.open(BOB, mixed).decrypt(ALICE, message), "bad_store_key");
    assert.equal(text(await bob.decrypt(ALICE, message)), "x");
  });
});
