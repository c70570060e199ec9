import { AppServiceRegistration, Bridge, Request, WeakEvent } from "matrix-appservice-bridge";
import { UserControls } from "../bridge/controls";
import { FAILURES } from "../bridge/failure";
import { BridgeCore } from "../bridge/core";
import { MatrixEvent } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { DecryptionFailure, EncryptionManager } from "../crypto/encryption-manager";
import { readReceiptsOf, typingUsersOf } from "../convert/ephemeral";
import { getLogger } from "../logging";
import { BridgeStore } from "../store";
import { BotCommands } from "./bot";
import { CatchUp, type RawEvent } from "./catch-up";
import { DurableAppService } from "./durable-appservice";
import type { HomeserverRequestCounter } from "./homeserver-requests";
import { AppserviceMatrixPort, withClearRelation } from "./matrix-side";
import { ProvisioningApi } from "./provisioning";
import { RoomEncryption } from "./room-encryption";

const log = getLogger("appservice");

/** Synapse sends at most 100 events of at most 64 KiB and 100 ephemeral events a transaction. */
const TRANSACTION_BODY_LIMIT = 16 * 1024 * 1024;
/** How long ids of handled events are kept to refuse a homeserver's late repeat. */
const JOURNAL_KEEP_MS = 7 * 24 * 3600_000;
/** How long finished Matrix sends are remembered (the homeserver's own transaction memory is shorter). */
const SENDS_KEEP_MS = 24 * 3600_000;
const TIMED_EVENT_TYPES: ReadonlySet<string> = new Set([
  "m.room.message",
  "m.room.member",
  "m.sticker",
  "m.reaction",
  "m.room.redaction",
  "m.room.encrypted",
  "m.room.name",
  "m.room.topic",
  "m.room.avatar",
]);

/** What a user sends in a portal that encryption.require refuses in an unencrypted room. */
const REFUSED_UNENCRYPTED: ReadonlySet<string> = new Set(["m.room.message", "m.sticker", "m.reaction", "m.room.redaction"]);

/** An ephemeral event as the homeserver pushes it to appservices (with its room). */
interface EphemeralEvent {
  type: string;
  room_id?: string;
  content: Record<string, unknown>;
}

/**
 * The appservice: receives the homeserver's transactions, routes each event to the core or the
 * bot, and owns the intents (through AppserviceMatrixPort) the core acts with.
 */
export class MatrixAppservice {
  readonly bridge: Bridge;
  readonly port: AppserviceMatrixPort;
  private readonly appservice: DurableAppService;
  private readonly catchUp: CatchUp;
  private pruneTimer?: NodeJS.Timeout;
  private core?: BridgeCore;
  private bot?: BotCommands;
  /** The provisioning API, once registered (the lead of the bridge's HTTP routes). */
  provisioning?: ProvisioningApi;
  /** End-to-bridge encryption, when encryption.allow is on (useEncryption). */
  encryption?: RoomEncryption;
  /** Per room, the last event being decrypted: the events behind it wait, so a room's events keep their order. */
  private readonly roomTails = new Map<string, Promise<void>>();

