import { randomInt } from "node:crypto";
import {
  Fingerprint,
  IdentityKeyPair,
  KEMKeyPair,
  KEMPublicKey,
  KyberPreKeyRecord,
  PreKeyBundle,
  PreKeyRecord,
  PreKeySignalMessage,
  PrivateKey,
  ProtocolAddress,
  PublicKey,
  SessionRecord,
  SignalMessage,
  SignedPreKeyRecord,
  processPreKeyBundle,
  signalDecrypt,
  signalDecryptPreKey,
  signalEncrypt,
} from "@signalapp/libsignal-client";
import { getLogger } from "../../logging.js";
import { SignalLayerError, toSignalLayerError, type SignalLayerErrorCode } from "./errors.js";
import { DeferredRecords, own, PartyRecords, type KeyState, type LocalAccount, type OperationRecords } from "./layout.js";
import type { SignalRecordStore } from "./record-store.js";
import { opStores, type OpContext, type OpStores } from "./stores.js";
import { KeyedQueue } from "../../util/keyed-queue.js";
import {
  SIGNAL_DEVICE_ID,
  SignalMessageType,
  type OneTimePreKey,
  type PreKeyBundleData,
  type PublishedKeys,
  type SignalCiphertext,
  type SignalPartyOptions,
  type SignedPublicKey,
} from "./types.js";

const log = getLogger("signal");

/** Signal uses 14-bit registration ids; 0 and the top values are avoided by its clients too. */
const MAX_REGISTRATION_ID = 16380;
/** Prekey ids stay within 24 bits, the range Signal's own servers accept. */
const MAX_KEY_ID = 0xffffff;
const DEFAULT_ONE_TIME_COUNT = 100;
const MAX_BATCH = 10_000;
/** Signed and Kyber prekeys kept after a rotation: the new one plus the previous, for messages in flight. */
const KEPT_GENERATIONS = 2;
/** Iteration count Signal uses for safety numbers; both ends must agree on it. */
const FINGERPRINT_ITERATIONS = 5200;
const FINGERPRINT_VERSION = 2;

/**
 * One local user's Signal state: identity, prekeys, and a session per peer, all kept in a
 * SignalRecordStore. Open at most one SignalParty per address and store at a time: the
 * per-peer ordering below only holds inside one object.
 */
export class SignalParty {
  private readonly local: ProtocolAddress;
  /** Tail of the operation chain per peer; libsignal's async store calls must not interleave per session. */
  /** One operation at a time per peer (a Signal session is not safe for concurrent use). */
  private readonly chains = new KeyedQueue();
  private forgotten = false;

  private constructor(
    readonly address: string,
    private readonly records: PartyRecords,
    private readonly account: LocalAccount,
    private readonly options: SignalPartyOptions,
  ) {
    this.local = ProtocolAddress.new(address, SIGNAL_DEVICE_ID);
  }

  /** Loads the party from the store, creating identity and registration id on first use. */
  static open(address: string, store: SignalRecordStore, options: SignalPartyOptions = {}): SignalParty {
    checkAddress(address, "address");
    const records = new PartyRecords(store, address);
    let account = records.loadAccount();
    if (account === undefined) {
      account = { registrationId: randomInt(1, MAX_REGISTRATION_ID + 1), identity: IdentityKeyPair.generate() };
      records.saveAccount(account);
    }
    return new SignalParty(address, records, account, options);
  }

  get registrationId(): number {
    return this.account.registrationId;
  }

  /** Our serialized identity public key. */
  get identityKey(): Uint8Array {
    return this.account.identity.publicKey.serialize();
  }

