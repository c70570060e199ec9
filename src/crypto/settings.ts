/** The encryption section of the config, as the crypto layer takes it. */
import { BridgeConfig } from "../config";
import { KeyHygiene } from "./encryption-manager";

export interface CryptoSettings {
  storePath: string;
  /** From BRIDGE_CRYPTO_STORE_KEY, encryption.store_key, or else the network's store key. */
  storeKey: string | undefined;
  hygiene: KeyHygiene;
  roomKeyWaitMs: number;
}

export function cryptoSettings(config: BridgeConfig, env: NodeJS.ProcessEnv = process.env): CryptoSettings {
  const e = config.encryption;
  return {
    storePath: e.store_path,
    storeKey: env.BRIDGE_CRYPTO_STORE_KEY || e.store_key || env.BRIDGE_STORE_KEY || config.network.store_key,
    hygiene: { deletePreviousOnNewSession: e.delete_keys.delete_previous_on_new_session, deleteOnForgetRoom: e.delete_keys.delete_on_forget_room },
    roomKeyWaitMs: e.room_key_wait_seconds * 1000,
  };
}
