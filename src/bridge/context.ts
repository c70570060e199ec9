import { BridgeMetrics } from "../metrics/metrics";
import { NetworkConnector } from "../network/connector";
import { BridgeStore } from "../store";
import { BackoffPolicy } from "../util/backoff";
import { Access } from "./access";
import { MatrixPort } from "./matrix-port";
import { Portals } from "./portals";
import { StatusReporter } from "./status";

/** What both pipelines work with; BridgeCore builds it once and hands it to each. */
export interface PipelineContext {
  store: BridgeStore;
  matrix: MatrixPort;
  network: NetworkConnector;
  metrics: BridgeMetrics;
  access: Access;
  portals: Portals;
  status: StatusReporter;
  /** The retry policy of both durable queues. */
  retry: BackoffPolicy;
  /** True once the bridge is shutting down: queues stop between items. */
  stopping(): boolean;
}
