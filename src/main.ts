import { AppServiceRegistration } from "matrix-appservice-bridge";
import { BridgeCore } from "./bridge/core";
import { Permissions } from "./bridge/permissions";
import { BridgeConfig } from "./config";
import { EncryptionManager } from "./crypto/encryption-manager";
import { checkHomeserverEncryption } from "./crypto/homeserver-check";
import { cryptoSettings } from "./crypto/settings";
import { MachineStore } from "./crypto/store/machine-store";
import { configureLogging, getLogger } from "./logging";
import { MatrixAppservice } from "./matrix/appservice";
import { BridgeMetrics } from "./metrics/metrics";
import { HealthReport, MetricsServer } from "./metrics/server";
import { InteropConnector } from "./network/interop-connector";
import { BridgeStore } from "./store";
import { BRIDGE_VERSION } from "./version";

const log = getLogger("main");

export interface RunningBridge {
  core: BridgeCore;
  stop(): Promise<void>;
}

/** Starts every part of the bridge: store, appservice, network connector, core. */
export async function runBridge(config: BridgeConfig, registration: AppServiceRegistration): Promise<RunningBridge> {
  configureLogging(config.logging);
  const started = Date.now();
  const store = BridgeStore.open(config.database.path);
  const connector = new InteropConnector({
    network: config.network,
    editWindowSeconds: config.bridge.edit_window_seconds,
    store,
    users: {
      knownUsers: () => store.users.all().map((user) => user.mxid),
      thirdPartyChats: (mxid) => store.users.get(mxid)?.thirdPartyEnabled ?? false,
    },
  });
  const metrics = new BridgeMetrics({ processMetrics: true });
  const appservice = new MatrixAppservice(config, registration, store, metrics);
  const crypto = config.encryption.allow ? await openEncryption(config, registration) : undefined;
  if (crypto) appservice.useEncryption(crypto.manager);
  const core = new BridgeCore(store, appservice.port, connector, {
    thirdPartyDefault: config.bridge.third_party_chats_default,
    permissions: new Permissions(config.bridge.permissions),
    metrics,
    messageStatusEvents: config.bridge.message_status_events,
    sentStatusDelayMs: config.bridge.sent_status_delay_ms,
    mediaDownloadAttempts: config.bridge.media_download_attempts,
  });
  metrics.observe({
    outboundQueueDepth: () => store.outbound.depth(),
    inboundChatsBusy: () => core.inboundChatsBusy(),
    inboundQueueDepth: () => store.inbound.depth(),
    portals: () => store.portals.count(),
    users: () => store.users.countBySetting(),
    connection: () => core.connectionState().state,
    links: () => {
      const { homeserver, network } = core.health();
      return { ...(homeserver ? { homeserver } : {}), network };
    },
  });
  let appserviceListening = false;
  const health = (): HealthReport => {
    let database = "ok";
    try {
      store.db.prepare("SELECT 1").get();
    } catch (err) {
      database = `error: ${(err as Error).message}`;
    }
    const network = core.connectionState().state;
    const checks = { database, network, appservice: appserviceListening ? "ok" : "starting" };
    // The homeserver link is reported, not part of readiness: an unready bridge could be taken out of service just when the homeserver returns to push what it held.
    const { homeserver, network: gateway, outboundQueue, inboundQueue } = core.health();
    const links = { ...(homeserver ? { homeserver } : {}), network: gateway, outbound_queue: outboundQueue, inbound_queue: inboundQueue };
    return { ready: database === "ok" && network === "connected" && appserviceListening, checks, links };
  };
  const metricsServer = config.metrics.enabled ? new MetricsServer(metrics, health, BRIDGE_VERSION) : undefined;
  await metricsServer?.listen(config.metrics.port, config.metrics.hostname);
  await appservice.start(core);
  appserviceListening = true;
  // Needs the listener: the check's probe comes back in a transaction.
  const checkEncryption = async (background: boolean): Promise<void> => {
    const check = () =>
      checkHomeserverEncryption(crypto!.manager, {
        homeserverUrl: config.homeserver.url,
        asToken: registration.getAppServiceToken()!,
        botUserId: appservice.port.botMxid,
        // After a restart the homeserver may hold transactions for a while (its backoff): the probe's time starts with the first one.
        ...(background ? { armTimeout: crypto!.manager.nextTransaction() } : {}),
      });
    let support = await check();
    // After a restart, Synapse drops the to-device messages of the transactions it holds while the
    // bridge counts as down (its catch-up transactions carry events only): a probe sent then never
    // comes back. Once transactions flow again, a new probe does.
    for (let again = 0; background && !support.ok && again < 2; again++) support = await check();
    const settings = { default: config.encryption.default, require: config.encryption.require };
    if (support.ok) log.info("encryption: on (the homeserver provides what end-to-bridge encryption needs)", settings);
    else if (config.encryption.require) {
      log.error(`${support.summary}; stopping (encryption.require is on)`);
      if (background) process.kill(process.pid, "SIGTERM");
      else throw new Error(`${support.summary} (encryption.require is on)`);
    } else {
      log.warn(`${support.summary}; running unencrypted`);
      appservice.encryption!.disable();
    }
  };
  if (crypto && crypto.bridgeDeviceKnown(appservice.port.botMxid)) {
    // Checked before with this store: start encrypted and check again while running.
    void checkEncryption(true).catch((err: Error) => log.error("encryption: the homeserver check failed", { error: err.message }));
  } else if (crypto) {
    try {
      await checkEncryption(false);
    } catch (err) {
      await appservice.stop();
      await metricsServer?.close();
      await crypto.close();
      store.close();
      throw err;
    }
  }
  await connector.start(core);
  await core.start();
  // Matrix events (and those journaled before a restart) flow only once everything is up.
  appservice.startDispatching();
  log.info("bridge ready", { ms: Date.now() - started, portals: store.portals.count(), ghosts: store.ghosts.count() });
  return {
    core,
    async stop() {
      core.stop();
      await connector.stop();
      await appservice.stop();
      await metricsServer?.close();
      await crypto?.close();
      store.close();
    },
  };
}

/** Opens the crypto store (encryption.store_path, under the store key) and the machines' manager. */
async function openEncryption(
  config: BridgeConfig,
  registration: AppServiceRegistration,
): Promise<{ manager: EncryptionManager; bridgeDeviceKnown(userId: string): boolean; close(): Promise<void> }> {
  const settings = cryptoSettings(config);
  if (!settings.storeKey) throw new Error("encryption: no store key (encryption.store_key, network.store_key or BRIDGE_CRYPTO_STORE_KEY)");
  const machines = await MachineStore.open(settings.storePath, settings.storeKey);
  const manager = new EncryptionManager({
    homeserverUrl: config.homeserver.url,
    asToken: registration.getAppServiceToken()!,
    store: machines,
    hygiene: settings.hygiene,
    roomKeyWaitMs: settings.roomKeyWaitMs,
    deviceDisplayName: "Interop bridge",
  });
  return {
    manager,
    bridgeDeviceKnown: (userId) => machines.deviceOf(userId) !== undefined,
    async close() {
      await manager.close();
      machines.close();
    },
  };
}
