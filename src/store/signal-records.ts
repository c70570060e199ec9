import { Database } from "./database";

/** Raw Signal records of one local party (values arrive already encrypted by the caller). */
export class SignalRecordTable {
  constructor(
    private readonly db: Database,
    private readonly owner: string,
  ) {}

  get(ns: string, key: string): Uint8Array | undefined {
    const row = this.db.prepare("SELECT value FROM signal_records WHERE owner = ? AND ns = ? AND key = ?").get(this.owner, ns, key) as { value: Buffer } | undefined;
    return row ? new Uint8Array(row.value) : undefined;
  }

  put(ns: string, key: string, value: Uint8Array): void {
    this.db.prepare("INSERT OR REPLACE INTO signal_records (owner, ns, key, value) VALUES (?, ?, ?, ?)").run(this.owner, ns, key, Buffer.from(value));
  }

  delete(ns: string, key: string): void {
    this.db.prepare("DELETE FROM signal_records WHERE owner = ? AND ns = ? AND key = ?").run(this.owner, ns, key);
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  deleteAll(): void {
    this.db.prepare("DELETE FROM signal_records WHERE owner = ?").run(this.owner);
  }
}
