import { AppServiceRegistration, Bridge, Request, WeakEvent } from "matrix-appservice-bridge";
import { BridgeCore } from "../bridge/core";
import { MatrixEvent } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { markdownToMatrix } from "../convert/formatting";
import { getLogger } from "../logging";
import { BridgeStore } from "../store";
import { BotCommands } from "./bot";
import { DurableAppService } from "./durable-appservice";
import { AppserviceMatrixPort } from "./matrix-side";

const log = getLogger("appservice");

/** Synapse sends at most 100 events of at most 64 KiB and 100 ephemeral events a transaction. */
const TRANSACTION_BODY_LIMIT = 16 * 1024 * 1024;
/** How long ids of handled events are kept to refuse a homeserver's late repeat. */
const JOURNAL_KEEP_MS = 7 * 24 * 3600_000;
/** How long finished Matrix sends are remembered (the homeserver's own transaction memory is shorter). */
const SENDS_KEEP_MS = 24 * 3600_000;

/**
 * The appservice: receives the homeserver's transactions, routes each event to the core or the
 * bot, and owns the intents (through AppserviceMatrixPort) the core acts with.
 */
export class MatrixAppservice {
  readonly bridge: Bridge;
  readonly port: AppserviceMatrixPort;
  private readonly appservice: DurableAppService;
  private pruneTimer?: NodeJS.Timeout;
  private core?: BridgeCore;
  private bot?: BotCommands;

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
      controller: {
        onEvent: (request: Request<WeakEvent>) => this.route(request),
      },
    });
    this.port = new AppserviceMatrixPort(this.bridge, config, store);
    this.port.homeserver.install();
    this.appservice = new DurableAppService({ homeserverToken: registration.getHomeserverToken()!, journal: store.journal, maxBodyBytes: TRANSACTION_BODY_LIMIT });
    // Routes added with addAppServicePath (ping, later ones) check the token through this, in constant time.
    this.bridge.requestCheckToken = (req) => this.appservice.hasHomeserverToken(req);
  }

  async start(core: BridgeCore): Promise<void> {
    this.core = core;
    this.bot = new BotCommands(core, this.port);
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
    const botIntent = this.bridge.getIntent(this.port.botMxid);
    await botIntent.ensureRegistered();
    await botIntent.setDisplayName(this.config.appservice.bot.displayname).catch((err: Error) => log.warn("could not set the bot's display name", { error: err.message }));
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

  async stop(): Promise<void> {
    clearInterval(this.pruneTimer);
    this.appservice.stopDispatching();
    await this.bridge.close();
  }

  private route(request: Request<WeakEvent>): void {
    const event = request.getData() as unknown as MatrixEvent;
    this.handle(event)
      .then(() => request.resolve(undefined))
      .catch((err: Error) => {
        log.error("failed to handle a Matrix event", { type: event.type, room: event.room_id, eventId: event.event_id, error: err.message });
        request.reject(err);
      });
  }

  private async handle(event: MatrixEvent): Promise<void> {
    const core = this.core!;
    if (event.type === "m.room.member" && event.state_key) {
      const membership = event.content.membership;
      if (membership === "invite" && event.state_key === this.port.botMxid) return this.onBotInvite(event);
      if (membership === "invite" && this.port.remoteIdOfGhost(event.state_key)) {
        return core.onGhostInvited(event.room_id, event.sender, event.state_key, event.content.is_direct === true);
      }
      if (membership === "leave" || membership === "ban") {
        const user = this.store.users.byManagementRoom(event.room_id);
        if (user?.mxid === event.state_key) this.store.users.setManagementRoom(user.mxid, null);
        return core.onUserLeft(event.room_id, event.state_key);
      }
      return;
    }
    if (event.type === "m.room.message") {
      if (await core.onMatrixMessage(event)) return;
      const user = this.store.users.byManagementRoom(event.room_id);
      if (user && user.mxid === event.sender && typeof event.content.body === "string") {
        const reply = await this.bot!.handle(event.sender, event.content.body);
        await this.replyAsBot(event.room_id, reply, event.event_id);
      }
    }
  }

  private async onBotInvite(event: MatrixEvent): Promise<void> {
    const intent = this.bridge.getIntent(this.port.botMxid);
    await intent.join(event.room_id);
    if (event.content.is_direct !== true) {
      await intent.sendMessage(event.room_id, { msgtype: "m.notice", body: "I only work in a direct chat. Start a direct chat with me to manage your Third-Party Chats." });
      await intent.leave(event.room_id);
      return;
    }
    await this.core!.welcomeUser(event.sender);
    this.store.users.setManagementRoom(event.sender, event.room_id);
    log.info("management room set", { user: event.sender, room: event.room_id });
    await this.replyAsBot(event.room_id, this.bot!.helpText(), `welcome.${event.event_id}`);
  }

  private async replyAsBot(roomId: string, markdown: string, inReplyTo: string): Promise<void> {
    const content = { ...markdownToMatrix(markdown), msgtype: "m.notice" };
    await this.port.send(this.port.botMxid, roomId, content, { txnId: `bot.${inReplyTo}` });
  }
}
