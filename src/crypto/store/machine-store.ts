/**
 * Opens OlmMachines over the durable IndexedDB: one IndexedDB store per bridged user, rebuilt from
 * the crypto store file before the machine opens it, so a restart finds the same device and keys.
 */
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { CryptoStoreFile } from "./crypto-store-file";
import { databaseNames, deleteDatabases, installDurableIndexedDb, restoreDatabases } from "./durable-idb";

let wasmReady: Promise<void> | undefined;

/** Loads the wasm crypto library once per process. */
export function loadCryptoLibrary(): Promise<void> {
  wasmReady ??= sdk.initAsync();
  return wasmReady;
}

/** The IndexedDB store name of a user's machine; the library appends "::matrix-sdk-crypto…". */
function storeNameOf(userId: string): string {
  return `mib-crypto:${userId}`;
}

export class MachineStore {
  private constructor(readonly file: CryptoStoreFile) {}

  /** Opens the crypto store file (0600) and installs the durable IndexedDB over it. */
  static async open(path: string, secret: string): Promise<MachineStore> {
    const file = new CryptoStoreFile(path, secret);
    await installDurableIndexedDb(file);
    await loadCryptoLibrary();
    return new MachineStore(file);
  }

  /** The device id the user's machine has (undefined before its first device). */
  deviceOf(userId: string): string | undefined {
    return this.file.deviceOf(userId);
  }

  /**
   * Opens the user's machine for `deviceId`, restoring its stored state. The device id is kept
   * before the machine exists: a crash between the two reopens the same device, never a new one.
   */
  async openMachine(userId: string, deviceId: string): Promise<sdk.OlmMachine> {
    const known = this.file.deviceOf(userId);
    if (known && known !== deviceId) throw new Error(`the crypto store holds device ${known} for this user, not ${deviceId}`);
    if (!known) this.file.setDevice(userId, deviceId);
    const prefix = `${storeNameOf(userId)}::`;
    await restoreDatabases(this.file.load((name) => name.startsWith(prefix)));
    const handle = await sdk.StoreHandle.open(storeNameOf(userId), undefined);
    try {
      return await sdk.OlmMachine.initFromStore(new sdk.UserId(userId), new sdk.DeviceId(deviceId), handle);
    } finally {
      handle.free();
    }
  }

  /** Deletes everything stored for the user (its machine must be closed first). */
  async forget(userId: string): Promise<void> {
    const prefix = `${storeNameOf(userId)}::`;
    const inMemory = (await databaseNames()).filter((n) => n.startsWith(prefix));
    await deleteDatabases(inMemory);
    for (const name of this.file.databaseNames().filter((n) => n.startsWith(prefix))) this.file.dropDatabase(name);
    this.file.forgetDevice(userId);
  }

  close(): void {
    this.file.close();
  }
}
