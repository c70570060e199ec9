import { IdentityKeyPair } from "@signalapp/libsignal-client";
import { SignalLayerError } from "./errors.js";
import type { SignalRecordStore } from "./record-store.js";

/** Local account: written once when the party is created. */
export interface LocalAccount {
  registrationId: number;
  identity: IdentityKeyPair;
}

/** Key-generation bookkeeping; ids are reserved here before their records are written. */
export interface KeyState {
  nextPreKeyId: number;
  nextSignedPreKeyId: number;
  nextKyberPreKeyId: number;
  oneTimePreKeyIds: number[];
  /** Oldest first; the last one is the one published. */
  signedPreKeyIds: number[];
  /** Oldest first; the last one is the one published. */
  kyberPreKeyIds: number[];
}

interface AccountJson {
  v: 1;
  registrationId: number;
  identityKeyPair: string;
}

/** Copies into a plain ArrayBuffer-backed array, the type libsignal's API insists on. */
export function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}

const KEYS = {
  account: "account",
  keyState: "key-state",
  peers: "peers",
  preKey: (id: number) => `prekey/${id}`,
  signedPreKey: (id: number) => `signed-prekey/${id}`,
  kyberPreKey: (id: number) => `kyber-prekey/${id}`,
  kyberSeen: (id: number) => `kyber-seen/${id}`,
  session: (peer: string) => `session/${peer}`,
  peerIdentity: (peer: string) => `peer-identity/${peer}`,
};

/**
 * The record layout of one party inside a SignalRecordStore: everything lives in the
 * namespace "signal/<address>", and every record is reachable from the indexes (key state,
 * peers) so that forget() can delete all of it through a get/put/delete-only interface.
 */
export class PartyRecords implements OperationRecords {
  readonly ns: string;

  constructor(
    private readonly store: SignalRecordStore,
    address: string,
  ) {
    this.ns = `signal/${address}`;
  }

  loadAccount(): LocalAccount | undefined {
    const json = this.getJson<AccountJson>(KEYS.account);
    if (json === undefined) return undefined;
    try {
      if (json.v !== 1 || !Number.isInteger(json.registrationId)) throw new Error("unexpected account record");
      return {
        registrationId: json.registrationId,
        identity: IdentityKeyPair.deserialize(own(Buffer.from(json.identityKeyPair, "base64"))),
      };
    } catch (err) {
      throw new SignalLayerError("corrupt_record", "account record does not parse", { cause: err });
    }
  }

  saveAccount(account: LocalAccount): void {
    const json: AccountJson = {
      v: 1,
      registrationId: account.registrationId,
      identityKeyPair: Buffer.from(account.identity.serialize()).toString("base64"),
    };
    this.putJson(KEYS.account, json);
  }

  loadKeyState(): KeyState {
    return (
      this.getJson<KeyState>(KEYS.keyState) ?? {
        nextPreKeyId: 1,
        nextSignedPreKeyId: 1,
        nextKyberPreKeyId: 1,
        oneTimePreKeyIds: [],
        signedPreKeyIds: [],
        kyberPreKeyIds: [],
      }
    );
  }

  saveKeyState(state: KeyState): void {
    this.putJson(KEYS.keyState, state);
  }

  getPreKey(id: number): Uint8Array | undefined {
    return this.get(KEYS.preKey(id));
  }
  putPreKey(id: number, record: Uint8Array): void {
    this.put(KEYS.preKey(id), record);
  }
  /** Deletes a one-time prekey, then drops it from the index (that order leaves no unindexed record behind). */
  removePreKey(id: number): void {
    this.delete(KEYS.preKey(id));
    const state = this.loadKeyState();
    const at = state.oneTimePreKeyIds.indexOf(id);
    if (at >= 0) {
      state.oneTimePreKeyIds.splice(at, 1);
      this.saveKeyState(state);
    }
  }

  getSignedPreKey(id: number): Uint8Array | undefined {
    return this.get(KEYS.signedPreKey(id));
  }
  putSignedPreKey(id: number, record: Uint8Array): void {
    this.put(KEYS.signedPreKey(id), record);
  }
  deleteSignedPreKey(id: number): void {
    this.delete(KEYS.signedPreKey(id));
  }

