import { AppServiceRegistration, Bridge, Request, WeakEvent } from "matrix-appservice-bridge";
import { UserControls } from "../bridge/controls";
import { BridgeCore } from "../bridge/core";
import { MatrixEvent } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { readReceiptsOf, typingUsersOf } from "../convert/ephemeral";
import { getLogger } from "../logging";
import { BridgeStore } from "../store";
import { BotCommands } from "./bot";
import { CatchUp, type RawEvent } from "./catch-up";
import { DurableAppService } from "./durable-appservice";
import { AppserviceMatrixPort } from "./matrix-side";
import { ProvisioningApi } from "./provisioning";

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

  constructor(
    private readonly config: BridgeConfig,
    private readonly registration: AppServiceRegistration,
    private readonly store: BridgeStore,
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
    this.port = new AppserviceMatrixPort(this.bridge, config, store, asToken);
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

  /** One of the bridge's users who is in the room: a DM's ghost, else the bot. */
  private memberOf(roomId: string): string | null {
    const portal = this.store.portals.byRoom(roomId);
    // The bot created every group's room and stays in it.
    if (!portal || portal.kind === "group") return this.port.botMxid;
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
    this.handle(event)
      .finally(() => timer())
      .then(() => request.resolve(undefined))
      .catch((err: Error) => {
        log.error("failed to handle a Matrix event", { type: event.type, room: event.room_id, eventId: event.event_id, error: err.message });
        request.reject(err);
      });
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
    if (event.type === "m.room.member" && event.state_key) {
      const membership = event.content.membership;
      if (membership === "invite" && event.state_key === this.port.botMxid) {
        // A ghost bringing the bot into a room that became a group's portal: the core joined it already.
        if (this.isOwnUser(event.sender)) return;
        return this.onBotInvite(event);
      }
      if (membership === "invite" && this.port.remoteIdOfGhost(event.state_key)) {
        return core.onGhostInvited(event.room_id, event.sender, event.state_key, event.content.is_direct === true);
      }
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
      await intent.sendMessage(event.room_id, { msgtype: "m.notice", body: "I only work in a direct chat. Start a direct chat with me to manage your Third-Party Chats." });
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
