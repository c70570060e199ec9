import { createHash } from "node:crypto";
import {
  IdentityChange,
  IdentityKeyPair,
  IdentityKeyStore,
  KyberPreKeyRecord,
  KyberPreKeyStore,
  PreKeyRecord,
  PreKeyStore,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SessionRecord,
  SessionStore,
  SignedPreKeyRecord,
  SignedPreKeyStore,
} from "@signalapp/libsignal-client";
import { SignalLayerError } from "./errors.js";
import { own, type LocalAccount, type OperationRecords } from "./layout.js";
import { SIGNAL_DEVICE_ID } from "./types.js";

/**
 * State of one encrypt/decrypt call. libsignal flattens exceptions thrown by store callbacks
 * into a generic error string, so the original is kept here and rethrown by the caller; identity
 * changes are collected so the callback runs after the operation, not inside libsignal.
 */
export interface OpContext {
  storeError?: unknown;
  identityChanges: Array<{ peer: string; oldKey: Uint8Array; newKey: Uint8Array }>;
}

export interface OpStores {
  session: SessionStore;
  identity: IdentityKeyStore;
  preKey: PreKeyStore;
  signedPreKey: SignedPreKeyStore;
  kyberPreKey: KyberPreKeyStore;
}

/** Fresh adapters per operation, so concurrent operations on different peers keep separate contexts. */
export function opStores(records: OperationRecords, account: LocalAccount, ctx: OpContext): OpStores {
  return {
    session: new RecordSessionStore(records, ctx),
    identity: new RecordIdentityStore(records, account, ctx),
    preKey: new RecordPreKeyStore(records, ctx),
    signedPreKey: new RecordSignedPreKeyStore(records, ctx),
    kyberPreKey: new RecordKyberPreKeyStore(records, ctx),
  };
}

async function guarded<T>(ctx: OpContext, fn: () => T): Promise<T> {
  try {
    return fn();
  } catch (err) {
    ctx.storeError ??= err;
    throw err;
  }
}

function peerOf(address: ProtocolAddress): string {
  if (address.deviceId() !== SIGNAL_DEVICE_ID) {
    throw new SignalLayerError("bad_message", `unexpected device id ${address.deviceId()}`);
  }
  return address.name();
}

function parse<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new SignalLayerError("corrupt_record", `stored ${what} does not parse`, { cause: err });
  }
}

class RecordSessionStore extends SessionStore {
  constructor(
    private readonly records: OperationRecords,
    private readonly ctx: OpContext,
  ) {
    super();
  }

  override saveSession(address: ProtocolAddress, record: SessionRecord): Promise<void> {
    return guarded(this.ctx, () => this.records.putSession(peerOf(address), record.serialize()));
  }

  override getSession(address: ProtocolAddress): Promise<SessionRecord | null> {
    return guarded(this.ctx, () => {
      const bytes = this.records.getSession(peerOf(address));
      return bytes === undefined ? null : parse("session", () => SessionRecord.deserialize(own(bytes)));
    });
  }

  override getExistingSessions(addresses: ProtocolAddress[]): Promise<SessionRecord[]> {
    return guarded(this.ctx, () =>
      addresses.map((address) => {
        const bytes = this.records.getSession(peerOf(address));
        if (bytes === undefined) throw new SignalLayerError("no_session", "no session for one of the recipients");
        return parse("session", () => SessionRecord.deserialize(own(bytes)));
      }),
    );
  }
}

class RecordIdentityStore extends IdentityKeyStore {
  constructor(
    private readonly records: OperationRecords,
    private readonly account: LocalAccount,
    private readonly ctx: OpContext,
  ) {
    super();
  }

  override async getIdentityKey(): Promise<PrivateKey> {
    return this.account.identity.privateKey;
  }

  override async getIdentityKeyPair(): Promise<IdentityKeyPair> {
    return this.account.identity;
  }

  override async getLocalRegistrationId(): Promise<number> {
    return this.account.registrationId;
  }

  override saveIdentity(address: ProtocolAddress, key: PublicKey): Promise<IdentityChange> {
    return guarded(this.ctx, () => {
      const peer = peerOf(address);
      const stored = this.records.getPeerIdentity(peer);
      const newKey = key.serialize();
      if (stored !== undefined && Buffer.from(stored).equals(newKey)) return IdentityChange.NewOrUnchanged;
      // libsignal calls this on every message; only a real change costs a write.
      this.records.putPeerIdentity(peer, newKey);
      if (stored === undefined) return IdentityChange.NewOrUnchanged;
      this.ctx.identityChanges.push({ peer, oldKey: Uint8Array.from(stored), newKey: Uint8Array.from(newKey) });
      return IdentityChange.ReplacedExisting;
    });
  }