  getKyberPreKey(id: number): Uint8Array | undefined {
    return this.get(KEYS.kyberPreKey(id));
  }
  putKyberPreKey(id: number, record: Uint8Array): void {
    this.put(KEYS.kyberPreKey(id), record);
  }
  deleteKyberPreKey(id: number): void {
    this.delete(KEYS.kyberPreKey(id));
    this.delete(KEYS.kyberSeen(id));
  }

  /** Concatenated 32-byte fingerprints of the base keys already used with this Kyber prekey. */
  getKyberSeen(id: number): Uint8Array | undefined {
    return this.get(KEYS.kyberSeen(id));
  }
  putKyberSeen(id: number, value: Uint8Array): void {
    this.put(KEYS.kyberSeen(id), value);
  }
  /** Adds one base-key fingerprint (read-modify-write, so a deferred append never overwrites another). */
  appendKyberSeen(id: number, entry: Uint8Array): void {
    const seen = this.getKyberSeen(id) ?? new Uint8Array(0);
    this.putKyberSeen(id, Buffer.concat([seen, entry]));
  }

  getSession(peer: string): Uint8Array | undefined {
    return this.get(KEYS.session(peer));
  }
  putSession(peer: string, record: Uint8Array): void {
    this.addPeer(peer);
    this.put(KEYS.session(peer), record);
  }
  deleteSession(peer: string): void {
    this.delete(KEYS.session(peer));
  }

  getPeerIdentity(peer: string): Uint8Array | undefined {
    return this.get(KEYS.peerIdentity(peer));
  }
  putPeerIdentity(peer: string, key: Uint8Array): void {
    this.addPeer(peer);
    this.put(KEYS.peerIdentity(peer), key);
  }

  peers(): string[] {
    return this.getJson<string[]>(KEYS.peers) ?? [];
  }

  /** Deletes every record of this party; the indexes and the account go last so a crash can be retried. */
  deleteEverything(): void {
    const state = this.loadKeyState();
    for (const id of state.oneTimePreKeyIds) this.delete(KEYS.preKey(id));
    for (const id of state.signedPreKeyIds) this.deleteSignedPreKey(id);
    for (const id of state.kyberPreKeyIds) this.deleteKyberPreKey(id);
    for (const peer of this.peers()) {
      this.delete(KEYS.session(peer));
      this.delete(KEYS.peerIdentity(peer));
    }
    this.delete(KEYS.peers);
    this.delete(KEYS.keyState);
    this.delete(KEYS.account);
  }

  /** Runs fn so that its writes (and the caller's own, to the same store) commit together. */
  transaction<T>(fn: () => T): T {
    try {
      return this.store.transaction ? this.store.transaction(fn) : fn();
    } catch (err) {
      throw storeFailure(err);
    }
  }

  private addPeer(peer: string): void {
    const peers = this.peers();
    if (peers.includes(peer)) return;
    peers.push(peer);
    this.putJson(KEYS.peers, peers);
  }

  private getJson<T>(key: string): T | undefined {
    const bytes = this.get(key);
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(Buffer.from(bytes).toString("utf8")) as T;
    } catch (err) {
      throw new SignalLayerError("corrupt_record", `record ${key} is not valid JSON`, { cause: err });
    }
  }

  private putJson(key: string, value: unknown): void {
    this.put(key, Buffer.from(JSON.stringify(value), "utf8"));
  }

  private get(key: string): Uint8Array | undefined {
    try {
      return this.store.get(this.ns, key);
    } catch (err) {
      throw storeFailure(err);
    }
  }

  private put(key: string, value: Uint8Array): void {
    try {
      this.store.put(this.ns, key, value);
    } catch (err) {
      throw storeFailure(err);
    }
  }

  private delete(key: string): void {
    try {
      this.store.delete(this.ns, key);
    } catch (err) {
      throw storeFailure(err);
    }
  }
}

