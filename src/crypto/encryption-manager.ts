/**
 * End-to-bridge encryption for the appservice's users: one OlmMachine (one device) per ghost and
 * for the bot, created on first use with MSC4190 (PUT /devices as the appservice), cross-signed by
 * the user's own identity, fed from the appservice transactions (MSC2409/MSC3202), and speaking to
 * the homeserver as that device (MSC3202 masquerading). See docs/encryption.md.
 *
 * Nothing decrypted is logged, at any level.
 */
import { randomBytes } from "node:crypto";
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { getLogger } from "../logging";
import { KeyedQueue } from "../util/keyed-queue";
import { DeviceClient, MatrixRequestError } from "./device-client";
import { MachineStore } from "./store/machine-store";
import { TransactionExtensions, readTransactionExtensions } from "./transaction-extensions";

const log = getLogger("crypto");

/** Key retention; mautrix's `encryption.delete_keys` options are the anchor (docs/encryption.md). */
export interface KeyHygiene {
  /** A new room key from a sender device replaces its older ones for that room (they are deleted). */
  deletePreviousOnNewSession: boolean;
  /** forgetRoom deletes the room's inbound keys as well as its outbound session. */
  deleteOnForgetRoom: boolean;
}

export interface EncryptionManagerOptions {
  homeserverUrl: string;
  asToken: string;
  store: MachineStore;
  hygiene?: Partial<KeyHygiene>;
  /** Display name of the bridge's devices, as other users' clients list them. */
  deviceDisplayName?: string;
  /** How long decrypt waits for a room key that has not arrived yet (default 10 s). */
  roomKeyWaitMs?: number;
}

/** A decrypted room event: never log its content. */
export interface DecryptedEvent {
  type: string;
  content: Record<string, unknown>;
  /** The sender device's Curve25519 key, as the machine saw it. */
  senderCurve25519Key: string;
}

/** An event that did not decrypt; `code` is the library's reason (MissingRoomKey, …). */
export class DecryptionFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "DecryptionFailure";
  }
}

interface UserMachine {
  userId: string;
  deviceId: string;
  machine: sdk.OlmMachine;
  /** One outgoing-requests pass at a time; callers chain on it. */
  outgoing: Promise<void>;
}

interface RoomInfo {
  members: string[];
  settings: { rotationPeriodMs?: number; rotationPeriodMsgs?: number };
}

const DEFAULT_HYGIENE: KeyHygiene = { deletePreviousOnNewSession: true, deleteOnForgetRoom: true };

function newDeviceId(): string {
  // Readable as the bridge's in a device list; random so a forgotten user never reuses old keys.
  return `BRIDGE${randomBytes(5).toString("hex").toUpperCase()}`;
}

export class EncryptionManager {
  private readonly client: DeviceClient;
  private readonly machines = new Map<string, Promise<UserMachine>>();
  private readonly perUser = new KeyedQueue();
  private readonly rooms = new Map<string, RoomInfo>();
  private readonly keyWaiters = new Map<string, Set<() => void>>();
  /** Per user: the to-device catch-up under way (one at a time) and where the last one ended. */
  private readonly catchUps = new Map<string, Promise<void>>();
  private readonly catchUpTokens = new Map<string, string>();
  private readonly hygiene: KeyHygiene;
  /** Extensions seen since start, for the homeserver check. */
  readonly seen = { toDevice: false, oneTimeKeyCounts: false, deviceLists: false };
  private readonly toDeviceListeners = new Set<(userId: string, deviceId: string, event: Record<string, unknown>) => void>();
  private readonly transactionWaiters = new Set<() => void>();

  constructor(private readonly opts: EncryptionManagerOptions) {
    this.client = new DeviceClient({ homeserverUrl: opts.homeserverUrl, asToken: opts.asToken });
    this.hygiene = { ...DEFAULT_HYGIENE, ...opts.hygiene };
  }

  /** The user's machine, creating its device, keys and cross-signing on first use. */
  machineFor(userId: string): Promise<UserMachine> {
    let pending = this.machines.get(userId);
    if (!pending) {
      pending = this.open(userId);
      this.machines.set(userId, pending);
      pending.catch(() => this.machines.delete(userId));
    }
    return pending;
  }

  /** The user's device id (opening the machine if needed). */
  async deviceIdOf(userId: string): Promise<string> {
    return (await this.machineFor(userId)).deviceId;
  }

