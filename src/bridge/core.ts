/**
 * The bridge core's façade: builds the parts (portals, the two direction pipelines, the status
 * reporter) over one store, MatrixPort and NetworkConnector, and offers the entry points the
 * Matrix side (src/matrix) and the connector (NetworkEventHandler) call. It holds no logic of
 * its own beyond wiring, start/stop and health.
 */
import { getLogger } from "../logging";
import { BridgeMetrics } from "../metrics/metrics";
import {
  ChatRef,
  ConnectionState,
  DeliveryReceipt,
  NetworkConnector,
  NetworkEventHandler,
  RemoteChange,
  RemoteGroupChange,
  RemoteMessage,
  RemoteProfile,
  RemoteReadReceipt,
  RemoteTyping,
} from "../network/connector";
import { BridgeStore, MatrixUserRow, PortalRow } from "../store";
import { Access } from "./access";
import { PipelineContext } from "./context";
import { BridgeFailure, FAILURES } from "./failure";
import { InboundPipeline } from "./inbound";
import { InboxManager } from "./inbox";
import { LinkHealth, LinkSnapshot } from "./link-health";
import { MatrixEvent, MatrixPort } from "./matrix-port";
import { OutboundPipeline } from "./outbound";
import { OutboundSender } from "./outbound-sender";
import { Permissions } from "./permissions";
import { GroupEdits } from "./group-edits";
import { ChatListing, OpenPortal, Portals } from "./portals";
import { StatusReporter } from "./status";

const log = getLogger("core");

export interface CoreOptions {
  /** Whether a new Matrix user starts with Third-Party Chats on. */
  thirdPartyDefault: boolean;
  /** Who may use the bridge (config bridge.permissions). */
  permissions: Permissions;
  metrics?: BridgeMetrics;
  /** Delay before retrying what either queue could not hand on (ms); grows (Backoff) up to maxRetryDelayMs. */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Whether com.beeper.message_send_status events are posted at all (config bridge.message_status_events; default false). */
  messageStatusEvents?: boolean;
  /** How long a "sent" status waits for the delivery receipt (config bridge.sent_status_delay_ms); 0: at once. */
  sentStatusDelayMs?: number;
  /** Downloads of a queued file the homeserver may fail before the file is given up (config bridge.media_download_attempts; default 10). */
  mediaDownloadAttempts?: number;
}

/**
 * The bridge core: portals, conversion and the durable queues. It talks to Matrix through
 * MatrixPort and to the network through NetworkConnector, and knows neither's wire format.
 */
export class BridgeCore implements NetworkEventHandler {
  private stopping = false;
  private connection: ConnectionState = { state: "connecting" };
  private readonly networkLink = new LinkHealth("network gateway", log, "messages for it wait in the outbound queue, the gateway keeps those for Matrix");
  readonly metrics: BridgeMetrics;
  readonly inbox: InboxManager;
  readonly permissions: Permissions;
  readonly access: Access;
  readonly portals: Portals;
  readonly status: StatusReporter;
  private readonly inbound: InboundPipeline;
  private readonly outbound: OutboundPipeline;
  private readonly sender: OutboundSender;
  private readonly groupEdits: GroupEdits;

  constructor(
    readonly store: BridgeStore,
    private readonly matrix: MatrixPort,
    readonly network: NetworkConnector,
    opts: CoreOptions,
  ) {
    this.metrics = opts.metrics ?? new BridgeMetrics();
    this.inbox = new InboxManager(store, matrix, network.networkName, (portal) => this.portals.ghostOf(portal));
    this.permissions = opts.permissions;
    this.access = new Access(store, opts.permissions, opts.thirdPartyDefault);
    this.status = new StatusReporter(matrix, store, opts);
    this.portals = new Portals(store, matrix, network, this.access, this.inbox, {
      acceptEarlyMessage: (portal, event) => this.outbound.acceptMessage(portal, event),
      drainInbound: (portalId) => this.inbound.drain(portalId),
    });
    const ctx: PipelineContext = {
      store,
      matrix,
      network,
      metrics: this.metrics,
      access: this.access,
      portals: this.portals,
      status: this.status,
      retry: { initialMs: opts.retryDelayMs ?? 1000, maxMs: Math.max(opts.retryDelayMs ?? 1000, opts.maxRetryDelayMs ?? 30_000), jitter: 0.2 },
      stopping: () => this.stopping,
    };
    this.inbound = new InboundPipeline(ctx);
    this.sender = new OutboundSender(ctx, {
      mediaDownloadAttempts: opts.mediaDownloadAttempts,
      networkDown: () => this.networkLink.isDown,
      onHeld: () => this.networkLink.noteHeld(),
    });
    this.outbound = new OutboundPipeline(ctx, this.sender);
    this.groupEdits = new GroupEdits(ctx);
  }

