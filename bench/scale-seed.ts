/**
 * The stores of a bridge that has run for a long time, written directly (not through the
 * network, which would take hours at 100,000 portals): in the bridge's database, Matrix users
 * with their Signal identities and portals (each with its own WhatsApp contact, ghost and one
 * message); in the gateway's database, the same users' accounts with the keys they published.
 * Both sides then agree, as after a long run: the bridge logs every user in on start and finds
 * the directory holding its current keys, so it publishes nothing.
 */
import { performance } from "node:perf_hooks";
import Database from "better-sqlite3";
import { GatewayStore } from "../gateway/store";
import { notePublishedKeys } from "../src/protocol/endpoint";
import { dmRoomUri, userUri } from "../src/protocol/frames";
import { deriveStoreKey, EncryptedRecordStore, MemoryRecordStore, SignalParty, type PublishedKeys } from "../src/protocol/signal";
import { BridgeStore } from "../src/store";
import { HOME_DOMAIN, PROVIDER_DOMAIN } from "../test/support/stack";
import { benchPhone } from "./scenario";

/** One-time keys each seeded user has published: at or above the endpoint's low mark (20), so no top-up runs on start. */
const ONE_TIME_KEYS = 20;
const TEMPLATE = "u:template@bench.invalid";

export interface SeedOptions {
  portals: number;
  users: number;
  /** The bridge's network.store_key (its Signal records are encrypted with the key derived from it). */
  storeSecret: string;
  domain: string;
  ghostId: (phone: string) => string;
  mxidOf: (i: number) => string;
  /**
   * The first this many users (those the benchmark's WhatsApp users write to) get Signal
   * identities of their own; the others, whom nobody writes to, get copies of one template
   * identity's records (re-encrypted under their own names): the same records and sizes the
   * bridge loads, without 10,000 key generations.
   */
  ownIdentities: number;
}

export interface SeedResult {
  portals: number;
  ms: number;
}

export function seedStores(bridgeFile: string, gatewayFile: string, opts: SeedOptions): SeedResult {
  const started = performance.now();
  const store = BridgeStore.open(bridgeFile);
  // The gateway is running and keeps no account cache: its tables are written in one transaction
  // (the schema of gateway/store.ts, made sure of by opening it once), waiting for its lock.
  new GatewayStore(gatewayFile).close();
  const gateway = new Database(gatewayFile);
  gateway.pragma("busy_timeout = 60000");
  const account = gateway.prepare("INSERT OR REPLACE INTO accounts (user, provider, home, display_name, third_party_chats, created_at, updated_at) VALUES (?, ?, 0, ?, 1, ?, ?)");
  const bundle = gateway.prepare(
    `INSERT OR REPLACE INTO key_bundles (user, registration_id, device_id, identity_key, spk_id, spk_public, spk_signature,
       kpk_id, kpk_public, kpk_signature, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const oneTime = gateway.prepare("INSERT OR REPLACE INTO one_time_keys (user, key_id, public_key) VALUES (?, ?, ?)");
  const publish = (uri: string, displayName: string, keys: PublishedKeys) => {
    const now = Date.now();
    account.run(uri, PROVIDER_DOMAIN, displayName, now, now);
    const { signedPreKey: spk, kyberPreKey: kpk } = keys;
    bundle.run(
      uri,
      keys.registrationId,
      keys.deviceId,
      Buffer.from(keys.identityKey),
      spk.id,
      Buffer.from(spk.publicKey),
      Buffer.from(spk.signature),
      kpk.id,
      Buffer.from(kpk.publicKey),
      Buffer.from(kpk.signature),
      now,
    );
    for (const k of keys.oneTimePreKeys) oneTime.run(uri, k.id, Buffer.from(k.publicKey));
  };
  try {
    const storeKey = deriveStoreKey(opts.storeSecret);
    const now = Date.now();
    const template = new MemoryRecordStore();
    const templateKeys = SignalParty.open(TEMPLATE, template).prepareKeys({ oneTimeCount: ONE_TIME_KEYS });
    const templateNs = `signal/${TEMPLATE}`;
    const seed = () => {
      for (let u = 0; u < opts.users; u++) {
        const mxid = opts.mxidOf(u);
        store.users.getOrCreate(mxid, { thirdPartyEnabled: true });
        const uri = userUri(PROVIDER_DOMAIN, mxid);
        const records = new EncryptedRecordStore(store.signalRecords(uri), storeKey);
        let keys = templateKeys;
        if (u < opts.ownIdentities) keys = SignalParty.open(uri, records).prepareKeys({ oneTimeCount: ONE_TIME_KEYS });
        else for (const [ns, key, value] of template.entries()) records.put(ns === templateNs ? `signal/${uri}` : ns, key, value);
        notePublishedKeys(records, uri, keys);
        publish(uri, mxid, keys);
      }
      for (let i = 0; i < opts.portals; i++) {
        const phone = benchPhone(1800, i);
        const receiver = opts.mxidOf(i % opts.users);
        store.ghosts.ensure(phone, opts.ghostId(phone));
        store.ghosts.markRegistered(phone);
        store.ghosts.setDisplayName(phone, `Scale ${i} (WhatsApp)`);
        const chatId = dmRoomUri(userUri(PROVIDER_DOMAIN, receiver), userUri(HOME_DOMAIN, phone), HOME_DOMAIN);
        const portal = store.portals.getOrCreate(chatId, receiver, "dm", [phone]);
        store.portals.setRoom(portal.id, `!benchscale${i}:${opts.domain}`);
        store.messages.insert({ portalId: portal.id, remoteId: `scale-${i}`, part: 0, eventId: `$benchscale${i}`, sender: phone, timestamp: now - i * 1000 });
      }
    };
    gateway.transaction(() => store.transaction(seed))();
    return { portals: store.portals.count(), ms: performance.now() - started };
  } finally {
    gateway.close();
    store.close();
  }
}
