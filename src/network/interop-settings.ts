/**
 * Everything the interop connector is given, and nothing more: its own config section, its own
 * tables, and two questions it asks the bridge about users. It never sees the bridge's whole
 * config or store (the core's tables are the core's).
 */
import type { HostedMediaStore } from "../store/hosted-media";
import type { SentFrameStore } from "../store/sent-frames";
import type { SignalRecordTable } from "../store/signal-records";

/** The `network` section of the config (config/config.sample.yaml documents every key). */
export interface InteropNetworkConfig {
  gateway_url: string;
  provider_domain: string;
  /** Filled from BRIDGE_PROVIDER_SECRET when set; always present once validated. */
  provider_secret: string;
  home_domain: string;
  /** Filled from BRIDGE_STORE_KEY when set; always present once validated. */
  store_key: string;
  media: {
    bind_hostname: string;
    port: number;
    public_url?: string;
    max_size: number;
    /** Hosted blobs and temporary files; filled in from the database's folder when not set. */
    directory: string;
    allowed_hosts: string[];
    expiry_days: number;
  };
}

/** The tables only the connector reads and writes. */
export interface InteropConnectorStore {
  /** Sends awaiting the gateway's delivery receipt. */
  readonly sentFrames: SentFrameStore;
  /** The index of the encrypted blobs the connector's media host serves. */
  readonly hostedMedia: HostedMediaStore;
  /** One local party's Signal records (keys, sessions), stored encrypted. */
  signalRecords(owner: string): SignalRecordTable;
}

/** What the connector asks the bridge about its Matrix users. */
export interface InteropUserSettings {
  /** Matrix users known from earlier runs: they are logged in again at start, so queued messages flow at once. */
  knownUsers(): string[];
  /** A user's stored Third-Party Chats setting (false for a user the bridge does not know). */
  thirdPartyChats(matrixUserId: string): boolean;
}

export interface InteropConnectorOptions {
  network: InteropNetworkConfig;
  /** How long a sent message may still be edited (the bridge's `edit_window_seconds`); 0: no edits. */
  editWindowSeconds: number;
  store: InteropConnectorStore;
  users: InteropUserSettings;
}