  private async open(userId: string): Promise<UserMachine> {
    const store = this.opts.store;
    const deviceId = store.deviceOf(userId) ?? newDeviceId();
    // Idempotent (201 created, 200 known): also repairs a device the homeserver lost.
    await this.client.request("PUT", `v3/devices/${encodeURIComponent(deviceId)}`, { userId }, { display_name: this.opts.deviceDisplayName ?? "Bridge" });
    const machine = await store.openMachine(userId, deviceId);
    const user: UserMachine = { userId, deviceId, machine, outgoing: Promise.resolve() };
    machine.registerRoomKeyUpdatedCallback(async (infos) => this.onRoomKeys(user, infos));
    await this.flushOutgoing(user);
    await this.ensureCrossSigning(user);
    log.info("crypto device ready", { user: userId, device: deviceId });
    return user;
  }

  /** Bootstraps the user's own cross-signing identity once and signs its device with it. */
  private async ensureCrossSigning(user: UserMachine): Promise<void> {
    const status = await user.machine.crossSigningStatus();
    if (status.hasMaster && status.hasSelfSigning && status.hasUserSigning) return;
    const requests = await user.machine.bootstrapCrossSigning(true);
    if (requests.uploadKeysRequest) await this.send(user, requests.uploadKeysRequest as sdk.KeysUploadRequest);
    const as = { userId: user.userId, deviceId: user.deviceId };
    // MSC4190 appservices replace cross-signing keys without user-interactive auth (Synapse 1.160).
    await this.client.request("POST", "v3/keys/device_signing/upload", as, JSON.parse(requests.uploadSigningKeysRequest.body));
    await this.send(user, requests.uploadSignaturesRequest);
    log.info("crypto cross-signing set up", { user: user.userId });
  }

  /** Sends every request the machine has queued (key uploads, queries, claims, to-device…). */
  private flushOutgoing(user: UserMachine): Promise<void> {
    const run = user.outgoing.then(async () => {
      for (const request of await user.machine.outgoingRequests()) await this.send(user, request);
    });
    user.outgoing = run.catch((err) => {
      log.warn("crypto requests failed", { user: user.userId, error: (err as Error).message });
    });
    return run;
  }

  private async send(user: UserMachine, request: sdk.OutgoingRequest | sdk.SignatureUploadRequest): Promise<void> {
    const as = { userId: user.userId, deviceId: user.deviceId };
    let response: unknown;
    if (request instanceof sdk.KeysUploadRequest) response = await this.client.request("POST", "v3/keys/upload", as, JSON.parse(request.body));
    else if (request instanceof sdk.KeysQueryRequest) response = await this.client.request("POST", "v3/keys/query", as, JSON.parse(request.body));
    else if (request instanceof sdk.KeysClaimRequest) response = await this.client.request("POST", "v3/keys/claim", as, JSON.parse(request.body));
    else if (request instanceof sdk.SignatureUploadRequest) response = await this.client.request("POST", "v3/keys/signatures/upload", as, JSON.parse(request.body));
    else if (request instanceof sdk.ToDeviceRequest) {
      response = await this.client.request("PUT", `v3/sendToDevice/${encodeURIComponent(request.event_type)}/${encodeURIComponent(request.txn_id)}`, as, JSON.parse(request.body));
    } else if (request instanceof sdk.RoomMessageRequest) {
      response = await this.client.request(
        "PUT",
        `v3/rooms/${encodeURIComponent(request.room_id)}/send/${encodeURIComponent(request.event_type)}/${encodeURIComponent(request.txn_id)}`,
        as,
        JSON.parse(request.body),
      );
    } else {
      // Key backup is not used: the bridge keeps no history.
      return;
    }
    if (request.id) await user.machine.markRequestAsSent(request.id, request.type, JSON.stringify(response));
  }

