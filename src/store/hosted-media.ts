import { Database } from "./database";

/** An encrypted blob the bridge's media host serves until `expiresAt` (ms since the epoch). */
export interface HostedMediaRow {
  token: string;
  size: number;
  expiresAt: number;
  createdAt: number;
}

interface Raw {
  token: string;
  size: number;
  expires_at: number;
  created_at: number;
}

const fromRaw = (r: Raw): HostedMediaRow => ({ token: r.token, size: r.size, expiresAt: r.expires_at, createdAt: r.created_at });

/** The index of hosted blobs; the bytes live in files named by token (see MediaHost). */
export class HostedMediaStore {
  constructor(private readonly db: Database) {}

  /** Records a blob; hosting the same token again (a retried send) replaces the row. */
  save(row: HostedMediaRow): void {
    this.db.prepare("INSERT OR REPLACE INTO hosted_media (token, size, expires_at, created_at) VALUES (?, ?, ?, ?)").run(row.token, row.size, row.expiresAt, row.createdAt);
  }

  get(token: string): HostedMediaRow | undefined {
    const raw = this.db.prepare("SELECT * FROM hosted_media WHERE token = ?").get(token) as Raw | undefined;
    return raw && fromRaw(raw);
  }

  /** Blobs whose expiry is at or before `now`, oldest first. */
  expired(now: number, limit = 1000): HostedMediaRow[] {
    return (this.db.prepare("SELECT * FROM hosted_media WHERE expires_at <= ? ORDER BY expires_at LIMIT ?").all(now, limit) as Raw[]).map(fromRaw);
  }

  remove(token: string): void {
    this.db.prepare("DELETE FROM hosted_media WHERE token = ?").run(token);
  }

  count(): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM hosted_media").get() as { n: number }).n;
  }
}
