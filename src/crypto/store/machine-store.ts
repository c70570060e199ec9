/**
 * Opens OlmMachines over the durable IndexedDB: one IndexedDB store per bridged user, rebuilt from
 * the crypto store file before the machine opens it, so a restart finds the same device and keys.
 */
import * as sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { CryptoStoreFile } from "./crypto-store-file";
import { databaseNames, deleteDatabases, installDurableIndexedDb, restoreDatabases } from "./durable-idb";

/* eslint-disable @typescript-eslint/no-explicit-any -- Node's lib has no IndexedDB types */
type IDBDatabaseLike = any;
declare const indexedDB: any;
const INBOUND_STORE = "inbound_group_sessions3";

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

  /**
   * Deletes the user's inbound room keys that `drop` picks (key hygiene: the bridge never needs
   * history). Goes through IndexedDB, so the journal records it like any other write. The record
   * key is "roomId\u001dsessionId"; the value carries `sender_key` (matrix-sdk-indexeddb's layout
   * for an unencrypted store, checked by test/unit/crypto-manager.test.ts).
   */
  async deleteInboundSessions(userId: string, drop: (roomId: string, sessionId: string, senderKey: string | undefined) => boolean): Promise<number> {
    const name = `${storeNameOf(userId)}::matrix-sdk-crypto`;
    const db = await new Promise<IDBDatabaseLike>((resolve, reject) => {
      const request = indexedDB.open(name);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    try {
      if (!db.objectStoreNames.contains(INBOUND_STORE)) return 0;
      return await new Promise<number>((resolve, reject) => {
        const tx = db.transaction([INBOUND_STORE], "readwrite");
        const store = tx.objectStore(INBOUND_STORE);
        let deleted = 0;
        const cursorRequest = store.openCursor();
        cursorRequest.onsuccess = () => {
          const cursor = cursorRequest.result;
          if (!cursor) return;
          const [roomId, sessionId] = String(cursor.key).split("\u001d");
          const senderKey = (cursor.value as { sender_key?: string } | undefined)?.sender_key;
          if (drop(roomId, sessionId, senderKey)) {
            cursor.delete();
            deleted++;
          }
          cursor.continue();
        };
        tx.oncomplete = () => resolve(deleted);
        tx.onerror = () => reject(tx.error);
      });
    } finally {
      db.close();
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
