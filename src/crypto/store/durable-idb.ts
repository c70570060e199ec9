/**
 * A durable IndexedDB for Node: fake-indexeddb (in memory, spec-complete) with every committed
 * write also written, synchronously and in one SQLite transaction, to a journal before the
 * IndexedDB `complete` event reaches its listeners. The crypto library therefore never learns that
 * a write committed (and never, say, uploads a one-time key it stored) before the disk has it.
 * On start, the databases a caller asks for are rebuilt from the journal into fake-indexeddb.
 *
 * Written for fake-indexeddb 6.2 (its internal ObjectStore.storeRecord/deleteRecord/clear and
 * FDBTransaction._rollbackLog); `installDurableIndexedDb` refuses to start when they moved, and
 * test/unit/crypto-store.test.ts fails with it.
 */
import "fake-indexeddb/auto";
import { IDBDatabase as FakeDatabase, IDBFactory as FakeFactory, IDBKeyRange as FakeKeyRange, IDBTransaction as FakeTransaction, indexedDB as fakeIndexedDb } from "fake-indexeddb";

/** An IndexedDB key (Node's lib has no DOM types). */
export type IdbKey = number | string | Date | ArrayBuffer | ArrayBufferView | IdbKey[];

/** One committed change to an object store, in the order the transaction made it. */
export type IdbWrite = { kind: "put"; store: string; key: IdbKey; value: unknown } | { kind: "delete"; store: string; key: IdbKey } | { kind: "clear"; store: string };

export interface IdbIndexSchema {
  name: string;
  keyPath: string | string[];
  unique: boolean;
  multiEntry: boolean;
}
export interface IdbStoreSchema {
  name: string;
  keyPath: string | string[] | null;
  autoIncrement: boolean;
  indexes: IdbIndexSchema[];
}
export interface IdbSchema {
  version: number;
  stores: IdbStoreSchema[];
}

/** A database as the journal gives it back at start. */
export interface StoredIdb {
  name: string;
  schema: IdbSchema;
  records: Map<string, { key: IdbKey; value: unknown }[]>;
}