  constructor(
    private readonly config: BridgeConfig,
    private readonly registration: AppServiceRegistration,
    private readonly store: BridgeStore,
    /** Where every request to the homeserver is counted (the bridge's metrics). */
    counter?: HomeserverRequestCounter,
  ) {
    this.bridge = new Bridge({
      homeserverUrl: config.homeserver.url,
      domain: config.homeserver.domain,
      registration,
      disableStores: true,
      disableContext: true,
      suppressEcho: true,
      // The library would drop edits of someone else's message without a word (and fetch the
      // original for every edit); the core refuses those itself and tells the user why.
      eventValidation: {},
      controller: {
        onEvent: (request: Request<WeakEvent>) => this.route(request),
        // Typing and receipts (the registration sets push_ephemeral).
        onEphemeralEvent: (request) => this.routeEphemeral(request.getData() as unknown as EphemeralEvent),
      },
    });
    const asToken = registration.getAppServiceToken();
    if (!asToken) throw new Error("the registration has no as_token");
    this.port = new AppserviceMatrixPort(this.bridge, config, store, asToken, counter);
    this.port.homeserver.install();
    this.appservice = new DurableAppService({
      homeserverToken: registration.getHomeserverToken()!,
      journal: store.journal,
      maxBodyBytes: TRANSACTION_BODY_LIMIT,
      // Every message a ghost sends comes back in a transaction; the core would only ignore it.
      isOwnUser: (mxid) => this.isOwnUser(mxid),
      // Its sender learns that it may not have been bridged, as for any other failure.
      onGaveUp: (event) => {
        void this.core?.onMatrixEventFailed(event as unknown as MatrixEvent).catch((err: Error) => log.warn("could not report a given-up event", { error: err.message }));
      },
      missedBefore: (txnId, events) => this.catchUp.missedBefore(txnId, events),
      // To-device messages (room keys), device lists and key counts: fed to the crypto machines before the 200.
      beforeJournal: async (body) => {
        if (this.encryption) await this.encryption.manager.handleTransaction(body, (mxid) => this.isOwnUser(mxid));
      },
    });
    this.catchUp = new CatchUp({
      journal: store.journal,
      activeRooms: (since) => store.portals.roomsActiveSince(since),
      recentEvents: async (roomId, limit) => {
        const reader = this.memberOf(roomId);
        return reader ? ((await this.port.recentEvents(reader, roomId, limit)) as unknown as RawEvent[]) : null;
      },
      isOwnUser: (mxid) => this.isOwnUser(mxid),
      journalMissed: (events) => this.appservice.journalMissed(events),
    });
    // Routes added with addAppServicePath (ping, provisioning) check the token through this, in constant time.
    this.bridge.requestCheckToken = (req) => this.appservice.hasHomeserverToken(req);
  }

  /** Turns end-to-bridge encryption on (before start: the transactions feed it from the first). */
  useEncryption(manager: EncryptionManager): void {
    this.encryption = new RoomEncryption(manager, {
      byDefault: this.config.encryption.default,
      require: this.config.encryption.require,
      readEncryptionState: (roomId, asMxid) => this.port.encryptionState(asMxid, roomId),
    });
    this.port.encryption = this.encryption;
  }

  async start(core: BridgeCore): Promise<void> {
    this.core = core;
    const controls = new UserControls(core, this.port);
    this.bot = new BotCommands(controls, this.port, core.metrics);
    await this.bridge.initialise();
    await this.bridge.listen(this.config.appservice.port, this.config.appservice.hostname, 511, this.appservice);
    // (Added after listen: the library refuses paths before.) matrix-appservice-bridge does not answer the spec's ping (homeservers use it to check the link).
    this.bridge.addAppServicePath({
      method: "POST",
      path: "/_matrix/app/v1/ping",
      authenticate: true,
      handler: (_req, res) => {
        res.status(200).json({});
      },
    });
    if (this.config.provisioning.enabled) {
      this.provisioning = new ProvisioningApi(controls, this.config, core.metrics);
      this.provisioning.register(this.bridge, this.appservice);
    }
    const botIntent = this.bridge.getIntent(this.port.botMxid);
    await botIntent.ensureRegistered();
    await this.ensureBotProfile(botIntent);
    // Transactions held while the bridge was down (the encryption check's probe waits behind them) come now; they are journaled, dispatched later.
    this.nudgeHomeserver();
    log.info("appservice listening", { hostname: this.config.appservice.hostname, port: this.config.appservice.port, bot: this.port.botMxid });
  }

  /**
   * Hands Matrix events to the core, first those journaled before a restart, and asks the
   * homeserver to resend at once what it holds for us instead of waiting out its backoff.
   */
  startDispatching(): void {
    this.prune();
    this.pruneTimer = setInterval(() => this.prune(), 3600_000);
    this.pruneTimer.unref();
    this.appservice.startDispatching();
    this.nudgeHomeserver();
  }

