/**
 * The end-to-end encrypted messaging layer over one InteropClient: a SignalParty per local
 * user, payloads (./payload.ts) encrypted for the peer, the key directory kept stocked.
 * Shared by the bridge's connector (third-party users) and the WhatsApp simulator (home users).
 *
 * What it adds to the client and the Signal layer:
 *  - Sends reach the client in call order per (from, to), encrypted in that same order. A
 *    retry with the same id encrypts again; the gateway keys sends by (from, to, id) alone and
 *    answers the repeat as a duplicate, dropping the second ciphertext.
 *  - Delivery is at-least-once without losing messages to the ratchet: decrypting advances the
 *    session, so the plaintext is kept until onPayload resolves; a redelivered frame (handler
 *    failed, process restarted) is served from there instead of failing as a duplicate.
 *  - Nothing wedges the queue: a frame that cannot be decrypted or decoded is logged (no
 *    content), reported through onUndecryptable and acknowledged.
 */
import { createHash } from "node:crypto";
import { getLogger, type Logger } from "../logging.js";
import type { InteropClient } from "./client.js";
import { ProtocolError, parseMimiUri, type DeliverFrame, type DeliveredFrame, type PreKeyBundle } from "./frames.js";
import { decodeMimi } from "./mimi.js";
import { PayloadError, decodePayload, encodePayload, type Payload } from "./payload.js";
import { SignalLayerError, SignalParty, type PreKeyBundleData, type PublishedKeys, type SignalPartyOptions, type SignalRecordStore } from "./signal.js";

/** Where a frame a local user received came from, and where it stands in their queue on the gateway. */
export interface ReceivedFrame {
  /** The local user the frame is for. */
  to: string;
  from: string;
  room: string;
  /** The sender's 16-byte frame id (not the MIMI message id). */
  id: Uint8Array;
  /** When the gateway accepted the send (ms since epoch). */
  ts: number;
  /** Position in the local user's queue on the gateway. */
  seq: number;
}

export interface PayloadEvent extends ReceivedFrame {
  payload: Payload;
}

export type UndecryptableReason =
  /** Signal could not decrypt it (SignalLayerError code: no_session, bad_message, untrusted_identity, corrupt_record). */
  | { stage: "decrypt"; code: string }
  /** Decrypted, but not a valid payload (PayloadError code: malformed, bad_mimi). A kind this version does not know is ignored, not reported. */
  | { stage: "decode"; code: string }
  /** A MIMI message whose senderUri/roomUri are not the frame's sender and room. */
  | { stage: "envelope"; code: "envelope_mismatch" };

export interface UndecryptableEvent extends ReceivedFrame {
  reason: UndecryptableReason;
}

export interface DeliveredEvent {
  /** The local user who sent the message. */
  user: string;
  /** Who acknowledged it. */
  to: string;
  room: string;
  /** The frame id the message was sent with. */
  id: Uint8Array;
  /** When the recipient acknowledged it. */
  ts: number;
}

/** What sendToGroup did, member by member. */
export interface GroupSendResult {
  sent: Array<{ to: string; ts: number; duplicate: boolean }>;
  failed: Array<{ to: string; error: EndpointError }>;
}

export interface SecureEndpointOptions {
  client: InteropClient;
  /** The record store of one local user (Signal state and this layer's own records). */
  openRecords: (userUri: string) => SignalRecordStore;
  /** Called once per payload, in queue order per local user; the frame is acked after it resolves, redelivered if it rejects. */
  onPayload: (ev: PayloadEvent) => Promise<void>;
  /** A peer's identity key changed (reinstall, new phone); the new key is already trusted. */
  onIdentityChange?: (local: string, peer: string) => void;
  /** The gateway's delivery receipts for messages local users sent; acked after it resolves. Without it they are acked at once. */
  onDelivered?: (ev: DeliveredEvent) => Promise<void>;
  /** A frame was dropped (and acked) because it could not be decrypted or decoded. Errors it throws are logged and ignored. */
  onUndecryptable?: (ev: UndecryptableEvent) => void | Promise<void>;
  logger?: Logger;
  /** One-time prekeys the directory is topped up to (default 100, at most the gateway's per-publish limit). */
  oneTimeKeyTarget?: number;
  /** Top up when the directory holds fewer one-time prekeys than this (default 20). */
  oneTimeKeyLow?: number;
}

export type EndpointErrorCode = ProtocolError["code"] | SignalLayerError["code"] | "bad_payload" | "bad_argument" | "unknown_local_user";

/** Gateway codes after which the same send may succeed later without anybody changing anything. */
const RETRYABLE_CODES: ReadonlySet<string> = new Set(["rate_limited", "internal", "timeout", "queue_full", "no_keys", "store_error"]);