/** The records libsignal's store callbacks read and write during one encrypt or decrypt. */
export interface OperationRecords {
  getSession(peer: string): Uint8Array | undefined;
  putSession(peer: string, record: Uint8Array): void;
  getPeerIdentity(peer: string): Uint8Array | undefined;
  putPeerIdentity(peer: string, key: Uint8Array): void;
  getPreKey(id: number): Uint8Array | undefined;
  putPreKey(id: number, record: Uint8Array): void;
  removePreKey(id: number): void;
  getSignedPreKey(id: number): Uint8Array | undefined;
  putSignedPreKey(id: number, record: Uint8Array): void;
  getKyberPreKey(id: number): Uint8Array | undefined;
  putKyberPreKey(id: number, record: Uint8Array): void;
  getKyberSeen(id: number): Uint8Array | undefined;
  appendKyberSeen(id: number, entry: Uint8Array): void;
}

/**
 * Holds an operation's writes back until apply(): reads see them at once, the store only
 * when they are applied. A decrypt applies them in the same store transaction that keeps the
 * plaintext, so a crash cannot advance the session and lose the message it carried. Writes
 * are kept as the logical changes (not final values), so records other operations touch in
 * the meantime (the peer list, the key state) are changed, not overwritten, when applied.
 */
export class DeferredRecords implements OperationRecords {
  private readonly overlay = new Map<string, Uint8Array | null>();
  private readonly seenAdded = new Map<number, Uint8Array[]>();
  private readonly writes: Array<() => void> = [];

  constructor(private readonly base: PartyRecords) {}

  private read(key: string, fromBase: () => Uint8Array | undefined): Uint8Array | undefined {
    const staged = this.overlay.get(key);
    if (staged === null) return undefined;
    return staged ?? fromBase();
  }

  private write(key: string, value: Uint8Array | null, apply: () => void): void {
    this.overlay.set(key, value === null ? null : Uint8Array.from(value));
    this.writes.push(apply);
  }

  getSession(peer: string) {
    return this.read(KEYS.session(peer), () => this.base.getSession(peer));
  }
  putSession(peer: string, record: Uint8Array) {
    this.write(KEYS.session(peer), record, () => this.base.putSession(peer, record));
  }
  getPeerIdentity(peer: string) {
    return this.read(KEYS.peerIdentity(peer), () => this.base.getPeerIdentity(peer));
  }
  putPeerIdentity(peer: string, key: Uint8Array) {
    this.write(KEYS.peerIdentity(peer), key, () => this.base.putPeerIdentity(peer, key));
  }
  getPreKey(id: number) {
    return this.read(KEYS.preKey(id), () => this.base.getPreKey(id));
  }
  putPreKey(id: number, record: Uint8Array) {
    this.write(KEYS.preKey(id), record, () => this.base.putPreKey(id, record));
  }
  removePreKey(id: number) {
    this.write(KEYS.preKey(id), null, () => this.base.removePreKey(id));
  }
  getSignedPreKey(id: number) {
    return this.read(KEYS.signedPreKey(id), () => this.base.getSignedPreKey(id));
  }
  putSignedPreKey(id: number, record: Uint8Array) {
    this.write(KEYS.signedPreKey(id), record, () => this.base.putSignedPreKey(id, record));
  }
  getKyberPreKey(id: number) {
    return this.read(KEYS.kyberPreKey(id), () => this.base.getKyberPreKey(id));
  }
  putKyberPreKey(id: number, record: Uint8Array) {
    this.write(KEYS.kyberPreKey(id), record, () => this.base.putKyberPreKey(id, record));
  }

  getKyberSeen(id: number) {
    const added = this.seenAdded.get(id) ?? [];
    const stored = this.base.getKyberSeen(id);
    return stored === undefined && added.length === 0 ? undefined : new Uint8Array(Buffer.concat([stored ?? new Uint8Array(0), ...added]));
  }
  appendKyberSeen(id: number, entry: Uint8Array) {
    const copy = Uint8Array.from(entry);
    this.seenAdded.set(id, [...(this.seenAdded.get(id) ?? []), copy]);
    this.writes.push(() => this.base.appendKyberSeen(id, copy));
  }

  /** Writes everything held back, in the order it was written; call inside base.transaction(). */
  apply(): void {
    for (const write of this.writes) write();
  }
}

function storeFailure(err: unknown): SignalLayerError {
  if (err instanceof SignalLayerError) return err;
  return new SignalLayerError("store_error", `record store failed: ${err instanceof Error ? err.message : String(err)}`, {
    cause: err,
  });
}
