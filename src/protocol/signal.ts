// The Signal layer shared by the bridge and the simulated WhatsApp users; implementation in ./signal/.
export { SignalLayerError, type SignalLayerErrorCode } from "./signal/errors.js";
export { EncryptedRecordStore, MemoryRecordStore, deriveStoreKey, type SignalRecordStore } from "./signal/record-store.js";
export { SignalParty } from "./signal/party.js";
export * from "./signal/types.js";