  /**
   * Makes sure a signed prekey, a last-resort Kyber prekey and at least `oneTimeCount` (default
   * 100) one-time prekeys exist, and returns the full set to publish (all live one-time keys,
   * old and new). Use replenishOneTimeKeys to top up incrementally.
   */
  prepareKeys(opts: { oneTimeCount?: number } = {}): PublishedKeys {
    this.assertOpen();
    const want = opts.oneTimeCount ?? DEFAULT_ONE_TIME_COUNT;
    checkCount(want, "oneTimeCount");
    const state = this.records.loadKeyState();
    // An id reserved but never written (crash between the two writes) is dropped, not published.
    state.oneTimePreKeyIds = state.oneTimePreKeyIds.filter((id) => this.records.getPreKey(id) !== undefined);
    const signed = this.currentSignedPreKey(state) ?? this.addSignedPreKey(state);
    const kyber = this.currentKyberPreKey(state) ?? this.addKyberPreKey(state);
    this.records.saveKeyState(state);

    const existing = state.oneTimePreKeyIds.map((id) => this.oneTimePublic(id));
    const fresh = this.generateOneTimeKeys(Math.max(0, want - existing.length));
    return {
      registrationId: this.account.registrationId,
      deviceId: SIGNAL_DEVICE_ID,
      identityKey: this.identityKey,
      signedPreKey: signed,
      kyberPreKey: kyber,
      oneTimePreKeys: [...existing, ...fresh],
    };
  }

  /** Generates `count` new one-time prekeys and returns only those; ids never repeat. */
  replenishOneTimeKeys(count: number): OneTimePreKey[] {
    this.assertOpen();
    checkCount(count, "count");
    return this.generateOneTimeKeys(count);
  }

  /** How many one-time prekeys are still unused (published or not). */
  oneTimeKeyCount(): number {
    this.assertOpen();
    return this.records.loadKeyState().oneTimePreKeyIds.length;
  }

  /**
   * Replaces the signed and Kyber prekeys with new ones (republish both); the previous pair is
   * kept so PreKey messages already in flight still decrypt, anything older is deleted.
   */
  rotateSignedPreKeys(): { signedPreKey: SignedPublicKey; kyberPreKey: SignedPublicKey } {
    this.assertOpen();
    const state = this.records.loadKeyState();
    const signedPreKey = this.addSignedPreKey(state);
    const kyberPreKey = this.addKyberPreKey(state);
    const dropSigned = state.signedPreKeyIds.splice(0, Math.max(0, state.signedPreKeyIds.length - KEPT_GENERATIONS));
    const dropKyber = state.kyberPreKeyIds.splice(0, Math.max(0, state.kyberPreKeyIds.length - KEPT_GENERATIONS));
    // Records go before their index entries so forget() never misses one.
    for (const id of dropSigned) this.records.deleteSignedPreKey(id);
    for (const id of dropKyber) this.records.deleteKyberPreKey(id);
    this.records.saveKeyState(state);
    return { signedPreKey, kyberPreKey };
  }

  /** Whether encrypt() can send to the peer without fetching a bundle. */
  hasSession(peer: string): boolean {
    this.assertOpen();
    checkAddress(peer, "peer");
    const bytes = this.records.getSession(peer);
    return bytes !== undefined && parseSession(bytes).hasCurrentState(new Date());
  }

  /**
   * Drops the session with a peer so the next encrypt() fetches a fresh bundle (e.g. after the
   * directory announced the peer re-registered). The peer's identity key is kept for comparison.
   */
  async resetSession(peer: string): Promise<void> {
    checkAddress(peer, "peer");
    return this.exclusive(peer, async () => {
      this.assertOpen();
      this.records.deleteSession(peer);
    });
  }

