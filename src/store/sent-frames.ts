import { Database } from "./database";

/**
 * Transport ids of sends that await the network's delivery receipt, with the txnId they were
 * sent under (the connector's record; receipts name only the transport id).
 */
export class SentFrameStore {
  constructor(private readonly db: Database) {}

  put(frameId: string, sender: string, txnId: string): void {
    this.db.prepare("INSERT OR IGNORE INTO sent_frames (frame_id, sender, txn_id, created_at) VALUES (?, ?, ?, ?)").run(frameId, sender, txnId, Date.now());
  }

  get(frameId: string): { sender: string; txnId: string } | undefined {
    const row = this.db.prepare("SELECT sender, txn_id FROM sent_frames WHERE frame_id = ?").get(frameId) as { sender: string; txn_id: string } | undefined;
    return row && { sender: row.sender, txnId: row.txn_id };
  }

  delete(frameId: string): void {
    this.db.prepare("DELETE FROM sent_frames WHERE frame_id = ?").run(frameId);
  }

  /** Drops every record of one sender (the user asked the bridge to forget them); returns how many. */
  deleteSender(sender: string): number {
    return this.db.prepare("DELETE FROM sent_frames WHERE sender = ?").run(sender).changes;
  }

  /** Drops records older than maxAgeMs (the network keeps undelivered messages no longer); returns how many. */
  prune(maxAgeMs: number): number {
    return this.db.prepare("DELETE FROM sent_frames WHERE created_at < ?").run(Date.now() - maxAgeMs).changes;
  }
}