  /** Asks the homeserver to send what it holds for us now rather than after its backoff (the appservice ping). */
  private nudgeHomeserver(): void {
    const id = encodeURIComponent(this.registration.getId() ?? "");
    // Not awaited: a nudge, and while the homeserver is away requests to it wait for it.
    void this.bridge
      .getIntent(this.port.botMxid)
      .matrixClient.doRequest("POST", `/_matrix/client/v1/appservice/${id}/ping`, null, { transaction_id: `start.${Date.now()}` })
      .catch((err: Error) => log.debug("the homeserver did not answer the appservice ping", { error: err.message }));
  }

  /** Forgets ids kept only to refuse late repeats: handled events after a week, finished sends after a day. */
  private prune(): void {
    const events = this.appservice.prune(JOURNAL_KEEP_MS);
    const sends = this.store.matrixSends.prune(Date.now() - SENDS_KEEP_MS);
    if (events || sends) log.debug("pruned old records", { events, sends });
  }

  /** The bot and the ghosts. */
  private isOwnUser(mxid: string): boolean {
    return mxid === this.port.botMxid || this.port.remoteIdOfGhost(mxid) !== null;
  }

  /** One of the bridge's users who is in the room: a DM's ghost, the bot in a group's room, or the bot in a management room. */
  private memberOf(roomId: string): string | null {
    const portal = this.store.portals.byRoom(roomId);
    // The bot created every group's room and stays in it.
    if (portal?.kind === "group") return this.port.botMxid;
    // The bot reads only the management rooms of users the bridge still knows: after `forget` (or
    // in a room it never bridged) there is nothing to catch up, and reading would journal again the
    // events `forget` removed.
    if (!portal) return this.store.users.byManagementRoom(roomId) ? this.port.botMxid : null;
    const participant = this.store.portals.participants(portal.id)[0];
    return participant ? this.port.ghostMxid(participant) : null;
  }

  async stop(): Promise<void> {
    clearInterval(this.pruneTimer);
    this.catchUp.stop();
    this.appservice.stopDispatching();
    await this.bridge.close();
  }

  /**
   * Sets the bot's name and avatar only when they differ: every change is a membership event in
   * each of its rooms. The bot is an ordinary user of the namespace (registered above), not the
   * registration's sender, so the homeserver keeps a profile for it.
   */
  private async ensureBotProfile(botIntent: ReturnType<Bridge["getIntent"]>): Promise<void> {
    const { displayname, avatar } = this.config.appservice.bot;
    const current = await botIntent.getProfileInfo(this.port.botMxid, undefined, false).catch(() => ({}) as { displayname?: string; avatar_url?: string });
    try {
      if (current.displayname !== displayname) await botIntent.setDisplayName(displayname);
    } catch (err) {
      log.warn("could not set the bot's display name", { error: (err as Error).message });
    }
    try {
      if (avatar && current.avatar_url !== avatar) await botIntent.setAvatarUrl(avatar);
    } catch (err) {
      log.warn("could not set the bot's avatar", { avatar, error: (err as Error).message });
    }
  }

  private route(request: Request<WeakEvent>): void {
    const event = request.getData() as unknown as MatrixEvent;
    log.debug("matrix event", { type: event.type, room: event.room_id, eventId: event.event_id });
    // Event types are chosen by senders: only well-known ones become label values.
    const timer = this.core!.metrics.matrixEventSeconds.startTimer({ type: TIMED_EVENT_TYPES.has(event.type) ? event.type : "other" });
    this.inRoomOrder(event)
      .finally(() => timer())
      .then(() => request.resolve(undefined))
      .catch((err: Error) => {
        log.error("failed to handle a Matrix event", { type: event.type, room: event.room_id, eventId: event.event_id, error: err.message });
        request.reject(err);
      });
  }

