import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { LinkSnapshot } from "../bridge/link-health";

/** Which way a message was going. */
export type Direction = "to_matrix" | "to_network";

/** What the metrics read from the running bridge when Prometheus scrapes. */
export interface MetricSources {
  /** Matrix messages accepted for the network and not yet taken by it (durable queue). */
  outboundQueueDepth(): number;
  /** Chats with network → Matrix work queued or running. */
  inboundChatsBusy(): number;
  inboundQueueDepth(): number;
  /** Portals that have a room. */
  portals(): number;
  users(): { on: number; off: number };
  connection(): "connecting" | "connected" | "disconnected";
  /** The homeserver and network links (BridgeCore.health()). */
  links?(): Record<string, LinkSnapshot>;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** The bridge's own share of a message is a few milliseconds when all is well; an outage holds messages for minutes. */
const PASSAGE_BUCKETS = [0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300];

/**
 * The bridge's Prometheus metrics, in a registry of their own (so tests can run several
 * bridges in one process). Counting is cheap and synchronous; gauges are read on scrape.
 */
export class BridgeMetrics {
  readonly registry = new Registry();
  private readonly bridgedTotal: Counter<"direction" | "type">;
  private readonly groupBridgedTotal: Counter<"direction" | "type">;
  private readonly droppedTotal: Counter<"direction" | "reason">;
  private readonly failedTotal: Counter<"direction" | "reason">;
  readonly matrixEventSeconds: Histogram<"type">;
  readonly networkSendSeconds: Histogram<"outcome">;
  readonly matrixToNetworkSeconds: Histogram;
  readonly provisioningSeconds: Histogram<"route" | "method" | "status">;
  readonly botCommandsTotal: Counter<"command" | "outcome">;
  private readonly homeserverRequestsTotal: Counter<"kind">;
  private readonly homeserverEventsTotal: Counter<"type">;

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.bridgedTotal = new Counter({
      name: "bridge_messages_bridged_total",
      help: "Messages bridged, by direction and content type",
      labelNames: ["direction", "type"],
      registers,
    });
    this.groupBridgedTotal = new Counter({
      name: "bridge_group_messages_bridged_total",
      help: "Messages bridged in group chats (also counted in bridge_messages_bridged_total), by direction and content type",
      labelNames: ["direction", "type"],
      registers,
    });
    this.droppedTotal = new Counter({
      name: "bridge_messages_dropped_total",
      help: "Messages and events not bridged on purpose (the network cannot carry them, the user has Third-Party Chats off, ...), by reason",
      labelNames: ["direction", "reason"],
      registers,
    });
    this.failedTotal = new Counter({
      name: "bridge_message_failures_total",
      help: "Messages that could not be delivered (the user was told), by reason",
      labelNames: ["direction", "reason"],
      registers,
    });
    this.matrixEventSeconds = new Histogram({
      name: "bridge_matrix_event_duration_seconds",
      help: "Time to handle one event pushed by the homeserver, by event type",
      labelNames: ["type"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.networkSendSeconds = new Histogram({
      name: "bridge_network_send_duration_seconds",
      help: "Time until the network accepted (or refused) one outgoing message, per attempt",
      labelNames: ["outcome"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.matrixToNetworkSeconds = new Histogram({
      name: "bridge_matrix_to_network_duration_seconds",
      help: "Time from queueing a Matrix event for the network (while handling the homeserver's transaction) to the network accepting it, retries and waits included",
      buckets: PASSAGE_BUCKETS,
      registers,
    });
    this.provisioningSeconds = new Histogram({
      name: "bridge_provisioning_request_duration_seconds",
      help: "Provisioning API requests, by route, method and HTTP status",
      labelNames: ["route", "method", "status"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.botCommandsTotal = new Counter({
      name: "bridge_bot_commands_total",
      help: "Bot commands, by command and outcome (ok, refused, rate_limited, failed)",
      labelNames: ["command", "outcome"],
      registers,
    });
    this.homeserverRequestsTotal = new Counter({
      name: "bridge_homeserver_requests_total",
      help: "HTTP requests the bridge made to the homeserver (each attempt), by kind: send (room events and redactions), state, membership, create_room, profile, typing, receipt, media, query (other reads), other",
      labelNames: ["kind"],
      registers,
    });
    this.homeserverEventsTotal = new Counter({
      name: "bridge_homeserver_events_total",
      help: "Room events the homeserver stored at the bridge's request, by event type (room_creation: the events a new room starts with; a profile change's member events in the user's rooms are not counted)",
      labelNames: ["type"],
      registers,
    });
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** One message bridged; in a group's chat (`chat`) it is counted among the group messages as well. */
  bridged(direction: Direction, type: string, chat: "dm" | "group" = "dm"): void {
    this.bridgedTotal.inc({ direction, type });
    if (chat === "group") this.groupBridgedTotal.inc({ direction, type });
  }

  dropped(direction: Direction, reason: string): void {
    this.droppedTotal.inc({ direction, reason });
  }

  failed(direction: Direction, reason: string): void {
    this.failedTotal.inc({ direction, reason });
  }

  /** One HTTP request to the homeserver (see src/matrix/homeserver-requests.ts for the kinds). */
  homeserverRequest(kind: string): void {
    this.homeserverRequestsTotal.inc({ kind });
  }

  /** Room events of one type the homeserver stored at the bridge's request. */
  homeserverEvents(type: string, count: number): void {
    if (count > 0) this.homeserverEventsTotal.inc({ type }, count);
  }

  /** Registers the gauges that read the bridge's state on every scrape. */
  observe(sources: MetricSources): void {
    const registers = [this.registry];
    new Gauge({
      name: "bridge_outbound_queue_depth",
      help: "Matrix messages waiting for the network (durable queue)",
      registers,
      collect() {
        this.set(sources.outboundQueueDepth());
      },
    });
    new Gauge({
      name: "bridge_inbound_queue_depth",
      help: "Network events acknowledged and waiting to be bridged to Matrix (durable queue)",
      registers,
      collect() {
        this.set(sources.inboundQueueDepth());
      },
    });
    new Gauge({
      name: "bridge_inbound_chats_busy",
      help: "Chats with network messages queued or being bridged to Matrix",
      registers,
      collect() {
        this.set(sources.inboundChatsBusy());
      },
    });
    new Gauge({
      name: "bridge_portals",
      help: "Bridged chats (portals with a Matrix room)",
      registers,
      collect() {
        this.set(sources.portals());
      },
    });
    new Gauge({
      name: "bridge_users",
      help: "Matrix users known to the bridge, by their Third-Party Chats setting",
      labelNames: ["third_party_chats"],
      registers,
      collect() {
        const users = sources.users();
        this.set({ third_party_chats: "on" }, users.on);
        this.set({ third_party_chats: "off" }, users.off);
      },
    });
    new Gauge({
      name: "bridge_network_connection_state",
      help: "The connection to the chat network: 1 for the current state",
      labelNames: ["state"],
      registers,
      collect() {
        const current = sources.connection();
        for (const state of ["connecting", "connected", "disconnected"] as const) this.set({ state }, state === current ? 1 : 0);
      },
    });
    const links = sources.links;
    if (links) {
      new Gauge({
        name: "bridge_link_state",
        help: "Links the bridge depends on (homeserver, network): 1 for the current state",
        labelNames: ["link", "state"],
        registers,
        collect() {
          for (const [link, snap] of Object.entries(links())) {
            for (const state of ["unknown", "up", "down"] as const) this.set({ link, state }, state === snap.state ? 1 : 0);
          }
        },
      });
      new Gauge({
        name: "bridge_link_outages",
        help: "Outages of each link since the bridge started",
        labelNames: ["link"],
        registers,
        collect() {
          for (const [link, snap] of Object.entries(links())) this.set({ link }, snap.outages);
        },
      });
      new Gauge({
        name: "bridge_link_held",
        help: "Requests or messages that waited for the link in its current (or last) outage",
        labelNames: ["link"],
        registers,
        collect() {
          for (const [link, snap] of Object.entries(links())) this.set({ link }, snap.held);
        },
      });
    }
  }

  /** The text exposition Prometheus scrapes. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