  override async isTrustedIdentity(): Promise<boolean> {
    // Trust on first use and accept replacements: saveIdentity reports them to the bridge instead.
    return true;
  }

  override getIdentity(address: ProtocolAddress): Promise<PublicKey | null> {
    return guarded(this.ctx, () => {
      const bytes = this.records.getPeerIdentity(peerOf(address));
      return bytes === undefined ? null : parse("peer identity", () => PublicKey.deserialize(own(bytes)));
    });
  }
}

class RecordPreKeyStore extends PreKeyStore {
  constructor(
    private readonly records: OperationRecords,
    private readonly ctx: OpContext,
  ) {
    super();
  }

  override savePreKey(id: number, record: PreKeyRecord): Promise<void> {
    return guarded(this.ctx, () => this.records.putPreKey(id, record.serialize()));
  }

  override getPreKey(id: number): Promise<PreKeyRecord> {
    return guarded(this.ctx, () => {
      const bytes = this.records.getPreKey(id);
      // Already consumed (a replay) or never ours; libsignal needs a throw, not null.
      if (bytes === undefined) throw new SignalLayerError("bad_message", "message refers to an unknown one-time prekey");
      return parse("one-time prekey", () => PreKeyRecord.deserialize(own(bytes)));
    });
  }

  override removePreKey(id: number): Promise<void> {
    return guarded(this.ctx, () => this.records.removePreKey(id));
  }
}

class RecordSignedPreKeyStore extends SignedPreKeyStore {
  constructor(
    private readonly records: OperationRecords,
    private readonly ctx: OpContext,
  ) {
    super();
  }

  override saveSignedPreKey(id: number, record: SignedPreKeyRecord): Promise<void> {
    return guarded(this.ctx, () => this.records.putSignedPreKey(id, record.serialize()));
  }

  override getSignedPreKey(id: number): Promise<SignedPreKeyRecord> {
    return guarded(this.ctx, () => {
      const bytes = this.records.getSignedPreKey(id);
      if (bytes === undefined) throw new SignalLayerError("bad_message", "message refers to an unknown signed prekey");
      return parse("signed prekey", () => SignedPreKeyRecord.deserialize(own(bytes)));
    });
  }
}

const SEEN_ENTRY_LEN = 32;

class RecordKyberPreKeyStore extends KyberPreKeyStore {
  constructor(
    private readonly records: OperationRecords,
    private readonly ctx: OpContext,
  ) {
    super();
  }

  override saveKyberPreKey(id: number, record: KyberPreKeyRecord): Promise<void> {
    return guarded(this.ctx, () => this.records.putKyberPreKey(id, record.serialize()));
  }

  override getKyberPreKey(id: number): Promise<KyberPreKeyRecord> {
    return guarded(this.ctx, () => {
      const bytes = this.records.getKyberPreKey(id);
      if (bytes === undefined) throw new SignalLayerError("bad_message", "message refers to an unknown Kyber prekey");
      return parse("Kyber prekey", () => KyberPreKeyRecord.deserialize(own(bytes)));
    });
  }

  /**
   * All our Kyber prekeys are last-resort keys, which stay after use; libsignal leaves replay
   * protection to the store: the same (signed prekey, base key) pair must not be accepted twice.
   */
  override markKyberPreKeyUsed(kyberPreKeyId: number, signedPreKeyId: number, baseKey: PublicKey): Promise<void> {
    return guarded(this.ctx, () => {
      const idBytes = Buffer.alloc(4);
      idBytes.writeUInt32BE(signedPreKeyId);
      const entry = createHash("sha256").update(idBytes).update(baseKey.serialize()).digest();
      const seen = Buffer.from(this.records.getKyberSeen(kyberPreKeyId) ?? new Uint8Array(0));
      for (let at = 0; at + SEEN_ENTRY_LEN <= seen.length; at += SEEN_ENTRY_LEN) {
        if (entry.equals(seen.subarray(at, at + SEEN_ENTRY_LEN))) {
          throw new SignalLayerError("duplicate_message", "PreKey message replayed (base key already used)");
        }
      }
      this.records.appendKyberSeen(kyberPreKeyId, entry);
    });
  }
}
