import { AppServiceRegistration } from "matrix-appservice-bridge";
import { BridgeCore } from "./bridge/core";
import { BridgeConfig } from "./config";
import { configureLogging, getLogger } from "./logging";
import { MatrixAppservice } from "./matrix/appservice";
import { InteropConnector } from "./network/interop-connector";
import { BridgeStore } from "./store";

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
  const connector = new InteropConnector(config, store);
  const appservice = new MatrixAppservice(config, registration, store);
  const core = new BridgeCore(store, appservice.port, connector, { thirdPartyDefault: config.bridge.third_party_chats_default });
  await appservice.start(core);
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
      store.close();
    },
  };
}
