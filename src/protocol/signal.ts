// The Signal layer shared by the bridge and the simulated WhatsApp users; implementation in ./signal/.
export { SignalLayerError, type SignalLayerErrorCode } from "./signal/errors.js";
export {
  EncryptedRecordStore,
  MemoryRecordStore,
  deriveStoreKey,
  type SignalRecordStore,
} from "./signal/record-store.js";
export { SignalParty } from "./signal/party.js";
export {
  SIGNAL_DEVICE_ID,
  SignalMessageType,
  type OneTimePreKey,
  type PreKeyBundleData,
  type PublishedKeys,
  type SignalCiphertext,
  type SignalPartyOptions,
  type SignedPublicKey,
} from "./signal/types.js";
