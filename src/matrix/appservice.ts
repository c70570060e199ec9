import { AppServiceRegistration, Bridge, Request, WeakEvent } from "matrix-appservice-bridge";
import { BridgeCore } from "../bridge/core";
import { MatrixEvent } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { markdownToMatrix } from "../convert/formatting";
import { getLogger } from "../logging";
import { BridgeStore } from "../store";
import { BotCommands } from "./bot";
import { AppserviceMatrixPort } from "./matrix-side";

const log = getLogger("appservice");

/**
 * The appservice: receives the homeserver's transactions, routes each event to the core or the
 * bot, and owns the intents (through AppserviceMatrixPort) the core acts with.
 */
export class MatrixAppservice {
  readonly bridge: Bridge;
  readonly port: AppserviceMatrixPort;
  private core?: BridgeCore;
  private bot?: BotCommands;

  constructor(
    private readonly config: BridgeConfig,
    registration: AppServiceRegistration,
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
  }

  async start(core: BridgeCore): Promise<void> {
    this.core = core;
    this.bot = new BotCommands(core, this.port);
    await this.bridge.initialise();
    await this.bridge.listen(this.config.appservice.port, this.config.appservice.hostname);
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
    await this.ensureBotDisplayName(botIntent);
    log.info("appservice listening", { hostname: this.config.appservice.hostname, port: this.config.appservice.port, bot: this.port.botMxid });
  }

  async stop(): Promise<void> {
    await this.bridge.close();
  }

  /** Sets the bot's name only when it differs: every change is a membership event in each of its rooms. */
  private async ensureBotDisplayName(botIntent: ReturnType<Bridge["getIntent"]>): Promise<void> {
    const wanted = this.config.appservice.bot.displayname;
    try {
      const current = await botIntent.getProfileInfo(this.port.botMxid, "displayname", false).catch(() => undefined);
      if (current?.displayname !== wanted) await botIntent.setDisplayName(wanted);
    } catch (err) {
      log.warn("could not set the bot's display name", { error: (err as Error).message });
    }
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