  /**
   * Encrypts for a peer, first building a session from `fetchBundle()` if there is no usable one.
   * Errors from fetchBundle propagate unchanged; everything else is a SignalLayerError.
   */
  async encrypt(peer: string, plaintext: Uint8Array, fetchBundle: () => Promise<PreKeyBundleData>): Promise<SignalCiphertext> {
    checkAddress(peer, "peer");
    if (!(plaintext instanceof Uint8Array)) throw new SignalLayerError("bad_argument", "plaintext must be a Uint8Array");
    return this.exclusive(peer, () =>
      this.operation(async (ctx, stores) => {
        const remote = ProtocolAddress.new(peer, SIGNAL_DEVICE_ID);
        const existing = this.records.getSession(peer);
        if (existing === undefined || !parseSession(existing).hasCurrentState(new Date())) {
          const bundle = toPreKeyBundle(await fetchBundle());
          this.assertOpen();
          await this.libsignal(ctx, "bad_bundle", "processing prekey bundle", () => processPreKeyBundle(bundle, remote, this.local, stores.session, stores.identity));
        }
        const message = await this.libsignal(ctx, "encrypt_failed", "encrypting", () => signalEncrypt(own(plaintext), remote, this.local, stores.session, stores.identity));
        return { type: message.type(), body: message.serialize() };
      }),
    );
  }

  /**
   * Decrypts a PreKey or Whisper message from a peer; a PreKey message consumes its one-time
   * prekey. The advanced session (and consumed keys) are written only once decryption
   * succeeded, in one store transaction together with `keep(plaintext)`: a crash leaves
   * either both or neither, so the message can be decrypted again if it was not kept.
   */
  async decrypt(peer: string, message: SignalCiphertext, opts: { keep?: (plaintext: Uint8Array) => void } = {}): Promise<Uint8Array> {
    checkAddress(peer, "peer");
    const { type, body } = message ?? {};
    if (!(body instanceof Uint8Array)) throw new SignalLayerError("bad_message", "message body must be a Uint8Array");
    if (type !== SignalMessageType.PreKey && type !== SignalMessageType.Whisper) {
      throw new SignalLayerError("bad_message", `unsupported message type ${String(type)}`);
    }
    const deferred = new DeferredRecords(this.records);
    const decrypted = (): Promise<Uint8Array> =>
      this.operation(async (ctx, stores) => {
        const remote = ProtocolAddress.new(peer, SIGNAL_DEVICE_ID);
        if (type === SignalMessageType.PreKey) {
          const parsed = parseMessage(() => PreKeySignalMessage.deserialize(own(body)));
          return this.libsignal(ctx, "bad_message", "decrypting PreKey message", () =>
            signalDecryptPreKey(parsed, remote, this.local, stores.session, stores.identity, stores.preKey, stores.signedPreKey, stores.kyberPreKey),
          );
        }
        const parsed = parseMessage(() => SignalMessage.deserialize(own(body)));
        if (this.records.getSession(peer) === undefined) {
          throw new SignalLayerError("no_session", "Whisper message from a peer without a session");
        }
        return this.libsignal(ctx, "bad_message", "decrypting message", () => signalDecrypt(parsed, remote, this.local, stores.session, stores.identity));
      }, deferred);
    return this.exclusive(peer, async () => {
      const plaintext = await decrypted();
      this.assertOpen();
      this.records.transaction(() => {
        deferred.apply();
        opts.keep?.(plaintext);
      });
      return plaintext;
    });
  }

  /** The peer's identity key as last seen, or undefined if we never talked to them. */
  peerIdentityKey(peer: string): Uint8Array | undefined {
    this.assertOpen();
    checkAddress(peer, "peer");
    return this.records.getPeerIdentity(peer);
  }

  /**
   * The 60-digit safety number shared with a peer, in twelve groups of five (as Signal shows
   * it); both ends compute the same string. Undefined if the peer's identity is unknown.
   */
  identityFingerprint(peer: string): string | undefined {
    const theirs = this.peerIdentityKey(peer);
    if (theirs === undefined) return undefined;
    const theirKey = parseRecord("peer identity", () => PublicKey.deserialize(own(theirs)));
    const fingerprint = Fingerprint.new(
      FINGERPRINT_ITERATIONS,
      FINGERPRINT_VERSION,
      own(Buffer.from(this.address, "utf8")),
      this.account.identity.publicKey,
      own(Buffer.from(peer, "utf8")),
      theirKey,
    );
    const digits = fingerprint.displayableFingerprint().toString();
    return (digits.match(/\d{5}/g) ?? [digits]).join(" ");
  }

