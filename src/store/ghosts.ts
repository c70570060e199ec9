import { Database } from "./database";

export interface GhostRow {
  remoteId: string;
  mxid: string;
  displayName: string | null;
  avatarId: string | null;
  avatarMxc: string | null;
  registered: boolean;
}

interface Raw {
  remote_id: string;
  mxid: string;
  display_name: string | null;
  avatar_id: string | null;
  avatar_mxc: string | null;
  registered: number;
}

const fromRaw = (r: Raw): GhostRow => ({
  remoteId: r.remote_id,
  mxid: r.mxid,
  displayName: r.display_name,
  avatarId: r.avatar_id,
  avatarMxc: r.avatar_mxc,
  registered: r.registered === 1,
});

/** Remote users' Matrix ghosts and the profile last pushed to Matrix for each. */
export class GhostStore {
  constructor(private readonly db: Database) {}

  get(remoteId: string): GhostRow | undefined {
    const raw = this.db.prepare("SELECT * FROM ghosts WHERE remote_id = ?").get(remoteId) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  byMxid(mxid: string): GhostRow | undefined {
    const raw = this.db.prepare("SELECT * FROM ghosts WHERE mxid = ?").get(mxid) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  ensure(remoteId: string, mxid: string): GhostRow {
    this.db.prepare("INSERT OR IGNORE INTO ghosts (remote_id, mxid, updated_at) VALUES (?, ?, ?)").run(remoteId, mxid, Date.now());
    return this.get(remoteId)!;
  }

  markRegistered(remoteId: string): void {
    this.db.prepare("UPDATE ghosts SET registered = 1 WHERE remote_id = ?").run(remoteId);
  }

  setDisplayName(remoteId: string, name: string): void {
    this.db.prepare("UPDATE ghosts SET display_name = ?, updated_at = ? WHERE remote_id = ?").run(name, Date.now(), remoteId);
  }

  setAvatar(remoteId: string, avatarId: string | null, mxc: string | null): void {
    this.db.prepare("UPDATE ghosts SET avatar_id = ?, avatar_mxc = ?, updated_at = ? WHERE remote_id = ?").run(avatarId, mxc, Date.now(), remoteId);
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM ghosts").get() as { n: number }).n;
  }
}