  /**
   * Feeds an appservice transaction's encryption extensions to the machines they are for.
   * Machines not open yet are opened (their to-device messages must not be lost); devices that
   * are not the bridge's current devices are ignored.
   */
  async handleTransaction(body: Record<string, unknown>, isOurs: (userId: string) => boolean): Promise<void> {
    for (const wake of this.transactionWaiters) wake();
    this.transactionWaiters.clear();
    const ext = readTransactionExtensions(body);
    if (ext.changed.length || ext.left.length) this.seen.deviceLists = true;
    for (const [userId, byDevice] of ext.devices) {
      if (!isOurs(userId)) continue;
      const known = this.opts.store.deviceOf(userId);
      for (const [deviceId, data] of byDevice) {
        if (deviceId !== known) continue;
        if (data.toDevice.length) this.seen.toDevice = true;
        if (data.oneTimeKeyCounts) this.seen.oneTimeKeyCounts = true;
        for (const event of data.toDevice) for (const listener of this.toDeviceListeners) listener(userId, deviceId, event);
        await this.perUser.run(userId, async () => this.feed(await this.machineFor(userId), ext, data));
      }
    }
    // Device-list changes concern every open machine that may track those users.
    if (ext.changed.length || ext.left.length) {
      for (const pending of this.machines.values()) {
        const user = await pending;
        if (ext.devices.get(user.userId)?.has(user.deviceId)) continue;
        await this.perUser.run(user.userId, async () => this.feed(user, ext, { toDevice: [] }));
      }
    }
  }

  private async feed(
    user: UserMachine,
    ext: TransactionExtensions,
    data: { toDevice: Record<string, unknown>[]; oneTimeKeyCounts?: Record<string, number>; unusedFallbackKeyTypes?: string[] },
  ): Promise<void> {
    const lists = new sdk.DeviceLists(
      ext.changed.map((u) => new sdk.UserId(u)),
      ext.left.map((u) => new sdk.UserId(u)),
    );
    const counts = new Map(Object.entries(data.oneTimeKeyCounts ?? {}));
    const fallback = data.unusedFallbackKeyTypes ? new Set(data.unusedFallbackKeyTypes) : undefined;
    await user.machine.receiveSyncChanges(JSON.stringify(data.toDevice), lists, counts, fallback);
    // What arrived is stored; requests that fail now are asked for again at the next pass (already logged).
    await this.flushOutgoing(user).catch(() => undefined);
  }

  /** Resolves when the next transaction arrives (the homeserver check: it may be delivering a backlog first). */
  nextTransaction(): Promise<void> {
    return new Promise((resolve) => this.transactionWaiters.add(resolve));
  }

  /** Test and homeserver-check hook: every to-device event delivered to a bridged device. */
  onToDevice(listener: (userId: string, deviceId: string, event: Record<string, unknown>) => void): () => void {
    this.toDeviceListeners.add(listener);
    return () => this.toDeviceListeners.delete(listener);
  }

  private async onRoomKeys(user: UserMachine, infos: sdk.RoomKeyInfo[]): Promise<void> {
    for (const info of infos) {
      const sessionId = info.sessionId;
      const waiters = this.keyWaiters.get(sessionId);
      if (waiters) for (const wake of waiters) wake();
      if (this.hygiene.deletePreviousOnNewSession) {
        const roomId = info.roomId.toString();
        const senderKey = info.senderKey.toBase64();
        // Outside the library's callback: its own transaction for the new key is still finishing.
        setImmediate(() => {
          this.opts.store
            .deleteInboundSessions(user.userId, (r, s, k) => r === roomId && k === senderKey && s !== sessionId)
            .then((n) => n && log.debug("crypto deleted superseded room keys", { user: user.userId, count: n }))
            .catch((err) => log.warn("crypto key hygiene failed", { user: user.userId, error: (err as Error).message }));
        });
      }
    }
  }

  /** Tells the manager a room's membership or encryption settings changed (keys go to new members, old ones rotate out). */
  roomChanged(roomId: string): void {
    this.rooms.delete(roomId);
  }

  private async roomInfo(roomId: string, asUser: string): Promise<RoomInfo> {
    const cached = this.rooms.get(roomId);
    if (cached) return cached;
    const as = { userId: asUser };
    const members = await this.client.request<{ chunk: { state_key: string; content: { membership?: string } }[] }>("GET", `v3/rooms/${encodeURIComponent(roomId)}/members`, as);
    // Invited users get the key too, as clients do while history is visible to them.
    const ids = members.chunk.filter((m) => m.content.membership === "join" || m.content.membership === "invite").map((m) => m.state_key);
    let settings: RoomInfo["settings"] = {};
    try {
      const state = await this.client.request<{ rotation_period_ms?: number; rotation_period_msgs?: number }>(
        "GET",
        `v3/rooms/${encodeURIComponent(roomId)}/state/m.room.encryption/`,
        as,
      );
      settings = { rotationPeriodMs: state.rotation_period_ms, rotationPeriodMsgs: state.rotation_period_msgs };
    } catch (err) {
      if (!(err instanceof MatrixRequestError && err.status === 404)) throw err;
    }
    const info = { members: ids, settings };
    this.rooms.set(roomId, info);
    return info;
  }

