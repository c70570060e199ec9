import { Database } from "./database";

/** How far each portal's Matrix user (in a group: each Matrix member, `member`) has been reported (to the network) to have read. */
export class ReadMarkerStore {
  constructor(private readonly db: Database) {}

  /** Network timestamp of the newest message reported read; 0 before any. */
  get(portalId: number, member?: string): number {
    if (member !== undefined) {
      const row = this.db.prepare("SELECT read_up_to FROM portal_members WHERE portal_id = ? AND mxid = ?").get(portalId, member) as { read_up_to: number } | undefined;
      return row?.read_up_to ?? 0;
    }
    const row = this.db.prepare("SELECT read_up_to FROM read_markers WHERE portal_id = ?").get(portalId) as { read_up_to: number } | undefined;
    return row?.read_up_to ?? 0;
  }

  /** Moves the marker forward (never back); a group member's only while they are a member. */
  advance(portalId: number, upTo: number, member?: string): void {
    if (member !== undefined) {
      this.db.prepare("UPDATE portal_members SET read_up_to = MAX(read_up_to, ?) WHERE portal_id = ? AND mxid = ?").run(upTo, portalId, member);
      return;
    }
    this.db
      .prepare("INSERT INTO read_markers (portal_id, read_up_to) VALUES (?, ?) ON CONFLICT (portal_id) DO UPDATE SET read_up_to = MAX(read_up_to, excluded.read_up_to)")
      .run(portalId, upTo);
  }
}