/** Every failure of SecureEndpoint: `code` is the gateway's error code when the gateway refused. */
export class EndpointError extends Error {
  override readonly name = "EndpointError";
  constructor(
    readonly code: EndpointErrorCode,
    message: string,
    /** Whether repeating the same call later may succeed. */
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

function toEndpointError(err: unknown, what: string): EndpointError {
  if (err instanceof EndpointError) return err;
  if (err instanceof ProtocolError) return new EndpointError(err.code, `${what}: ${err.message}`, RETRYABLE_CODES.has(err.code), { cause: err });
  if (err instanceof SignalLayerError) return new EndpointError(err.code, `${what}: ${err.message}`, RETRYABLE_CODES.has(err.code), { cause: err });
  if (err instanceof PayloadError) return new EndpointError("bad_payload", `${what}: ${err.message}`, false, { cause: err });
  return new EndpointError("internal", `${what}: ${err instanceof Error ? err.message : String(err)}`, false, { cause: err });
}

/**
 * This layer's records of one local user, next to the Signal party's in the same store (and so
 * encrypted at rest with it). Every record is reachable from an index, so the user's removal can
 * delete them through a get/put/delete-only interface.
 */
class EndpointRecords {
  private readonly ns: string;

  constructor(
    private readonly store: SignalRecordStore,
    user: string,
  ) {
    this.ns = `endpoint/${user}`;
  }

  private getJson<T>(key: string): T | undefined {
    const bytes = this.store.get(this.ns, key);
    return bytes === undefined ? undefined : (JSON.parse(Buffer.from(bytes).toString("utf8")) as T);
  }

  private putJson(key: string, value: unknown): void {
    this.store.put(this.ns, key, new Uint8Array(Buffer.from(JSON.stringify(value), "utf8")));
  }

  get publishedDigest(): string | undefined {
    return this.getJson<{ digest: string }>("published")?.digest;
  }

  set publishedDigest(digest: string) {
    this.putJson("published", { digest });
  }

  // Plaintexts decrypted but not yet handled, by queue seq.
  pending(seq: number): Uint8Array | undefined {
    return this.store.get(this.ns, `pending/${seq}`);
  }

  putPending(seq: number, plaintext: Uint8Array): void {
    const index = this.getJson<number[]>("pending-index") ?? [];
    if (!index.includes(seq)) this.putJson("pending-index", [...index, seq]);
    this.store.put(this.ns, `pending/${seq}`, plaintext);
  }

  deletePending(seq: number): void {
    const remove = () => {
      this.store.delete(this.ns, `pending/${seq}`);
      const index = this.getJson<number[]>("pending-index") ?? [];
      if (index.includes(seq))
        this.putJson(
          "pending-index",
          index.filter((s) => s !== seq),
        );
    };
    if (this.store.transaction) this.store.transaction(remove);
    else remove();
  }

  deleteEverything(): void {
    for (const seq of this.getJson<number[]>("pending-index") ?? []) this.store.delete(this.ns, `pending/${seq}`);
    for (const key of ["pending-index", "published"]) this.store.delete(this.ns, key);
  }
}

class LocalUser {
  private opened: SignalParty | undefined;
  readonly records: EndpointRecords;
  /** Key-directory maintenance runs one at a time per user. */
  keysChain: Promise<void> = Promise.resolve();

  constructor(
    readonly uri: string,
    private readonly store: SignalRecordStore,
    private readonly options: SignalPartyOptions,
  ) {
    this.records = new EndpointRecords(store, uri);
  }

  /**
   * The user's Signal party, loaded on first use: a user who is only logged in (most of them,
   * with many users and few active) holds no Signal state in memory.
   */
  get party(): SignalParty {
    this.opened ??= SignalParty.open(this.uri, this.store, this.options);
    return this.opened;
  }
}

function digestOf(...parts: Array<Uint8Array | string | number>): string {
  const hash = createHash("sha256");
  for (const part of parts) {
    const bytes = typeof part === "string" ? Buffer.from(part, "utf8") : typeof part === "number" ? Buffer.from(String(part)) : part;
    const length = Buffer.alloc(4);
    // Length-prefixed so that different splits of the same bytes give different digests.
    length.writeUInt32BE(bytes.length);
    hash.update(length).update(bytes);
  }
  return hash.digest("hex");
}

/** What the directory holds apart from one-time keys; a change means republishing. */
function bundleDigest(keys: PublishedKeys): string {
  return digestOf(keys.registrationId, keys.identityKey, keys.signedPreKey.id, keys.signedPreKey.publicKey, keys.kyberPreKey.id, keys.kyberPreKey.publicKey);
}

/**
 * Records in a user's Signal store that `keys` are what the key directory holds, as the
 * endpoint does after publishing them (for stores written by other means: the benchmark's).
 */
export function notePublishedKeys(store: SignalRecordStore, user: string, keys: PublishedKeys): void {
  new EndpointRecords(store, user).publishedDigest = bundleDigest(keys);
}

function toBundleData(bundle: PreKeyBundle): PreKeyBundleData {
  const data: PreKeyBundleData = {
    registrationId: bundle.registrationId,
    // Anything but 1 is refused by the Signal layer as bad_bundle.
    deviceId: bundle.deviceId as 1,
    identityKey: bundle.identityKey,
    signedPreKey: bundle.signedPreKey,
    kyberPreKey: bundle.kyberPreKey,
  };
  if (bundle.oneTimePreKey) data.oneTimePreKey = bundle.oneTimePreKey;
  return data;
}

/** Stages of handling a frame that are retried (not acked) when they fail. */
const TRANSIENT_SIGNAL_CODES: ReadonlySet<string> = new Set(["store_error", "bad_store_key", "forgotten"]);

export class SecureEndpoint {
  private readonly client: InteropClient;
  private readonly log: Logger;
  private readonly users = new Map<string, LocalUser>();
  private readonly adding = new Map<string, Promise<void>>();
  /** Tail of the encrypt-and-hand-over chain per (from, to): sends reach the client in call order. */
  private readonly sendOrder = new Map<string, Promise<unknown>>();
  private readonly oneTimeKeyTarget: number;
  private readonly oneTimeKeyLow: number;

  constructor(private readonly opts: SecureEndpointOptions) {
    this.client = opts.client;
    this.log = opts.logger ?? getLogger("endpoint");
    this.oneTimeKeyTarget = opts.oneTimeKeyTarget ?? 100;
    this.oneTimeKeyLow = opts.oneTimeKeyLow ?? 20;
    this.client.onDeliver((frame) => this.onDeliver(frame));
    if (opts.onDelivered) {
      const onDelivered = opts.onDelivered;
      this.client.onDelivered((frame: DeliveredFrame) => onDelivered({ user: frame.user, to: frame.to, room: frame.room, id: frame.id, ts: frame.ts }));
    }
    this.client.on("keysLow", (frame) => {
      const user = this.users.get(frame.user);
      if (!user) return;
      this.maintainKeys(user, true).catch((err: unknown) => this.log.warn("could not replenish one-time keys", { user: frame.user, error: (err as Error).message }));
    });
    this.client.on("sessionEnded", (user) => {
      // The next addUser logs in again instead of returning the old (now stale) promise.
      this.adding.delete(user);
    });
  }

  /** Local users set up (or being set up) in this process. */
  get localUsers(): string[] {
    return [...this.users.keys()];
  }

  /**
   * Opens the user's Signal party, enlists (third-party users; the home provider's accounts
   * are made by the caller with account.upsert and passed with home: true), logs in and makes
   * sure the key directory holds current keys. Idempotent; concurrent calls share one run.
   */
  addUser(uri: string, opts: { displayName?: string; home?: boolean; thirdPartyChats?: boolean } = {}): Promise<void> {
    const running = this.adding.get(uri);
    if (running) return running;
    const setup = this.setUp(uri, opts);
    this.adding.set(uri, setup);
    setup.catch(() => {
      if (this.adding.get(uri) === setup) this.adding.delete(uri);
    });
    return setup;
  }

  private async setUp(uri: string, opts: { displayName?: string; home?: boolean; thirdPartyChats?: boolean }): Promise<void> {
    const parsed = parseMimiUri(uri);
    if (parsed?.kind !== "u") throw new EndpointError("bad_argument", "addUser: not a user URI", false);
    try {
      const user = this.openUser(uri);
      if (!opts.home) await this.client.enlist(uri, opts.displayName ?? parsed.id, opts.thirdPartyChats === undefined ? {} : { thirdPartyChats: opts.thirdPartyChats });
      await this.client.login(uri);
      await this.maintainKeys(user);
      this.log.info("local user ready", { user: uri });
    } catch (err) {
      throw toEndpointError(err, "addUser");
    }
  }

  private openUser(uri: string): LocalUser {
    let user = this.users.get(uri);
    if (!user) {
      user = new LocalUser(uri, this.opts.openRecords(uri), {
        onIdentityChange: (peer) => {
          this.log.info("peer identity changed", { user: uri, peer });
          this.opts.onIdentityChange?.(uri, peer);
        },
      });
      this.users.set(uri, user);
    }
    return user;
  }

  /**
   * Publishes the bundle when the directory may not have this version of it, and tops up the
   * one-time keys when they run low (below oneTimeKeyLow, or below the target once the gateway
   * said keys.low). Only freshly generated one-time keys are ever published: one published
   * earlier may already have been handed out, and handing it out twice breaks the second session.
   */
  private maintainKeys(user: LocalUser, gatewaySaidLow = false): Promise<void> {
    const run = user.keysChain.then(async () => {
      const known = user.records.publishedDigest;
      const remaining = known === undefined ? 0 : await this.client.countKeys(user.uri);
      const low = remaining < (gatewaySaidLow ? this.oneTimeKeyTarget : this.oneTimeKeyLow);
      // Only prepareKeys changes what the digest covers (it adds a missing signed or Kyber prekey),
      // and what it returned was published: nothing to do, and no Signal state to load.
      if (known !== undefined && !low) return;
      const keys = user.party.prepareKeys({ oneTimeCount: 0 });
      const digest = bundleDigest(keys);
      const perPublish = this.client.limits.maxOneTimeKeysPerPublish;
      const topUp = low ? Math.max(0, Math.min(perPublish, this.oneTimeKeyTarget - remaining)) : 0;
      const oneTimePreKeys = topUp > 0 ? user.party.replenishOneTimeKeys(topUp) : [];
      const { remaining: stored } = await this.client.publishKeys({
        user: user.uri,
        registrationId: keys.registrationId,
        identityKey: keys.identityKey,
        signedPreKey: keys.signedPreKey,
        kyberPreKey: keys.kyberPreKey,
        oneTimePreKeys,
      });
      user.records.publishedDigest = digest;
      this.log.info("published keys", { user: user.uri, oneTimeKeys: oneTimePreKeys.length, stored });
    });
    user.keysChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Encrypts and sends one payload; resolves once the gateway stored it. `id` (16 bytes) must
   * stay the same when the same logical message is sent again (after a restart, say): the
   * gateway then answers the retry as a duplicate and delivers the message once. Rejects with
   * EndpointError (the gateway's code when it refused). Without timeoutMs it waits for the
   * gateway however long it is away; with it, it gives up with the retryable code "timeout".
   */
  async send(from: string, to: string, room: string, payload: Payload, id: Uint8Array, options: { timeoutMs?: number } = {}): Promise<{ ts: number; duplicate: boolean }> {
    if (!(id instanceof Uint8Array) || id.length !== 16) throw new EndpointError("bad_argument", "send: id must be 16 bytes", false);
    let plaintext: Uint8Array;
    try {
      plaintext = encodePayload(payload);
    } catch (err) {
      throw toEndpointError(err, "send");
    }
    await this.addUserIfRunning(from);
    const user = this.users.get(from);
    if (!user) throw new EndpointError("unknown_local_user", "send: the sender was not added to this endpoint", false);

    const key = `${from}\n${to}`;
    const previous = this.sendOrder.get(key) ?? Promise.resolve();
    // Only encryption and the hand-over to the client are ordered here; the client keeps the
    // order from then on, so a slow gateway answer does not hold up the next encryption.
    const handedOver = previous.then(async () => {
      const ciphertext = await user.party.encrypt(to, plaintext, async () => toBundleData(await this.client.fetchKeys(from, to)));
      const sent = this.client.send({ from, to, room, id, payload: ciphertext, ...options });
      sent.catch(() => undefined);
      return { sent };
    });
    const tail = handedOver.catch(() => undefined);
    this.sendOrder.set(key, tail);
    void tail.then(() => {
      if (this.sendOrder.get(key) === tail) this.sendOrder.delete(key);
    });

    try {
      const { sent } = await handedOver;
      const result = await sent;
      return { ts: result.ts, duplicate: result.duplicate };
    } catch (err) {
      throw toEndpointError(err, "send");
    }
  }

  /**
   * Sends one payload to a group room (docs/protocol.md §3.3.4): one ciphertext per member
   * other than `from`, each encrypted with the pairwise session, all under the same `id`.
   * `members` is the group's member list as the caller knows it (group.get or the latest
   * group event). Resolves once every member's copy is settled: what the gateway stored, and
   * per member what it refused (a member who left meanwhile gets not_member, say). A retry
   * with the same id resends only what is missing; the rest comes back as duplicates.
   */
  async sendToGroup(from: string, room: string, members: readonly string[], payload: Payload, id: Uint8Array, options: { timeoutMs?: number } = {}): Promise<GroupSendResult> {
    const recipients = [...new Set(members)].filter((m) => m !== from);
    const settled = await Promise.allSettled(recipients.map((to) => this.send(from, to, room, payload, id, options)));
    const result: GroupSendResult = { sent: [], failed: [] };
    settled.forEach((outcome, i) => {
      const to = recipients[i]!;
      if (outcome.status === "fulfilled") result.sent.push({ to, ...outcome.value });
      else result.failed.push({ to, error: toEndpointError(outcome.reason, "sendToGroup") });
    });
    return result;
  }

  private async addUserIfRunning(uri: string): Promise<void> {
    const running = this.adding.get(uri);
    if (running) await running;
  }

  private async onDeliver(frame: DeliverFrame): Promise<void> {
    await this.addUserIfRunning(frame.to).catch(() => undefined);
    const user = this.users.get(frame.to);
    // Not acked: the event stays queued for when the user is added again.
    if (!user) throw new Error("deliver for a user this endpoint does not have");
    const meta = { to: frame.to, from: frame.from, room: frame.room, id: frame.id, ts: frame.ts, seq: frame.seq };

    let plaintext = user.records.pending(frame.seq);
    if (plaintext === undefined) {
      try {
        // The plaintext is kept in the same transaction that advances the session (see decrypt).
        plaintext = await user.party.decrypt(frame.from, frame.payload, { keep: (pt) => user.records.putPending(frame.seq, pt) });
      } catch (err) {
        if (!(err instanceof SignalLayerError)) throw err;
        if (TRANSIENT_SIGNAL_CODES.has(err.code)) throw err;
        if (err.code === "duplicate_message") {
          // Handled before; only its ack was lost.
          this.log.debug("dropping an already handled message", { user: frame.to, seq: frame.seq });
          return;
        }
        return this.undecryptable(meta, { stage: "decrypt", code: err.code }, err.message);
      }
    }

    let payload: Payload;
    try {
      payload = decodePayload(plaintext);
    } catch (err) {
      if (!(err instanceof PayloadError)) throw err;
      user.records.deletePending(frame.seq);
      if (err.code === "unknown_kind") {
        // A newer sender's addition, not an error (docs/protocol.md §16.2): ack and ignore.
        this.log.info("ignoring a payload of a kind this version does not know", { user: frame.to, seq: frame.seq });
        return;
      }
      return this.undecryptable(meta, { stage: "decode", code: err.code }, err.message);
    }
    if ((payload.kind === "content" || payload.kind === "status") && !this.envelopeMatches(payload.mimi, frame)) {
      user.records.deletePending(frame.seq);
      return this.undecryptable(meta, { stage: "envelope", code: "envelope_mismatch" }, "MIMI sender or room differ from the frame's");
    }

    await this.opts.onPayload({ ...meta, payload });
    user.records.deletePending(frame.seq);
  }

  /** MIMI message ids hash the sender and room URIs inside the message; they must be the authenticated ones. */
  private envelopeMatches(mimi: Uint8Array, frame: DeliverFrame): boolean {
    const { senderUri, roomUri } = decodeMimi(mimi).extensions;
    return senderUri === frame.from && roomUri === frame.room;
  }

  private async undecryptable(ev: Omit<UndecryptableEvent, "reason">, reason: UndecryptableReason, detail: string): Promise<void> {
    this.log.warn("dropping a message that cannot be read", {
      user: ev.to,
      from: ev.from,
      seq: ev.seq,
      stage: reason.stage,
      code: reason.code,
      detail,
    });
    try {
      await this.opts.onUndecryptable?.({ ...ev, reason });
    } catch (err) {
      this.log.warn("onUndecryptable callback failed", { error: (err as Error).message });
    }
  }

  /**
   * Logs the user out (or, with unenlist, deletes a third-party account from the gateway with
   * its keys and queue) and deletes every local record of it. A network failure rejects before
   * anything local is deleted, so the call can be repeated.
   */
  async removeUser(uri: string, opts: { unenlist?: boolean } = {}): Promise<void> {
    await this.addUserIfRunning(uri).catch(() => undefined);
    this.adding.delete(uri);
    try {
      if (opts.unenlist) await this.client.unenlist(uri);
      else await this.client.logout(uri);
    } catch (err) {
      throw toEndpointError(err, "removeUser");
    }
    const user = this.users.get(uri) ?? this.openUser(uri);
    this.users.delete(uri);
    user.records.deleteEverything();
    await user.party.forget();
    this.log.info("local user removed", { user: uri });
  }

  /** The 60-digit safety number of a local user and a peer, or undefined before they talked. */
  safetyNumber(local: string, peer: string): string | undefined {
    return this.users.get(local)?.party.identityFingerprint(peer);
  }
}