  /**
   * Encrypts one event as `senderUserId` (a ghost or the bot): shares the room key with every
   * device of the room's members first (claiming Olm sessions as needed). Returns the content of
   * the m.room.encrypted event to send as that user.
   */
  async encrypt(roomId: string, senderUserId: string, eventType: string, content: Record<string, unknown>): Promise<Record<string, unknown>> {
    const user = await this.machineFor(senderUserId);
    return this.perUser.run(senderUserId, async () => {
      const info = await this.roomInfo(roomId, senderUserId);
      const users = info.members.map((m) => new sdk.UserId(m));
      const room = new sdk.RoomId(roomId);
      await user.machine.updateTrackedUsers(users.map((u) => u.clone()));
      await this.flushOutgoing(user);
      const claim = await user.machine.getMissingSessions(users.map((u) => u.clone()));
      if (claim) await this.send(user, claim);
      const settings = new sdk.EncryptionSettings();
      if (info.settings.rotationPeriodMs) settings.rotationPeriod = BigInt(info.settings.rotationPeriodMs) * 1000n;
      if (info.settings.rotationPeriodMsgs) settings.rotationPeriodMessages = BigInt(info.settings.rotationPeriodMsgs);
      for (const request of await user.machine.shareRoomKey(room, users, settings)) await this.send(user, request);
      return JSON.parse(await user.machine.encryptRoomEvent(new sdk.RoomId(roomId), eventType, JSON.stringify(content))) as Record<string, unknown>;
    });
  }