  /**
   * Deletes every record of this party (identity, prekeys, sessions, peer identities) after
   * letting running operations finish; the object is unusable afterwards ("forgotten").
   */
  async forget(): Promise<void> {
    if (this.forgotten) return;
    this.forgotten = true;
    await this.chains.idle();
    this.records.deleteEverything();
  }

  private exclusive<T>(peer: string, fn: () => Promise<T>): Promise<T> {
    return this.chains.run(peer, fn);
  }

  private async operation<T>(fn: (ctx: OpContext, stores: OpStores) => Promise<T>, records: OperationRecords = this.records): Promise<T> {
    this.assertOpen();
    const ctx: OpContext = { identityChanges: [] };
    try {
      return await fn(ctx, opStores(records, this.account, ctx));
    } finally {
      // Reported even if the operation failed afterwards: the new key is saved either way.
      for (const change of ctx.identityChanges) this.reportIdentityChange(change.peer, change.oldKey, change.newKey);
    }
  }

  private async libsignal<T>(ctx: OpContext, fallback: SignalLayerErrorCode, what: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      // A store callback's own error is more precise than libsignal's flattened copy of it.
      throw toSignalLayerError(ctx.storeError ?? err, ctx.storeError === undefined ? fallback : "store_error", what);
    }
  }

  private reportIdentityChange(peer: string, oldKey: Uint8Array, newKey: Uint8Array): void {
    const callback = this.options.onIdentityChange;
    if (!callback) return;
    try {
      callback(peer, oldKey, newKey);
    } catch (err) {
      log.warn("onIdentityChange callback threw", { error: err instanceof Error ? err.message : String(err) });
    }
  }

  private assertOpen(): void {
    if (this.forgotten) throw new SignalLayerError("forgotten", "this Signal party was forgotten");
  }

  private generateOneTimeKeys(count: number): OneTimePreKey[] {
    if (count === 0) return [];
    const state = this.records.loadKeyState();
    const ids = reserveIds(state, "nextPreKeyId", count);
    state.oneTimePreKeyIds.push(...ids);
    // Ids are reserved before the records exist, so a crash can skip ids but never reuse one.
    this.records.saveKeyState(state);
    return ids.map((id) => {
      const privateKey = PrivateKey.generate();
      const publicKey = privateKey.getPublicKey();
      this.records.putPreKey(id, PreKeyRecord.new(id, publicKey, privateKey).serialize());
      return { id, publicKey: publicKey.serialize() };
    });
  }

  private oneTimePublic(id: number): OneTimePreKey {
    const bytes = this.records.getPreKey(id);
    if (bytes === undefined) throw new SignalLayerError("corrupt_record", "indexed one-time prekey is missing");
    const record = parseRecord("one-time prekey", () => PreKeyRecord.deserialize(own(bytes)));
    return { id, publicKey: record.publicKey().serialize() };
  }

  private currentSignedPreKey(state: KeyState): SignedPublicKey | undefined {
    const id = state.signedPreKeyIds.at(-1);
    const bytes = id === undefined ? undefined : this.records.getSignedPreKey(id);
    if (bytes === undefined) return undefined;
    const record = parseRecord("signed prekey", () => SignedPreKeyRecord.deserialize(own(bytes)));
    return { id: record.id(), publicKey: record.publicKey().serialize(), signature: record.signature() };
  }

  private currentKyberPreKey(state: KeyState): SignedPublicKey | undefined {
    const id = state.kyberPreKeyIds.at(-1);
    const bytes = id === undefined ? undefined : this.records.getKyberPreKey(id);
    if (bytes === undefined) return undefined;
    const record = parseRecord("Kyber prekey", () => KyberPreKeyRecord.deserialize(own(bytes)));
    return { id: record.id(), publicKey: record.publicKey().serialize(), signature: record.signature() };
  }

  /** Adds a signed prekey to `state` (caller saves it) and writes its record. */
  private addSignedPreKey(state: KeyState): SignedPublicKey {
    const [id] = reserveIds(state, "nextSignedPreKeyId", 1) as [number];
    state.signedPreKeyIds.push(id);
    this.records.saveKeyState(state);
    const privateKey = PrivateKey.generate();
    const publicKey = privateKey.getPublicKey();
    const signature = this.account.identity.privateKey.sign(publicKey.serialize());
    this.records.putSignedPreKey(id, SignedPreKeyRecord.new(id, Date.now(), publicKey, privateKey, signature).serialize());
    return { id, publicKey: publicKey.serialize(), signature };
  }

  /** Adds a last-resort Kyber prekey to `state` (caller saves it) and writes its record. */
  private addKyberPreKey(state: KeyState): SignedPublicKey {
    const [id] = reserveIds(state, "nextKyberPreKeyId", 1) as [number];
    state.kyberPreKeyIds.push(id);
    this.records.saveKeyState(state);
    const keyPair = KEMKeyPair.generate();
    const publicKey = keyPair.getPublicKey().serialize();
    const signature = this.account.identity.privateKey.sign(publicKey);
    this.records.putKyberPreKey(id, KyberPreKeyRecord.new(id, Date.now(), keyPair, signature).serialize());
    return { id, publicKey, signature };
  }
}