  /** Resumes every queue left non-empty by the previous run. */
  async start(): Promise<void> {
    // Users whose permission was withdrawn in the config become unreachable until they may use the bridge again.
    for (const user of this.store.users.all()) {
      if (this.permissions.mayUse(user.mxid) || !user.thirdPartyEnabled) continue;
      this.store.users.setThirdPartyEnabled(user.mxid, false);
      void this.network
        .setThirdPartyChats(user.mxid, false)
        .catch((err: Error) => log.warn("could not turn a withdrawn user off on the network", { user: user.mxid, error: err.message }));
      log.info("user no longer permitted: Third-Party Chats turned off", { user: user.mxid });
    }
    this.sender.resume();
    // Network events acknowledged before a stop or crash and not yet on Matrix.
    this.inbound.resume();
  }

  stop(): void {
    this.stopping = true;
    this.status.flush();
    this.outbound.stop();
    void this.sender.stop();
  }

  /** Chats with network → Matrix work in progress (for metrics). */
  inboundChatsBusy(): number {
    return this.inbound.busy;
  }

  /** Creates the user's row on first contact; refuses users the config does not permit (nothing is created for them). */
  admitUser(mxid: string): MatrixUserRow {
    return this.access.admitUser(mxid);
  }

  connectionState(): ConnectionState {
    return this.connection;
  }

  onConnectionState(state: ConnectionState): void {
    this.connection = state;
    if (this.stopping) return;
    // Reconnect attempts flip between connecting and disconnected: one outage, logged once by the link.
    if (state.state === "connected") this.networkLink.up();
    else if (state.state === "disconnected") {
      this.networkLink.down(state.reason);
      this.sender.networkWentDown();
    }
  }

  /** The links the bridge depends on and its queues, for /health and the metrics. */
  health(): { homeserver?: LinkSnapshot; network: LinkSnapshot; outboundQueue: number; inboundQueue: number } {
    const homeserver = this.matrix.health?.();
    return { ...(homeserver ? { homeserver } : {}), network: this.networkLink.snapshot(), outboundQueue: this.store.outbound.depth(), inboundQueue: this.store.inbound.depth() };
  }

  // ---- network → Matrix (inbound.ts) -------------------------------------------------------

  onMessage(receiver: string, message: RemoteMessage): Promise<void> {
    return this.inbound.onMessage(receiver, message);
  }
  onProfile(profile: RemoteProfile): Promise<void> {
    return this.inbound.onProfile(profile);
  }
  onRefused(receiver: string, remoteUserId: string, timestamp: number): Promise<void> {
    return this.inbound.onRefused(receiver, remoteUserId, timestamp);
  }
  onDropped(receiver: string, what: string): void {
    this.inbound.onDropped(receiver, what);
  }
  onIdentityChange(receiver: string, remoteUserId: string): Promise<void> {
    return this.inbound.onIdentityChange(receiver, remoteUserId);
  }
  onChange(receiver: string, event: RemoteChange): Promise<void> {
    return this.inbound.onChange(receiver, event);
  }
  onReadReceipt(receiver: string, receipt: RemoteReadReceipt): Promise<void> {
    return this.inbound.onReadReceipt(receiver, receipt);
  }
  onTyping(receiver: string, typing: RemoteTyping): void {
    this.inbound.onTyping(receiver, typing);
  }
  onDelivered(receiver: string, receipt: DeliveryReceipt): Promise<void> {
    return this.inbound.onDelivered(receiver, receipt);
  }
  onGroupChange(receiver: string, change: RemoteGroupChange): Promise<void> {
    return this.inbound.onGroupChange(receiver, change);
  }

  // ---- Matrix → network (outbound.ts, outbound-sender.ts) ------------------------------------