  /**
   * Handles the event once the room's earlier events are on their way: an encrypted event is
   * decrypted first (as the portal's ghost, or the bot), and the events behind it wait for that.
   * Until the handler finishes, the journal keeps the event (ciphertext), so a crash replays it.
   */
  private inRoomOrder(event: MatrixEvent): Promise<void> {
    const room = event.room_id;
    const before = this.roomTails.get(room);
    if (!before && event.type !== "m.room.encrypted") return this.handle(event);
    let handled: Promise<void> = Promise.resolve();
    const step = (before ?? Promise.resolve())
      .then(() => this.readable(event))
      .then((clear) => {
        if (clear) handled = this.handle(clear);
      });
    const tail = step.catch(() => undefined);
    this.roomTails.set(room, tail);
    void tail.then(() => {
      if (this.roomTails.get(room) === tail) this.roomTails.delete(room);
    });
    return step.then(() => handled);
  }

  /** The event as the bridge handles it: decrypted when it is encrypted; null when it cannot be (the sender is told). */
  private async readable(event: MatrixEvent): Promise<MatrixEvent | null> {
    if (event.type !== "m.room.encrypted" || !this.encryption) return event;
    if (!this.encryption.enabled) {
      // Encryption was turned off at start (the homeserver check failed): never drop the event silently.
      log.warn("could not decrypt a Matrix event", { room: event.room_id, eventId: event.event_id, sender: event.sender, code: "EncryptionOff" });
      this.core!.metrics.dropped("to_network", "undecryptable");
      await this.core!.onMatrixEventRefused(event, FAILURES.undecryptable("EncryptionOff"));
      return null;
    }
    const reader = this.memberOf(event.room_id);
    if (!reader) return event;
    try {
      const clear = await this.encryption.decrypt(event as unknown as Record<string, unknown> & { room_id: string }, reader);
      return { ...event, type: clear.type, content: withClearRelation(clear.content, event.content) };
    } catch (err) {
      if (!(err instanceof DecryptionFailure)) throw err;
      log.warn("could not decrypt a Matrix event", { room: event.room_id, eventId: event.event_id, sender: event.sender, code: err.code, error: err.message });
      this.core!.metrics.dropped("to_network", "undecryptable");
      await this.core!.onMatrixEventRefused(event, FAILURES.undecryptable(err.code));
      return null;
    }
  }

  private routeEphemeral(event: EphemeralEvent): void {
    const core = this.core;
    if (!core || typeof event.room_id !== "string" || typeof event.content !== "object" || event.content === null) return;
    if (event.type === "m.typing") {
      try {
        core.onMatrixTyping(event.room_id, typingUsersOf(event.content));
      } catch (err) {
        // The library awaits this handler without a catch: a throw here would be an unhandled rejection.
        log.warn("failed to handle typing", { room: event.room_id, error: (err as Error).message });
      }
    } else if (event.type === "m.receipt") {
      for (const receipt of readReceiptsOf(event.content)) {
        // Receipts of the bridge's own users (ghosts) are what it sent itself.
        if (this.port.remoteIdOfGhost(receipt.userId) || receipt.userId === this.port.botMxid) continue;
        void core
          .onMatrixReadReceipt(event.room_id, receipt.userId, receipt.eventId, receipt.ts)
          .catch((err: Error) => log.warn("failed to handle a read receipt", { room: event.room_id, error: err.message }));
      }
    }
  }