function reserveIds(state: KeyState, counter: "nextPreKeyId" | "nextSignedPreKeyId" | "nextKyberPreKeyId", count: number): number[] {
  const first = state[counter];
  if (first + count - 1 > MAX_KEY_ID) {
    throw new SignalLayerError("bad_argument", `prekey id space exhausted (${counter})`);
  }
  state[counter] = first + count;
  return Array.from({ length: count }, (_, i) => first + i);
}

function checkAddress(value: unknown, what: string): asserts value is string {
  if (typeof value !== "string" || value.length === 0 || value.includes("\0")) {
    throw new SignalLayerError("bad_argument", `${what} must be a non-empty string`);
  }
}

function checkCount(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_BATCH) {
    throw new SignalLayerError("bad_argument", `${what} must be an integer between 0 and ${MAX_BATCH}`);
  }
}

function parseSession(bytes: Uint8Array): SessionRecord {
  return parseRecord("session", () => SessionRecord.deserialize(own(bytes)));
}

function parseRecord<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new SignalLayerError("corrupt_record", `stored ${what} does not parse`, { cause: err });
  }
}

function parseMessage<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toSignalLayerError(err, "bad_message", "parsing message");
  }
}

function toPreKeyBundle(data: PreKeyBundleData): PreKeyBundle {
  try {
    if (data.deviceId !== SIGNAL_DEVICE_ID) throw new Error(`device id ${String(data.deviceId)} instead of 1`);
    const oneTime = data.oneTimePreKey;
    return PreKeyBundle.new(
      data.registrationId,
      SIGNAL_DEVICE_ID,
      oneTime ? oneTime.id : null,
      oneTime ? PublicKey.deserialize(own(oneTime.publicKey)) : null,
      data.signedPreKey.id,
      PublicKey.deserialize(own(data.signedPreKey.publicKey)),
      own(data.signedPreKey.signature),
      PublicKey.deserialize(own(data.identityKey)),
      data.kyberPreKey.id,
      KEMPublicKey.deserialize(own(data.kyberPreKey.publicKey)),
      own(data.kyberPreKey.signature),
    );
  } catch (err) {
    throw toSignalLayerError(err, "bad_bundle", "malformed prekey bundle");
  }
}