  onMatrixMessage(event: MatrixEvent): Promise<boolean> {
    return this.outbound.onMatrixMessage(event);
  }
  async onMatrixEvent(event: MatrixEvent): Promise<boolean> {
    // A group's name and topic go to the network; other rooms' (and other events) get the notice.
    return (await this.groupEdits.onMetadata(event)) || this.outbound.onMatrixEvent(event);
  }
  /** A Matrix member invited a Matrix user into a group's room (group-edits.ts); false when it is not that. */
  onMatrixInvite(event: MatrixEvent): Promise<boolean> {
    return this.groupEdits.onInvite(event);
  }
  /** A Matrix member removed a ghost from a group's room (group-edits.ts); false when it is not that. */
  onMatrixRemoval(event: MatrixEvent): Promise<boolean> {
    return this.groupEdits.onGhostRemoved(event);
  }
  onMatrixReaction(event: MatrixEvent): Promise<boolean> {
    return this.outbound.onMatrixReaction(event);
  }
  onMatrixRedaction(event: MatrixEvent): Promise<boolean> {
    return this.outbound.onMatrixRedaction(event);
  }
  onMatrixReadReceipt(roomId: string, userId: string, eventId: string, ts: number | null): Promise<void> {
    return this.outbound.onMatrixReadReceipt(roomId, userId, eventId, ts);
  }
  onMatrixTyping(roomId: string, userIds: string[]): void {
    this.outbound.onMatrixTyping(roomId, userIds);
  }

  /**
   * The Matrix side gave up on an event after its tries (durable-appservice.ts): if it was the
   * portal user's, they are told it may not have been bridged, like any other failure.
   */
  async onMatrixEventFailed(event: MatrixEvent): Promise<void> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (!portal?.roomId || !this.portals.isMember(portal, event.sender)) return;
    await this.status.report({ roomId: portal.roomId, eventId: event.event_id, asMxid: this.portals.ghostOf(portal) }, FAILURES.not_handled());
  }

  /**
   * A Matrix event the bridge could not read (encryption: it did not decrypt, or the bridge
   * requires encryption and the portal has none): its sender, if it is the portal's user or the
   * user of the bot room, is told through the failure path.
   */
  async onMatrixEventRefused(event: MatrixEvent, failure: BridgeFailure): Promise<void> {
    const portal = this.store.portals.byRoom(event.room_id);
    if (portal?.roomId) {
      if (!this.portals.isMember(portal, event.sender)) return;
      await this.status.report({ roomId: portal.roomId, eventId: event.event_id, asMxid: this.portals.ghostOf(portal) }, failure);
      return;
    }
    if (this.store.users.byManagementRoom(event.room_id)?.mxid === event.sender) {
      await this.status.report({ roomId: event.room_id, eventId: event.event_id, asMxid: this.matrix.botMxid }, failure);
    }
  }

  // ---- portals and users (portals.ts, status.ts) ---------------------------------------------

  ensurePortal(receiver: string, chat: ChatRef): Promise<OpenPortal> {
    return this.portals.ensurePortal(receiver, chat);
  }
  portalGhost(portal: PortalRow): string {
    return this.portals.ghostOf(portal);
  }
  onGhostInvited(roomId: string, inviter: string, ghostMxid: string, isDirect: boolean): Promise<void> {
    return this.portals.onGhostInvited(roomId, inviter, ghostMxid, isDirect);
  }
  onUserLeft(roomId: string, userId: string): Promise<void> {
    return this.portals.onUserLeft(roomId, userId);
  }
  startChat(userId: string, identifier: string): Promise<{ roomId: string; name: string; created: boolean }> {
    return this.portals.startChat(userId, identifier);
  }
  startGroup(userId: string, name: string, members: string[]): Promise<{ roomId: string; refused: { id: string; reason: string }[] }> {
    return this.portals.startGroup(userId, name, members);
  }
  listChats(userId: string): ChatListing[] {
    return this.portals.listChats(userId);
  }
  tellUser(mxid: string, markdown: string, txnId: string): Promise<void> {
    return this.status.tellUser(mxid, markdown, txnId);
  }

  /**
   * A Matrix user talked to the bridge: remember them and make them known on the network (with
   * their setting: while off, remote users are refused with a reason). Returns whether this
   * is the user's first contact (they get the one-time explanation).
   */
  async welcomeUser(userId: string): Promise<{ firstContact: boolean; enabled: boolean }> {
    const user = this.admitUser(userId);
    await this.network.ensureUser(userId, null);
    return { firstContact: this.store.users.markExplained(userId), enabled: user.thirdPartyEnabled };
  }
}