  /**
   * Decrypts an m.room.encrypted event with the machine of `receiverUserId` (a bridged user in the
   * room). A key that has not arrived yet is waited for, up to `waitMs` (default roomKeyWaitMs).
   */
  async decrypt(roomId: string, event: Record<string, unknown>, receiverUserId: string, waitMs?: number): Promise<DecryptedEvent> {
    const user = await this.machineFor(receiverUserId);
    const sessionId = String((event.content as { session_id?: string } | undefined)?.session_id ?? "");
    const attempt = async (): Promise<DecryptedEvent> => {
      const result = await user.machine.decryptRoomEvent(JSON.stringify(event), new sdk.RoomId(roomId), new sdk.DecryptionSettings(sdk.TrustRequirement.Untrusted));
      const clear = JSON.parse(result.event) as { type: string; content: Record<string, unknown> };
      return { type: clear.type, content: clear.content, senderCurve25519Key: result.senderCurve25519Key };
    };
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof sdk.MegolmDecryptionError) || err.code !== sdk.DecryptionErrorCode.MissingRoomKey) throw this.failure(err);
    }
    const wait = waitMs ?? this.opts.roomKeyWaitMs ?? 10_000;
    const waiting = this.waitForRoomKey(sessionId, wait);
    // The key may be in a to-device message the homeserver never pushed (Synapse's catch-up
    // transactions after the bridge was down carry no to-device messages): read the device's inbox.
    const catchUp = setTimeout(
      () => {
        this.catchUpToDevice(user).catch((err: Error) => log.warn("crypto to-device catch-up failed", { user: user.userId, error: err.message }));
      },
      Math.min(2_000, wait / 2),
    );
    const arrived = await waiting;
    clearTimeout(catchUp);
    try {
      return await attempt();
    } catch (err) {
      throw this.failure(err, arrived ? undefined : "the room key did not arrive");
    }
  }

  /**
   * Reads the to-device messages the homeserver holds for the user's device (`/sync` as that
   * device, MSC3202 masquerading, nothing but to-device asked for) and feeds them to its machine,
   * then acknowledges them (a second `/sync` from the returned token, which lets the homeserver
   * delete them). Messages already pushed in a transaction are fed again: the machine ignores
   * what it already has (an Olm message it cannot decrypt twice, a room key it holds).
   */
  catchUpToDevice(user: UserMachine): Promise<void> {
    const running = this.catchUps.get(user.userId);
    if (running) return running;
    const filter = JSON.stringify({ presence: { types: [] }, account_data: { types: [] }, room: { rooms: [] } });
    const sync = (since?: string) =>
      this.client.request<{ next_batch: string; to_device?: { events?: Record<string, unknown>[] } }>(
        "GET",
        `v3/sync?timeout=0&filter=${encodeURIComponent(filter)}${since ? `&since=${encodeURIComponent(since)}` : ""}`,
        { userId: user.userId, deviceId: user.deviceId },
      );
    const feed = async (got: { to_device?: { events?: Record<string, unknown>[] } }): Promise<number> => {
      const events = (got.to_device?.events ?? []).map((e) => ({ ...e, to_user_id: user.userId, to_device_id: user.deviceId }));
      if (events.length) await this.perUser.run(user.userId, () => this.feed(user, { changed: [], left: [], devices: new Map() }, { toDevice: events }));
      return events.length;
    };
    const run = (async () => {
      const got = await sync(this.catchUpTokens.get(user.userId));
      const count = await feed(got);
      // From the returned token: the homeserver deletes what was read; what came since is fed too.
      const acked = await sync(got.next_batch);
      const more = await feed(acked);
      this.catchUpTokens.set(user.userId, acked.next_batch);
      log.info("crypto to-device catch-up", { user: user.userId, count: count + more });
    })().finally(() => this.catchUps.delete(user.userId));
    this.catchUps.set(user.userId, run);
    return run;
  }

  private failure(err: unknown, note?: string): DecryptionFailure {
    if (err instanceof sdk.MegolmDecryptionError) return new DecryptionFailure(sdk.DecryptionErrorCode[err.code] ?? String(err.code), note ?? err.description);
    return new DecryptionFailure("UnableToDecrypt", note ?? (err as Error).message);
  }

  private waitForRoomKey(sessionId: string, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      let set = this.keyWaiters.get(sessionId);
      if (!set) this.keyWaiters.set(sessionId, (set = new Set()));
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        set!.delete(wake);
        if (!set!.size) this.keyWaiters.delete(sessionId);
        resolve(ok);
      };
      const wake = (): void => done(true);
      const timer = setTimeout(() => done(false), ms);
      set.add(wake);
    });
  }

  /** The bridged user's own device, as its machine sees it (cross-signing check). */
  async ownDeviceIsCrossSigned(userId: string): Promise<boolean> {
    const user = await this.machineFor(userId);
    await user.machine.updateTrackedUsers([new sdk.UserId(userId)]);
    await this.flushOutgoing(user);
    const device = await user.machine.getDevice(new sdk.UserId(userId), new sdk.DeviceId(user.deviceId));
    return !!device?.isCrossSignedByOwner();
  }

  /** Drops a room's keys for a bridged user (the portal closed): outbound session, and inbound keys if configured. */
  async forgetRoom(roomId: string, userId: string): Promise<void> {
    this.rooms.delete(roomId);
    const user = await this.machineFor(userId);
    await this.perUser.run(userId, async () => {
      await user.machine.invalidateGroupSession(new sdk.RoomId(roomId));
      if (this.hygiene.deleteOnForgetRoom) await this.opts.store.deleteInboundSessions(userId, (r) => r === roomId);
    });
  }

  /** Deletes the user's crypto state here and its device on the homeserver (`forget`). */
  async forgetUser(userId: string): Promise<void> {
    const pending = this.machines.get(userId);
    this.machines.delete(userId);
    await this.perUser.run(userId, async () => {
      const deviceId = this.opts.store.deviceOf(userId);
      if (pending) (await pending.catch(() => undefined))?.machine.close();
      if (deviceId) {
        try {
          await this.client.request("DELETE", `v3/devices/${encodeURIComponent(deviceId)}`, { userId }, {});
        } catch (err) {
          if (!(err instanceof MatrixRequestError && err.status === 404)) throw err;
        }
      }
      await this.opts.store.forget(userId);
    });
    log.info("crypto state forgotten", { user: userId });
  }

  /** Closes every machine (the store stays open: its owner closes it). */
  async close(): Promise<void> {
    for (const pending of this.machines.values()) {
      const user = await pending.catch(() => undefined);
      if (!user) continue;
      await user.outgoing;
      user.machine.close();
    }
    this.machines.clear();
  }
}