  private async handle(event: MatrixEvent): Promise<void> {
    const core = this.core!;
    const encryption = this.encryption?.enabled ? this.encryption : undefined;
    if (encryption && event.type === "m.room.encryption" && event.state_key === "") {
      // From now on the bridge's users encrypt here, and read what is encrypted: nothing to refuse.
      encryption.markEncrypted(event.room_id);
      log.info("encryption turned on in a room", { room: event.room_id });
      return;
    }
    if (event.type === "m.room.member") encryption?.membershipChanged(event.room_id);
    if (encryption?.require && REFUSED_UNENCRYPTED.has(event.type) && this.store.portals.byRoom(event.room_id)?.roomId) {
      const reader = this.memberOf(event.room_id);
      if (reader && !(await encryption.isEncrypted(event.room_id, reader))) {
        await core.onMatrixEventRefused(event, FAILURES.unencrypted_room());
        return;
      }
    }
    if (event.type === "m.room.member" && event.state_key) {
      const membership = event.content.membership;
      if (membership === "invite" && event.state_key === this.port.botMxid) {
        // A ghost bringing the bot into a room that became a group's portal: the core joined it already.
        if (this.isOwnUser(event.sender)) return;
        return this.onBotInvite(event);
      }
      if (membership === "invite" && this.port.remoteIdOfGhost(event.state_key)) {
        // The ghost's device exists before the user's client shares its room key (it shares with the devices it finds).
        if (encryption) await encryption.manager.machineFor(event.state_key);
        return core.onGhostInvited(event.room_id, event.sender, event.state_key, event.content.is_direct === true);
      }
      // A member inviting another Matrix user into a group's room adds them to the group.
      if (membership === "invite" && !this.isOwnUser(event.sender)) return void (await core.onMatrixInvite(event));
      if (membership === "leave" || membership === "ban") {
        const user = this.store.users.byManagementRoom(event.room_id);
        if (user?.mxid === event.state_key) this.store.users.setManagementRoom(user.mxid, null);
        const spaceOwner = this.store.users.bySpaceRoom(event.room_id);
        if (spaceOwner?.mxid === event.state_key) {
          if (await core.inbox.spaceLeft(spaceOwner.mxid, event.room_id)) {
            await core.tellUser(
              spaceOwner.mxid,
              "You left your Third-Party Chats space, so your chats are back among your other chats. Say `inbox dedicated` to get the space back.",
              `spaceleft.${event.event_id}`,
            );
          }
          return;
        }
        // A member removing a ghost from a group's room removes it from the group.
        if (event.sender !== event.state_key && !this.isOwnUser(event.sender) && (await core.onMatrixRemoval(event))) return;
        return core.onUserLeft(event.room_id, event.state_key);
      }
      return;
    }
    if (event.type === "m.reaction") {
      await core.onMatrixReaction(event);
      return;
    }
    if (event.type === "m.room.redaction") {
      await core.onMatrixRedaction(event);
      return;
    }
    if (event.type === "m.room.message") {
      if (await core.onMatrixMessage(event)) return;
      const user = this.store.users.byManagementRoom(event.room_id);
      if (user && user.mxid === event.sender && typeof event.content.body === "string") {
        const reply = await this.bot!.handle(event.sender, event.content.body);
        if (reply !== null) await this.replyAsBot(event.room_id, reply, event.event_id);
        // After `forget` the bridge keeps nothing about the user, this room included.
        if (!this.store.users.get(event.sender))
          await this.bridge
            .getIntent(this.port.botMxid)
            .leave(event.room_id)
            .catch(() => undefined);
      }
      return;
    }
    // Everything else a user does in a portal that the network cannot carry gets a notice.
    await core.onMatrixEvent(event);
  }

  private async onBotInvite(event: MatrixEvent): Promise<void> {
    const intent = this.bridge.getIntent(this.port.botMxid);
    await intent.join(event.room_id);
    if (!this.core!.permissions.mayUse(event.sender)) {
      // A polite refusal, and nothing is created for them: no user record, no network identity.
      log.info("refused a user who may not use the bridge", { user: event.sender });
      await this.replyAsBot(event.room_id, BotCommands.notPermittedText(), `refuse.${event.event_id}`);
      await intent.leave(event.room_id);
      return;
    }
    if (event.content.is_direct !== true) {
      await this.port.notice(
        this.port.botMxid,
        event.room_id,
        "I only work in a direct chat. Start a direct chat with me to manage your Third-Party Chats.",
        `notdm.${event.event_id}`,
      );
      await intent.leave(event.room_id);
      return;
    }
    const welcome = await this.core!.welcomeUser(event.sender);
    this.store.users.setManagementRoom(event.sender, event.room_id);
    log.info("management room set", { user: event.sender, room: event.room_id });
    await this.replyAsBot(event.room_id, this.bot!.welcomeText(welcome.firstContact, welcome.enabled), `welcome.${event.event_id}`);
  }

  private async replyAsBot(roomId: string, markdown: string, inReplyTo: string): Promise<void> {
    await this.port.botNotice(roomId, markdown, `bot.${inReplyTo}`);
  }
}