/** Where committed transactions go; `commit` must be durable when it returns (or throw). */
export interface IdbJournal {
  commit(dbName: string, schema: IdbSchema | undefined, writes: IdbWrite[]): void;
  dropDatabase(dbName: string): void;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- fake-indexeddb's internals have no types */
type Internal = any;

interface Pending {
  dbName: string;
  writes: IdbWrite[];
}

let journal: IdbJournal | undefined;
let installed: Promise<void> | undefined;
/** Keyed by a transaction's rollback log: the one object both the raw stores and the transaction see. */
const pending = new WeakMap<unknown[], Pending>();
/** Transactions that rebuild a database from the journal: nothing of theirs is written back. */
const restoring = new WeakSet<unknown[]>();
const PROBE_DB = "__durable_idb_probe";

function pendingFor(log: unknown[], dbName: string): Pending | undefined {
  if (restoring.has(log) || dbName === PROBE_DB) return undefined;
  let entry = pending.get(log);
  if (!entry) pending.set(log, (entry = { dbName, writes: [] }));
  return entry;
}

function schemaOf(rawDatabase: Internal, version: number): IdbSchema {
  const stores: IdbStoreSchema[] = [];
  for (const raw of rawDatabase.rawObjectStores.values()) {
    if (raw.deleted) continue;
    const indexes: IdbIndexSchema[] = [];
    for (const index of raw.rawIndexes.values()) {
      if (index.deleted) continue;
      indexes.push({ name: index.name, keyPath: index.keyPath, unique: !!index.unique, multiEntry: !!index.multiEntry });
    }
    stores.push({ name: raw.name, keyPath: raw.keyPath ?? null, autoIncrement: !!raw.autoIncrement, indexes });
  }
  return { version, stores };
}

function flush(tx: Internal): void {
  const log = tx._rollbackLog as unknown[];
  if (restoring.has(log)) return;
  const entry = pending.get(log);
  pending.delete(log);
  const upgrade = tx.mode === "versionchange";
  if (!entry && !upgrade) return;
  const dbName: string = entry?.dbName ?? tx.db.name;
  if (dbName === PROBE_DB) return;
  const schema = upgrade ? schemaOf(tx.db._rawDatabase, tx.db.version) : undefined;
  if (!journal) throw new Error("durable IndexedDB: no journal installed");
  journal.commit(dbName, schema, entry?.writes ?? []);
}

/** Opens a throw-away database to reach fake-indexeddb's internal ObjectStore class. */
async function rawObjectStorePrototype(): Promise<Internal> {
  const db = await new Promise<Internal>((resolve, reject) => {
    const request = fakeIndexedDb.open(PROBE_DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore("probe");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const raw = db._rawDatabase?.rawObjectStores?.get("probe");
  db.close();
  await new Promise<void>((resolve) => {
    const request = fakeIndexedDb.deleteDatabase(PROBE_DB);
    request.onsuccess = () => resolve();
    request.onerror = () => resolve();
  });
  const proto = raw && Object.getPrototypeOf(raw);
  const tx = FakeTransaction.prototype as Internal;
  if (
    !proto ||
    typeof proto.storeRecord !== "function" ||
    typeof proto.deleteRecord !== "function" ||
    typeof proto.clear !== "function" ||
    typeof tx.dispatchEvent !== "function"
  ) {
    throw new Error("durable IndexedDB: fake-indexeddb's internals are not the ones this store was written for (6.2.x)");
  }
  return proto;
}

function patch(proto: Internal): void {
  const storeRecord = proto.storeRecord;
  proto.storeRecord = function (this: Internal, newRecord: Internal, noOverwrite: boolean, rollbackLog?: unknown[]) {
    const key = storeRecord.call(this, newRecord, noOverwrite, rollbackLog);
    if (rollbackLog) pendingFor(rollbackLog, this.rawDatabase.name)?.writes.push({ kind: "put", store: this.name, key: newRecord.key, value: newRecord.value });
    return key;
  };
  const deleteRecord = proto.deleteRecord;
  proto.deleteRecord = function (this: Internal, key: Internal, rollbackLog?: unknown[]) {
    const entry = rollbackLog ? pendingFor(rollbackLog, this.rawDatabase.name) : undefined;
    if (entry) {
      // A range deletes every record in it: the journal needs their keys, so read them first.
      const keys = key instanceof FakeKeyRange ? [...this.records.values(key)].map((r: Internal) => r.key) : this.records.get(key) ? [key] : [];
      for (const k of keys) entry.writes.push({ kind: "delete", store: this.name, key: k });
    }
    return deleteRecord.call(this, key, rollbackLog);
  };
  const clear = proto.clear;
  proto.clear = function (this: Internal, rollbackLog?: unknown[]) {
    if (rollbackLog) pendingFor(rollbackLog, this.rawDatabase.name)?.writes.push({ kind: "clear", store: this.name });
    return clear.call(this, rollbackLog);
  };

  const dispatchEvent = (FakeTransaction.prototype as Internal).dispatchEvent;
  (FakeTransaction.prototype as Internal).dispatchEvent = function (this: Internal, event: Internal) {
    // Before any listener: the library hears "complete" only once the journal holds the writes.
    if (event.type === "complete") flush(this);
    else if (event.type === "abort") pending.delete(this._rollbackLog);
    return dispatchEvent.call(this, event);
  };

  const deleteObjectStore = (FakeDatabase.prototype as Internal).deleteObjectStore;
  (FakeDatabase.prototype as Internal).deleteObjectStore = function (this: Internal, name: string) {
    const tx = this._rawDatabase.transactions.findLast((t: Internal) => t.mode === "versionchange");
    const result = deleteObjectStore.call(this, name);
    if (tx) pendingFor(tx._rollbackLog, this.name)?.writes.push({ kind: "clear", store: name });
    return result;
  };

  const deleteDatabase = (FakeFactory.prototype as Internal).deleteDatabase;
  (FakeFactory.prototype as Internal).deleteDatabase = function (this: Internal, name: string) {
    const request = deleteDatabase.call(this, name);
    if (name !== PROBE_DB) request.addEventListener("success", () => journal?.dropDatabase(name));
    return request;
  };
}

/**
 * Installs the durable layer (once per process) with its journal; the globals `indexedDB` & co.
 * are fake-indexeddb's. A second call with another journal replaces it (tests).
 */
export async function installDurableIndexedDb(target: IdbJournal): Promise<void> {
  journal = target;
  installed ??= rawObjectStorePrototype().then(patch);
  await installed;
}

/** Whether a database of that name is open or known in this process. */
async function existsInMemory(name: string): Promise<boolean> {
  const list = await fakeIndexedDb.databases();
  return list.some((d: { name?: string }) => d.name === name);
}

/** Rebuilds stored databases in memory, so the crypto library finds them as it left them. */
export async function restoreDatabases(databases: StoredIdb[]): Promise<void> {
  for (const stored of databases) {
    if (await existsInMemory(stored.name)) continue;
    await new Promise<void>((resolve, reject) => {
      const request = fakeIndexedDb.open(stored.name, stored.schema.version);
      request.onupgradeneeded = () => {
        const tx = request.transaction as Internal;
        restoring.add(tx._rollbackLog);
        const db = request.result;
        for (const s of stored.schema.stores) {
          const store = db.createObjectStore(s.name, { keyPath: s.keyPath ?? undefined, autoIncrement: s.autoIncrement });
          for (const i of s.indexes) store.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
          for (const r of stored.records.get(s.name) ?? []) {
            if (s.keyPath === null) store.put(r.value, r.key);
            else store.put(r.value);
          }
        }
      };
      request.onsuccess = () => {
        request.result.close();
        resolve();
      };
      request.onerror = () => reject(request.error);
    });
  }
}

/** Forgets databases in memory (their journal rows go with the deleteDatabase hook). */
export async function deleteDatabases(names: string[]): Promise<void> {
  for (const name of names) {
    await new Promise<void>((resolve, reject) => {
      const request = fakeIndexedDb.deleteDatabase(name);
      request.onsuccess = () => resolve();
      request.onerror = () => reject(request.error);
      // An open connection (a machine not yet closed) delays deletion until it closes.
      request.onblocked = () => undefined;
    });
  }
}

/** Names of databases currently in memory (tests and forgetUser). */
export async function databaseNames(): Promise<string[]> {
  return (await fakeIndexedDb.databases()).map((d: { name?: string }) => d.name!).filter((n: string) => n !== PROBE_DB);
}
