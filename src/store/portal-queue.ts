import { Database } from "./database";

/** What the two durable per-portal queues (inbound_queue, outbound_queue) share: rows by seq, per portal. */
export abstract class PortalQueueTable {
  protected constructor(
    protected readonly db: Database,
    private readonly table: "inbound_queue" | "outbound_queue",
  ) {}

  portalsWithPending(): number[] {
    return (this.db.prepare(`SELECT DISTINCT portal_id FROM ${this.table} ORDER BY portal_id`).all() as { portal_id: number }[]).map((r) => r.portal_id);
  }

  recordAttempt(seq: number): void {
    this.db.prepare(`UPDATE ${this.table} SET attempts = attempts + 1 WHERE seq = ?`).run(seq);
  }

  remove(seq: number): void {
    this.db.prepare(`DELETE FROM ${this.table} WHERE seq = ?`).run(seq);
  }

  depth(): number {
    return (this.db.prepare(`SELECT COUNT(*) AS n FROM ${this.table}`).get() as { n: number }).n;
  }
}
